"""`edgeml demo`."""

from __future__ import annotations

import argparse

from edgeml.commands._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job end to end on built-in data (cached steps are reused)",
        description="The end-to-end demo: generate the synthetic video set, extract compressed-domain clips, "
        "train video_spiking (small), export it for x86-cpu and jetson, benchmark the x86-cpu export on the "
        "held-out videos with every installed backend, and write report.md + index.html. Each step is "
        "skipped when its output from an earlier run exists and checks out (use --force to redo all).",
    )
    p.add_argument("--out", default="runs/demo", help="working folder for data, checkpoints, exports, results")
    p.add_argument("--report", default="report", help="folder for index.html and report.md (default ./report)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default: the demo's setting)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for training and every backend (default 1)")
    p.add_argument("--force", action="store_true", help="re-run every step even when a cached output exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.demo import run_demo

    overrides = {k: v for k, v in (("epochs", args.epochs), ("threads", args.threads)) if v is not None}
    run_demo(args.out, args.report, force=args.force, **overrides)
    return 0
