"""`LocalLearner`: steps an `LLSNet` block by block on local losses (LLS, LLS-M, LLS-MxM, local classifiers).

Implements the Learner protocol of `edgeml.training.learners` (train_step / end_epoch / before_eval / state_dict /
load_state_dict). Every block has its own optimizer (AdamW + cosine schedule, or the authors' schedule-free AdamW:
`optimizer="adamw_schedulefree"`) over its parameters and local head, and steps as soon as its loss is known, on
its detached input — so only one block's activations are alive at a time (the memory saving of LLS). The final
classifier trains with CE on its detached input. Mode `bp` is end-to-end training: `BackpropLearner`, with the
same optimizer settings (`edgeml.training.loop.make_learner` picks the learner of a mode). Under DDP the learner
averages each optimizer's gradients over the ranks right before that optimizer steps, so the per-block optimizers
stay in sync. Before each evaluation BatchNorm statistics are re-estimated (and schedule-free AdamW switches to
its averaged iterate, as the authors' loop does); the next `train_step` switches back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import ConfigError
from edgeml.lls.rule import LOCAL_MODES, check_mode
from edgeml.training.distributed import average_gradients, broadcast_from_rank0, is_distributed
from edgeml.training.learners import OptimizerLearner, model_stages, stage_lrs
from edgeml.training.optim import OptimizerSet


class LocalLearner(OptimizerLearner):
    """Per-block optimizers for LLS / LLS-M / LLS-MxM / local classifiers, plus one for the classifier."""

    def __init__(self, model: nn.Module, mode: str | None = None, lr: float = 5e-3, epochs: int = 1,
                 steps_per_epoch: int = 1, distributed: bool = False, weight_decay: float = 0.0,
                 warmup_steps: int = 0, optimizer: str = "adamw", lr_scales: Sequence[float] | None = None,
                 input_names: tuple[str, ...] = ("image",), **_: Any):
        self.model = model
        self.mode = check_mode(mode or getattr(model, "mode", "bp"))
        if self.mode not in LOCAL_MODES:
            raise ConfigError(f"mode {self.mode!r} is not a local learning rule",
                              fix="train end to end with BackpropLearner (make_learner picks it for mode 'bp')")
        if not hasattr(model, "blocks"):
            raise ConfigError(f"mode {self.mode!r} needs an LLS net (lls_smallconv, lls_vgg8, lls_vww)")
        if self.mode != model.mode:
            # A net built with its default mode trains in the requested one: blocks get that mode's local
            # heads (freshly initialised where the shape changes) and model.config records the mode.
            model.set_mode(self.mode)
        self.input_names = tuple(input_names)
        self.distributed = distributed and is_distributed()
        self.groups = model_stages(model)
        lrs = stage_lrs(len(self.groups), lr, lr_scales)
        param_sets = [[{"params": g, "lr": stage_lr}] for g, stage_lr in zip(self.groups, lrs, strict=True)]
        self.optim = OptimizerSet(param_sets, kind=optimizer, lr=lr, weight_decay=weight_decay,
                                  warmup_steps=warmup_steps, total_steps=epochs * steps_per_epoch)
        if self.distributed:
            broadcast_from_rank0(model)

    def _step(self, i: int, loss: torch.Tensor) -> None:
        self.optim.optimizers[i].zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed:
            average_gradients(self.groups[i])
        self.optim.step(i)

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """One batch: `inputs[0]` images [B, C, H, W] in [0, 1], `labels` [B] -> metrics."""
        model = self.model
        model.train()
        self.optim.use_train_weights()
        device = next(model.parameters()).device
        image, labels = inputs[0].to(device), labels.to(device)
        metrics: dict[str, float] = {}
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
        self._step(len(self.groups) - 1, loss)
        metrics["loss"] = float(loss.detach())
        metrics["acc"] = float((logits.detach().argmax(1) == labels).float().mean())
        return metrics

    def before_eval(self, loader: Iterable) -> None:
        """BatchNorm statistics re-estimated on up to 50 training batches (and schedule-free AdamW's averaged
        iterate), as the authors do before every evaluation."""
        self.use_eval_weights(loader)
