"""`edgeml finetune`: on-device LLS fine-tuning of a weight pack with the C++ engine."""

from __future__ import annotations

import argparse
import json
import re

from edgeml.commands._args import finite_float, nonneg_int, positive_float, positive_int


def block_spec(text: str) -> str:
    """`last:N` (N >= 1) or `all`: the engine trains a tail of the net, and at least one block."""
    text = text.strip()
    if text != "all" and not re.fullmatch(r"last:[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected last:N or all, got {text!r}")
    if text != "all" and int(text[5:]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} trains no block; use last:1 or more")
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune the last blocks of an LLS weight pack on device data (C++ engine, no PyTorch step)",
        description="Fine-tune an LLS net on device data with the C++ engine (csrc/lls): frozen blocks run "
        "forward only, each trainable block steps on its local loss through the fixed basis, the classifier on "
        "cross-entropy; BatchNorm uses its frozen statistics. Reads --pack (write one from an `edgeml train` "
        "checkpoint with --checkpoint), fine-tunes on the train split of --data, reports accuracy before/after "
        "on its test split, step latency and peak memory, and writes the updated pack to --out atomically "
        "(the input pack is never modified). The standalone binary edgeml-finetune does the same without Python.",
    )
    p.add_argument("--model", help="expected model name (checked against the pack), e.g. lls_vww")
    p.add_argument("--pack", required=True, help="input weight pack (.pack)")
    p.add_argument("--checkpoint", help="write --pack from this `edgeml train` checkpoint first")
    p.add_argument("--data", required=True, help="data set name or folder (IDX, VWW COCO folder, CIFAR)")
    p.add_argument("--out", required=True, help="output pack")
    p.add_argument("--blocks", type=block_spec, default="last:2",
                   help="blocks to train: last:N (N >= 1; the classifier counts as one) or all")
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the pack's)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="default: the pack's")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many training samples")
    p.add_argument("--eval-limit", type=positive_int, default=None, help="evaluate on at most this many test samples")
    p.add_argument("--brightness", type=finite_float, default=0.0, help="photometric shift applied to the data")
    p.add_argument("--contrast", type=positive_float, default=1.0, help="photometric shift applied to the data")
    p.add_argument("--quantize-frozen", action="store_true",
                   help="with --checkpoint: store frozen blocks' weights as int8 (a quarter of the memory)")
    p.add_argument("--frozen-compute", choices=("float32", "int8"), default="float32",
                   help="with --quantize-frozen: run those layers in float32 (dequantised weights; the default, "
                        "faster on x86 as measured by benchmarks/lls_device.py) or through the int8 GEMM "
                        "(gemmlowp; for devices whose integer kernels pay off, e.g. NEON)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="engine threads (default: the processors this process may use); results are bit-identical "
                        "for a fixed count")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from edgeml.errors import InputError
    from edgeml.lls.device import finetune
    from edgeml.paths import refuse_overwrite

    refuse_overwrite(args.out, [args.pack, args.checkpoint, args.data])
    if args.checkpoint:
        from edgeml.lls.pack import pack_from_checkpoint

        # --pack is an output here: it must not replace the checkpoint or the data, and the data must exist
        # before anything is written.
        refuse_overwrite(args.pack, [args.checkpoint, args.data], flag="--pack")
        if os.sep in args.data and not Path(args.data).exists():
            raise InputError("data folder not found", path=args.data, fix="check the --data path")
        pack_from_checkpoint(args.checkpoint, args.pack, train_blocks=args.blocks,
                             quantize_frozen=args.quantize_frozen, frozen_compute=args.frozen_compute)
    result = finetune(args.pack, args.data, args.out, model=args.model, blocks=args.blocks, epochs=args.epochs,
                      batch=args.batch, lr=args.lr, optimizer=args.optimizer, limit=args.limit,
                      eval_limit=args.eval_limit, brightness=args.brightness, contrast=args.contrast,
                      seed=args.seed, threads=args.threads, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"edgeml finetune -> {result['out']}", show_header=False)
    table.add_row("accuracy before / after", f"{result['accuracy_before']:.2%} -> {result['accuracy_after']:.2%} "
                  f"({result['test_samples']} test samples)")
    table.add_row("steps", f"{result['steps']} x batch {result['batch']} (blocks {result['blocks']})")
    table.add_row("step latency", f"{result['step_ms_mean']:.2f} ms mean, {result['step_ms_median']:.2f} ms median")
    table.add_row("memory", f"engine arena {result['arena_bytes'] / 2**20:.2f} MiB; process peak RSS "
                  f"{result['peak_rss_mb']:.0f} MiB")
    Console().print(table)
    return 0
