"""Parity of exported artefacts against PyTorch, streaming vs unrolled, and accuracy on a labelled split.

Errors per output tensor: `max_abs` = max |y - y_ref|; `max_rel` = max_abs / max |y_ref| (relative to the output's
scale: element-wise ratios blow up on logits near zero); `top1_agreement` = share of samples whose argmax over the
first output matches PyTorch's. Real samples come from the model's data set (`edgeml.video.datasets.ClipDataset`
for video models, `edgeml.data.open_image_dataset` for image models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import DataError

Feeds = dict[str, np.ndarray]


def compare(ref: Sequence[np.ndarray], out: Sequence[np.ndarray]) -> dict[str, float]:
    """max_abs / max_rel over all outputs of one call."""
    max_abs, max_rel = 0.0, 0.0
    for r, o in zip(ref, out, strict=True):
        r64, o64 = np.asarray(r, np.float64), np.asarray(o, np.float64).reshape(np.shape(r))
        d = float(np.max(np.abs(r64 - o64))) if r64.size else 0.0
        max_abs = max(max_abs, d)
        max_rel = max(max_rel, d / max(float(np.max(np.abs(r64))), 1e-12))
    return {"max_abs": max_abs, "max_rel": max_rel}


def parity(reference: Callable[[Feeds], list[np.ndarray]], candidate: Callable[[Feeds], list[np.ndarray]],
           samples: Sequence[Feeds]) -> dict[str, Any]:
    """Run both on every sample; worst-case errors and top-1 agreement (argmax of the first output, last axis)."""
    worst = {"max_abs": 0.0, "max_rel": 0.0}
    agree = total = 0
    for feeds in samples:
        ref, out = reference(feeds), candidate(feeds)
        c = compare(ref, out)
        worst = {k: max(worst[k], c[k]) for k in worst}
        a, b = np.argmax(ref[0], axis=-1), np.argmax(np.reshape(out[0], np.shape(ref[0])), axis=-1)
        agree += int(np.sum(a == b))
        total += int(np.size(a))
    return {**worst, "top1_agreement": agree / total if total else None, "samples": len(samples),
            "compared": total}


def accuracy(run: Callable[[Feeds], list[np.ndarray]], samples: Sequence[tuple[Feeds, int]]) -> dict[str, Any]:
    """Top-1 accuracy (percent) of `run` on labelled samples."""
    correct = sum(int(np.argmax(run(f)[0].reshape(-1)) == label) for f, label in samples)
    return {"top1": 100.0 * correct / len(samples) if samples else None, "correct": correct, "samples": len(samples)}


def random_samples(example: Feeds, n: int, seed: int = 0) -> list[Feeds]:
    """`n` fresh random feeds shaped like `example`, in its dtypes and value range (pixel inputs stay pixel-like,
    integer inputs such as diffusion timesteps stay integers within the example's range)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        f = {}
        for k, v in example.items():
            v = np.asarray(v)
            lo, hi = float(np.min(v)), float(np.max(v))
            if np.issubdtype(v.dtype, np.integer) or v.dtype == np.bool_:
                f[k] = rng.integers(int(lo), int(hi) + 1, size=v.shape).astype(v.dtype)
            elif lo >= 0:
                f[k] = (rng.random(v.shape) * (hi if hi > 0 else 1.0)).astype(v.dtype)
            else:
                scale = float(np.std(v)) or 1.0
                f[k] = (rng.standard_normal(v.shape) * scale).astype(v.dtype)
        out.append(f)
    return out


def open_split(task: str, data: str | Path, split: str) -> Any:
    """The dataset of `task` at `data` (a clip cache for video; a name or folder for image data sets)."""
    if task == "video":
        from edgeml.video.datasets import ClipDataset

        return ClipDataset(data, split)
    if task == "image":
        from edgeml.data import open_image_dataset

        return open_image_dataset(data, split)
    raise DataError(f"no real-data loader for task {task!r}", path=data)


def real_samples(dataset: Any, input_names: Sequence[str], n: int | None, batch: int = 1,
                 seed: int = 0) -> list[tuple[Feeds, int]]:
    """Up to `n` labelled samples, spread evenly over the dataset (deterministic), as batch-`batch` feeds.

    With batch > 1 each feed repeats the sample (exported graphs may have a fixed batch); the label is the sample's.
    """
    total = len(dataset)
    if total == 0:
        raise DataError(f"the {getattr(dataset, 'split', '')} split is empty")
    k = total if n is None else min(n, total)
    idx = np.unique(np.linspace(0, total - 1, k).round().astype(int))
    out = []
    for i in idx:
        item = dataset[int(i)]
        feeds = {}
        for name in input_names:
            v = np.asarray(item[name])[None]
            feeds[name] = np.repeat(v, batch, axis=0) if batch > 1 else v
        out.append((feeds, int(item["label"])))
    return out


def streaming_parity(art_dir: str | Path, stream: dict[str, Any], unrolled: Callable[[Feeds], list[np.ndarray]],
                     torch_model: Any, samples: Sequence[Feeds]) -> dict[str, Any]:
    """Streaming graphs (frame by frame) vs the unrolled graph (logits) and vs PyTorch's stream_step (each step)."""
    import torch

    from edgeml.export.onnx import run_streaming_onnx

    worst_logits, worst_step = 0.0, 0.0
    for feeds in samples:
        logits, tokens = run_streaming_onnx(art_dir, feeds, stream)
        worst_logits = max(worst_logits, compare(unrolled(feeds), [logits])["max_abs"])
        with torch.no_grad():
            state = torch_model.stream_init(feeds[stream["first_input"]].shape[0])
            for t, tok in enumerate(tokens):
                args = [torch.from_numpy(np.ascontiguousarray(feeds[n][:, t])) for n in stream["per_step_inputs"]]
                p, *state = torch_model.stream_step(*args, *state)
                worst_step = max(worst_step, float(np.max(np.abs(p.numpy() - tok))))
    return {"logits_max_abs_vs_unrolled_onnx": worst_logits, "step_tokens_max_abs_vs_torch": worst_step,
            "steps": stream["steps"], "samples": len(samples)}
