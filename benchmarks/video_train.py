"""video_spiking vs the RGB 3-D CNN baseline on the built-in synth action set, trained with the same budget.

One run: synth videos -> compressed-domain clip cache -> train video_spiking and rgb_baseline with the same epochs,
batch, AdamW lr + cosine schedule, seed, CPU threads and mirror augmentation (the synth set's mirror.json: left <->
right, cw <-> ccw; `edgeml.video.datasets`) -> test top-1 (best-on-val checkpoint) per video and per clip,
parameters, MACs and ACs per clip counted on real test clips (ACs from the spike rates measured on those clips),
estimated energy per clip (45 nm table: 4.6 pJ/MAC, 0.9 pJ/AC — an estimate, not a measurement), PyTorch inference
clips/s (same threads, same batch) and training time. Ratios are against the baseline measured in the same run. The
budget is the same for both: at most --epochs epochs and --budget-min minutes each (the 3-D CNN reaches the time
limit first). Results: benchmarks/results/video_train.json.

Accuracy is reported both ways: per clip (each GOP's clip judged alone) and per video (a test video's clips, one per
GOP, are judged by their mean logits: the multi-clip protocol action-recognition accuracy is quoted in, the unit of
the paper's J/video and videos/s, and what `edgeml bench` does). The accuracy goal is judged per video; the per-clip
gap is printed beside it. Seed 1 (a fresh synth set, the same command with --seed 1): video_spiking 99.35 % per clip
/ 100 % per video, rgb_baseline 100 % / 100 %, 29.1x fewer MACs, 12.8x more clips/s.

Variants measured (video_spiking alone, seed 0, same budget; committed default: 384 per class, 40 epochs, test
99.25 % per clip against the baseline's 100 %): 52 epochs 99.08 %; model option residual_pool=2 (1.5x training
time, 34 epochs) 99.35 %; mean-free motion field as 2 extra input channels (tried, not kept) 99.08 %; 512 per class
99.19 % (38 epochs), with residual_pool=2 99.47 % (28 epochs); horizontal-mirror test-time averaging on the shipped
checkpoint 14 -> 9 errors of 1856. None reaches the baseline per clip; the remaining errors are rotation / zoom clips
whose vectors are dominated by the drifting background, one clip each of 14 different videos.

    .venv/bin/python benchmarks/video_train.py                      # the full run (8 classes x 384 videos, 40 epochs)
    .venv/bin/python benchmarks/video_train.py --ship    # ... and install edgeml/assets/video_spiking/best.safetensors
    .venv/bin/python benchmarks/video_train.py --per-class 6 --epochs 1 --out /tmp/quick.json   # smoke test
    .venv/bin/python benchmarks/video_train.py --check-shipped   # the shipped checkpoint on a cache rebuilt now

--check-shipped rebuilds the synth set and its clip cache with this code (same seed and settings as the committed
run), evaluates the shipped checkpoint on the test split, and records per clip and per video top-1 beside the
committed results (goal: within 0.5 points) under "shipped_check" in the results file — the check that the model's
inputs did not drift when the front end changed.

The shipped checkpoint (the export verb's default weights) is reproduced by the `--ship` command above (seed 0).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgeml.bench.energy import TABLES, estimate_energy
from edgeml.bench.opcount import count_ops
from edgeml.io import load_checkpoint, read_json, save_checkpoint, write_json
from edgeml.registry import create_model, model_spec
from edgeml.training.loop import train
from edgeml.video.datasets import ClipDataset, build_clip_cache
from edgeml.video.synth import make_synth_dataset

RESULTS = Path(__file__).parent / "results" / "video_train.json"
ASSET = Path(__file__).resolve().parents[1] / "edgeml" / "assets" / "video_spiking" / "best.safetensors"


def clips_per_second(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int) -> float:
    """Inference throughput on `inputs` (one batch): best of `repeats` timed forward passes, after a warm-up."""
    model.eval()
    best = float("inf")
    with torch.inference_mode():
        model(*inputs)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(*inputs)
            best = min(best, time.perf_counter() - t0)
    return inputs[0].shape[0] / best


def real_batch(cache: Path, names: tuple[str, ...], n: int) -> tuple[torch.Tensor, ...]:
    """The first `n` test clips (spread over the split) as one batch of the model's inputs."""
    ds = ClipDataset(cache, "test")
    step = max(1, len(ds) // n)
    items = [ds[i] for i in range(0, len(ds), step)][:n]
    return tuple(torch.stack([it[k] for it in items]) for k in names)


def run_model(name: str, size: str, cache: Path, out: Path, args: argparse.Namespace, console: Console) -> dict:
    meta = ClipDataset(cache, "train")
    h, w = meta.meta["size"]
    torch.manual_seed(args.seed)
    model = create_model(name, size=size, num_classes=len(meta.classes), clip_len=meta.meta["clip_len"],
                         height=h, width=w, grid=meta.meta["grid"])
    console.print(f"[bold]{name} ({size})[/]: training {args.epochs} epochs")
    t0 = time.perf_counter()
    result = train(model, cache, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                   force=True, threads=args.threads, progress=not args.no_progress, max_minutes=args.budget_min)
    train_s = time.perf_counter() - t0
    model = create_model(name, checkpoint=out / "best.safetensors")
    spec = model_spec(name)
    batch = real_batch(cache, spec.input_names, args.clips)
    ops = count_ops(model, batch)
    energy = estimate_energy(ops, args.table)
    speed = clips_per_second(model, batch, args.repeats)
    test = result["test"]
    return {"model": name, "size": size, "test_top1": test["top1"], "test_video_top1": test["video_top1"],
            "test_top5": test["top5"],
            "best_epoch": result["best_epoch"], "epochs_done": result["epochs_done"],
            "params": sum(p.numel() for p in model.parameters()),
            "macs_per_clip": ops.macs, "acs_per_clip": ops.acs, "dense_macs_per_clip": ops.dense_macs,
            "spike_rates": ops.spike_rates, "mean_spike_rate": ops.as_dict()["mean_spike_rate"],
            "energy_j_per_clip": energy.joules, "energy_label": energy.label, "energy_table": energy.table,
            "clips_per_s": speed, "train_minutes": train_s / 60, "test_confusion": test["confusion"],
            "checkpoint": f"{out.name}/best.safetensors"}  # relative to --work: no machine path in the JSON


def ship(checkpoint: Path, args: argparse.Namespace) -> None:
    """Install the model weights (no optimizer state) as the package's default video_spiking checkpoint."""
    tensors, meta = load_checkpoint(checkpoint, expect_model="video_spiking")
    meta = {**meta, "reproduce": "python benchmarks/video_train.py --ship " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in (("per_class", args.per_class), ("epochs", args.epochs),
                                                    ("batch_size", args.batch_size), ("lr", args.lr),
                                                    ("seed", args.seed)))}
    save_checkpoint(ASSET, {k: v for k, v in tensors.items() if k.startswith("model.")}, meta)


def check_shipped(cache: Path, args: argparse.Namespace, console: Console) -> None:
    """The shipped checkpoint on this cache's test split vs the committed results (within 0.5 points)."""
    from edgeml.training.data import make_loader
    from edgeml.training.evaluation import evaluate

    committed = read_json(args.out)
    ref = committed["rows"][0]
    model = create_model("video_spiking", checkpoint=ASSET)
    ds = ClipDataset(cache, "test")
    test = evaluate(model, make_loader(ds, list(range(len(ds))), args.batch_size, 0, False),
                    model_spec("video_spiking").input_names, len(ds.classes))
    delta = {"per_clip_points": 100 * (test["top1"] - ref["test_top1"]),
             "per_video_points": 100 * (test["video_top1"] - ref["test_video_top1"])}
    check = {"date": time.strftime("%Y-%m-%d"), "checkpoint": "edgeml/assets/video_spiking/best.safetensors",
             "test_top1": test["top1"], "test_video_top1": test["video_top1"], "clips": test["samples"],
             "committed_top1": ref["test_top1"], "committed_video_top1": ref["test_video_top1"], "delta": delta,
             "within_0.5_points": all(abs(v) <= 0.5 for v in delta.values())}
    console.print(f"shipped checkpoint on a cache rebuilt now: clip top-1 {100 * test['top1']:.2f} % (committed "
                  f"{100 * ref['test_top1']:.2f}), video top-1 {100 * test['video_top1']:.2f} % (committed "
                  f"{100 * ref['test_video_top1']:.2f}); within 0.5 points: {check['within_0.5_points']}")
    write_json(args.out, {**committed, "shipped_check": check})
    console.print(f"wrote shipped_check into {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/bench_video_train"), help="data and checkpoints")
    ap.add_argument("--per-class", type=int, default=384, help="synth videos per class (70/15/15 split)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--budget-min", type=float, default=20.0,
                    help="wall-clock training budget per model: no epoch starts after it is spent")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for training and timing (both models)")
    ap.add_argument("--size", default="small", help="video_spiking size")
    ap.add_argument("--rgb-size", default="tiny", help="rgb_baseline size")
    ap.add_argument("--clips", type=int, default=32, help="test clips per batch for op counts and timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--table", default="45nm", choices=sorted(TABLES))
    ap.add_argument("--ship", action="store_true", help=f"install the video_spiking checkpoint as {ASSET}")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--machine-note", default="", help="recorded with the results, e.g. 'other jobs running'")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--check-shipped", action="store_true",
                    help="evaluate the shipped checkpoint on a cache rebuilt now (no training); see the docstring")
    args = ap.parse_args()
    console = Console()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    videos = make_synth_dataset(args.work / f"synth{args.per_class}", per_class=args.per_class, seed=args.seed,
                                progress=not args.no_progress)
    cache = build_clip_cache(videos, args.work / f"clips{args.per_class}", progress=not args.no_progress)
    data_min = (time.perf_counter() - t0) / 60
    mirror = sorted(ClipDataset(cache, "train").meta.get("mirror", {}))
    counts = {s: len(ClipDataset(cache, s)) for s in ("train", "val", "test")}
    console.print(f"data: {counts} clips ({data_min:.1f} min to build)")
    if args.check_shipped:
        check_shipped(cache, args, console)
        return

    rows = [run_model("video_spiking", args.size, cache, args.work / "video_spiking", args, console),
            run_model("rgb_baseline", args.rgb_size, cache, args.work / "rgb_baseline", args, console)]
    spk, rgb = rows
    ratios = {"macs_fewer_x": rgb["macs_per_clip"] / max(spk["macs_per_clip"], 1.0),
              "clips_per_s_faster_x": spk["clips_per_s"] / rgb["clips_per_s"],
              "energy_lower_x": rgb["energy_j_per_clip"] / spk["energy_j_per_clip"],
              "top1_diff_points": 100 * (spk["test_top1"] - rgb["test_top1"]),
              "video_top1_diff_points": 100 * (spk["test_video_top1"] - rgb["test_video_top1"])}
    goals = {"spiking_top1_ge_90": spk["test_top1"] >= 0.90, "spiking_train_le_20_min": spk["train_minutes"] <= 20,
             "macs_ge_10x_fewer": ratios["macs_fewer_x"] >= 10,
             "clips_per_s_ge_5x": ratios["clips_per_s_faster_x"] >= 5,
             "accuracy_equal_or_better_per_video": spk["test_video_top1"] >= rgb["test_video_top1"],
             "accuracy_equal_or_better_per_clip": spk["test_top1"] >= rgb["test_top1"]}

    table = Table(title=f"video_spiking vs RGB baseline — synth, up to {args.epochs} epochs / {args.budget_min:g} min "
                        f"each, {args.threads} thread(s)")
    for col in ("model", "video top-1", "clip top-1", "params", "MACs/clip", "ACs/clip", "est. J/clip", "clips/s",
                "epochs", "train min"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['model']} ({r['size']})", f"{100 * r['test_video_top1']:.1f}%",
                      f"{100 * r['test_top1']:.1f}%", f"{r['params']:,}",
                      f"{r['macs_per_clip'] / 1e6:.2f} M", f"{r['acs_per_clip'] / 1e6:.2f} M",
                      f"{r['energy_j_per_clip'] * 1e6:.1f} µJ", f"{r['clips_per_s']:.0f}", str(r["epochs_done"]),
                      f"{r['train_minutes']:.1f}")
    table.add_row("ratio (baseline / spiking)", f"{ratios['video_top1_diff_points']:+.1f} pt",
                  f"{ratios['top1_diff_points']:+.1f} pt", "",
                  f"{ratios['macs_fewer_x']:.1f}x fewer", "", f"{ratios['energy_lower_x']:.1f}x lower",
                  f"{ratios['clips_per_s_faster_x']:.1f}x faster", "", "")
    console.print(table)
    console.print("energy: estimated from op counts (" + f"{TABLES[args.table]['pj_per_mac']} pJ/MAC, "
                  f"{TABLES[args.table]['pj_per_ac']} pJ/AC, table {args.table}); ACs from spike rates measured on "
                  f"{args.clips} test clips. Goals: " + ", ".join(f"{k}={v}" for k, v in goals.items()))

    write_json(args.out, {"benchmark": "video_train", "rows": rows, "ratios": ratios, "goals": goals,
                          "settings": {k: v.name if isinstance(v, Path) else v for k, v in vars(args).items()},
                          "data_clips": counts, "data_minutes": data_min, "augmentation": {"mirror": mirror},
                          "machine": {
                              "cpu_count": __import__("os").cpu_count(), "platform": platform.platform(),
                              "torch": torch.__version__, "note": args.machine_note}})
    console.print(f"wrote {args.out}")
    if args.ship:
        ship(args.work / spk["checkpoint"], args)
        console.print(f"installed {ASSET}")


if __name__ == "__main__":
    main()
