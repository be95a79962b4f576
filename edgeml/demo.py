"""`edgeml demo`: the main job end to end on built-in data, with every step cached.

synth video set -> compressed-domain clip cache -> train video_spiking (small) -> export for x86-cpu and
jetson -> bench (end-to-end on the held-out synth videos, per backend) -> report.

Each step writes its output atomically (by the API it calls) and then a stamp `<out>/.stamps/<step>.json`
with the settings it ran with; on a second run a step is skipped when its stamp matches and its output still
checks out (the checkpoint loads, the manifest reads, the results file has the right schema). A step whose
code is not in this installation fails with a message naming it — nothing is faked.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeml.errors import EdgeMLError, InputError
from edgeml.io import write_json

MODEL = "video_spiking"
TARGETS = ("x86-cpu", "jetson", "x86-tvm")
# Exports benchmarked here, per backend: the x86 profiles run on this machine; the jetson folder (ONNX + TensorRT
# build script) is built and validated, and runs on the device.
BENCH_TARGETS = {"tvm": "x86-tvm"}
BENCH_TARGET = "x86-cpu"

# Sized for <= 15 minutes on 2 cores (measured end to end; see the step times the demo prints).
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "per_class": 24,
    "size": (64, 64),
    "clip_len": 8,
    "grid": 4,
    "model_size": "small",
    "epochs": 8,
    "batch_size": 16,
    "lr": 2e-3,
    "calib_samples": 32,
    "parity_samples": 16,
    "eval_samples": 64,
    "bench_videos": 32,
    "bench_repeats": 20,
    "batch_sizes": (1, 4),
    "backends": ("torch", "ort", "ort-int8", "tvm"),
    # One CPU thread everywhere: the same for every backend (a fair comparison) and no spinning thread pools
    # fighting over 2 shared cores (torch eager at 2 threads ran ~8x slower than at 1 on a loaded machine).
    "threads": 1,
}


class StepUnavailable(EdgeMLError):
    """A demo step whose implementation is missing from this installation."""


@dataclass
class Step:
    """One cached stage: `run()` makes `output`; `valid()` says whether an existing output is usable."""

    name: str
    output: Path
    run: Callable[[], Any]
    valid: Callable[[], bool]
    params: dict = field(default_factory=dict)
    feeds_later: bool = True  # when it re-runs, every later step re-runs too (its input changed)


def _need(module: str, what: str, step: str) -> None:
    """StepUnavailable unless `module` can be imported (checked before a step starts, so nothing is half done)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise StepUnavailable(f"demo step {step!r} needs {what} ({module}), which this installation does not have "
                              "yet", fix="the steps before it are cached; re-run `edgeml demo` once it exists")


def _tvm_records(target: str) -> dict[str, str]:
    """{"tvm_records": sha256} of the tuning records edgeml ships for the demo model on a TVM target (the export
    builds its TVM library from them, no tuner run), so new records re-run the export; {} for other targets."""
    from edgeml.export.targets import load_profile
    from edgeml.export.tvm import RECORD_FILES, shipped_records
    from edgeml.io import sha256_file

    profile = load_profile(target)
    records = shipped_records(MODEL, profile.name) if profile.wants_tvm else None
    return {"tvm_records": sha256_file(records / RECORD_FILES[1])} if records else {}


def _quietly(check: Callable[[], Any]) -> bool:
    try:
        return bool(check())
    except (EdgeMLError, OSError, ValueError, KeyError):
        return False


class Demo:
    """The demo pipeline over one working folder `out`, writing the report to `report`."""

    def __init__(self, out: str | Path = "runs/demo", report: str | Path = "report", *, force: bool = False,
                 progress: bool = True, **overrides: Any):
        unknown = set(overrides) - set(DEFAULTS)
        if unknown:
            raise InputError(f"unknown demo settings {sorted(unknown)}", fix=f"use: {', '.join(DEFAULTS)}")
        self.cfg = {**DEFAULTS, **overrides}
        self.out = Path(out)
        self.report_dir = Path(report)
        for flag, folder in (("--out", self.out), ("--report", self.report_dir)):  # checked before any long step
            if folder.exists() and not folder.is_dir():
                raise InputError(f"{flag} is a file, not a folder", path=folder, fix="pass a folder path")
        for key in ("epochs", "threads"):
            if isinstance(self.cfg[key], bool) or not isinstance(self.cfg[key], int) or self.cfg[key] < 1:
                raise InputError(f"demo setting {key!r} must be an integer >= 1, got {self.cfg[key]!r}")
        self.force = force
        self.progress = progress
        self.times: dict[str, tuple[str, float]] = {}

    # -- paths
    @property
    def synth(self) -> Path:
        return self.out / "synth"

    @property
    def clips(self) -> Path:
        return self.out / "clips"

    @property
    def train_dir(self) -> Path:
        return self.out / "train"

    @property
    def checkpoint(self) -> Path:
        return self.train_dir / "best.safetensors"

    def artefact(self, target: str) -> Path:
        return self.out / "export" / target

    def bench_target(self, backend: str) -> str:
        return BENCH_TARGETS.get(backend, BENCH_TARGET)

    def result(self, backend: str) -> Path:
        return self.out / "results" / f"{self.bench_target(backend)}-{backend}.json"

    # -- steps
    def steps(self) -> list[Step]:
        c = self.cfg
        video = {"seed": c["seed"], "per_class": c["per_class"], "size": list(c["size"])}
        clip = {**video, "clip_len": c["clip_len"], "grid": c["grid"]}
        train = {**clip, "model_size": c["model_size"], "epochs": c["epochs"], "batch_size": c["batch_size"],
                 "lr": c["lr"]}
        steps = [
            Step("synth", self.synth, self._make_synth, lambda: _quietly(self._test_videos), video),
            Step("clips", self.clips, self._make_clips, lambda: _quietly(self._clip_count), clip),
            Step("train", self.checkpoint, self._train, lambda: _quietly(self._checkpoint_ok), train),
        ]
        for t in TARGETS:
            export = {k: c[k] for k in ("calib_samples", "parity_samples", "eval_samples")}
            steps.append(Step(f"export-{t}", self.artefact(t), lambda t=t: self._export(t),
                              lambda t=t: _quietly(lambda: self._artefact_ok(t)),
                              {**train, **export, "target": t, **_tvm_records(t)}))
        for b in c["backends"]:
            steps.append(Step(f"bench-{b}", self.result(b), lambda b=b: self._bench(b),
                              lambda b=b: _quietly(lambda: self._result_ok(b)),
                              {**train, "backend": b, "videos": c["bench_videos"], "repeats": c["bench_repeats"],
                               "threads": c["threads"],
                               "batch_sizes": list(c["batch_sizes"])}, feeds_later=False))
        return steps

    def _make_synth(self) -> None:
        _need("edgeml.video.synth", "the synthetic video set", "synth")
        from edgeml.video.synth import make_synth_dataset

        make_synth_dataset(self.synth, per_class=self.cfg["per_class"], size=tuple(self.cfg["size"]),
                           seed=self.cfg["seed"])

    def _test_videos(self) -> list[Path]:
        """The held-out synth videos (test split when the set names one, else every video)."""
        from edgeml.bench.run import VIDEO_SUFFIXES

        test = self.synth / "test"
        base = test if test.is_dir() else self.synth
        files = sorted(p for p in base.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise InputError("no videos", path=base)
        return files

    def _make_clips(self) -> None:
        _need("edgeml.video.datasets", "the clip cache builder", "clips")
        from edgeml.video.datasets import build_clip_cache

        build_clip_cache(self.synth, self.clips, clip_len=self.cfg["clip_len"], grid=self.cfg["grid"],
                         size=tuple(self.cfg["size"]), workers=2)

    def _clip_count(self) -> int:
        from edgeml.video.datasets import ClipDataset

        return len(ClipDataset(self.clips, "train"))

    def _train(self) -> None:
        _need("edgeml.training.loop", "the training loop", "train")
        _need("edgeml.models.video_spiking", "the video_spiking model", "train")
        from edgeml.training.loop import train_from_args

        # What `edgeml train` does: the seed also fixes the initial weights, so a rerun reproduces the demo.
        c = self.cfg
        train_from_args(MODEL, self.clips, self.train_dir, size=c["model_size"], epochs=c["epochs"],
                        batch_size=c["batch_size"], lr=c["lr"], seed=c["seed"], force=True)

    def _checkpoint_ok(self) -> bool:
        from edgeml.registry import create_model

        create_model(MODEL, checkpoint=self.checkpoint)  # fails when the model code changed since training
        return True

    def _export(self, target: str) -> None:
        _need("edgeml.export", "the export layer", f"export-{target}")
        from edgeml.export import export_model

        c = self.cfg
        export_model(MODEL, target, self.artefact(target), checkpoint=self.checkpoint, data=self.clips, force=True,
                     calib_samples=c["calib_samples"], parity_samples=c["parity_samples"],
                     eval_samples=c["eval_samples"], log=lambda s: print(f"[demo]   {s}", flush=True))

    def _artefact_ok(self, target: str) -> bool:
        from edgeml.bench.run import read_manifest
        from edgeml.registry import create_model

        read_manifest(self.artefact(target))
        create_model(MODEL, checkpoint=self.artefact(target) / "model.safetensors")
        return (self.artefact(target) / "model.onnx").is_file()

    def _bench(self, backend: str) -> None:
        from edgeml.bench.run import bench

        c = self.cfg
        target = self.bench_target(backend)
        bench(model=MODEL, artefact=self.artefact(target), backend=backend, target=target,
              input="data", data=self._bench_folder(), videos=c["bench_videos"], batch_sizes=c["batch_sizes"],
              repeats=c["bench_repeats"], threads=c["threads"], out=self.result(backend), progress=self.progress)

    def _bench_folder(self) -> Path:
        test = self.synth / "test"
        return test if test.is_dir() else self.synth

    def _result_ok(self, backend: str) -> bool:
        from edgeml.bench.run import load_results

        load_results(self.result(backend))
        return True

    # -- running
    def _stamp(self, step: Step) -> Path:
        return self.out / ".stamps" / f"{step.name}.json"

    def is_cached(self, step: Step) -> bool:
        stamp = self._stamp(step)
        if self.force or not stamp.is_file():
            return False
        try:
            saved = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return saved.get("params") == json.loads(json.dumps(step.params)) and step.valid()

    def run(self, say: Callable[[str], None] = print) -> dict[str, Path]:
        """Run (or reuse) every step, then write the report; returns {"html", "markdown"}."""
        from edgeml.bench.report import write_report
        from edgeml.bench.run import cpu_threads

        with cpu_threads(self.cfg["threads"]):  # torch/TVM threads for the demo only, restored afterwards
            skipped_backends = self.run_steps(self.steps(), say)
        results = [self.result(b) for b in self.cfg["backends"] if self.result(b).is_file()]
        if not results:
            raise EdgeMLError("no backend could be benchmarked", fix="; ".join(skipped_backends) or None)
        paths = write_report(results, self.report_dir)
        say(f"[demo] report: {paths['html'].resolve()}  (markdown: {paths['markdown'].resolve()})")
        return paths

    def run_steps(self, steps: list[Step], say: Callable[[str], None] = print) -> list[str]:
        """Run each step unless cached; returns the backends skipped (with why). A step raising stops the demo."""
        skipped_backends = []
        upstream_ran = False
        for step in steps:
            if not upstream_ran and self.is_cached(step):
                self.times[step.name] = ("cached", 0.0)
                say(f"[demo] {step.name}: cached ({step.output})")
                continue
            if step.name.startswith("bench-") and (why := self._backend_unusable(step.name[6:])):
                self.times[step.name] = ("skipped", 0.0)
                skipped_backends.append(f"{step.name[6:]} ({why})")
                say(f"[demo] {step.name}: skipped — {why}")
                continue
            say(f"[demo] {step.name}: running")
            t0 = time.perf_counter()
            step.run()
            dt = time.perf_counter() - t0
            if not step.valid():
                raise EdgeMLError(f"demo step {step.name!r} finished but its output does not check out",
                                  path=step.output, fix="re-run with --force; if it persists, report a bug")
            write_json(self._stamp(step), {"params": step.params, "seconds": dt,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            self.times[step.name] = ("ran", dt)
            upstream_ran = upstream_ran or step.feeds_later
            say(f"[demo] {step.name}: done in {dt:.1f} s")
        return skipped_backends

    def _backend_unusable(self, backend: str) -> str | None:
        """Why a backend cannot be benchmarked here (not installed / not in the artefact), else None."""
        from edgeml.bench.run import check_backend

        try:
            check_backend(backend)
        except EdgeMLError as e:
            return str(e)
        target = self.bench_target(backend)
        art = self.artefact(target)
        if backend == "ort-int8" and not (art / "model.int8.onnx").is_file():
            return f"the {target} export has no model.int8.onnx"
        if backend == "tvm" and not (art / "tvm").is_dir():
            return f"the {target} export has no tvm/ folder"
        return None


def run_demo(out: str | Path = "runs/demo", report: str | Path = "report", *, force: bool = False,
             **overrides: Any) -> dict[str, Path]:
    """`edgeml demo`: run every step of the demo (reusing cached ones) and return the report paths."""
    demo = Demo(out, report, force=force, **overrides)
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    paths = demo.run()
    total, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    # CPU seconds beside wall time: on a shared machine the wall time says more about the neighbours
    print("[demo] steps: " + ", ".join(f"{k} {how} {dt:.0f}s" for k, (how, dt) in demo.times.items())
          + f"; total {total:.0f} s wall, {cpu:.0f} s CPU (this process and its workers)")
    return paths


def _cpu_seconds() -> float:
    import resource

    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
