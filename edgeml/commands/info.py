"""`edgeml info`."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show versions, the compiled core, CUDA and power sensors",
        description="Report the edgeml version, whether the compiled core (and its CUDA part) is built, "
        "versions of torch/onnx/onnxruntime/av/tvm/tensorrt, the power sensors found "
        "(RAPL, NVML, Jetson INA3221) and the CPU count.",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edgeml.info import system_info

    info = system_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    core = info["compiled_core"]
    table = Table(title=f"edgeml {info['edgeml']}", show_header=False)
    table.add_row("python", f"{info['python']} ({info['machine']})")
    table.add_row("CPUs", str(info["cpu_count"]))
    if core["present"]:
        cuda = "CUDA built" if core["cuda_built"] else "CUDA not built"
        table.add_row("compiled core", f"edgeml._C present, {cuda}, {core['cuda_devices']} CUDA device(s)")
    else:
        table.add_row("compiled core", f"missing ({core['error']})")
    for name, ver in info["packages"].items():
        table.add_row(name, ver)
    sensors = info["power_sensors"]
    table.add_row("power sensors", ", ".join(f"{s['kind']}:{s['name']}" for s in sensors) or
                  "none (energy figures will be estimated)")
    Console().print(table)
    return 0
