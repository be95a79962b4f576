"""Timing: warm-up, repeats, percentiles, batch sweeps, synchronisation, environment record."""

from __future__ import annotations

import os

import pytest

from edgeml.bench import timing
from edgeml.bench.timing import Timing, runtime_environment, throughput_sweep, time_call


def test_percentiles_of_known_latencies():
    t = Timing(batch=4, warmup=0, samples=[i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert t.median == pytest.approx(0.0505) and t.p90 == pytest.approx(0.0901) and t.p99 == pytest.approx(0.09901)
    assert t.items_per_s == pytest.approx(4 / 0.0505)
    s = t.summary()
    assert s["repeats"] == 100 and s["min_s"] == 0.001 and s["max_s"] == 0.1


def test_warmup_calls_are_not_timed_and_sync_follows_every_timed_call():
    calls, syncs = [], []
    fake_times = iter(range(100))

    def timer(fn, sync):
        fn()
        sync()
        return float(next(fake_times))

    t = time_call(lambda: calls.append(1), warmup=3, repeats=5, sync=lambda: syncs.append(1), timer=timer)
    assert len(calls) == 8 and t.samples == [0.0, 1.0, 2.0, 3.0, 4.0] and t.warmup == 3
    assert len(syncs) == 1 + 5  # once after the warm-up, once per timed call


def test_host_timer_includes_the_sync():
    import time

    took = timing.host_timer(lambda: None, sync=lambda: time.sleep(0.02))
    assert took >= 0.02


def test_max_seconds_stops_a_slow_backend_early():
    import time

    t = time_call(lambda: time.sleep(0.01), warmup=0, repeats=1000, max_seconds=0.05)
    assert 3 <= t.repeats < 20


def test_throughput_sweep_builds_inputs_once_per_batch():
    built = []

    def make(b):
        built.append(b)
        return lambda: sum(range(1000 * b))

    out = throughput_sweep(make, [1, 2, 8], warmup=1, repeats=3)
    assert built == [1, 2, 8] and [t.batch for t in out] == [1, 2, 8] and all(t.repeats == 3 for t in out)


def test_environment_records_threads_and_pinning(monkeypatch):
    env = runtime_environment()
    assert env["torch_threads"] >= 1 and env["affinity"] == sorted(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = runtime_environment()
    assert env["pinned"] is True and env["affinity"] == [0] and env["env"]["OMP_NUM_THREADS"] == "1"


@pytest.mark.cuda
def test_cuda_event_timer_times_gpu_work():
    import torch

    x = torch.randn(2048, 2048, device="cuda")
    t = time_call(lambda: x @ x, warmup=2, repeats=5, timer=timing.cuda_event_timer)
    assert all(s > 0 for s in t.samples)
