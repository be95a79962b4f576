"""ONNX -> TVM Relax -> compiled library for the profile's target (extra `[tvm]`, apache-tvm 0.27).

x86 (`host_runnable = true`) builds `tvm/model.so` that runs here (checked for parity by validate). Cross targets
(aarch64 for rpi4) build `tvm/model.tar` (objects) and, where the cross linker from the profile
(`aarch64-linux-gnu-g++`) is installed, `tvm/model.so`. Every build imports with fast math and fuses kernels.

The convolution/matmul kernels get MetaSchedule schedules from one of two places:
- shipped records (`edgeml/assets/<model>/tvm/<profile>/`, the best schedule per kernel, as TVM's pre-tuned logs):
  applied without running the tuner; kernels the records do not cover (another model size) stay untuned;
- `tune_trials > 0`: tuning from scratch on this machine, reporting progress (tasks and trials done, best latency).
Either way the records used are copied to `tvm/tuning/` of the artefact and the rest of the kernels are vectorised.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeml.errors import ExportError, MissingDependencyError

if TYPE_CHECKING:
    from edgeml.export.targets import TVMSettings


def import_tvm() -> Any:
    try:
        import tvm
        from tvm import relax  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError("apache-tvm", extra="tvm", purpose=f"TVM export ({e})") from None
    return tvm


def resolve_target(spec: dict[str, Any]) -> dict[str, Any]:
    """The profile's target dict with `mcpu = "native"` replaced by the host CPU LLVM reports (e.g. znver5):
    LLVM 22 inside TVM 0.27 rejects "native" and would silently fall back to generic x86-64."""
    spec = dict(spec)
    if spec.get("mcpu") == "native":
        import_tvm()
        from tvm.target import codegen

        spec["mcpu"] = codegen.llvm_get_system_cpu()
    return spec


def make_target(spec: dict[str, Any]) -> Any:
    """`tvm.target.Target` from the profile's target dict (TVM 0.27 takes dicts, not CLI strings)."""
    tvm = import_tvm()
    try:
        return tvm.target.Target(resolve_target(spec))
    except Exception as e:
        raise ExportError(f"invalid TVM target {spec}: {str(e).splitlines()[0][:200]}",
                          fix="fix [tvm] target in the profile") from None


def relax_module(onnx_path: str | Path) -> Any:
    """Import an ONNX file into a Relax IRModule with inference-mode ops (BatchNorm folded into arithmetic) and
    TVM's fast math: exp/erf/tanh/softmax as vectorisable polynomials instead of scalar libm calls (erff/expf),
    as ONNX Runtime's MLAS kernels do. Measured on video_spiking (GELU, softmax), 512 MetaSchedule trials: 0.54 ->
    0.39 ms per clip at 1.9e-7 max relative error; the parity report checks every build."""
    import onnx

    import_tvm()
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from edgeml.export.onnx import check_external_data

    check_external_data(onnx_path)
    proto = onnx.load(str(onnx_path))
    try:
        mod = from_onnx(proto, keep_params_in_input=False)
    except Exception as e:
        raise ExportError(f"TVM's ONNX frontend cannot import the model: {str(e).splitlines()[0][:300]}") from e
    return relax.transform.FastMathTransform()(relax.transform.DecomposeOpsForInference()(mod))


def build(onnx_path: str | Path, out_dir: str | Path, tvm_cfg: TVMSettings, *, tune_trials: int = 0,
          records: str | Path | None = None, progress: Callable[[TuningProgress], None] | None = None,
          log: Any = print) -> dict[str, Any]:
    """Compile `onnx_path` for the profile's `[tvm]` target into `out_dir`; returns the files and build facts.

    `tune_trials > 0` tunes from scratch (host targets only; `progress` is called after every measured batch);
    else `records` (a folder of MetaSchedule records, see `shipped_records`) schedules the kernels it covers.
    """
    tvm = import_tvm()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = make_target(tvm_cfg.target)
    if tune_trials > 0 and not tvm_cfg.host_runnable:
        raise ExportError(f"MetaSchedule tuning measures on this machine; target {tvm_cfg.target} is not it",
                          fix="tune on the device itself, or drop --tune-trials for cross targets")
    mod = relax_module(onnx_path)
    t0 = time.perf_counter()
    scheduled = None
    try:
        if tune_trials > 0:
            scheduled = _tune(mod, tvm_cfg.target, out_dir / "tuning", tune_trials, progress)
        elif records is not None:
            scheduled = _apply_records(mod, tvm_cfg.target, Path(records), out_dir / "tuning")
        mod = scheduled.pop("mod") if scheduled is not None else _fuse(mod, target)
        with contextlib.redirect_stdout(io.StringIO()):
            ex = tvm.compile(mod, target=target)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"TVM compile for {tvm_cfg.target} failed: {str(e).splitlines()[0][:300]}") from e
    info: dict[str, Any] = {"target": resolve_target(tvm_cfg.target),
                            "compile_s": round(time.perf_counter() - t0, 2),
                            "tuned": bool(scheduled and scheduled["tasks_scheduled"]), "tune_trials": tune_trials,
                            "tuning": scheduled, "files": []}
    if tvm_cfg.host_runnable:
        ex.export_library(str(out_dir / "model.so"))
        info["files"].append("model.so")
    else:
        ex.export_library(str(out_dir / "model.tar"))
        info["files"].append("model.tar")
        cxx = tvm_cfg.cross_compiler
        if cxx and shutil.which(cxx):
            from tvm.support import cc  # noqa: F401  (import check: cross_compiler lives here in 0.27)

            fcompile = _cross_compiler(cxx)
            ex.export_library(str(out_dir / "model.so"), fcompile=fcompile)
            info["files"].append("model.so")
            info["linker"] = cxx
        else:
            info["linker"] = None
            info["link_note"] = f"{cxx or 'no cross compiler'} not installed: link model.tar on the device"
    info["runnable_here"] = bool(tvm_cfg.host_runnable)
    log(f"[export] TVM built {', '.join(info['files'])} for {tvm_cfg.target} in {info['compile_s']} s")
    return info


def _fuse(mod: Any, target: Any) -> Any:
    """Relax's CPU pipeline (legalize + FuseOps/FuseTIR + memory planning). `tvm.compile` runs only the generic,
    unfused pipeline for CPU targets (fusion can drop unused side-effecting packed calls; an ONNX graph has none —
    and validate checks parity), which leaves each LIF step as ~10 kernels and ~6x more VM calls."""
    from tvm import relax

    with target:
        return relax.get_default_pipeline(target)(mod)


def _cross_compiler(cxx: str) -> Any:
    from tvm.support import cc

    return cc.cross_compiler(cxx)


# Kernels worth tuning: the compute-bound ones. Elementwise chains (a fused LIF time loop is one long kernel) keep
# the default schedule: MetaSchedule's evolutionary search stalled for > 15 min on such a kernel here.
TUNED_OPS = ("conv2d", "matmul", "dense")
# MetaSchedule's 30 s default per candidate build failed every build of a batch on a loaded 2-core machine (each
# LLVM compile took longer); a failed build is a wasted trial, so wait longer.
BUILD_TIMEOUT_S = 300.0
RECORD_FILES = ("database_workload.json", "database_tuning_record.json")  # a MetaSchedule JSONDatabase


def shipped_records(model: str, profile: str) -> Path | None:
    """The tuning records edgeml ships for `model` on TVM profile `profile` (`edgeml/assets/<model>/tvm/<profile>/`),
    if any: the best schedule found per kernel, measured on the CPU named in its `tuning.json`."""
    folder = Path(__file__).resolve().parents[1] / "assets" / model / "tvm" / profile
    return folder if all((folder / f).is_file() for f in RECORD_FILES) else None


@dataclass
class TuningProgress:
    """Where a MetaSchedule run stands: tasks and trials done, the best latency found so far."""

    tasks: list[str]
    weights: list[float]
    trials_total: int
    trials_done: int = 0
    failed: int = 0  # candidates that did not build or run
    trials: dict[int, int] = field(default_factory=dict)  # per task index
    best_s: dict[int, float] = field(default_factory=dict)  # per task index: the fastest valid candidate
    last_task: int | None = None

    @property
    def tasks_done(self) -> int:
        return len(self.trials)

    @property
    def tuned_kernels_ms(self) -> float:
        """Sum over the tasks measured so far of (calls per run x best latency): the tuned kernels' share of a run."""
        return 1e3 * sum(self.weights[i] * s for i, s in self.best_s.items())

    def line(self) -> str:
        """One human line: `tasks 3/17, trials 90/510, best fused_conv2d 12.3 us, tuned kernels 0.210 ms`."""
        best = ""
        if self.last_task is not None and self.last_task in self.best_s:
            best = f", best {self.tasks[self.last_task]} {self.best_s[self.last_task] * 1e6:.1f} us"
        failed = f" ({self.failed} failed)" if self.failed else ""
        return (f"tasks {self.tasks_done}/{len(self.tasks)}, trials {self.trials_done}/{self.trials_total}{failed}"
                f"{best}, tuned kernels {self.tuned_kernels_ms:.3f} ms per run")

    def update(self, task: int, run_secs: list[list[float] | None]) -> None:
        """Count one measured batch of `task` (`run_secs`: per candidate its repeat times, None when it failed)."""
        self.trials_done += len(run_secs)
        self.trials[task] = self.trials.get(task, 0) + len(run_secs)
        self.last_task = task
        self.failed += sum(1 for secs in run_secs if not secs)
        for secs in run_secs:
            if secs:
                mean = sum(secs) / len(secs)
                if mean < self.best_s.get(task, float("inf")):
                    self.best_s[task] = mean


def _progress_callback(state: TuningProgress, report: Callable[[TuningProgress], None], stdout: Any) -> Any:
    """A MetaSchedule measure callback that feeds `state` and calls `report(state)` after every measured batch, with
    `stdout` restored (the tuner's own prints are swallowed around it)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class ReportProgress(PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any, builder_results: Any,
                  runner_results: Any) -> None:
            secs = [None if r.error_msg else [float(x) for x in (r.run_secs or [])] for r in runner_results]
            state.update(int(task_id), secs)
            with contextlib.redirect_stdout(stdout):
                report(state)

    return ReportProgress()


def _round_robin_joining_each_batch() -> Any:
    """A MetaSchedule task scheduler that visits the tasks in turn and waits for each measured batch before the
    next one. TVM's schedulers join a task's measurements only when they revisit it -- with the budget split evenly
    (one batch per task) that is after the last task, so a run reported nothing until its end. Waiting also keeps
    the build of the next batch from competing with the measurement on a small machine."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class RoundRobinJoiningEachBatch(PyTaskScheduler):
        def __init__(self) -> None:
            super().__init__()
            self.sent: int | None = None

        def next_task_id(self) -> int:
            tasks = self._outer().tasks_
            if self.sent is not None and not tasks[self.sent].is_terminated:
                self.join_running_task(self.sent)  # runs the measure callbacks: progress
            start = -1 if self.sent is None else self.sent
            for k in range(1, len(tasks) + 1):
                i = (start + k) % len(tasks)
                if not tasks[i].is_terminated:
                    self.sent = i
                    return i
            return -1

    return RoundRobinJoiningEachBatch()


def _tasks(mod: Any, target_spec: dict[str, Any]) -> tuple[Any, Any, list[Any]]:
    """(target with num-cores, fused module, the conv/matmul tuning tasks): what tuning and applying records share.

    `num-cores` is the profile's (x86-tvm: 1, the one thread per stream edgeml runs TVM with), else this machine's
    core count: MetaSchedule sizes the parallel loops of its candidates by it."""
    import os

    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    target = make_target({"num-cores": os.cpu_count() or 1, **target_spec})
    with target:
        fused = relax.pipeline.zero_pipeline()(relax.transform.CanonicalizeBindings()(mod))  # legalize + fuse
    tasks = [t for t in ms.relax_integration.extract_tasks(fused, target)
             if any(op in t.task_name for op in TUNED_OPS)]
    return target, fused, tasks


def _schedule_from(fused: Any, target: Any, work_dir: Path) -> Any:
    """`fused` with the records in `work_dir` applied and every other spatial kernel vectorised."""
    import tvm
    from tvm import relax

    with target, tvm.transform.PassContext(opt_level=3):
        return _vectorize_spatial(relax.transform.MetaScheduleApplyDatabase(str(work_dir))(fused))


def _tune(mod: Any, target_spec: dict[str, Any], work_dir: Path, trials: int,
          progress: Callable[[TuningProgress], None] | None = None) -> dict[str, Any]:
    """MetaSchedule tuning of the convolution/matmul kernels (needs xgboost, cloudpickle, psutil); the budget is
    split evenly over them (the scheduler visits tasks in order, so a loose cap would leave the later ones naive).
    `work_dir` keeps the best record per kernel (the full database stays in a temp folder).

    Tuning measures candidates on this machine, so it only makes sense for host targets, with as many threads as
    the target's `num-cores` (the runner's workers get TVM_NUM_THREADS)."""
    import functools
    import os
    import sys
    import tempfile

    import tvm
    from tvm.s_tir import meta_schedule as ms

    try:
        import xgboost  # noqa: F401
    except ImportError:
        raise MissingDependencyError("xgboost", purpose="TVM MetaSchedule tuning (--tune-trials)") from None
    target, fused, tasks = _tasks(mod, target_spec)
    if not tasks:
        return {"mod": _schedule_from(fused, target, work_dir), "source": "tuned here", "tasks": 0,
                "tasks_scheduled": 0, "trials_per_task": 0}
    per_task = max(8, trials // len(tasks))
    state = TuningProgress([t.task_name for t in tasks], [float(t.weight) for t in tasks], per_task * len(tasks))
    callbacks = [*ms.measure_callback.MeasureCallback.create("default"),
                 _progress_callback(state, progress or (lambda s: None), sys.stdout)]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeml-tune-") as scratch, \
            contextlib.redirect_stdout(io.StringIO()):  # MetaSchedule prints its task table per iteration
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, scratch)
        workers = os.cpu_count() or 1
        db = ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=scratch,
                           max_trials_global=per_task * len(tasks), max_trials_per_task=per_task,
                           num_trials_per_iter=min(64, per_task), measure_callbacks=callbacks,
                           builder=ms.builder.LocalBuilder(max_workers=workers, timeout_sec=BUILD_TIMEOUT_S),
                           runner=ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S, initializer=functools.partial(
                               _set_tvm_threads, int(target.attrs["num-cores"]))),
                           task_scheduler=_round_robin_joining_each_batch())
        work_dir.mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            (work_dir / f).unlink(missing_ok=True)
        db.dump_pruned(ms.database.JSONDatabase(work_dir=str(work_dir)))
    tune_s = time.perf_counter() - t0
    return {"mod": _schedule_from(fused, target, work_dir), "source": "tuned here", "tasks": len(tasks),
            "tasks_scheduled": len(state.best_s), "trials_per_task": per_task, "trials": state.trials_done,
            "failed_trials": state.failed,
            "tune_s": round(tune_s, 1), "tuned_kernels_ms": round(state.tuned_kernels_ms, 4),
            "cpu": resolve_target(target_spec).get("mcpu"), "tvm": tvm.__version__,
            "records": [f"tuning/{f}" for f in RECORD_FILES]}


def _set_tvm_threads(n: int) -> None:
    """MetaSchedule runner worker initializer: run candidates with `n` threads (read when TVM's pool starts)."""
    import os

    os.environ["TVM_NUM_THREADS"] = str(n)


def _apply_records(mod: Any, target_spec: dict[str, Any], records: Path, work_dir: Path) -> dict[str, Any]:
    """Schedule the kernels `records` covers (no tuner run); copies the records to `work_dir` (the artefact's)."""
    from tvm.s_tir import meta_schedule as ms

    from edgeml.io import read_json

    work_dir.mkdir(parents=True, exist_ok=True)
    for f in RECORD_FILES:
        shutil.copyfile(records / f, work_dir / f)
    target, fused, tasks = _tasks(mod, target_spec)
    db = ms.database.JSONDatabase(work_dir=str(work_dir), allow_missing=False)
    covered = sum(1 for t in tasks if db.has_workload(t.dispatched[0]))
    about = read_json(records / "tuning.json") if (records / "tuning.json").is_file() else {}
    return {"mod": _schedule_from(fused, target, work_dir), "source": "shipped records", "tasks": len(tasks),
            "tasks_scheduled": covered, "records_from": f"edgeml/assets/{records.parent.parent.name}/tvm/"
                                                        f"{records.name}", "records_tuned": about,
            "records": [f"tuning/{f}" for f in RECORD_FILES]}


def _vectorize_spatial(mod: Any, lanes: int = 8) -> Any:
    """Give every kernel the tuner left alone a plain schedule: each purely spatial block's loops fused and split
    into `lanes`-wide vectors (no inlining, so a fused LIF recurrence keeps its intermediates). Measured here on
    video_spiking with a 512-trial database: 0.70 -> 0.53 ms per clip, identical outputs. Call inside the target."""
    from tvm import s_tir, tirx
    from tvm.s_tir import dlight as dl
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    class SpatialVectorize(dl.ScheduleRule):
        def apply(self, func: Any, target: Any, tunable: bool) -> Any:
            if not isinstance(func, tirx.PrimFunc):
                return None
            sch = s_tir.Schedule(func)
            blocks = normalize_prim_func(sch)
            scheduled = False
            for block in blocks or []:
                loops = sch.get_loops(block.block_rv)
                if loops and all(kind == "S" for kind in block.dom_kind()):
                    _, inner = sch.split(sch.fuse(*loops), factors=[None, lanes])
                    sch.vectorize(inner)
                    scheduled = True
            return sch if scheduled else None

    return dl.ApplyDefaultSchedule(SpatialVectorize())(mod)


def load(so_path: str | Path, device: str = "cpu") -> Any:
    """A Relax VirtualMachine over a compiled `model.so` (host architecture only)."""
    tvm = import_tvm()
    from tvm import relax

    lib = tvm.runtime.load_module(str(so_path))
    dev = tvm.cpu() if device == "cpu" else tvm.cuda()
    return relax.VirtualMachine(lib, dev), dev
