"""Per-clip latency of one exported model on this CPU: PyTorch eager vs ONNX Runtime fp32 / int8 vs TVM.

    .venv/bin/python benchmarks/export_latency.py [--model video_spiking] [--checkpoint C] [--data CLIP_CACHE]
                                                  [--repeats 200] [--tune-trials 0]

Exports the model for the `x86-tvm` profile (which writes model.onnx, model.int8.onnx and tvm/model.so), opens
each backend through `edgeml.export.runtime.open_runtime`, and times one clip per call (batch 1, what an edge
device streams). Backends are timed in interleaved rounds so load from other processes hits all of them alike.
Prints median / p95 latency and clips/s per backend with ratios to PyTorch eager (same run), and writes
benchmarks/results/export_latency.json. Goals (issue 5): ORT >= 2x eager; TVM within 1.2x of ORT or faster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "ort", "ort-int8", "tvm")
RESULTS = Path(__file__).resolve().parent / "results" / "export_latency.json"


def _feeds(art: Path, data: str | None) -> tuple[dict[str, np.ndarray], str]:
    """One real clip (test split) when a data set is given, else the export's random parity input shape."""
    import json as _json

    manifest = _json.loads((art / "manifest.json").read_text())
    names = [i["name"] for i in manifest["inputs"]]
    if data:
        from edgeml.export.validate import open_split, real_samples

        feeds, _ = real_samples(open_split(manifest["task"], data, "test"), names, 1, manifest["batch"])[0]
        return feeds, f"one real clip of {Path(data).name} (test split)"
    rng = np.random.default_rng(0)
    return ({i["name"]: (rng.random(i["shape"]) * 255).astype(np.float32) for i in manifest["inputs"]},
            "random tensors of the exported shapes")


def measure(art: Path, feeds: dict[str, np.ndarray], repeats: int, rounds: int, warmup: int,
            threads: int) -> dict[str, dict]:
    from edgeml.bench.timing import Timing, time_call
    from edgeml.export.runtime import open_runtime

    runtimes = {b: open_runtime(art, b, threads=threads) for b in BACKENDS}
    samples: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for rt in runtimes.values():  # warm-up (first calls allocate / JIT)
        for _ in range(warmup):
            rt.run(feeds)
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for b, rt in runtimes.items():
            t = time_call(lambda rt=rt: rt.run(feeds), warmup=1, repeats=per_round)
            samples[b].extend(t.samples)
    out = {}
    for b in BACKENDS:
        t = Timing(batch=1, warmup=warmup, samples=samples[b])
        out[b] = {"median_ms": t.median * 1e3, "p95_ms": t.percentile(95) * 1e3, "clips_per_s": 1.0 / t.median,
                  "repeats": t.repeats}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="video_spiking")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data", default=None, help="clip cache / image data set for a real input clip")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--tune-trials", type=int, default=0, help="TVM MetaSchedule trials (0 = untuned)")
    ap.add_argument("--artefact", default=None, help="reuse an x86-tvm export folder instead of exporting")
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for every backend (torch, ORT, TVM); 1 = stable on a shared machine")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # read when the TVM runtime starts its pool
    import torch

    torch.set_num_threads(args.threads)

    from edgeml.export import export_model
    from edgeml.export.artefact import shipped_checkpoint

    with tempfile.TemporaryDirectory(prefix="edgeml-bench-") as tmp:
        if args.artefact:
            art = Path(args.artefact)
        else:
            random_init = args.checkpoint is None and shipped_checkpoint(args.model) is None
            print(f"exporting {args.model} for x86-tvm ({'random weights' if random_init else 'trained weights'})",
                  flush=True)
            t0 = time.perf_counter()
            art = export_model(args.model, "x86-tvm", Path(tmp) / "art", checkpoint=args.checkpoint,
                               random_init=random_init, data=args.data, tune_trials=args.tune_trials,
                               parity_samples=16, eval_samples=64)
            print(f"exported in {time.perf_counter() - t0:.0f} s", flush=True)
        manifest = json.loads((art / "manifest.json").read_text())
        feeds, input_note = _feeds(art, args.data)
        res = measure(art, feeds, args.repeats, args.rounds, args.warmup, args.threads)
    eager = res["torch"]["median_ms"]
    for r in res.values():
        r["speedup_vs_eager"] = eager / r["median_ms"]
    tvm_vs_ort = res["tvm"]["median_ms"] / res["ort"]["median_ms"]
    goals = {"ort_ge_2x_eager": res["ort"]["speedup_vs_eager"] >= 2.0, "tvm_within_1_2x_ort": tvm_vs_ort <= 1.2}
    _print_table(args.model, res, tvm_vs_ort, goals, input_note)

    result = {
        "benchmark": "export_latency", "model": args.model, "config": manifest["config"],
        "weights": manifest["weights"]["source"], "input": input_note,
        "inputs": manifest["inputs"], "batch": 1, "backends": res, "tvm_vs_ort": tvm_vs_ort, "goals": goals,
        "tvm": {k: manifest["backends"]["tvm"][k] for k in ("target", "tuned", "tune_trials", "tune_tasks",
                                                             "trials_per_task", "compile_s")
                if k in manifest["backends"]["tvm"]},
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": sys.version.split()[0],
                 "threads": args.threads, "loadavg_1m": os.getloadavg()[0]},
        "tools": manifest["tools"], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    from edgeml.io import write_json

    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


def _print_table(model: str, res: dict, tvm_vs_ort: float, goals: dict, input_note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model}: per-clip latency on this CPU (batch 1; {input_note})")
    for col in ("backend", "median ms", "p95 ms", "clips/s", "vs PyTorch eager"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for b, r in res.items():
        table.add_row(b, f"{r['median_ms']:.3f}", f"{r['p95_ms']:.3f}", f"{r['clips_per_s']:.1f}",
                      f"{r['speedup_vs_eager']:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"goal ORT >= 2x eager: {'met' if goals['ort_ge_2x_eager'] else 'NOT met'} "
                  f"({res['ort']['speedup_vs_eager']:.2f}x); goal TVM within 1.2x of ORT: "
                  f"{'met' if goals['tvm_within_1_2x_ort'] else 'NOT met'} (TVM/ORT = {tvm_vs_ort:.2f})")


if __name__ == "__main__":
    raise SystemExit(main())
