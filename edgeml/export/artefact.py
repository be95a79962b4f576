"""`export_model`: registered model + target profile -> a complete, checked artefact folder, written atomically.

Folder: model.safetensors (the exported weights, for the torch backend), model.onnx (+ model.fp16.onnx,
model.int8.onnx), stream/ (streaming graphs of spiking models), tvm/ or tensorrt/ (backend artefacts),
manifest.json and parity.json. Everything is built in a temp sibling and renamed at the end
(`edgeml.io.atomic_dir`), so a failure at any step leaves no half-written folder (and an old one untouched).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeml.errors import EdgeMLError, ExportError, InputError

PARITY_REL_TOL = 1e-4  # acceptance: ONNX Runtime / TVM fp32 vs PyTorch
STREAM_TOL = 1e-5  # acceptance: streaming vs unrolled
INT8_MAX_DROP = 1.5  # acceptance: int8 top-1 within 1.5 points of fp32


def shipped_checkpoint(model: str) -> Path | None:
    """The checkpoint the package ships for `model` (`edgeml/assets/<model>/*.safetensors`), if any."""
    folder = Path(__file__).resolve().parents[1] / "assets" / model
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    for preferred in ("best.safetensors", "model.safetensors"):
        if folder / preferred in files:
            return folder / preferred
    return files[0] if files else None


def resolve_weights(model: str, checkpoint: str | Path | None, random_init: bool) -> dict[str, Any]:
    """Which weights to export: --checkpoint, else the shipped one, else random only with `random_init`."""
    from edgeml.io import load_checkpoint, sha256_file

    if checkpoint is not None:
        path, source = Path(checkpoint), "checkpoint"
    elif (shipped := shipped_checkpoint(model)) is not None and not random_init:
        path, source = shipped, "shipped"
    elif random_init:
        return {"source": "random-init", "checkpoint": None, "sha256": None, "meta": {}, "seed": 0}
    else:
        raise InputError(f"no weights for model {model!r}: no --checkpoint given and edgeml ships none",
                         fix="pass --checkpoint PATH (from `edgeml train`), or --random-init for latency work only")
    _, meta = load_checkpoint(path, expect_model=model)
    return {"source": source, "checkpoint": str(path.resolve()), "sha256": sha256_file(path),
            "meta": {k: meta[k] for k in ("config", "epoch", "metrics", "data", "classes") if k in meta}}


def tool_versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("edgeml", "torch", "onnx", "onnxruntime", "onnxsim", "apache-tvm", "tensorrt", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _default_resize() -> str:
    """The resize policy `edgeml.video.extract` applies when none is given."""
    import inspect

    from edgeml.video.clips import extract

    return str(inspect.signature(extract).parameters["resize"].default)


def _preprocessing(task: str, config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    """How a device makes the model's inputs. Video: clip geometry and the resize policy (`resize`: "crop" or
    "stretch", from the clip cache's index when `dataset` is one, else the default of `edgeml.video.extract`)."""
    pre: dict[str, Any] = {}
    if task == "video":
        pre = {"inputs": "float32 tensors as edgeml.video.datasets.ClipDataset yields them (batched); "
               "the model scales them itself", "clip_len": config.get("clip_len"), "grid": config.get("grid"),
               "size": [config.get("height"), config.get("width")], "resize": _default_resize(),
               "resize_source": "default of edgeml.video.extract (no --data)"}
    elif task == "image":
        pre = {"inputs": "float32 [C,H,W] as edgeml.data.open_image_dataset yields them (batched)",
               "image_size": config.get("image_size"), "in_channels": config.get("in_channels")}
    meta = getattr(dataset, "meta", None)
    if isinstance(meta, dict):
        pre["dataset_meta"] = {k: v for k, v in meta.items() if isinstance(v, (int, float, str, bool, list))}
        if task == "video":
            for k in ("clip_len", "grid"):
                pre[k] = meta.get(k, pre.get(k))
            if meta.get("size"):
                pre["size"] = list(meta["size"])
            if meta.get("resize"):
                pre["resize"], pre["resize_source"] = str(meta["resize"]), "the clip cache's index (--data)"
            else:
                pre["resize_source"] = "default of edgeml.video.extract (the clip cache's index records none)"
    return pre


class ExportStep(NamedTuple):
    """One named stage of `export_model`: `run(job)` adds its files to `job.tmp` and its facts to `job`;
    `applies(job)` says whether the job needs it (fp16 only when the profile lists it, ...).

    Not the demo's `Step`: a demo step is cached on its own output between runs, while an export's steps share
    one temp folder that is renamed into place only when all of them succeeded."""

    name: str
    describe: Callable[[ExportJob], str]
    run: Callable[[ExportJob], None]
    applies: Callable[[ExportJob], bool] = lambda job: True


@dataclass
class ExportJob:
    """What the steps of one export share: its inputs (checked) and what the steps made so far."""

    model: str
    target: str
    profile: Any  # TargetProfile
    spec: Any  # ModelSpec
    net: Any
    weights: dict[str, Any]
    config: dict[str, Any]
    datasets: dict[str, Any]
    opset: int
    trt_max_opset: int | None
    options: dict[str, Any]  # dynamic_batch, simplify, calib/parity/random/eval samples, tune_trials, data
    log: Callable[[str], None]
    tmp: Path = Path()
    names: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)
    example: tuple = ()
    feeds0: dict[str, np.ndarray] = field(default_factory=dict)
    backends: dict[str, Any] = field(default_factory=dict)
    quant: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] | None = None
    calibration: tuple[str, list[dict[str, np.ndarray]]] | None = None
    trt_op_check: Any = None
    report: dict[str, Any] = field(default_factory=dict)
    precision: dict[str, Any] = field(default_factory=dict)
    tuning_progress: Callable[[Any], None] | None = None


def _save_weights(job: ExportJob) -> None:
    from edgeml.io import save_checkpoint

    save_checkpoint(job.tmp / "model.safetensors", {f"model.{k}": v for k, v in job.net.state_dict().items()},
                    {"model": job.model, "config": job.config, "exported_from": job.weights["source"]})


def _onnx(job: ExportJob) -> None:
    from edgeml.export import onnx as ox

    notes = ox.export_onnx(job.net, job.example, job.tmp / "model.onnx", input_names=job.names,
                           output_names=job.outs, opset=job.opset, dynamic_batch=job.options["dynamic_batch"],
                           simplify=job.options["simplify"], max_opset=job.trt_max_opset)
    if notes["opset"] != job.opset:
        job.log(f"[export] the TorchScript exporter could not express an op: used the dynamo exporter at opset "
                f"{notes['opset']}")
    job.opset = notes["opset"]  # the dynamo fallback may raise it to 18
    job.backends["onnxruntime"] = {"files": {"fp32": "model.onnx"}, **notes}
    job.feeds0 = {k: v.detach().numpy() for k, v in zip(job.names, job.example, strict=True)}


def _tensorrt_op_check(job: ExportJob) -> None:
    """Fail fast, before the slow steps, when TensorRT cannot take an op."""
    from edgeml.export import tensorrt as trt

    job.trt_op_check = trt.check_ops(job.tmp / "model.onnx", job.profile)


def _streaming(job: ExportJob) -> None:
    from edgeml.export import onnx as ox

    stream = ox.export_streaming(job.net, job.example, job.tmp / "stream", input_names=job.names,
                                 output_names=job.outs, opset=job.opset, simplify=job.options["simplify"])
    job.stream = {**stream, "step": "stream/stream_step.onnx", "head": "stream/stream_head.onnx"}
    init = job.net.stream_init(job.profile.batch)
    if any(float(s.abs().max()) != 0.0 for s in init):
        raise ExportError("stream_init returned non-zero states; the streaming runner assumes zeros",
                          fix="make stream_init return zero membrane states (docs/architecture.md §4)")


def _fp16(job: ExportJob) -> None:
    from edgeml.export import quantize

    job.quant["fp16"] = quantize.to_fp16(job.tmp / "model.onnx", job.tmp / "model.fp16.onnx")
    job.backends["onnxruntime"]["files"]["fp16"] = "model.fp16.onnx"


def _int8(job: ExportJob) -> None:
    from edgeml.export import quantize

    note, calib = _calib(job)
    job.quant["int8"] = {**quantize.to_int8_qdq(job.tmp / "model.onnx", job.tmp / "model.int8.onnx", calib,
                                                **quantize.int8_settings(job.profile.backend)),
                         "calibration_data": note}
    job.backends["onnxruntime"]["files"]["int8"] = "model.int8.onnx"


def _tensorrt(job: ExportJob) -> None:
    from edgeml.export import onnx as ox
    from edgeml.export import tensorrt as trt

    tmp, profile = job.tmp, job.profile
    if (tmp / "model.int8.onnx").is_file():
        trt.check_ops(tmp / "model.int8.onnx", profile)
    io = ox.graph_io(tmp / "model.onnx")
    files = {"fp32": "../model.onnx"}
    if "fp16" in profile.precisions:
        files["fp16"] = "../model.onnx"  # TensorRT builds fp16 from the fp32 graph with --fp16
    if (tmp / "model.int8.onnx").is_file():
        files["int8"] = "../model.int8.onnx"
    info = {**trt.write_build_files(tmp / "tensorrt", profile, io, files, job.options["dynamic_batch"]),
            "op_check": job.trt_op_check, "expected_memory": trt.expected_memory(tmp, list(files), profile.batch)}
    plan = trt.build_here(tmp / "tensorrt")
    info["engine"] = plan.name if plan else None
    info["engine_note"] = "built here" if plan else "tensorrt not importable here: run build_engine.sh on the device"
    job.backends["tensorrt"] = info


def _tvm_source(job: ExportJob) -> str:
    """How the TVM kernels get their schedules: tuning here, the shipped records, or none."""
    if job.options["tune_trials"]:
        return f"tuning {job.options['tune_trials']} trials here"
    return "shipped tuning records" if _tvm_records(job) else "untuned"


def _tvm_records(job: ExportJob) -> Path | None:
    from edgeml.export.tvm import shipped_records

    return shipped_records(job.model, job.profile.name) if job.profile.tvm.host_runnable else None


def _tvm(job: ExportJob) -> None:
    from edgeml.export import tvm as tvmx

    info = tvmx.build(job.tmp / "model.onnx", job.tmp / "tvm", job.profile.tvm,
                      tune_trials=job.options["tune_trials"], records=_tvm_records(job),
                      progress=job.tuning_progress, log=lambda s: None)
    tuning = info.get("tuning") or {}
    if tuning.get("source") == "shipped records" and tuning["tasks_scheduled"] < tuning["tasks"]:
        job.log(f"[export] the shipped TVM records cover {tuning['tasks_scheduled']} of {tuning['tasks']} kernels "
                f"(they were tuned for {job.model}'s shipped configuration): the rest stay untuned; "
                "--tune-trials N tunes them here")
    job.backends["tvm"] = info


def _parity(job: ExportJob) -> None:
    from edgeml.io import write_json

    o = job.options
    job.report = _parity_report(job.net, job.tmp, job.names, job.outs, job.feeds0, job.datasets, job.stream,
                                job.backends, job.profile, o["parity_samples"], o["random_samples"],
                                o["eval_samples"])
    job.report["calibration"] = _calib(job)[0]
    write_json(job.tmp / "parity.json", job.report)


def _precision(job: ExportJob) -> None:
    from edgeml.export.quantize import recommend_precision

    job.precision = recommend_precision(job.profile, job.tmp)


def _manifest(job: ExportJob) -> None:
    from edgeml.export import onnx as ox
    from edgeml.io import sha256_file, write_json

    tmp, profile = job.tmp, job.profile
    io = ox.graph_io(tmp / "model.onnx")
    spec = job.spec
    classes = job.weights["meta"].get("classes") or getattr(job.datasets.get("test"), "classes", None)
    data = job.options["data"]
    manifest = {
        "format": "edgeml-export", "format_version": 1, "model": job.model, "task": spec.task,
        "version": tool_versions()["edgeml"], "config": job.config, "classes": classes,
        "target": profile.name, "target_requested": job.target, "backend": profile.backend,
        "profile": profile.raw, "opset": job.opset, "batch": profile.batch,
        "dynamic_batch": job.options["dynamic_batch"], "inputs": io["inputs"], "outputs": io["outputs"],
        "preprocessing": _preprocessing(spec.task, job.config, job.datasets.get("test")),
        "weights": {k: v for k, v in job.weights.items() if k != "meta"},
        "data": str(data) if data is not None else None, "streaming": job.stream, "quantization": job.quant,
        "precision": job.precision, "backends": job.backends, "parity_summary": job.report.get("summary"),
        "power_sensors": list(profile.power.sensors),
        "tools": tool_versions(), "host": {"machine": platform.machine(), "system": platform.system()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(time.perf_counter() - job.options["t_start"], 2),
    }
    manifest["checksums"] = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*"))
                             if p.is_file()}
    write_json(tmp / "manifest.json", manifest)


def _calib(job: ExportJob) -> tuple[str, list[dict[str, np.ndarray]]]:
    if job.calibration is None:
        job.calibration = _calibration(job.datasets, job.names, job.options["calib_samples"], job.profile.batch,
                                       job.feeds0)
    return job.calibration


def _has(precision: str) -> Callable[[ExportJob], bool]:
    return lambda job: precision in job.profile.precisions


STEPS: tuple[ExportStep, ...] = (
    ExportStep("weights", lambda j: "weights (model.safetensors)", _save_weights),
    ExportStep("onnx", lambda j: f"ONNX opset {j.opset} ({j.model}, batch {j.profile.batch}"
               f"{', dynamic' if j.options['dynamic_batch'] else ''})", _onnx),
    ExportStep("tensorrt-op-check", lambda j: f"TensorRT {j.profile.tensorrt.version} op check", _tensorrt_op_check,
               lambda j: j.profile.wants_tensorrt),
    ExportStep("streaming", lambda j: "streaming graphs (one P-step per call, membrane state as I/O)", _streaming,
               lambda j: _is_streaming(j.net)),
    ExportStep("fp16", lambda j: "fp16 conversion", _fp16, _has("fp16")),
    ExportStep("int8", lambda j: f"int8 QDQ quantization ({j.options['calib_samples']} calibration samples)",
               _int8, _has("int8")),
    ExportStep("tensorrt", lambda j: f"TensorRT {j.profile.tensorrt.version} build_engine.sh", _tensorrt,
               lambda j: j.profile.wants_tensorrt),
    ExportStep("tvm", lambda j: f"TVM build for {j.profile.tvm.target} ({_tvm_source(j)})", _tvm,
               lambda j: j.profile.wants_tvm),
    ExportStep("parity", lambda j: "parity against PyTorch", _parity),
    ExportStep("precision", lambda j: "recommended precision", _precision),
    ExportStep("manifest", lambda j: "manifest", _manifest),
)


def _is_streaming(net: Any) -> bool:
    from edgeml.export.onnx import is_streaming

    return is_streaming(net)


def export_model(model: str, target: str | Path, out: str | Path, *, checkpoint: str | Path | None = None,
                 random_init: bool = False, force: bool = False, opset: int | None = None,
                 dynamic_batch: bool = False, data: str | Path | None = None, calib_samples: int = 64,
                 parity_samples: int = 64, random_samples: int = 4, eval_samples: int | None = 512,
                 tune_trials: int = 0, simplify: bool = True, overrides: dict[str, Any] | None = None,
                 progress: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Export registered `model` for `target` into folder `out`; returns `out`.

    Runs the `STEPS` the profile asks for, in order, inside one temp folder renamed into place at the end.
    `data`: the model's data set (clip cache for video, image data set name/folder) for real-input parity, int8
    calibration (train split) and int8-vs-fp32 accuracy (test split); without it random inputs are used (recorded
    as such) -- never a folder named in the checkpoint's metadata, so the result does not depend on what happens
    to exist on this machine. `overrides`: model options (`--set KEY=VALUE`), checked by the registry. TVM
    profiles use the tuning records edgeml ships for the model unless `tune_trials` > 0 tunes here. Bad inputs (an
    `out` that is or holds the checkpoint or the data included) raise EdgeMLError subclasses before anything is
    written; a failure during the build leaves no folder behind, and temp folders a killed export left beside
    `out` are removed by the next export to it.
    """
    import torch

    from edgeml.io import atomic_dir, remove_stale_temps
    from edgeml.progress import Progress

    log = log or (lambda s: None)
    job = _prepare(model, target, Path(out), checkpoint=checkpoint, random_init=random_init, force=force,
                   opset=opset, data=data, overrides=overrides or {}, log=log,
                   options={"dynamic_batch": dynamic_batch, "simplify": simplify, "calib_samples": calib_samples,
                            "parity_samples": parity_samples, "random_samples": random_samples,
                            "eval_samples": eval_samples, "tune_trials": tune_trials, "data": data,
                            "t_start": time.perf_counter()})
    out = Path(out)
    steps = [s for s in STEPS if s.applies(job)]
    remove_stale_temps(out.parent, [out.name])  # what a killed export to `out` left (kill -9 skips all cleanup)
    with atomic_dir(out, force=force) as tmp, Progress(progress, transient=True, quiet=True) as bar, \
            torch.no_grad():
        job.tmp = tmp
        task = bar.add("export", total=len(steps))
        job.tuning_progress = _tuning_reporter(bar, log)
        for step in steps:
            what = step.describe(job)
            bar.advance(task, 0, description=what)
            log(f"[export] {what}")
            step.run(job)
            bar.advance(task)
    remove_stale_temps(out.parent, [out.name])  # a `.old` kept above held the only copy until now
    log(f"[export] wrote {out}")
    return out


def _tuning_reporter(bar: Any, log: Callable[[str], None]) -> Callable[[Any], None]:
    """MetaSchedule progress as a bar (tasks and trials done, best latency so far) and a log line per new task."""
    state: dict[str, Any] = {"task": None, "bar": None, "done": 0}

    def report(p: Any) -> None:
        if state["bar"] is None:
            state["bar"] = bar.add("TVM tuning", total=p.trials_total)
        bar.advance(state["bar"], p.trials_done - state["done"], info=p.line())
        state["done"] = p.trials_done
        if p.last_task != state["task"] or p.trials_done == p.trials_total:
            state["task"] = p.last_task
            log(f"[export] TVM tuning: {p.line()}")

    return report


def _prepare(model: str, target: str | Path, out: Path, *, checkpoint: str | Path | None, random_init: bool,
             force: bool, opset: int | None, data: str | Path | None, overrides: dict[str, Any],
             log: Callable[[str], None], options: dict[str, Any]) -> ExportJob:
    """Check every input (nothing is written) and build the model: the job the steps run on."""
    import torch

    from edgeml.export.targets import OPSET_RANGE, load_profile
    from edgeml.paths import refuse_overwrite
    from edgeml.registry import check_config, create_model, model_spec

    spec = model_spec(model)
    profile = load_profile(target)
    check_config(model, overrides, source="--set")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InputError("checkpoint not found (or not a file)", path=checkpoint,
                         fix="pass the .safetensors file `edgeml train` wrote")
    refuse_overwrite(out, [checkpoint, data if data is not None and Path(data).exists() else None,
                           shipped_checkpoint(model) if checkpoint is None and not random_init else None])
    if out.exists() and not (force and out.is_dir()):
        raise InputError("output folder already exists" if out.is_dir() else "--out is a file, not a folder",
                         path=out, fix="pass --force to replace it" if out.is_dir() else "pass a folder path")
    if opset is not None and not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise InputError(f"--opset {opset} is outside the supported range {OPSET_RANGE[0]}..{OPSET_RANGE[1]}")
    opset = opset or profile.opset
    trt_max = profile.tensorrt.max_opset if profile.wants_tensorrt and profile.tensorrt else None
    if trt_max is not None and opset > trt_max:
        raise InputError(f"opset {opset} exceeds TensorRT {profile.tensorrt.version}'s max opset {trt_max}",
                         fix=f"use --opset {trt_max}")
    weights = resolve_weights(model, checkpoint, random_init)
    if weights["source"] == "random-init":
        torch.manual_seed(0)
        net = create_model(model, **overrides)
    else:
        net = create_model(model, checkpoint=weights["checkpoint"], **overrides)
    if overrides:
        weights["overrides"] = dict(overrides)
    config = {**spec.defaults, **weights["meta"].get("config", {}), **overrides}
    datasets = _open_data(spec.task, Path(data)) if data is not None else {}
    job = ExportJob(model=model, target=str(target), profile=profile, spec=spec, net=net.eval(), weights=weights,
                    config=config, datasets=datasets, opset=opset, trt_max_opset=trt_max, options=options, log=log,
                    names=list(spec.input_names), outs=list(spec.output_names))
    with torch.no_grad():
        job.example = tuple(spec.example_inputs(job.net, profile.batch))
    return job


def _open_data(task: str, data: Path) -> dict[str, Any]:
    """{"train": ds, "test": ds} of the data set at `data` (missing splits are left out)."""
    from edgeml.export.validate import open_split

    out = {}
    for split in ("train", "test"):
        try:
            out[split] = open_split(task, data, split)
        except EdgeMLError:
            if split == "test":
                raise
        except (ImportError, ModuleNotFoundError) as e:
            raise InputError(f"cannot read {task} data: {e}", path=data) from None
    return out


def _calibration(datasets: dict[str, Any], names: list[str], n: int, batch: int,
                 feeds0: dict[str, np.ndarray]) -> tuple[str, list[dict[str, np.ndarray]]]:
    from edgeml.export.validate import random_samples, real_samples

    ds = datasets.get("train") or datasets.get("test")
    if ds is not None:
        split = "train" if "train" in datasets else "test"
        return f"real samples ({split} split)", [f for f, _ in real_samples(ds, names, n, batch)]
    return "random inputs (no --data given: int8 accuracy unverified)", random_samples(feeds0, min(n, 16), seed=7)


def _parity_report(net: Any, art: Path, names: list[str], outs: list[str], feeds0: dict[str, np.ndarray],
                   datasets: dict[str, Any], stream: dict | None, backends: dict[str, Any], profile: Any,
                   parity_samples: int, n_random: int, eval_samples: int | None) -> dict[str, Any]:
    from edgeml.export import validate as v
    from edgeml.export.runtime import OrtRuntime, TorchRuntime, TvmRuntime

    torch_rt = TorchRuntime(net, names, outs)
    level = profile.onnxruntime.graph_optimization_level
    runners = {"ort": OrtRuntime(art / "model.onnx", "ort", graph_optimization_level=level)}
    if (art / "model.fp16.onnx").is_file():
        runners["ort-fp16"] = OrtRuntime(art / "model.fp16.onnx", "ort-fp16", graph_optimization_level=level)
    if (art / "model.int8.onnx").is_file():
        runners["ort-int8"] = OrtRuntime(art / "model.int8.onnx", "ort-int8", graph_optimization_level=level)
    tvm_info = backends.get("tvm")
    if tvm_info and tvm_info.get("runnable_here"):
        runners["tvm"] = TvmRuntime(art / "tvm" / "model.so", names, outs)
    rand = v.random_samples(feeds0, n_random, seed=123)
    real = v.real_samples(datasets["test"], names, parity_samples, profile.batch) if "test" in datasets else []
    report: dict[str, Any] = {"definitions": {
        "max_abs": "max |y - y_torch| over samples and output elements",
        "max_rel": "max_abs / max |y_torch| (per output, worst over samples)",
        "top1_agreement": "share of samples whose argmax equals PyTorch's"},
        "tolerances": {"fp32_max_rel": PARITY_REL_TOL, "streaming_max_abs": STREAM_TOL,
                       "int8_max_top1_drop_points": INT8_MAX_DROP}, "backends": {}}
    for name, rt in runners.items():
        entry = {"random": v.parity(torch_rt.run, rt.run, rand)}
        if real:
            entry["real"] = v.parity(torch_rt.run, rt.run, [f for f, _ in real])
        report["backends"][name] = entry
    if tvm_info and not tvm_info.get("runnable_here"):
        report["backends"]["tvm"] = {"skipped": f"built for {tvm_info['target']}: runs on the device, not here"}
    if stream:
        ort_fp32 = runners["ort"].run
        report["streaming"] = v.streaming_parity(art, stream, ort_fp32, net, [*rand, *[f for f, _ in real[:8]]])
        report["streaming"]["pass"] = (report["streaming"]["logits_max_abs_vs_unrolled_onnx"] <= STREAM_TOL
                                       and report["streaming"]["step_tokens_max_abs_vs_torch"] <= STREAM_TOL)
    if "test" in datasets and "ort-int8" in runners:
        labelled = v.real_samples(datasets["test"], names, eval_samples, profile.batch)
        acc = {k: v.accuracy(runners[k].run, labelled) for k in ("ort", "ort-int8")}
        acc["torch"] = v.accuracy(torch_rt.run, labelled)
        drop = acc["ort"]["top1"] - acc["ort-int8"]["top1"]
        report["accuracy_test_split"] = {**acc, "int8_drop_points": drop, "int8_within_tolerance":
                                         drop <= INT8_MAX_DROP}
    report["summary"] = _summary(report)
    return report


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """Pass/fail per acceptance check (None where it could not be checked here)."""
    out: dict[str, Any] = {}
    for name in ("ort", "tvm"):
        b = report["backends"].get(name)
        if not b or "skipped" in b:
            continue
        worst = max(b[k]["max_rel"] for k in ("random", "real") if k in b)
        real = b.get("real")
        out[f"{name}_fp32"] = {"max_rel": worst, "real_top1_agreement": real["top1_agreement"] if real else None,
                               "real_samples": real["samples"] if real else 0,
                               "pass": worst <= PARITY_REL_TOL and (real is None or real["top1_agreement"] == 1.0)}
    if "streaming" in report:
        out["streaming"] = report["streaming"]["pass"]
    if "accuracy_test_split" in report:
        a = report["accuracy_test_split"]
        out["int8"] = {"fp32_top1": a["ort"]["top1"], "int8_top1": a["ort-int8"]["top1"],
                       "drop_points": a["int8_drop_points"], "pass": a["int8_within_tolerance"]}
    return out


__all__ = ["export_model", "resolve_weights", "shipped_checkpoint", "tool_versions"]
