"""On-device LLS fine-tuning: the C++ engine vs PyTorch BP and PyTorch LLS on the same net and batch.

Part 1 (cost): step latency (median) and peak RSS, each measured in its own process:
  - PyTorch BP (end-to-end backprop, all blocks), PyTorch LLS (local steps), and the standalone C++ engine
    (edgeml-finetune, no Python), training all blocks and fine-tuning the last two.
  Peak RSS is the process's VmHWM (high-water RSS); the PyTorch rows also show it above the RSS after import and
  model build (the training's own share), since the interpreter and libtorch alone take ~300 MB.
Part 2 (accuracy): SmallConv trained with LLS on clean Fashion-MNIST (in this run), evaluated on a
  brightness/contrast-shifted split, then fine-tuned on shifted device data (last two blocks) by the C++ binary:
  accuracy before / after on the shifted test split.

"C++/BP share" divides the C++ peak by BP's peak above its setup RSS (a harsher ratio: the C++ figure is the
whole program — weights, data, code — the BP figure only what training added).
Run: .venv/bin/python benchmarks/lls_device.py [--quick]; writes benchmarks/results/lls_device.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lls_device.json"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
SHIFT = {"brightness": 0.35, "contrast": 0.4}


def rss_kb() -> int:
    """Peak RSS of this process: VmHWM (ru_maxrss would include the parent's peak from before the exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- worker: one PyTorch measurement in a fresh process --------------------------------------------------------

def torch_worker(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    from edgeml.lls.device import block_optimizers, torch_lls_step
    from edgeml.lls.pack import parse_blocks
    from edgeml.registry import create_model

    torch.manual_seed(0)
    model = create_model(args.model, **json.loads(args.config)).eval()
    c, s, k = model.config["in_channels"], model.config["image_size"], model.config["num_classes"]
    x = model.scale_input(torch.rand(args.batch, c, s, s))
    labels = torch.randint(0, k, (args.batch,))
    blocks = parse_blocks(args.blocks, len(model.blocks) + 1)
    spec = {"name": "adamw", "lr": 1e-4}
    if args.worker == "bp":
        # End-to-end backprop; parameters of blocks outside `blocks` are frozen (requires_grad False).
        trainable = set(blocks)
        params = []
        for i, m in enumerate([*model.blocks, model.classifier]):
            for p in m.parameters():
                p.requires_grad_(i in trainable)
                if i in trainable:
                    params.append(p)
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), labels).backward()
            opt.step()
    else:
        opts = block_optimizers(model, blocks, spec)

        def step() -> None:
            torch_lls_step(model, x, labels, opts)
    setup = rss_kb()
    step()  # warm-up (allocator, optimizer state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"step_ms_median": 1e3 * float(np.median(times)), "step_ms_mean": 1e3 * float(np.mean(times)),
                      "rss_setup_kb": setup, "peak_rss_kb": rss_kb(), "threads": torch.get_num_threads()}))


def run_torch(kind: str, model: str, config: dict, batch: int, steps: int, blocks: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model", model, "--config", json.dumps(config),
           "--batch", str(batch), "--steps", str(steps), "--blocks", blocks]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_engine(binary: Path, pack: Path, data: Path, out: Path, batch: int, steps: int, blocks: str,
               epochs: int = 1, extra: tuple[str, ...] = ()) -> dict:
    cmd = [str(binary), "--pack", str(pack), "--data", str(data), "--out", str(out), "--batch", str(batch),
           "--blocks", blocks, "--epochs", str(epochs), "--quiet", *extra]
    if steps:
        cmd += ["--max-steps", str(steps)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={"PATH": "/nonexistent"})
    if r.returncode:
        raise RuntimeError(f"edgeml-finetune failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


# -- part 1: cost -------------------------------------------------------------------------------------------

def cost_rows(binary: Path, work: Path, nets: list[tuple[str, dict]], batch: int, steps: int) -> list[dict]:
    import torch

    from edgeml.lls.device import write_idx_folder
    from edgeml.lls.pack import write_pack
    from edgeml.registry import create_model

    rows = []
    for name, config in nets:
        torch.manual_seed(0)
        model = create_model(name, **config).eval()
        n_blocks = len(model.blocks) + 1
        c, s = model.config["in_channels"], model.config["image_size"]
        data = work / f"{name}-data"
        rng = np.random.default_rng(0)
        shape = (batch * (steps + 1), s, s) if c == 1 else (batch * (steps + 1), s, s, c)
        write_idx_folder(data, rng.integers(0, 256, shape, dtype=np.uint8),
                         rng.integers(0, model.config["num_classes"], shape[0]))
        for blocks in (f"last:{n_blocks}", "last:2"):
            pack = write_pack(work / f"{name}.pack", model, train_blocks=blocks,
                              optimizer={"name": "adamw", "lr": 1e-4})
            bp = run_torch("bp", name, config, batch, steps, blocks)
            lls = run_torch("lls", name, config, batch, steps, blocks)
            eng = run_engine(binary, pack, data, work / "out.pack", batch, steps + 1, blocks)
            label = "all blocks" if blocks == f"last:{n_blocks}" else "last 2 blocks"
            rows.append({
                "net": name, "config": config, "batch": batch, "trained": label, "steps": steps,
                "torch_bp": bp, "torch_lls": lls,
                "cpp_lls": {"step_ms_median": eng["step_ms_median"], "step_ms_mean": eng["step_ms"],
                            "peak_rss_kb": eng["peak_rss_kb"], "arena_bytes": eng["arena_bytes"]},
                "ratio_peak_cpp_vs_bp": eng["peak_rss_kb"] / bp["peak_rss_kb"],
                "ratio_peak_cpp_vs_bp_training_share":
                    eng["peak_rss_kb"] / max(1, bp["peak_rss_kb"] - bp["rss_setup_kb"]),
                "ratio_latency_cpp_vs_torch_lls": eng["step_ms_median"] / lls["step_ms_median"],
            })
            print(f"  {name} {label}: BP {bp['step_ms_median']:.1f} ms / LLS {lls['step_ms_median']:.1f} ms / "
                  f"C++ {eng['step_ms_median']:.1f} ms", flush=True)
    return rows


# -- part 2: accuracy recovery --------------------------------------------------------------------------------

def shift_u8(images: np.ndarray) -> np.ndarray:
    """The device domain: a brightness/contrast shift of uint8 images."""
    from edgeml.lls.device import shift_images

    return np.rint(shift_images(images / 255.0, **SHIFT) * 255.0).astype(np.uint8)


def accuracy_recovery(binary: Path, work: Path, train_n: int, epochs: int, device_n: int, ft_epochs: int) -> dict:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from edgeml.data.idx import load_idx_split
    from edgeml.lls.device import write_idx_folder
    from edgeml.lls.pack import write_pack
    from edgeml.lls.trainer import LocalLearner
    from edgeml.registry import create_model

    xtr, ytr = load_idx_split(FMNIST, "train")
    xte, yte = load_idx_split(FMNIST, "test")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(xtr))
    pre, dev = order[:train_n], order[train_n:train_n + device_n]

    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls")
    images = torch.from_numpy(xtr[pre][:, None].astype(np.float32) / 255.0)
    loader = DataLoader(TensorDataset(images, torch.from_numpy(ytr[pre])), batch_size=128, shuffle=True)
    learner = LocalLearner(model, mode="lls", lr=5e-3, epochs=epochs, steps_per_epoch=len(loader))
    t0 = time.perf_counter()
    for ep in range(epochs):
        for xb, yb in loader:
            learner.train_step([xb], yb)
        print(f"  pre-training epoch {ep + 1}/{epochs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    learner.before_eval(loader)
    model.eval()

    def torch_acc(x_u8: np.ndarray) -> float:
        with torch.no_grad():
            logits = torch.cat([model(torch.from_numpy(x_u8[i:i + 1000][:, None].astype(np.float32) / 255.0))
                                for i in range(0, len(x_u8), 1000)])
        return float((logits.argmax(1).numpy() == yte).mean())

    clean, shifted = torch_acc(xte), torch_acc(shift_u8(xte))
    pack = write_pack(work / "fmnist.pack", model, train_blocks="last:2", model_name="lls_smallconv",
                      optimizer={"name": "adamw", "lr": 1e-3})
    data = work / "device-data"
    write_idx_folder(data, shift_u8(xtr[dev]), ytr[dev])
    write_idx_folder(data, shift_u8(xte), yte, "t10k")
    res = run_engine(binary, pack, data, work / "fmnist-tuned.pack", 32, 0, "last:2", epochs=ft_epochs)
    return {"pretrain": {"samples": int(train_n), "epochs": epochs, "mode": "lls", "seconds": time.perf_counter() - t0},
            "shift": SHIFT, "device_samples": int(device_n), "finetune_epochs": ft_epochs, "blocks": "last:2",
            "optimizer": "adamw lr 1e-3", "accuracy_clean_test": clean, "accuracy_shifted_torch": shifted,
            "accuracy_shifted_before": res["accuracy_before"], "accuracy_shifted_after": res["accuracy_after"],
            "finetune_steps": res["steps"], "finetune_step_ms_median": res["step_ms_median"],
            "finetune_peak_rss_kb": res["peak_rss_kb"]}


def print_tables(rows: list[dict], acc: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="LLS training step: C++ engine vs PyTorch BP / PyTorch LLS (same net and batch; median step "
                    "latency, peak RSS of each process)")
    for col in ("net", "trained", "batch", "BP ms", "LLS ms", "C++ ms", "C++/LLS time", "BP MB",
                "LLS MB", "C++ MB", "C++/BP peak", "C++/BP share"):
        t.add_column(col, justify="right")
    for r in rows:
        bp, lls, cpp = r["torch_bp"], r["torch_lls"], r["cpp_lls"]
        t.add_row(r["net"], r["trained"], str(r["batch"]), f"{bp['step_ms_median']:.1f}",
                  f"{lls['step_ms_median']:.1f}", f"{cpp['step_ms_median']:.1f}",
                  f"{r['ratio_latency_cpp_vs_torch_lls']:.2f}x", f"{bp['peak_rss_kb'] / 1024:.0f}",
                  f"{lls['peak_rss_kb'] / 1024:.0f}", f"{cpp['peak_rss_kb'] / 1024:.1f}",
                  f"{r['ratio_peak_cpp_vs_bp']:.3f}x", f"{r['ratio_peak_cpp_vs_bp_training_share']:.2f}x")
    console = Console(width=170)
    console.print(t)
    if acc:
        a = Table(title=f"Fine-tuning recovers accuracy on shifted Fashion-MNIST (brightness +{SHIFT['brightness']}, "
                        f"contrast x{SHIFT['contrast']})")
        for col in ("clean test", "shifted, before", "shifted, after C++ fine-tuning", "gain", "device samples",
                    "steps"):
            a.add_column(col, justify="right")
        a.add_row(f"{acc['accuracy_clean_test']:.2%}", f"{acc['accuracy_shifted_before']:.2%}",
                  f"{acc['accuracy_shifted_after']:.2%}",
                  f"{100 * (acc['accuracy_shifted_after'] - acc['accuracy_shifted_before']):+.1f} pts",
                  str(acc["device_samples"]), str(acc["finetune_steps"]))
        console.print(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", choices=("bp", "lls"))
    ap.add_argument("--model", default="lls_smallconv")
    ap.add_argument("--config", default="{}")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--blocks", default="last:2")
    ap.add_argument("--quick", action="store_true", help="fewer steps and a smaller pre-training run")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    if args.worker:
        torch_worker(args)
        return
    from edgeml.lls.device import finetune_binary

    binary = finetune_binary()
    steps = 5 if args.quick else args.steps
    nets = [("lls_smallconv", {"mode": "lls"}), ("lls_vww", {"mode": "lls", "image_size": 96})]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("cost (each row: three fresh processes)", flush=True)
        rows = [] if args.skip_cost else cost_rows(binary, work, nets, args.batch, steps)
        acc = None
        if not args.skip_accuracy:
            print("accuracy recovery on shifted Fashion-MNIST", flush=True)
            acc = accuracy_recovery(binary, work, train_n=6000 if args.quick else 12000, epochs=2,
                                    device_n=2000, ft_epochs=3)
    print_tables(rows, acc)
    from edgeml.io import write_json

    write_json(RESULTS, {"benchmark": "lls_device", "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
                         "engine": binary.name,
                         "engine_threads": 1, "cost": rows, "accuracy": acc,
                         "notes": "peak RSS = VmHWM of separate processes; C++ = standalone edgeml-finetune "
                                  "(no Python); PyTorch rows include the interpreter + libtorch"})
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
