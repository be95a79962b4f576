"""`LocalLearner`: steps an `LLSNet` block by block on local losses (or end to end in `bp` mode).

Implements the Learner protocol of `edgeml.train` (train_step / end_epoch / before_eval / state_dict /
load_state_dict). In a local mode every block has its own AdamW optimizer (+ cosine schedule) over its
parameters and local head, and steps as soon as its loss is known, on its detached input — so only one
block's activations are alive at a time (the memory saving of LLS). The final classifier trains with CE on
its detached input. In `bp` mode one optimizer trains the whole net on the classifier's CE (same optimizer
settings: a fair baseline). Under DDP the learner averages each optimizer's gradients over the ranks
(all-reduce) right before that optimizer steps, so the per-block optimizers stay in sync.
`optimizer="adamw_schedulefree"` swaps AdamW + cosine for the authors' schedule-free AdamW (package
`schedulefree`; constant lr after the warm-up): its evaluation weights are the averaged iterate, so
`before_eval` then switches every optimizer to its eval weights and re-estimates BatchNorm statistics in
every mode, BP included (as the authors' loop does); the next `train_step` switches back.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import ConfigError, MissingDependencyError
from edgeml.lls.rule import check_mode
from edgeml.train import average_gradients, cosine_schedule, load_optimizer_tensors, optimizer_tensors

BN_BATCHES = 50  # the authors re-estimate BatchNorm statistics on 50 training batches before each evaluation
OPTIMIZERS = ("adamw", "adamw_schedulefree")
SF_GROUP_KEYS = ("k", "weight_sum", "lr_max")  # schedule-free AdamW's per-group state beside the tensors


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch (a dict with "image", or a (image, label) pair)."""
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0]


def _constant(step: int) -> float:
    return 1.0


class LocalLearner:
    """Per-block optimizers for LLS / LLS-M / LLS-MxM / local classifiers, one optimizer for `bp`."""

    def __init__(self, model: nn.Module, mode: str | None = None, lr: float = 5e-3, epochs: int = 1,
                 steps_per_epoch: int = 1, distributed: bool = False, weight_decay: float = 0.0,
                 warmup_steps: int = 0, optimizer: str = "adamw", lr_scales: Sequence[float] | None = None,
                 **_: Any):
        self.model = model
        self.mode = check_mode(mode or getattr(model, "mode", "bp"))
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        self.schedule_free = optimizer == "adamw_schedulefree"
        if not hasattr(model, "blocks"):
            raise ConfigError(f"mode {self.mode!r} needs an LLS net (lls_smallconv, lls_vgg8, lls_vww)")
        if self.mode != "bp" and self.mode != model.mode:
            # A net built with its default mode trains in the requested one: blocks get that mode's local
            # heads (freshly initialised where the shape changes) and model.config records the mode.
            model.set_mode(self.mode)
        self.distributed = distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
        stages = [list(b.parameters()) for b in model.blocks] + [list(model.classifier.parameters())]
        scales = [1.0] * len(stages) if lr_scales is None else [float(x) for x in lr_scales]
        if len(scales) != len(stages):
            raise ConfigError(f"lr_scales needs one factor per block plus one for the classifier ({len(stages)}), "
                              f"got {len(scales)}")
        # BP: one optimizer whose param groups carry the same per-stage lr factors as the local optimizers.
        param_sets = [[{"params": g, "lr": lr * f} for g, f in zip(stages, scales, strict=True)]] \
            if self.mode == "bp" else [[{"params": g, "lr": lr * f}] for g, f in zip(stages, scales, strict=True)]
        self.groups = [list(model.parameters())] if self.mode == "bp" else stages
        total = max(1, epochs * steps_per_epoch)
        if self.schedule_free:
            try:
                from schedulefree import AdamWScheduleFree
            except ImportError as exc:
                raise MissingDependencyError("schedulefree", extra="lls", purpose="schedule-free AdamW") from exc
            self.optimizers = [AdamWScheduleFree(g, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
                               for g in param_sets]
            schedule = _constant  # the optimizer warms up and averages itself
        else:
            self.optimizers = [torch.optim.AdamW(g, lr=lr, weight_decay=weight_decay) for g in param_sets]
            schedule = cosine_schedule(total, warmup_steps)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        # A schedule-free optimizer starts in eval mode: the first train_step switches it to training.
        self._eval_weights = self.schedule_free
        if self.distributed:
            self._broadcast_from_rank0()

    # -- one step ---------------------------------------------------------------------------------------
    def _step(self, i: int, loss: torch.Tensor) -> None:
        opt = self.optimizers[i]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed:
            average_gradients(self.groups[i])
        opt.step()
        self.schedulers[i].step()

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """One batch: `inputs[0]` images [B, C, H, W] in [0, 1], `labels` [B] -> metrics."""
        model = self.model
        model.train()
        if self._eval_weights:
            for opt in self.optimizers:
                opt.train()
            self._eval_weights = False
        device = next(model.parameters()).device
        image, labels = inputs[0].to(device), labels.to(device)
        metrics: dict[str, float] = {}
        if self.mode == "bp":
            logits = model(image)
            loss = F.cross_entropy(logits, labels)
            self._step(0, loss)
        else:
            x = model.scale_input(image)
            for i, (block, transition) in enumerate(zip(model.blocks, model.transitions, strict=True)):
                out, local = block.local_loss(x, labels)
                # The next block's input is taken before this block's backward, so the block output is freed
                # as soon as its graph is: only one block's activations are alive at any time.
                x = transition(out.detach())
                del out
                self._step(i, local)
                metrics[f"local_loss_{i}"] = float(local.detach())
                del local
            logits = model.classifier(x)
            loss = F.cross_entropy(logits, labels)
            self._step(len(self.optimizers) - 1, loss)
        metrics["loss"] = float(loss.detach())
        metrics["acc"] = float((logits.detach().argmax(1) == labels).float().mean())
        return metrics

    def end_epoch(self) -> None:
        """Nothing to do: the cosine schedules advance per step."""

    @torch.no_grad()
    def before_eval(self, loader: Iterable) -> None:
        """Re-estimate BatchNorm running statistics on up to 50 training batches (train-mode forward).

        Local modes always; BP only with schedule-free AdamW, whose eval weights differ from the trained ones.
        """
        if self.schedule_free and not self._eval_weights:
            for opt in self.optimizers:
                opt.eval()
            self._eval_weights = True
        if self.mode == "bp" and not self.schedule_free:
            return
        device = next(self.model.parameters()).device
        self.model.train()
        for batch in itertools.islice(loader, BN_BATCHES):
            self.model(batch_images(batch).to(device))
        self.model.eval()

    # -- DDP --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _broadcast_from_rank0(self) -> None:
        for t in itertools.chain(self.model.parameters(), self.model.buffers()):
            torch.distributed.broadcast(t, src=0)

    # -- checkpoint state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Optimizer moments, step counts and schedule positions as flat tensors (`opt{i}.{param}.{key}`).

        Schedule-free AdamW adds its per-group counters (`sf{i}.{group}.{key}`) and whether the model holds the eval
        weights (`sf.eval_weights`: a checkpoint written after an evaluation holds the averaged iterate).
        """
        out = optimizer_tensors(self.optimizers, self.schedulers)
        if self.schedule_free:
            for i, opt in enumerate(self.optimizers):  # per group: BP's groups carry different lr factors
                for j, group in enumerate(opt.param_groups):
                    for key in SF_GROUP_KEYS:
                        out[f"sf{i}.{j}.{key}"] = torch.tensor(float(group[key]), dtype=torch.float64)
            out["sf.eval_weights"] = torch.tensor(self._eval_weights)
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict` (the learner must have been built for the same model and mode)."""
        load_optimizer_tensors(self.optimizers, self.schedulers, tensors)
        if self.schedule_free and "sf.eval_weights" in tensors:
            self._eval_weights = bool(tensors["sf.eval_weights"])
            for i, opt in enumerate(self.optimizers):
                for j, group in enumerate(opt.param_groups):
                    for key in SF_GROUP_KEYS:
                        value = float(tensors[f"sf{i}.{j}.{key}"])
                        group[key] = int(value) if key == "k" else value
                    group["train_mode"] = not self._eval_weights
