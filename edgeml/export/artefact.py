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
from pathlib import Path
from typing import Any

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


def _preprocessing(task: str, config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    pre: dict[str, Any] = {}
    if task == "video":
        pre = {"inputs": "float32 tensors as edgeml.video.datasets.ClipDataset yields them (batched); "
               "the model scales them itself", "clip_len": config.get("clip_len"), "grid": config.get("grid"),
               "size": [config.get("height"), config.get("width")]}
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
    return pre


class _Steps:
    """A rich progress bar over the export steps (transient), or plain log lines when `progress` is off."""

    def __init__(self, total: int, progress: bool, log: Callable[[str], None]):
        self.log, self.bar, self.task = log, None, None
        if progress:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.task = self.bar.add_task("export", total=total)

    def __enter__(self) -> _Steps:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar:
            self.bar.stop()

    def step(self, what: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=what, advance=1)
        self.log(f"[export] {what}")


def export_model(model: str, target: str | Path, out: str | Path, *, checkpoint: str | Path | None = None,
                 random_init: bool = False, force: bool = False, opset: int | None = None,
                 dynamic_batch: bool = False, data: str | Path | None = None, calib_samples: int = 64,
                 parity_samples: int = 64, random_samples: int = 4, eval_samples: int | None = 512,
                 tune_trials: int = 0, simplify: bool = True, progress: bool = False,
                 log: Callable[[str], None] | None = None) -> Path:
    """Export registered `model` for `target` into folder `out`; returns `out`.

    `data`: the model's data set (clip cache for video, image data set name/folder) for real-input parity, int8
    calibration (train split) and int8-vs-fp32 accuracy (test split); without it random inputs are used (recorded
    as such) -- never a folder named in the checkpoint's metadata, so the result does not depend on what happens
    to exist on this machine. Bad inputs (an `out` that is or holds the checkpoint or the data included) raise
    EdgeMLError subclasses before anything is written; a failure during the build leaves no folder behind, and
    temp folders a killed export left beside `out` are removed by the next export to it.
    """
    import torch

    from edgeml.export.targets import load_profile
    from edgeml.io import atomic_dir, remove_stale_temps
    from edgeml.registry import create_model, model_spec

    log = log or (lambda s: None)
    spec = model_spec(model)
    profile = load_profile(target)
    from edgeml.export.targets import OPSET_RANGE
    from edgeml.paths import refuse_overwrite

    out = Path(out)
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
        net = create_model(model)
    else:
        net = create_model(model, checkpoint=weights["checkpoint"])
    net = net.eval()
    config = {**spec.defaults, **weights["meta"].get("config", {})}
    datasets = _open_data(spec.task, Path(data)) if data is not None else {}

    from edgeml.export import onnx as ox
    from edgeml.export import quantize

    with torch.no_grad():
        example = tuple(spec.example_inputs(net, profile.batch))
    names, outs = list(spec.input_names), list(spec.output_names)
    streaming = ox.is_streaming(net)
    n_steps = 4 + streaming + ("fp16" in profile.precisions) + ("int8" in profile.precisions) + \
        profile.wants_tvm + profile.wants_tensorrt
    t_start = time.perf_counter()
    remove_stale_temps(out.parent, [out.name])  # what a killed export to `out` left (kill -9 skips all cleanup)
    with atomic_dir(out, force=force) as tmp, _Steps(n_steps, progress, log) as steps, torch.no_grad():
        from edgeml.io import save_checkpoint, sha256_file, write_json

        save_checkpoint(tmp / "model.safetensors", {f"model.{k}": v for k, v in net.state_dict().items()},
                        {"model": model, "config": config, "exported_from": weights["source"]})
        steps.step(f"ONNX opset {opset} ({model}, batch {profile.batch}{', dynamic' if dynamic_batch else ''})")
        onnx_notes = ox.export_onnx(net, example, tmp / "model.onnx", input_names=names, output_names=outs,
                                    opset=opset, dynamic_batch=dynamic_batch, simplify=simplify,
                                    max_opset=trt_max)
        if onnx_notes["opset"] != opset:
            log(f"[export] the TorchScript exporter could not express an op: used the dynamo exporter at opset "
                f"{onnx_notes['opset']}")
        opset = onnx_notes["opset"]  # the dynamo fallback may raise it to 18
        backends: dict[str, Any] = {"onnxruntime": {"files": {"fp32": "model.onnx"}, **onnx_notes}}
        if profile.wants_tensorrt:  # fail fast, before the slow steps, when TensorRT cannot take an op
            from edgeml.export import tensorrt as trt

            op_check = trt.check_ops(tmp / "model.onnx", profile)
        stream = None
        if streaming:
            steps.step("streaming graphs (one P-step per call, membrane state as I/O)")
            stream = ox.export_streaming(net, example, tmp / "stream", input_names=names, output_names=outs,
                                         opset=opset, simplify=simplify)
            stream = {**stream, "step": "stream/stream_step.onnx", "head": "stream/stream_head.onnx"}
            init = net.stream_init(profile.batch)
            if any(float(s.abs().max()) != 0.0 for s in init):
                raise ExportError("stream_init returned non-zero states; the streaming runner assumes zeros",
                                  fix="make stream_init return zero membrane states (contract B)")
        feeds0 = {k: v.detach().numpy() for k, v in zip(names, example, strict=True)}
        calib_note, calib = _calibration(datasets, names, calib_samples, profile.batch, feeds0)
        quant: dict[str, Any] = {}
        if "fp16" in profile.precisions:
            steps.step("fp16 conversion")
            quant["fp16"] = quantize.to_fp16(tmp / "model.onnx", tmp / "model.fp16.onnx")
            backends["onnxruntime"]["files"]["fp16"] = "model.fp16.onnx"
        if "int8" in profile.precisions:
            steps.step(f"int8 QDQ quantization ({len(calib)} calibration samples, {calib_note})")
            quant["int8"] = {**quantize.to_int8_qdq(tmp / "model.onnx", tmp / "model.int8.onnx", calib),
                             "calibration_data": calib_note}
            backends["onnxruntime"]["files"]["int8"] = "model.int8.onnx"
        if profile.wants_tensorrt:
            steps.step(f"TensorRT {profile.tensorrt.version} op check + build_engine.sh")
            if (tmp / "model.int8.onnx").is_file():
                trt.check_ops(tmp / "model.int8.onnx", profile)
            io = ox.graph_io(tmp / "model.onnx")
            files = {"fp32": "../model.onnx"}
            if "fp16" in profile.precisions:
                files["fp16"] = "../model.onnx"  # TensorRT builds fp16 from the fp32 graph with --fp16
            if (tmp / "model.int8.onnx").is_file():
                files["int8"] = "../model.int8.onnx"
            backends["tensorrt"] = {**trt.write_build_files(tmp / "tensorrt", profile, io, files, dynamic_batch),
                                    "op_check": op_check}
            plan = trt.build_here(tmp / "tensorrt")
            backends["tensorrt"]["engine"] = plan.name if plan else None
            backends["tensorrt"]["engine_note"] = ("built here" if plan else
                                                   "tensorrt not importable here: run build_engine.sh on the device")
        if profile.wants_tvm:
            steps.step(f"TVM build for {profile.tvm.target}" + (f", tuning {tune_trials} trials"
                                                                   if tune_trials else ""))
            from edgeml.export import tvm as tvmx

            backends["tvm"] = tvmx.build(tmp / "model.onnx", tmp / "tvm", profile.tvm, tune_trials=tune_trials,
                                         log=lambda s: None)
        steps.step("parity against PyTorch")
        report = _parity_report(net, tmp, names, outs, feeds0, datasets, stream, backends, profile,
                                parity_samples, random_samples, eval_samples)
        report["calibration"] = calib_note
        write_json(tmp / "parity.json", report)
        steps.step("manifest")
        io = ox.graph_io(tmp / "model.onnx")
        classes = weights["meta"].get("classes") or getattr(datasets.get("test"), "classes", None)
        manifest = {
            "format": "edgeml-export", "format_version": 1, "model": model, "task": spec.task,
            "version": tool_versions()["edgeml"], "config": config, "classes": classes,
            "target": profile.name, "target_requested": str(target), "backend": profile.backend,
            "profile": profile.raw, "opset": opset, "batch": profile.batch, "dynamic_batch": dynamic_batch,
            "inputs": io["inputs"], "outputs": io["outputs"],
            "preprocessing": _preprocessing(spec.task, config, datasets.get("test")),
            "weights": {k: v for k, v in weights.items() if k != "meta"},
            "data": str(data) if data is not None else None, "streaming": stream, "quantization": quant,
            "backends": backends, "parity_summary": report.get("summary"),
            "tools": tool_versions(), "host": {"machine": platform.machine(), "system": platform.system()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "export_seconds": round(time.perf_counter() - t_start, 2),
        }
        manifest["checksums"] = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*"))
                                 if p.is_file()}
        write_json(tmp / "manifest.json", manifest)
    remove_stale_temps(out.parent, [out.name])  # a `.old` kept above held the only copy until now
    log(f"[export] wrote {out}")
    return out


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
