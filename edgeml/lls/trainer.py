"""`LocalLearner`: steps an `LLSNet` block by block on local losses (or end to end in `bp` mode).

Implements the Learner protocol of `edgeml.train` (train_step / end_epoch / before_eval / state_dict /
load_state_dict). In a local mode every block has its own AdamW optimizer (+ cosine schedule) over its
parameters and local head, and steps as soon as its loss is known, on its detached input — so only one
block's activations are alive at a time (the memory saving of LLS). The final classifier trains with CE on
its detached input. In `bp` mode one optimizer trains the whole net on the classifier's CE (same optimizer
settings: a fair baseline). Under DDP the learner averages each optimizer's gradients over the ranks
(all-reduce) right before that optimizer steps, so the per-block optimizers stay in sync.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import ConfigError
from edgeml.lls.rule import check_mode
from edgeml.train import average_gradients, cosine_schedule, load_optimizer_tensors, optimizer_tensors

BN_BATCHES = 50  # the authors re-estimate BatchNorm statistics on 50 training batches before each evaluation


def batch_images(batch: Any) -> torch.Tensor:
    """The image tensor of a loader batch (a dict with "image", or a (image, label) pair)."""
    if isinstance(batch, dict):
        return batch["image"]
    return batch[0]


class LocalLearner:
    """Per-block optimizers for LLS / LLS-M / LLS-MxM / local classifiers, one optimizer for `bp`."""

    def __init__(self, model: nn.Module, mode: str | None = None, lr: float = 5e-3, epochs: int = 1,
                 steps_per_epoch: int = 1, distributed: bool = False, weight_decay: float = 0.0, **_: Any):
        self.model = model
        self.mode = check_mode(mode or getattr(model, "mode", "bp"))
        if not hasattr(model, "blocks"):
            raise ConfigError(f"mode {self.mode!r} needs an LLS net (lls_smallconv, lls_vgg8, lls_vww)")
        if self.mode != "bp" and self.mode != model.mode:
            # A net built with its default mode trains in the requested one: blocks get that mode's local
            # heads (freshly initialised where the shape changes) and model.config records the mode.
            model.set_mode(self.mode)
        self.distributed = distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
        if self.mode == "bp":
            self.groups = [list(model.parameters())]
        else:
            self.groups = [list(b.parameters()) for b in model.blocks] + [list(model.classifier.parameters())]
        self.optimizers = [torch.optim.AdamW(g, lr=lr, weight_decay=weight_decay) for g in self.groups]
        total = max(1, epochs * steps_per_epoch)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, cosine_schedule(total)) for o in self.optimizers]
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
        """Re-estimate BatchNorm running statistics on up to 50 training batches (train-mode forward)."""
        if self.mode == "bp":
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
        """Optimizer moments, step counts and schedule positions as flat tensors (`opt{i}.{param}.{key}`)."""
        return optimizer_tensors(self.optimizers, self.schedulers)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict` (the learner must have been built for the same model and mode)."""
        load_optimizer_tensors(self.optimizers, self.schedulers, tensors)
