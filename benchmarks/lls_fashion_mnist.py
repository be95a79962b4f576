"""SmallConv on real Fashion-MNIST: BP vs LLS (square) vs LLS-M vs LLS-MxM vs learnable local classifiers.

One shared budget (same epochs, batch, AdamW lr 5e-3 + cosine, augmentation, seed) for every mode; one table of
test accuracy, training MACs per sample (counted), peak training memory (RSS growth measured in a fresh process
per mode) and wall time per epoch — all measured in this run. Results: benchmarks/results/lls_fashion_mnist.json.
No augmentation by default: with the paper's crop + flip every mode under-fits in 10 epochs (BP 92.4%, LLS 89.6%
measured); without it BP reaches 93.5% and LLS 91.2% (20 epochs: LLS over-fits, 90.5%; weight decay 0.05: no
change) — the runs behind that choice are in the issue notes.
Recipe options, each shared by every mode and off by default: --optimizer adamw_schedulefree (the authors'
optimizer; BN statistics are then re-estimated before evaluation in every mode), --warmup-steps, --lr-scales (lr
factor per block + classifier; BP gets the same factors as param groups); --label-smoothing applies to the LLS local
losses only (a rule hyper-parameter like --temperature). Measured at 10 epochs, seed 0, against the default (BP
93.45 / LLS 91.23): schedule-free (the authors' optimizer) BP 93.08 / LLS 91.18 (gap 1.90), LLS-M 90.68; local label
smoothing 0.1 LLS 91.04; lr factors 0.25/0.5/1/1/1 LLS 91.75 but BP 93.05, 0.1/0.25/0.5/1/1 LLS 91.57, 0.5/1/1/1/1
BP 93.53 / LLS 91.22, 0.25/0.5/1/1/1 for LLS-M 91.44 (default 91.6); seed 1: default BP 93.15 / LLS 90.87, factors
0.25/0.5/1/1/1 BP 93.10 / LLS 91.31 (gap 2.28 -> 1.79). The factors narrow the gap (mean of the two seeds 2.25 ->
1.55) but partly by lowering BP (-0.22 on average), so they are not the default. Pooling sizes 8/4/4 for the conv
blocks' local losses (instead of the authors' 4/2/2): LLS 90.70. Temperature 0.25: LLS 91.10 (train 93.2 %), 1.0:
LLS 90.64 (train 95.6 %) vs 0.5: 91.23 (train 94.9 %); horizontal flip only (no crop): BP 93.33 / LLS 91.00. LLS
alone: dropout 0.1 after every transition (the authors' --dropout) 90.56; batch 64 91.06; lr 2.5e-3 91.24, 1e-2
91.15; the authors' input standardisation (mean 0.286, std 0.353) 91.06; evaluating an EMA (0.999) of the weights
90.68 — LLS sits at 91.0-91.3 whatever the recipe. Towards the authors' recipe, crop + flip for 50 epochs: BP 94.09
/ LLS 91.48 (train 96.5 / 92.4 %) — the gap widens to 2.61. Width does not close it either: the paper's SmallConvL
(96-192-512, FC 1024; built in a scratch script, not shipped) at the default recipe gives BP 93.85 / LLS 91.90
(train 99.1 / 94.4 %), a gap of 1.95.

    .venv/bin/python benchmarks/lls_fashion_mnist.py                 # full run (10 epochs, 60k images)
    .venv/bin/python benchmarks/lls_fashion_mnist.py --jobs 5 --threads 1   # the modes in parallel processes
    .venv/bin/python benchmarks/lls_fashion_mnist.py --subset 2000 --epochs 1 --out /tmp/quick.json

The paper's Table 1 (`--table1 NET`): LLS with each basis waveform — the paper's "cosine" (edgeml's `sine`: the
authors' code computes `sin(f_k n)` under that name), "square" and "random" (their `LLS_Random`: a fixed seeded
0.1 N(0, 1) matrix on unnormalised features; edgeml.lls.basis) — in modes LLS, LLS-M and LLS-MxM, beside BP as the
same-run reference, with the authors' recipe: schedule-free AdamW, lr 5e-3, batch 128, T 0.5, no augmentation.
Each run writes its net's entry under "table1" in the JSON once every cell has finished (the rest of the file is
kept). The paper trains 100 epochs on all 60k images; this 2-core shared machine (1-min load 7-13 during the run,
recorded in the JSON) allows far less, so the recorded run is: SmallConv 1 epoch on all 60k training images,
tested on all 10k; VGG-8 (28 px, 1 input channel; ~4 CPU-s per batch of 128 here, ~30 min per 60k epoch) 1 epoch
on the first 3,072 training images (24 steps), tested on the first 2,000 test images. These are early-training
accuracies, not the paper's converged ones: they compare the waveforms and modes at an equal, small budget.

    .venv/bin/python benchmarks/lls_fashion_mnist.py --table1 lls_smallconv --optimizer adamw_schedulefree \\
        --epochs 1 --jobs 2 --threads 1
    .venv/bin/python benchmarks/lls_fashion_mnist.py --table1 lls_vgg8 --optimizer adamw_schedulefree \\
        --epochs 1 --subset 3072 --test-subset 2000 --jobs 2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.data import Subset

from edgeml.bench.lls_cost import measure_peak_memory, training_macs
from edgeml.data import open_image_dataset
from edgeml.io import write_json
from edgeml.registry import create_model
from edgeml.training.loop import EpochReport, train
from edgeml.training.optim import OPTIMIZERS

MODES = ("bp", "lls", "lls_m", "lls_mxm", "local_learnable")
RESULTS = Path(__file__).parent / "results" / "lls_fashion_mnist.json"
# The LLS paper's Table 1 (Fashion-MNIST, SmallConv, 100 epochs). The exact figures could not be retrieved here;
# these are the approximate ranges quoted in the issue, stated as such in the table and the JSON.
PAPER_TABLE1 = {"bp": "~91-92 (approx.)", "lls": "~89-91 (approx.)"}
# The paper's Table 1 grid: its waveform names -> edgeml's (edgeml.lls.basis), the LLS modes, and the two nets.
TABLE1_WAVEFORMS = {"cosine": "sine", "square": "square", "random": "random"}
TABLE1_MODES = ("lls", "lls_m", "lls_mxm")
TABLE1_NETS = ("lls_smallconv", "lls_vgg8")
TABLE1_CELLS = ("bp", *(f"{mode}-{wave}" for mode in TABLE1_MODES for wave in TABLE1_WAVEFORMS))
PAPER_EPOCHS = 100


def _fit(model, mode: str, args: argparse.Namespace, train_set, test_set, label: str,
         part: Path | None = None) -> tuple[dict, list[dict]]:
    """Train `model` in `mode` through edgeml's training loop for the shared budget: (train's result, history)."""
    history: list[dict] = []

    def log_epoch(report: EpochReport) -> None:
        train_metrics = report.record["train"]
        history.append({"epoch": report.epoch, "train_loss": train_metrics["loss"],
                        "train_acc": 100.0 * train_metrics["acc"], "seconds": report.train_seconds,
                        "cpu_seconds": report.train_cpu_seconds})
        if part is not None:
            write_json(part, {"key": label, "mode": mode, "done": False, "history": history})

    # One optimizer recipe for every mode (optimizer, lr, schedule, warm-up steps, lr factors): BP trains through
    # BackpropLearner without gradient clipping, as the local learner has none, so only the learning rule differs.
    with tempfile.TemporaryDirectory(prefix="lls_bench_run_") as run_dir:
        result = train(model, {"train": train_set, "test": test_set}, run_dir, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, mode=mode, seed=args.seed, on_epoch=log_epoch,
                       progress=part is None, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                       optimizer=args.optimizer, lr_scales=args.lr_scales, grad_clip=None)
    return result, history


def run_mode(mode: str, args: argparse.Namespace, train_set, test_set, console: Console,
             part: Path | None = None) -> dict:
    """Train `mode` through edgeml's training loop for the shared budget, then measure accuracy, MACs and memory;
    `part` gets per-epoch progress."""
    torch.manual_seed(args.seed)
    model = create_model("lls_smallconv", mode=mode, temperature=args.temperature,
                         label_smoothing=args.label_smoothing)
    console.print(f"[bold]{mode}[/]: training {args.epochs} epochs")
    result, history = _fit(model, mode, args, train_set, test_set, mode, part)
    accuracy = 100.0 * result["test"]["top1"]
    macs = training_macs(model, mode, (1, 28, 28))
    memory = measure_peak_memory("lls_smallconv", mode, batch_size=args.batch_size, steps=3)
    epoch_times = [h["seconds"] for h in history]
    console.print(f"{mode}: test accuracy {accuracy:.2f}%, {sum(epoch_times) / len(epoch_times):.1f} s/epoch, "
                  f"peak training memory {memory['training_peak_bytes'] / 2**20:.1f} MiB")
    return {"mode": mode, "test_accuracy": accuracy, "training_macs_per_sample": macs,
            "peak_training_memory_bytes": memory["training_peak_bytes"], "memory_probe": memory,
            "seconds_per_epoch": sum(epoch_times) / len(epoch_times),
            "cpu_seconds_per_epoch": sum(h["cpu_seconds"] for h in history) / len(history), "history": history,
            "paper_table1": PAPER_TABLE1.get(mode)}


def run_table1_cell(net: str, key: str, args: argparse.Namespace, train_set, test_set, console: Console,
                    part: Path | None = None) -> dict:
    """One cell of the paper's Table 1: `net` trained in the mode and waveform `key` names ("bp" or
    "<mode>-<paper waveform>") for the shared budget; its test accuracy and time per epoch."""
    mode, _, paper_waveform = key.partition("-")
    waveform = TABLE1_WAVEFORMS.get(paper_waveform, "square")
    torch.manual_seed(args.seed)
    model = create_model(net, mode=mode, waveform=waveform, temperature=args.temperature,
                         label_smoothing=args.label_smoothing, in_channels=1, image_size=28)
    console.print(f"[bold]{net} {key}[/]: training {args.epochs} epoch(s)")
    result, history = _fit(model, mode, args, train_set, test_set, key, part)
    accuracy = 100.0 * result["test"]["top1"]
    console.print(f"{net} {key}: test accuracy {accuracy:.2f}%")
    return {"key": key, "net": net, "mode": mode, "waveform": paper_waveform or None,
            "edgeml_waveform": waveform if mode != "bp" else None, "test_accuracy": accuracy,
            "train_accuracy_last_epoch": history[-1]["train_acc"],
            "seconds_per_epoch": sum(h["seconds"] for h in history) / len(history),
            "cpu_seconds_per_epoch": sum(h["cpu_seconds"] for h in history) / len(history), "history": history}


def table1_summary(net: str, rows: list[dict]) -> Table:
    bp = next((r for r in rows if r["mode"] == "bp"), None)
    table = Table(title=f"Table 1 ({net}, Fashion-MNIST): test accuracy % by basis waveform and mode")
    for col in ("mode", *TABLE1_WAVEFORMS, "BP (same run)"):
        table.add_column(col, justify="right")
    acc = {r["key"]: r["test_accuracy"] for r in rows}
    for mode in TABLE1_MODES:
        cells = [f"{acc[f'{mode}-{w}']:.2f}" if f"{mode}-{w}" in acc else "-" for w in TABLE1_WAVEFORMS]
        table.add_row(mode, *cells, f"{bp['test_accuracy']:.2f}" if bp else "-")
    return table


def summary_table(rows: list[dict]) -> Table:
    bp = next((r for r in rows if r["mode"] == "bp"), None)
    table = Table(title="SmallConv on Fashion-MNIST: BP vs local learning (one shared budget)")
    for col in ("mode", "test acc %", "vs BP (pts)", "paper T1 %", "train MACs/sample", "MACs vs BP",
                "peak train mem", "mem BP/mode", "s/epoch", "CPU s/epoch"):
        table.add_column(col, justify="right")
    for r in rows:
        macs = r["training_macs_per_sample"]["total"]
        mem = r["peak_training_memory_bytes"]
        table.add_row(
            r["mode"], f"{r['test_accuracy']:.2f}",
            f"{r['test_accuracy'] - bp['test_accuracy']:+.2f}" if bp else "-",
            r["paper_table1"] or "-", f"{macs / 1e6:.2f} M",
            f"{bp['training_macs_per_sample']['total'] / macs:.2f}x fewer" if bp else "-",
            f"{mem / 2**20:.1f} MiB", f"{bp['peak_training_memory_bytes'] / mem:.2f}x" if bp else "-",
            f"{r['seconds_per_epoch']:.1f}", f"{r['cpu_seconds_per_epoch']:.1f}")
    return table


def _optimizer_text(args: argparse.Namespace) -> str:
    kind = "AdamW + cosine" if args.optimizer == "adamw" else "schedule-free AdamW (constant lr, averaged iterate)"
    scales = f", lr factors per stage {args.lr_scales}" if args.lr_scales else ""
    return (f"{kind}, lr {args.lr}{scales}, weight decay {args.weight_decay}, warm-up {args.warmup_steps} steps; "
            "one optimizer per block in local modes")


def _how_modes_ran(args: argparse.Namespace) -> str:
    if args.jobs > 1:
        return "in parallel worker processes"
    return "in separate worker processes, merged with --merge" if args.merge else "one after another"


def _meta(args: argparse.Namespace, train_images: int, test_images: int) -> dict:
    return {"benchmark": "lls_fashion_mnist", "model": "lls_smallconv", "data": args.data,
            "train_images": train_images, "test_images": test_images, "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": _optimizer_text(args),
            "augmentation": "RandomCrop(28, pad 4) + horizontal flip" if args.augment != "none" else "none",
            "lls_temperature": args.temperature, "lls_label_smoothing": args.label_smoothing,
            "seed": args.seed,
            "memory_method": "RSS growth over the pre-training footprint, fresh process per mode, batch "
                             f"{args.batch_size}, 3 steps (edgeml.bench.lls_cost.measure_peak_memory)",
            "macs_method": "Conv/Linear MACs counted by hooks; forward + weight grads + input grads where needed "
                           "+ local heads (edgeml.bench.lls_cost.training_macs)",
            "training_loop": "edgeml.training.loop.train (the loop of `edgeml train`; epochs timed by its hook)",
            "timing_note": "wall and CPU seconds per training epoch on a shared machine; modes ran "
                           f"{_how_modes_ran(args)}, "
                           f"{args.threads} thread(s) each",
            "paper_table1_note": "paper figures are approximate ranges (exact Table 1 values not retrieved)",
            "torch": torch.__version__, "machine": platform.machine(), "python": sys.version.split()[0]}


def _run_workers(args: argparse.Namespace, parts: Path, console: Console) -> list[dict]:
    """One worker process per mode (or Table 1 cell; at most `jobs` at once); each writes parts/<key>.json."""
    base = [sys.executable, __file__, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--weight-decay", str(args.weight_decay), "--temperature", str(args.temperature),
            "--label-smoothing", str(args.label_smoothing), "--optimizer", args.optimizer,
            "--warmup-steps", str(args.warmup_steps),
            *(["--lr-scales", *map(str, args.lr_scales)] if args.lr_scales else []),
            "--seed", str(args.seed),
            "--augment", args.augment, "--data", args.data, "--threads", str(args.threads),
            "--parts", str(parts), "--worker"] + (["--subset", str(args.subset)] if args.subset else []) \
        + (["--test-subset", str(args.test_subset)] if args.test_subset else [])
    keys = args.cells if args.table1 else args.modes
    pending, running = list(keys), []
    while pending or running:
        while pending and len(running) < args.jobs:
            mode = pending.pop(0)
            which = ["--table1", args.table1, "--cells", mode] if args.table1 else ["--modes", mode]
            running.append((mode, subprocess.Popen([*base, *which], stdout=subprocess.DEVNULL)))
        for mode, proc in list(running):
            if proc.poll() is not None:
                running.remove((mode, proc))
                if proc.returncode != 0:
                    raise SystemExit(f"worker for mode {mode} failed with exit code {proc.returncode}")
                console.print(f"{mode} done")
        time.sleep(2)
    return [json.loads((parts / f"{key}.json").read_text()) for key in keys]


def _table1(args: argparse.Namespace, train_set, test_set, console: Console) -> int:
    """The Table 1 grid on `args.table1`: cells in workers (or in turn), then its entry under "table1" in --out."""
    if args.worker:
        key = args.cells[0]
        part = args.parts / f"{key}.json"
        write_json(part, {**run_table1_cell(args.table1, key, args, train_set, test_set, console, part),
                          "done": True})
        return 0
    load_before, started = os.getloadavg(), time.time()
    if args.jobs > 1:
        with tempfile.TemporaryDirectory(prefix="lls_table1_") as tmp:
            rows = _run_workers(args, Path(tmp), console)
    else:
        rows = [run_table1_cell(args.table1, key, args, train_set, test_set, console) for key in args.cells]
    console.print(table1_summary(args.table1, rows))
    entry = {"model": args.table1, "input": "28x28x1", "train_images": len(train_set), "test_images": len(test_set),
             "epochs": args.epochs, "paper_epochs": PAPER_EPOCHS, "batch_size": args.batch_size,
             "optimizer": _optimizer_text(args), "augmentation": "none", "lls_temperature": args.temperature,
             "seed": args.seed, "waveforms": {paper: f"edgeml '{ours}'" for paper, ours in TABLE1_WAVEFORMS.items()},
             "waveform_note": "paper 'cosine' = the authors' generate_frequency_matrix, sin(f_k n) (edgeml 'sine'); "
                              "'random' = their LLS_Random: fixed 0.1 N(0,1) [K, 2048] pooled to D, features not "
                              "normalised, drawn with seed 0 (edgeml.lls.basis); LLS-M/-MxM modulate it as edgeml's "
                              "lls_m / lls_mxm do",
             "budget_note": f"{args.epochs} epoch(s) on {len(train_set)} training images vs the paper's "
                            f"{PAPER_EPOCHS} epochs on 60000: early-training accuracies at an equal budget",
             "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}, "cpus": os.cpu_count(),
             "jobs": args.jobs, "threads_per_job": args.threads, "wall_minutes": (time.time() - started) / 60,
             "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "complete": True, "rows": rows}
    data = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "lls_fashion_mnist"}
    data.setdefault("table1", {})[args.table1] = entry
    write_json(args.out, data)
    console.print(f"results: {args.out} (table1.{args.table1})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                        help="adamw (+ cosine schedule, default) or adamw_schedulefree (the authors'; needs the "
                             "schedulefree package; BN statistics are then re-estimated before evaluation in every "
                             "mode)")
    parser.add_argument("--lr-scales", type=float, nargs="+", default=None,
                        help="lr factor per block + one for the classifier (every mode: BP gets them as param "
                             "groups); default: 1 everywhere")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear lr warm-up steps (every mode)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (every mode)")
    parser.add_argument("--temperature", type=float, default=0.5, help="LLS temperature T (local modes)")
    parser.add_argument("--label-smoothing", type=float, default=0.0,
                        help="label smoothing of the LLS local losses (local modes; the classifier CE has none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", choices=("none", "crop-flip"), default="none",
                        help="training augmentation: none (default) or RandomCrop(28, pad 4) + flip as the paper")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N images only (quick check)")
    parser.add_argument("--test-subset", type=int, default=None, help="test on the first N test images only")
    parser.add_argument("--table1", choices=TABLE1_NETS, default=None,
                        help="run the paper's Table 1 grid (waveforms x LLS modes + BP) on this net instead")
    parser.add_argument("--cells", nargs="+", default=list(TABLE1_CELLS), choices=TABLE1_CELLS,
                        help="with --table1: which cells to run (default: all)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--data", default="fashion-mnist", help="data set name or IDX folder")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="train this many modes at once, one process each")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    parser.add_argument("--parts", type=Path, default=None,
                        help="folder for per-mode progress files of --jobs runs (default: a temporary folder)")
    parser.add_argument("--merge", action="store_true",
                        help="only merge the finished per-mode files in --parts into the table and JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one mode -> parts/<mode>.json
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    console = Console()
    train_set = open_image_dataset(args.data, "train", augment=args.augment != "none")
    test_set = open_image_dataset(args.data, "test")
    if args.subset:
        train_set = Subset(train_set, range(min(args.subset, len(train_set))))
    if args.test_subset:
        test_set = Subset(test_set, range(min(args.test_subset, len(test_set))))
    if args.table1:
        return _table1(args, train_set, test_set, console)
    meta = _meta(args, len(train_set), len(test_set))
    if args.worker:
        part = args.parts / f"{args.modes[0]}.json"
        write_json(part, {**run_mode(args.modes[0], args, train_set, test_set, console, part), "done": True})
        return 0
    if args.merge:
        if args.parts is None:
            parser.error("--merge needs --parts")
        rows = [json.loads((args.parts / f"{mode}.json").read_text()) for mode in args.modes]
        unfinished = [r["mode"] for r in rows if not r.get("done")]
        if unfinished:
            parser.error(f"modes still training: {', '.join(unfinished)}")
        meta["epochs"] = len(rows[0]["history"])
    elif args.jobs > 1 and args.parts is not None:
        args.parts.mkdir(parents=True, exist_ok=True)
        rows = _run_workers(args, args.parts, console)
    elif args.jobs > 1:
        with tempfile.TemporaryDirectory(prefix="lls_bench_") as tmp:
            rows = _run_workers(args, Path(tmp), console)
    else:
        rows = []
        for mode in args.modes:
            rows.append(run_mode(mode, args, train_set, test_set, console))
            write_json(args.out, {**meta, "complete": False, "results": rows})
    console.print(summary_table(rows))
    result = {**meta, "complete": True, "results": rows}
    bp = next((r for r in rows if r["mode"] == "bp"), None)
    lls = next((r for r in rows if r["mode"] == "lls"), None)
    if bp and lls:
        gap = bp["test_accuracy"] - lls["test_accuracy"]
        ratio = bp["peak_training_memory_bytes"] / lls["peak_training_memory_bytes"]
        result["goals"] = {"lls_within_1.5_points_of_bp": gap <= 1.5, "lls_memory_ratio_at_least_1.5": ratio >= 1.5,
                           "accuracy_gap_points": gap, "memory_ratio": ratio}
        console.print(f"LLS vs BP: {gap:+.2f} points below BP (goal <= 1.5), {ratio:.2f}x less peak training "
                      f"memory (goal >= 1.5x)")
    write_json(args.out, result)
    console.print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
