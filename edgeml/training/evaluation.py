"""Evaluation of a classifier: top-1 / top-5, loss, confusion, per-class accuracy, video top-1, spike rates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.training.data import split_batch
from edgeml.training.distributed import world


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, input_names: tuple[str, ...], num_classes: int,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Top-1, top-5, mean loss, confusion [true][pred], per-class accuracy and mean spike rate per layer.

    Items that name their video (`ClipDataset`'s `video`) also give `video_top1`: each video's class is the argmax
    of its clips' mean logits (the multi-clip protocol; `edgeml bench` judges videos the same way); otherwise
    `video_top1` is None.
    Under DDP every rank evaluates its shard and the counts are summed over ranks.
    """
    from edgeml.nn.spiking import reset_spike_stats, spike_rates

    model.eval()
    reset_spike_stats(model)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, top-5 hits, samples
    videos: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (video ids, logits, labels) per batch
    for batch in loader:
        inputs, labels = split_batch(batch, input_names)
        logits = model(*[x.to(device) for x in inputs]).float().cpu()
        if isinstance(batch, Mapping) and "video" in batch:
            videos.append((batch["video"], logits, labels))
        sums[0] += float(F.cross_entropy(logits, labels, reduction="sum"))
        k = min(5, logits.shape[1])
        sums[1] += float((logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum())
        sums[2] += len(labels)
        confusion.index_put_((labels, logits.argmax(1)), torch.ones(len(labels), dtype=torch.float64),
                             accumulate=True)
    rates = spike_rates(model)
    ranks = world()[1]
    if ranks > 1:
        rate_t = torch.tensor(list(rates.values()), dtype=torch.float64)
        for t in (confusion, sums, rate_t):
            torch.distributed.all_reduce(t)
        rates = dict(zip(rates, (rate_t / ranks).tolist(), strict=True))
    n = max(1.0, float(sums[2]))
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return {"top1": float(confusion.diag().sum()) / n, "top5": float(sums[1]) / n, "loss": float(sums[0]) / n,
            "samples": int(sums[2]), "per_class_acc": per_class, "confusion": confusion.long().tolist(),
            "video_top1": _video_top1(videos, num_classes),
            "spike_rates": rates, "mean_spike_rate": (sum(rates.values()) / len(rates)) if rates else None}


def _video_top1(videos: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_classes: int) -> float | None:
    """Video-level top-1 from per-clip (video id, logits, label) batches: argmax of the summed (so mean) logits."""
    if not videos:  # every rank reads the same kind of items, so either all ranks return here or none does
        return None
    ids, logits, labels = (torch.cat(t) for t in zip(*videos, strict=True))
    count = torch.tensor([int(ids.max()) + 1])
    ddp = world()[1] > 1
    if ddp:
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    scores = torch.zeros(int(count), num_classes, dtype=torch.float64).index_add_(0, ids, logits.double())
    truth = torch.full((int(count),), -1, dtype=torch.int64).scatter_(0, ids, labels)
    if ddp:
        torch.distributed.all_reduce(scores)
        torch.distributed.all_reduce(truth, op=torch.distributed.ReduceOp.MAX)
    seen = truth >= 0
    return float((scores.argmax(1)[seen] == truth[seen]).double().mean())
