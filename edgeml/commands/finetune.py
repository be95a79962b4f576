"""`edgeml finetune`: on-device LLS fine-tuning of a weight pack with the C++ engine."""

from __future__ import annotations

import argparse
import json


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
    p.add_argument("--blocks", default="last:2", help="blocks to train: last:N (the classifier counts as one)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the pack's)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default=None, help="default: the pack's")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training samples")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on at most this many test samples")
    p.add_argument("--brightness", type=float, default=0.0, help="photometric shift applied to the data")
    p.add_argument("--contrast", type=float, default=1.0, help="photometric shift applied to the data")
    p.add_argument("--quantize-frozen", action="store_true",
                   help="with --checkpoint: store frozen blocks' weights as int8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.lls.device import finetune

    if args.checkpoint:
        from edgeml.lls.pack import pack_from_checkpoint

        pack_from_checkpoint(args.checkpoint, args.pack, train_blocks=args.blocks,
                             quantize_frozen=args.quantize_frozen)
    result = finetune(args.pack, args.data, args.out, model=args.model, blocks=args.blocks, epochs=args.epochs,
                      batch=args.batch, lr=args.lr, optimizer=args.optimizer, limit=args.limit,
                      eval_limit=args.eval_limit, brightness=args.brightness, contrast=args.contrast,
                      seed=args.seed, progress=not args.json)
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
