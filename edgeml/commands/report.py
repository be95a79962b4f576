"""`edgeml report`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn bench results into report.md and a self-contained index.html",
        description="Compare `edgeml bench` results side by side: writes OUT/report.md and OUT/index.html "
        "(one self-contained page with inline SVG plots: latency distributions, throughput vs batch size, "
        "energy per video per backend, accuracy vs cost, pipeline split). Results files of another schema "
        "version are refused with a clear error.",
    )
    p.add_argument("results", nargs="+", help="JSON files written by `edgeml bench --out`")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.bench.report import write_report

    paths = write_report(args.results, args.out)
    print(f"report: {paths['html']}  (markdown: {paths['markdown']})")
    return 0
