"""`edgeml bench`: latency, throughput, pipeline split and energy of one model on one backend.

Two measurements per run:
- model-only: the runtime on ready tensors (real clips with `input="data"`, random tensors of the exported
  shapes with `input="random"`), timed at several batch sizes -> latency percentiles, clips/s;
- end-to-end (`input="data"` only): for each of N videos, decode + motion-vector/residual extraction + model,
  -> videos/s, per-video latency and the split between decode, kernels and model.

Energy per video comes from every power meter found (RAPL / NVML / INA3221, labelled "measured (...)"), over the
whole end-to-end span (decode + extraction + model); where there is none it is the op-count estimate of the model,
labelled "estimated (no power sensor)" with its energy table, and beside it the front end's measured CPU-seconds per
video (decode + extraction), labelled as such. With `engine="ray"` the same videos also run as Ray tasks over workers
that each hold one runtime session (a Ray actor per worker): aggregate videos/s next to the single-process figure.
Results are one JSON document with a schema name and version (`load_results` checks both).
"""

from __future__ import annotations

import contextlib
import importlib.util
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.bench.meters import MeterSet, open_meters
from edgeml.bench.timing import cuda_event_timer, default_sync, host_timer, runtime_environment, throughput_sweep
from edgeml.errors import InputError, MissingDependencyError
from edgeml.io import read_json, write_json
from edgeml.paths import refuse_overwrite
from edgeml.progress import Progress

SCHEMA = "edgeml.bench"
SCHEMA_VERSION = 1
BACKENDS = ("torch", "ort", "ort-fp16", "ort-int8", "tvm", "trt")
ESTIMATED_LABEL = "estimated (no power sensor)"
FRONT_END_LABEL = "measured CPU time of decode + extraction (no power sensor, so not joules)"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")

# backend -> (module to import, PyPI package, edgeml extra)
_BACKEND_DEPS = {
    "torch": ("torch", "torch", None),
    "ort": ("onnxruntime", "onnxruntime", None),
    "ort-fp16": ("onnxruntime", "onnxruntime", None),
    "ort-int8": ("onnxruntime", "onnxruntime", None),
    "tvm": ("tvm", "apache-tvm", "tvm"),
    "trt": ("tensorrt", "tensorrt", "tensorrt"),
}


def check_backend(backend: str) -> None:
    """InputError for an unknown backend; MissingDependencyError (naming the extra) for one not installed."""
    if backend not in _BACKEND_DEPS:
        raise InputError(f"unknown backend {backend!r}", fix=f"choose one of: {', '.join(BACKENDS)}")
    module, package, extra = _BACKEND_DEPS[backend]
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(package, extra=extra, purpose=f"the {backend} backend of `edgeml bench`")


# ----------------------------------------------------------------------------------------------- artefacts


def read_manifest(artefact: str | Path) -> dict:
    """The manifest of an export folder; a missing folder or manifest is an InputError saying how to make one."""
    artefact = Path(artefact)
    fix = "create it with `edgeml export --model MODEL --target TARGET --out DIR` and pass that DIR"
    if not artefact.is_dir():
        raise InputError("model artefact folder not found", path=artefact, fix=fix)
    if not (artefact / "manifest.json").is_file():
        raise InputError("not an export artefact (no manifest.json)", path=artefact, fix=fix)
    manifest = read_json(artefact / "manifest.json")
    if not isinstance(manifest, dict):
        raise InputError("manifest.json is not a JSON object", path=artefact / "manifest.json", fix=fix)
    return manifest


def _model_config(manifest: dict) -> dict:
    cfg = manifest.get("config") or manifest.get("model_config") or {}
    return dict(cfg) if isinstance(cfg, dict) else {}


def _model_name(manifest: dict) -> str | None:
    m = manifest.get("model")
    return m.get("name") if isinstance(m, dict) else m


def clip_settings(manifest: dict) -> dict:
    """clip_len, grid, size=(H, W) and the resize policy the model was exported for (manifest preprocessing, else
    model config; manifests written before the policy was recorded were made with the default, "crop")."""
    pre = manifest.get("preprocessing") or {}
    cfg = _model_config(manifest)
    size = pre.get("size") or (cfg.get("height"), cfg.get("width"))
    out = {"clip_len": pre.get("clip_len", cfg.get("clip_len")), "grid": pre.get("grid", cfg.get("grid")),
           "size": tuple(size) if size and None not in size else None}
    missing = [k for k, v in out.items() if v is None]
    out["resize"] = pre.get("resize", "crop")
    if missing:
        raise InputError(f"manifest lacks the clip settings {missing} needed to decode videos for this model",
                         fix="re-export the model with this edgeml version")
    return out


# ----------------------------------------------------------------------------------------------- runtimes


def torch_runtime(model: Any, input_names: Sequence[str]) -> Any:
    """A registry model behind the Runtime interface, on the GPU where torch sees one (with its sync)."""
    import torch

    from edgeml.export.runtime import TorchRuntime

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rt = TorchRuntime(model, input_names, device=device)
    rt.sync = default_sync(device)
    return rt


def _open_runtime(artefact: Path, backend: str, threads: int | None = None) -> Any:
    try:
        from edgeml.export.runtime import open_runtime
    except ImportError as e:
        raise InputError(f"the export layer is not available in this installation ({e})",
                         fix="use --backend torch with --model, or install a complete edgeml") from None
    return open_runtime(artefact, backend, threads=threads)


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads in torch and TVM (its pool reads the env at start), process-wide and for good.

    For entry points (scripts, the CLI); library code uses `cpu_threads`, which restores both afterwards.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"--threads must be an integer >= 1, got {threads!r}")
    import os

    import torch

    torch.set_num_threads(threads)
    os.environ["TVM_NUM_THREADS"] = str(threads)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """`set_threads(threads)` inside the block; torch's thread count and TVM_NUM_THREADS are restored after it."""
    import os

    import torch

    before, tvm_env = torch.get_num_threads(), os.environ.get("TVM_NUM_THREADS")
    try:
        set_threads(threads)
        yield
    finally:
        torch.set_num_threads(before)
        if tvm_env is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = tvm_env


def _export_to(model: str, target: str, out: Path, checkpoint: str | Path | None, random_init: bool) -> Path:
    try:
        from edgeml.export import export_model
    except ImportError as e:
        raise InputError(f"cannot export {model!r} for bench: the export layer is missing ({e})",
                         fix="pass --artefact DIR from `edgeml export`, or use --backend torch") from None
    export_model(model, target, out, checkpoint=checkpoint, random_init=random_init, force=True)
    return out


# ----------------------------------------------------------------------------------------------- inputs


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def _stack(items: Sequence[dict], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-clip dicts -> batched feeds {name: [B, ...]}."""
    return {k: np.stack([_as_array(it[k]) for it in items]) for k in names}


def _repeat_to(feeds_one: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """Feeds of batch 1..k -> batch `batch` by cycling the clips."""
    n = next(iter(feeds_one.values())).shape[0]
    idx = np.arange(batch) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in feeds_one.items()}


def random_feeds(model_name: str, config: dict, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors of the model's input shapes (from the registry's example inputs), values like real data."""
    import torch

    from edgeml.registry import create_model, model_spec

    spec = model_spec(model_name)
    torch.manual_seed(seed)
    example = spec.example_inputs(create_model(model_name, **config), batch)
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in zip(spec.input_names, example, strict=True):
        shape = tuple(t.shape)
        out[name] = rng.uniform(0, 255, size=shape).astype(np.float32) if name in ("iframe", "frames") \
            else rng.normal(0, 4, size=shape).astype(np.float32)
    return out


def list_videos(data: str | Path, n: int) -> list[tuple[Path, str | None]]:
    """Up to `n` (video, class folder name) pairs from `data`, taken round-robin over class folders."""
    data = Path(data)
    if data.is_file():
        return [(data, None)]
    if not data.is_dir():
        raise InputError("video folder not found", path=data, fix="pass --data DIR with video files")
    by_class: dict[str, list[Path]] = {}
    for p in sorted(data.rglob("*")):
        if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
            by_class.setdefault(p.parent.name, []).append(p)
    if not by_class:
        raise InputError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under this folder", path=data)
    out: list[tuple[Path, str | None]] = []
    queues = [list(v) for v in by_class.values()]
    while len(out) < n and any(queues):
        for cls, q in zip(by_class, queues, strict=True):
            if q and len(out) < n:
                out.append((q.pop(0), cls))
    return out


# ----------------------------------------------------------------------------------------------- energy


# The op-count energy table that matches each backend's arithmetic (edgeml.bench.energy.TABLES).
ENERGY_TABLES = {"ort-int8": "45nm-int8", "ort-fp16": "45nm-fp16"}


def estimate_energy_per_clip(model: Any, feeds: dict[str, np.ndarray], input_names: Sequence[str],
                             table: str = "45nm") -> dict:
    """Op-count energy estimate of one clip (batch 1) -> {"joules", "table", "pj_per_mac", "macs", "acs", ...}."""
    import torch

    try:
        from edgeml.bench.energy import estimate_energy
        from edgeml.bench.opcount import count_ops
    except ImportError as e:
        return {"joules": None, "error": f"op-count estimate unavailable ({e})"}
    inputs = tuple(torch.from_numpy(np.ascontiguousarray(feeds[k][:1])) for k in input_names)
    with torch.inference_mode():
        ops = count_ops(model.eval(), inputs)
    est = estimate_energy(ops, table)
    rates = getattr(ops, "spike_rates", None)
    return {**est.as_dict(), "joules": float(est.joules),
            "mean_spike_rate": float(np.mean(list(rates.values()))) if isinstance(rates, dict) and rates else None}


def _measured_energy(readings: list, videos: int) -> dict:
    ok = [r for r in readings if r.joules is not None]
    total = sum(r.joules for r in ok)
    return {"method": "measured", "label": f"measured ({'+'.join(sorted({r.source for r in ok}))})",
            "joules_total": total, "joules_per_video": total / videos if videos else None,
            "readings": [r.to_dict() for r in readings]}


# ----------------------------------------------------------------------------------------------- bench


def bench(*, model: str | None = None, artefact: str | Path | None = None, backend: str = "ort",
          target: str | None = None, input: str = "random", data: str | Path | None = None, videos: int = 8,
          checkpoint: str | Path | None = None, random_init: bool = False, batch_sizes: Sequence[int] = (1, 2, 4, 8),
          warmup: int = 3, repeats: int = 20, max_seconds: float = 10.0, threads: int | None = None,
          out: str | Path | None = None, meters: MeterSet | None = None, progress: bool = True,
          engine: str = "local", address: str | None = None, workers: int | None = None) -> dict:
    """Benchmark `model` (or the export folder `artefact`) on `backend`; returns the results dict (schema 1).

    `input="data"` decodes `videos` files from `data` end to end and times the model on their clips;
    `input="random"` times the model only, on random tensors. `threads` fixes the CPU threads of every backend
    (recorded; on a shared machine 1 thread avoids the collapse of spinning thread pools) for this call only:
    torch's thread count and TVM_NUM_THREADS are restored when it returns. `out` writes the JSON.
    `engine="ray"` (with `input="data"`) also fans the videos out over `workers` Ray workers (None: every CPU of the
    cluster at `address`, or of a local instance started for the call), each holding one session with `threads`
    threads (default 1) -> results["ray"]: aggregate videos/s next to the single-process figure.
    """
    from edgeml.video.engines import check_engine

    check_backend(backend)
    check_engine(engine, address)
    if input not in ("data", "random"):
        raise InputError(f"unknown --input {input!r}", fix="use 'data' (real videos) or 'random'")
    if input == "data" and data is None:
        raise InputError("--input data needs --data DIR (a folder of videos)")
    if engine == "ray" and input != "data":
        raise InputError("--engine ray fans videos out over workers: it needs --input data --data DIR")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be an integer >= 1, got {workers!r}")
    if videos < 1:
        raise InputError(f"--videos must be >= 1, got {videos}")
    if repeats < 1 or warmup < 0 or not batch_sizes or min(batch_sizes) < 1:
        raise InputError(f"need --repeats >= 1, --warmup >= 0 and batch sizes >= 1, got repeats={repeats}, "
                         f"warmup={warmup}, batch sizes={list(batch_sizes)}")
    if out is not None:
        if Path(out).is_dir():
            raise InputError("--out is a folder; bench writes one JSON file", path=out,
                             fix="pass a file path such as results.json")
        inputs = [artefact, checkpoint, data]
        inputs += [p for d in (artefact, data) if d is not None and Path(d).is_dir() for p in Path(d).rglob("*")]
        refuse_overwrite(out, inputs)
    meters = meters if meters is not None else open_meters(sensors=_profile_sensors(artefact))
    with cpu_threads(threads), tempfile.TemporaryDirectory(prefix="edgeml-bench-") as tmp:
        given_artefact = artefact
        manifest, runtime, torch_model, artefact = _prepare(model, artefact, backend, target, checkpoint,
                                                            random_init, Path(tmp), threads)
        model_name = model or _model_name(manifest)
        config = _model_config(manifest) if manifest else {}
        input_names = list(runtime.input_names)
        results: dict[str, Any] = {
            "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": model_name, "config": config, "backend": backend,
            "target": target or manifest.get("target") if manifest else target,
            "artefact": str(given_artefact) if given_artefact else ("exported for this run" if artefact else None),
            "input": input,
            "weights": _weights_note(manifest, checkpoint, random_init),
            "environment": {**runtime_environment(), "threads_requested": threads, "platform": platform.platform(),
                            "machine": platform.machine(), "processor": platform.processor()},
            "end_to_end": None, "accuracy": None,
        }
        if isinstance(results["target"], dict):
            results["target"] = results["target"].get("name")

        sample_feeds: dict[str, np.ndarray]
        n_videos = videos
        if input == "data":
            e2e, sample_feeds, readings = _end_to_end(runtime, input_names, manifest, data, videos, meters,
                                                      progress)
            results["end_to_end"] = e2e["timing"]
            results["accuracy"] = e2e["accuracy"]
            if engine == "ray":
                spec = {"artefact": str(artefact), "backend": backend} if artefact is not None else \
                    {"model": model_name, "checkpoint": None if checkpoint is None else str(checkpoint)}
                results["ray"] = _end_to_end_ray(spec, clip_settings(manifest), list_videos(data, videos), workers,
                                                 address, threads, e2e["timing"]["videos_per_s"])
            n_videos = e2e["timing"]["videos"]
            clips_per_video = e2e["timing"]["clips"] / max(n_videos, 1)
        else:
            sample_feeds = random_feeds(model_name, config, 1)
            if sorted(sample_feeds) != sorted(input_names):
                raise InputError(f"the artefact's inputs {input_names} are not model {model_name!r}'s inputs "
                                 f"{sorted(sample_feeds)}", path=artefact,
                                 fix="re-export the model with `edgeml export`, or pass the matching --model")
            readings, clips_per_video = [], 1.0

        results["model_only"] = _model_only(runtime, sample_feeds, batch_sizes, warmup, repeats, max_seconds,
                                            meters, fixed_batch=_fixed_batch(manifest))
        results["energy"] = _energy(readings, n_videos, clips_per_video, results["model_only"], meters,
                                    torch_model, model_name, config, manifest, checkpoint, sample_feeds,
                                    input_names, artefact, backend, results["end_to_end"])
        results["summary"] = _summary(results)
    if out is not None:
        write_json(out, results)
    return results


def _weights_note(manifest: dict, checkpoint: str | Path | None, random_init: bool) -> str:
    if checkpoint:
        return str(checkpoint)
    w = manifest.get("weights") if manifest else None
    if w:
        return w if isinstance(w, str) else str(w.get("source") or w.get("checkpoint") or w)
    return "random init" if random_init else "unknown"


def _prepare(model: str | None, artefact: str | Path | None, backend: str, target: str | None,
             checkpoint: str | Path | None, random_init: bool, tmp: Path,
             threads: int | None = None) -> tuple[dict, Any, Any, Path | None]:
    """(manifest, runtime, torch model or None, artefact folder or None) for the requested model and backend."""
    if artefact is None and model is None:
        raise InputError("nothing to benchmark", fix="pass --model NAME or --artefact DIR")
    if artefact is None and backend == "torch":
        from edgeml.registry import create_model, model_spec

        if checkpoint is None and not random_init:
            raise InputError(f"no weights for {model!r}", fix="pass --checkpoint PATH, or --random-init for timing")
        m = create_model(model, checkpoint=checkpoint)
        manifest = {"model": model, "config": _config_of(model, checkpoint), "target": target}
        return manifest, torch_runtime(m, model_spec(model).input_names), m, None
    if artefact is None:
        if target is None:
            raise InputError("--backend other than torch needs --target PROFILE (or --artefact DIR)")
        artefact = _export_to(model, target, tmp / "artefact", checkpoint, random_init)
    manifest = read_manifest(artefact)
    if model is not None and _model_name(manifest) not in (None, model):
        raise InputError(f"artefact holds model {_model_name(manifest)!r}, not {model!r}", path=artefact)
    return manifest, _open_runtime(Path(artefact), backend, threads), None, Path(artefact)


def _config_of(model: str, checkpoint: str | Path | None) -> dict:
    from edgeml.registry import model_spec

    cfg = dict(model_spec(model).defaults)
    if checkpoint is not None:
        from edgeml.io import load_checkpoint

        cfg.update(load_checkpoint(checkpoint, expect_model=model)[1].get("config", {}))
    return cfg


def _end_to_end(runtime: Any, input_names: list[str], manifest: dict, data: str | Path, n: int, meters: MeterSet,
                progress: bool) -> tuple[dict, dict[str, np.ndarray], list]:
    """Decode + extract + model over `n` videos, under every meter. -> (results, clips of video 0, readings)."""
    from edgeml.video.clips import extract_clips

    settings = clip_settings(manifest)
    classes = manifest.get("classes") or _model_config(manifest).get("classes")
    files = list_videos(data, n)
    per_video, split = [], {"decode": 0.0, "kernels": 0.0, "model": 0.0, "other": 0.0}
    cpu = {"decode": 0.0, "kernels": 0.0}  # the front end's own CPU time (thread time of decode and kernels)
    correct, labelled, clips_total = 0, 0, 0
    first_feeds: dict[str, np.ndarray] | None = None
    # one untimed video warms the runtime (lazy init, allocator) so video 0 is not an outlier
    _run_video(runtime, input_names, extract_clips, files[0][0], settings)
    with Progress(progress, transient=True) as bar, meters.measure() as readings:
        task = bar.add("end-to-end", len(files))
        wall0 = time.perf_counter()
        for path, cls in files:
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            logits, feeds, t_model = _run_video(runtime, input_names, extract_clips, path, settings, timings)
            dt = time.perf_counter() - t0
            per_video.append(dt)
            dec, ker = timings.get("decode", 0.0), timings.get("kernels", 0.0)
            split["decode"] += dec
            split["kernels"] += ker
            split["model"] += t_model
            split["other"] += max(dt - dec - ker - t_model, 0.0)
            cpu["decode"] += timings.get("decode_cpu", 0.0)
            cpu["kernels"] += timings.get("kernels_cpu", 0.0)
            clips_total += next(iter(feeds.values())).shape[0]
            first_feeds = feeds if first_feeds is None else first_feeds
            if classes and cls in classes:
                labelled += 1
                correct += int(int(np.argmax(logits)) == classes.index(cls))
            bar.advance(task)
        wall = time.perf_counter() - wall0
    from edgeml.bench.timing import Timing

    t = Timing(batch=1, warmup=1, samples=per_video)
    timing = {"videos": len(files), "clips": clips_total, "wall_s": wall, "videos_per_s": len(files) / wall,
              "latency": t.summary(), "split_s": split,
              "split_fraction": {k: v / wall for k, v in split.items()}, "settings": settings,
              "front_end_cpu_s": cpu, "front_end_cpu_s_per_video": (cpu["decode"] + cpu["kernels"]) / len(files)}
    accuracy = {"top1": correct / labelled, "correct": correct, "videos": labelled} if labelled else None
    return {"timing": timing, "accuracy": accuracy}, first_feeds, list(readings)


def _run_video(runtime: Any, input_names: list[str], extract_clips: Callable, path: Path, settings: dict,
               timings: dict | None = None) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """All clips of one video through the runtime, one clip per call -> (mean logits, feeds, model seconds)."""
    # P-frames are converted to RGB only for models that read RGB frames (the RGB baselines), never for video_spiking
    clips = extract_clips(path, clip_len=settings["clip_len"], grid=settings["grid"], size=settings["size"],
                          resize=settings.get("resize", "crop"),
                          frames="frames" in input_names, timings=timings)
    if not clips:
        raise InputError("no complete clip in this video (too short for the clip length)", path=path)
    feeds = _stack(clips, input_names)
    t0 = time.perf_counter()
    # one clip per call: exported graphs may have a fixed batch of 1, and edge devices stream clips anyway
    logits = [runtime.run({k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(len(clips))]
    t_model = time.perf_counter() - t0
    return np.mean(np.concatenate(logits), axis=0), feeds, t_model


class VideoWorker:
    """A Ray actor (`edgeml bench --engine ray`): one runtime session, opened once, that takes videos end to end."""

    def __init__(self, spec: dict, settings: dict, threads: int) -> None:
        set_threads(threads)  # this actor's own process
        if "artefact" in spec:
            self.runtime = _open_runtime(Path(spec["artefact"]), spec["backend"], threads)
        else:
            from edgeml.registry import create_model, model_spec

            model = create_model(spec["model"], checkpoint=spec["checkpoint"])
            self.runtime = torch_runtime(model, model_spec(spec["model"]).input_names)
        self.input_names = list(self.runtime.input_names)
        self.settings = settings

    def run(self, path: str) -> dict:
        """One video: decode + extraction + model -> its seconds, split and predicted class."""
        from edgeml.video.clips import extract_clips

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        logits, feeds, t_model = _run_video(self.runtime, self.input_names, extract_clips, Path(path), self.settings,
                                            timings)
        return {"seconds": time.perf_counter() - t0, "model": t_model, "decode": timings.get("decode", 0.0),
                "kernels": timings.get("kernels", 0.0), "clips": int(next(iter(feeds.values())).shape[0]),
                "top": int(np.argmax(logits))}


def _end_to_end_ray(spec: dict, settings: dict, files: list[tuple[Path, str | None]], workers: int | None,
                    address: str | None, threads: int | None, single_videos_per_s: float) -> dict:
    """The same videos as Ray tasks over `workers` VideoWorker actors (one session each, `threads` threads, default
    1), after one untimed video per actor -> aggregate videos/s and its ratio to the single-process figure. The
    artefact (or checkpoint) and the videos must be on storage every node sees."""
    from edgeml.video.engines import ray_session

    per_worker = threads or 1
    with ray_session(address, workers, "`edgeml bench --engine ray`") as ray:
        from ray.util import ActorPool

        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(VideoWorker)
        actors = [actor.remote(spec, settings, per_worker) for _ in range(n)]
        try:
            ray.get([a.run.remote(str(files[0][0])) for a in actors])  # sessions open, lazy init done: untimed
            t0 = time.perf_counter()
            rows = list(ActorPool(actors).map_unordered(lambda a, v: a.run.remote(v), [str(p) for p, _ in files]))
            wall = time.perf_counter() - t0
        finally:
            for a in actors:
                ray.kill(a)
    from edgeml.bench.timing import Timing

    rate = len(files) / wall
    return {"engine": "ray", "workers": n, "threads_per_worker": per_worker, "videos": len(files),
            "clips": sum(r["clips"] for r in rows), "wall_s": wall, "videos_per_s": rate,
            "single_process_videos_per_s": single_videos_per_s, "speedup_vs_single_process": rate / single_videos_per_s,
            "latency": Timing(batch=1, warmup=1, samples=[r["seconds"] for r in rows]).summary(),
            "split_s": {k: sum(r[k] for r in rows) for k in ("decode", "kernels", "model")}}


def _fixed_batch(manifest: dict) -> int | None:
    """The batch size an export was built for, when its graph has a fixed batch dimension."""
    if manifest.get("dynamic_batch") is False and isinstance(manifest.get("batch"), int):
        return manifest["batch"]
    return None


def _model_only(runtime: Any, feeds: dict[str, np.ndarray], batch_sizes: Sequence[int], warmup: int, repeats: int,
                max_seconds: float, meters: MeterSet, fixed_batch: int | None = None) -> dict:
    """Runtime latency at each batch size; a batch the artefact cannot take is recorded with the reason."""
    sync = getattr(runtime, "sync", None)  # the backend's own synchronisation, where it has one
    timer = cuda_event_timer if str(getattr(runtime, "device", "cpu")).startswith("cuda") else host_timer
    rows = []
    if fixed_batch is not None and fixed_batch not in batch_sizes:
        batch_sizes = [fixed_batch, *batch_sizes]
    for b in batch_sizes:
        if fixed_batch is not None and b != fixed_batch:
            rows.append({"batch": b, "error": f"not run: the artefact was exported with a fixed batch of {fixed_batch}"
                                              " (export with a dynamic batch to sweep)"})
            continue
        fb = _repeat_to(feeds, b)
        try:
            runtime.run(fb)
        except Exception as e:  # a fixed-batch graph rejects other batch sizes; record why, keep going
            rows.append({"batch": b, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            continue
        with meters.measure() as readings:
            (t,) = throughput_sweep(lambda _b, fb=fb: (lambda: runtime.run(fb)), [b], warmup=warmup,
                                    repeats=repeats, max_seconds=max_seconds, sync=sync, timer=timer)
        row = t.summary()
        ok = [r for r in readings if r.joules is not None]
        if ok:
            row["joules_per_item"] = sum(r.joules for r in ok) / (t.repeats * b)  # warm-up is inside: upper bound
        rows.append(row)
    return {"batches": rows}


def _energy(readings: list, videos: int, clips_per_video: float, model_only: dict, meters: MeterSet,
            torch_model: Any, model_name: str, config: dict, manifest: dict, checkpoint: Any,
            feeds: dict[str, np.ndarray], input_names: list[str], artefact: str | Path | None, backend: str,
            end_to_end: dict | None = None) -> dict:
    """J/video: measured over the whole end-to-end span where a sensor read it; else the model's op-count estimate
    with, beside it, the front end's measured CPU-seconds per video (each labelled)."""
    if readings and any(r.joules is not None for r in readings):
        out = _measured_energy(readings, videos)
        out["scope"] = "end-to-end (decode + extraction + model), whole sensor scope incl. idle power"
    elif meters.measured:
        rows = [r for r in model_only["batches"] if "joules_per_item" in r]
        out = {"method": "measured", "label": f"measured ({'+'.join(sorted({m.source for m in meters.meters}))})",
               "joules_per_video": rows[0]["joules_per_item"] * clips_per_video if rows else None,
               "scope": f"model only, batch {rows[0]['batch']}" if rows else "no valid reading"}
    else:
        model = torch_model or _model_for_estimate(model_name, config, manifest, checkpoint, artefact)
        est = estimate_energy_per_clip(model, feeds, input_names, ENERGY_TABLES.get(backend, "45nm"))
        est["weights"] = getattr(model, "_edgeml_weights", "as exported")
        per_video = None if est["joules"] is None else est["joules"] * clips_per_video
        out = {"method": "estimated", "label": ESTIMATED_LABEL, "joules_per_video": per_video,
               "joules_per_clip": est["joules"], "clips_per_video": clips_per_video, "estimate": est,
               "scope": "model only (op count x energy table); decode and extraction are not in it"}
        if end_to_end is not None:
            out["front_end"] = {"cpu_s_per_video": end_to_end["front_end_cpu_s_per_video"],
                                "cpu_s": end_to_end["front_end_cpu_s"], "label": FRONT_END_LABEL}
            out["scope"] += ": the front end's measured CPU-seconds per video stand beside it"
    out["problems"] = list(meters.problems)
    return out


def _model_for_estimate(model_name: str, config: dict, manifest: dict, checkpoint: Any,
                        artefact: str | Path | None) -> Any:
    """The torch model matching the artefact, for op counting (spike rates depend on the weights).

    Weights: the artefact's own model.safetensors, else the checkpoint it was exported from, else random init
    (then the estimate says so: an untrained network's spike rates are not the trained one's).
    """
    from edgeml.registry import create_model

    candidates = [checkpoint, Path(artefact) / "model.safetensors" if artefact else None]
    if isinstance(manifest.get("weights"), dict):
        candidates.append(manifest["weights"].get("checkpoint"))
    for ckpt in candidates:
        if ckpt and Path(ckpt).is_file():
            model = create_model(model_name, checkpoint=ckpt)
            model._edgeml_weights = str(ckpt)
            return model
    model = create_model(model_name, **config)
    model._edgeml_weights = "random init (no checkpoint found): spike rates of an untrained network"
    return model


def _summary(r: dict) -> dict:
    """The few figures a reader wants first."""
    b1 = next((b for b in r["model_only"]["batches"] if "median_s" in b), None)
    best = max((b for b in r["model_only"]["batches"] if "items_per_s" in b), key=lambda b: b["items_per_s"],
               default=None)
    e2e = r["end_to_end"]
    return {
        "videos_per_s": e2e["videos_per_s"] if e2e else None,
        "video_latency_median_s": e2e["latency"]["median_s"] if e2e else None,
        "clip_latency_median_s": b1["median_s"] if b1 else None,
        "clip_latency_p99_s": b1["p99_s"] if b1 else None,
        "clips_per_s_best": best["items_per_s"] if best else None,
        "joules_per_video": r["energy"]["joules_per_video"],
        "energy_label": r["energy"]["label"],
        "accuracy": r["accuracy"]["top1"] if r["accuracy"] else None,
        "front_end_cpu_s_per_video": e2e.get("front_end_cpu_s_per_video") if e2e else None,
        "videos_per_s_ray": r["ray"]["videos_per_s"] if r.get("ray") else None,
    }


def _profile_sensors(artefact: str | Path | None) -> list[str] | None:
    """The `[power] sensors` of the profile an artefact was exported for (its manifest); None (scan the host)
    when there is no artefact or the profile names none."""
    manifest = Path(artefact) / "manifest.json" if artefact is not None else None
    if manifest is None or not manifest.is_file():
        return None
    sensors = read_json(manifest).get("power_sensors")
    return [str(x) for x in sensors] if isinstance(sensors, list) and sensors else None


# ----------------------------------------------------------------------------------------------- results files


# key -> type of a results document's parts that the report reads (checked when a results file is loaded)
_RESULT_PARTS: dict[str, type | tuple[type, ...]] = {"input": str, "summary": dict, "model_only": dict,
                                                     "energy": dict, "environment": dict,
                                                     "end_to_end": (dict, type(None))}
_SUMMARY_KEYS = ("videos_per_s", "video_latency_median_s", "clip_latency_median_s", "clip_latency_p99_s",
                 "clips_per_s_best", "joules_per_video", "energy_label", "accuracy")


def load_results(path: str | Path) -> dict:
    """A results JSON written by `bench`; a folder, a non-JSON file, another schema or schema version, or a
    document missing the parts the report reads is an InputError saying what to do."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a folder, not a results file", path=path,
                         fix="pass the JSON files written by `edgeml bench --out`")
    r = read_json(path)
    schema = r.get("schema") if isinstance(r, dict) else None
    if schema != SCHEMA:
        raise InputError(f"not an edgeml bench results file (schema {schema!r}, expected {SCHEMA!r})", path=path,
                         fix="pass files written by `edgeml bench --out`")
    if r.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"results schema version {r.get('schema_version')!r}, but this edgeml reads version "
                         f"{SCHEMA_VERSION}", path=path,
                         fix="re-run `edgeml bench` with this edgeml version, or report with the edgeml that wrote it")
    bad = [k for k, kind in _RESULT_PARTS.items() if not isinstance(r.get(k), kind)]
    bad += [f"summary.{k}" for k in _SUMMARY_KEYS if "summary" not in bad and k not in r["summary"]]
    if "model_only" not in bad and not (isinstance(r["model_only"].get("batches"), list)
                                        and all(isinstance(b, dict) for b in r["model_only"]["batches"])):
        bad.append("model_only.batches")
    if "energy" not in bad and not {"label", "method", "joules_per_video"} <= set(r["energy"]):
        bad.append("energy.label/method/joules_per_video")
    if bad:
        raise InputError(f"results file lacks or mistypes {', '.join(bad)}", path=path,
                         fix="pass files written by `edgeml bench --out` (unedited)")
    return r
