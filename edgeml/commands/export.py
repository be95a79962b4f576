"""`edgeml export`."""

from __future__ import annotations

import argparse

from edgeml.commands._args import model_options, nonneg_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX / TVM / TensorRT artefacts for a target device",
        description="Export a registered model for a target profile (export/targets/*.toml): ONNX at the "
        "profile's opset with static shapes (checked, shape-inferred, simplified), the streaming graphs of spiking "
        "models, fp16 and int8 QDQ variants, the backend artefacts (TVM library or TensorRT build script), a "
        "manifest and a parity report against PyTorch. Weights: --checkpoint, else the checkpoint edgeml ships "
        "for the model, else --random-init (latency work only).",
    )
    p.add_argument("--model", help="registered model name (see `edgeml export --list-targets` for targets)")
    p.add_argument("--target", default="x86-cpu", help="target profile name or alias (default: x86-cpu)")
    p.add_argument("--out", help="artefact folder to create (default: runs/export/MODEL-TARGET)")
    p.add_argument("--checkpoint", help="weights from `edgeml train` (.safetensors)")
    p.add_argument("--random-init", action="store_true", help="export random weights (latency work only)")
    p.add_argument("--data", help="the model's data set (clip cache for video models; image data set name or "
                   "folder): real-input parity, int8 calibration and int8 accuracy; without it, random inputs (never a "
                   "folder named in the checkpoint)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder (atomically)")
    p.add_argument("--opset", type=positive_int, help="ONNX opset, 13..21 (default: the profile's)")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch axis instead of a static batch")
    p.add_argument("--calib-samples", type=positive_int, default=64, help="int8 calibration samples (default 64)")
    p.add_argument("--parity-samples", type=positive_int, default=64, help="real samples for parity (default 64)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model option, as for `edgeml train` (repeatable), e.g. --random-init --set size=m224 "
                        "--set height=224 --set width=224; keys and types are checked against the model")
    p.add_argument("--tune-trials", type=nonneg_int, default=0,
                   help="TVM: tune the conv/matmul kernels from scratch with this many MetaSchedule trials, measured "
                        "on this machine (host targets only), showing tasks and trials done and the best latency so "
                        "far. 0 (default): use the tuning records edgeml ships for the model (x86-tvm: video_spiking, "
                        "tuned on an x86 CPU), no tuner run; kernels they do not cover stay untuned")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim simplification")
    p.add_argument("--list-targets", action="store_true", help="list the target profiles and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.errors import InputError

    if args.list_targets:
        return _list_targets()
    if not args.model:
        from edgeml.registry import list_models

        raise InputError("--model is required", fix=f"choose one of: {', '.join(list_models())}")
    from edgeml.export import export_model
    from edgeml.export.targets import load_profile

    out = args.out or f"runs/export/{args.model}-{load_profile(args.target).name}"
    path = export_model(args.model, args.target, out, checkpoint=args.checkpoint, random_init=args.random_init,
                        force=args.force, opset=args.opset, dynamic_batch=args.dynamic_batch, data=args.data,
                        calib_samples=args.calib_samples, parity_samples=args.parity_samples,
                        tune_trials=args.tune_trials, simplify=not args.no_simplify,
                        overrides=model_options(args.set), progress=True, log=print)
    _print_summary(path)
    return 0


def _list_targets() -> int:
    from rich.console import Console
    from rich.table import Table

    from edgeml.export.targets import describe_profiles

    table = Table(title="edgeml export targets")
    for col in ("target", "backend", "precisions", "aliases", "description"):
        table.add_column(col)
    for r in describe_profiles():
        table.add_row(r["name"], r["backend"], ",".join(r["precisions"]), ",".join(r["aliases"]), r["description"])
    Console().print(table)
    return 0


def _print_summary(path: object) -> None:
    from pathlib import Path

    from edgeml.io import read_json

    summary = read_json(Path(str(path)) / "parity.json").get("summary", {})
    for key, val in summary.items():
        print(f"[export] parity {key}: {val}")
    precision = read_json(Path(str(path)) / "manifest.json").get("precision") or {}
    if precision.get("recommended"):
        print(f"[export] recommended precision: {precision['recommended']} ({precision['why']})")
