"""`edgeml train` (also `torchrun --nproc-per-node N -m edgeml train ...` for DDP)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from edgeml.commands._args import model_options, nonneg_float, nonneg_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a registered model (video_spiking, rgb_baseline, lls_*) with checkpoints and resume",
        description="Train a registered model on a data set: a clip cache for video models (built by `edgeml data "
        "build`), a data set name or folder for image models. AdamW + cosine schedule (or an LLS mode via --mode), "
        "evaluation every epoch (top-1, top-5, confusion, spike rates), checkpoints OUT/last.safetensors and "
        "OUT/best.safetensors every epoch, OUT/metrics.jsonl. --resume continues from OUT/last.safetensors. "
        "Under `torchrun --nproc-per-node N -m edgeml train ...` it runs data-parallel (gloo on CPU, nccl on GPU); "
        "--batch-size is the global batch.",
    )
    p.add_argument("--model", required=True, help="registered model name (see `edgeml info` / the registry)")
    p.add_argument("--data", required=True, help="clip cache folder (video) or data set name/folder (image)")
    p.add_argument("--out", required=True, help="output folder for checkpoints and metrics")
    p.add_argument("--size", help="model size where the model has sizes (tiny | small | base)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch size (default 32)")
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--weight-decay", type=nonneg_float, default=None, help="AdamW weight decay")
    p.add_argument("--mode", default=None, help="learning rule: bp (default) or an LLS mode (lls, lls_m, ...)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--workers", type=nonneg_int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads per process (default: torch's; 1 is fastest on a busy shared CPU)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    resume.add_argument("--force", action="store_true",
                        help="start over in a non-empty OUT: replaces its checkpoints and metrics.jsonl (never "
                             "anything else; an OUT holding --data is refused)")
    p.add_argument("--no-augment", action="store_true",
                   help="no training augmentation (default: the image set's own, e.g. crop + flip; for clip "
                        "caches, the mirrors the source's mirror.json lists, with their label swaps)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model config, e.g. --set beta=0 --set surrogate=arctan (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the final metrics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.errors import InputError
    from edgeml.training.distributed import finish_distributed
    from edgeml.training.loop import train_from_args

    overrides = model_options(args.set)
    if Path(args.data).is_file():
        raise InputError("--data is a file", path=args.data,
                         fix="pass a folder (a clip cache or an image data set) or a data set name")
    result = train_from_args(args.model, args.data, args.out, size=args.size, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, mode=args.mode, seed=args.seed,
                             resume=args.resume, force=args.force, workers=args.workers, threads=args.threads,
                             progress=not args.no_progress, weight_decay=args.weight_decay, overrides=overrides,
                             data_opts={"augment": False} if args.no_augment else None)
    if args.json and os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        brief = {k: v for k, v in result.items() if k not in ("val", "test")}
        for split in ("val", "test"):
            if result.get(split):
                brief[split] = {k: result[split][k] for k in ("top1", "top5", "video_top1", "loss",
                                                                "mean_spike_rate")}
        print(json.dumps(brief, indent=2))
    finish_distributed()  # under torchrun: leave the group and exit here (see its docstring)
    return 0
