"""Latency and throughput timing: warm-up, repeated runs, percentiles, batch sweeps.

Every timed call is followed by the backend's own synchronisation (`sync`), so asynchronous work (CUDA
kernels, a TensorRT stream) is inside the interval. Where torch sees a GPU, `cuda_event_timer` times with
CUDA events on the current stream instead of the host clock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    """Latencies [s] of `repeats` calls after `warmup` untimed ones, each call processing `batch` items."""

    batch: int
    warmup: int
    samples: list[float] = field(default_factory=list)

    @property
    def repeats(self) -> int:
        return len(self.samples)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else float("nan")

    @property
    def median(self) -> float:
        return self.percentile(50)

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")

    @property
    def items_per_s(self) -> float:
        """Throughput from the median latency: batch / median."""
        return self.batch / self.median if self.samples and self.median > 0 else float("nan")

    def summary(self) -> dict:
        """JSON-able: batch, warmup, repeats, median/p90/p99/mean/min/max [s], items_per_s, samples."""
        return {
            "batch": self.batch, "warmup": self.warmup, "repeats": self.repeats,
            "median_s": self.median, "p90_s": self.p90, "p99_s": self.p99, "mean_s": self.mean,
            "min_s": float(min(self.samples)) if self.samples else float("nan"),
            "max_s": float(max(self.samples)) if self.samples else float("nan"),
            "items_per_s": self.items_per_s, "samples_s": list(self.samples),
        }


def host_timer(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of `fn` takes on the host clock, `sync` (if any) included."""
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def cuda_event_timer(fn: Callable[[], object], sync: Callable[[], None] | None = None) -> float:
    """Seconds one call of `fn` takes between two CUDA events on the current stream (needs a GPU)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    if sync is not None:
        sync()
    return start.elapsed_time(end) * 1e-3


def default_sync(device: str = "cpu") -> Callable[[], None] | None:
    """`torch.cuda.synchronize` for a CUDA device, else None (CPU work is synchronous)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return None


def time_call(fn: Callable[[], object], *, batch: int = 1, warmup: int = 3, repeats: int = 20,
              min_seconds: float = 0.0, max_seconds: float | None = None, sync: Callable[[], None] | None = None,
              timer: Callable[..., float] = host_timer) -> Timing:
    """Call `fn` `warmup` times untimed, then time it `repeats` times (more while under `min_seconds`).

    `max_seconds` stops early (after at least 3 timed calls) so a slow backend cannot stall a sweep.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = Timing(batch=batch, warmup=warmup)
    started = time.perf_counter()
    while True:
        out.samples.append(timer(fn, sync))
        spent = time.perf_counter() - started
        if max_seconds is not None and spent >= max_seconds and out.repeats >= 3:
            break
        if out.repeats >= repeats and spent >= min_seconds:
            break
    return out


def throughput_sweep(make_call: Callable[[int], Callable[[], object]], batches: Sequence[int], *,
                     warmup: int = 3, repeats: int = 20, max_seconds: float | None = None,
                     sync: Callable[[], None] | None = None, timer: Callable[..., float] = host_timer
                     ) -> list[Timing]:
    """Time `make_call(b)()` at every batch size `b` (inputs are built once per batch, outside the timing)."""
    return [time_call(make_call(b), batch=b, warmup=warmup, repeats=repeats, max_seconds=max_seconds,
                      sync=sync, timer=timer) for b in batches]


def runtime_environment() -> dict:
    """What decides CPU timing: threads (torch, OMP/MKL env), CPU affinity (pinning), cpu count, load."""
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "TVM_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        affinity = None
    out: dict = {"cpu_count": os.cpu_count(), "affinity": affinity,
                 "pinned": affinity is not None and affinity != list(range(os.cpu_count() or 0)),
                 "env": env}
    with contextlib.suppress(OSError):
        out["load_avg_1m"] = os.getloadavg()[0]
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
        out["cuda_available"] = bool(torch.cuda.is_available())
        if out["cuda_available"]:
            out["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return out


def timing_from_dict(d: dict) -> Timing:
    """Inverse of `Timing.summary()` (used by reports)."""
    return Timing(batch=int(d["batch"]), warmup=int(d.get("warmup", 0)), samples=list(d.get("samples_s", [])))


__all__ = ["Timing", "time_call", "throughput_sweep", "host_timer", "cuda_event_timer", "default_sync",
           "runtime_environment", "timing_from_dict"]
