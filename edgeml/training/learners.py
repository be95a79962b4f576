"""How a model learns from a batch: the `Learner` protocol, end-to-end `BackpropLearner`, and what learners share.

The loop never touches optimizers; a learner owns them (`edgeml.training.optim.OptimizerSet`). `BackpropLearner`
trains any model end to end; `edgeml.lls.trainer.LocalLearner` trains an LLS net block by block on local losses.
Both take the same optimizer settings (`optimizer`, `lr`, `weight_decay`, `warmup_steps`, `lr_scales` per stage),
so a comparison between them changes only the learning rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import ConfigError
from edgeml.training.data import batch_inputs
from edgeml.training.distributed import average_gradients, broadcast_from_rank0, is_distributed
from edgeml.training.optim import OptimizerSet

BN_BATCHES = 50  # the LLS authors re-estimate BatchNorm statistics on 50 training batches before each evaluation


@runtime_checkable
class Learner(Protocol):
    """How a model learns from one batch; the loop never touches optimizers itself."""

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """One batch (inputs in the model's `input_names` order, labels [B]) -> scalar metrics ("loss", ...)."""

    def end_epoch(self) -> None:
        """Called after the last step of every epoch."""

    def before_eval(self, loader: Iterable) -> None:
        """Called before each evaluation with a training loader (LLS re-estimates BN statistics here)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Optimizer / schedule state as flat tensors (stored under `learner.` in the checkpoint)."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict`."""


def model_stages(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters of each stage of a staged net — every one of its `blocks`, then its `classifier` (the LLS
    nets) — or of the whole model as one stage."""
    if hasattr(model, "blocks") and hasattr(model, "classifier"):
        return [list(b.parameters()) for b in model.blocks] + [list(model.classifier.parameters())]
    return [list(model.parameters())]


def stage_lrs(stages: int, lr: float, lr_scales: Sequence[float] | None) -> list[float]:
    """The learning rate of each stage: `lr` times its factor in `lr_scales` (default 1 everywhere)."""
    scales = [1.0] * stages if lr_scales is None else [float(x) for x in lr_scales]
    if len(scales) != stages:
        raise ConfigError(f"lr_scales needs one factor per block plus one for the classifier ({stages}), "
                          f"got {len(scales)}")
    return [lr * f for f in scales]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, loader: Iterable, input_names: tuple[str, ...],
                         batches: int = BN_BATCHES) -> None:
    """BatchNorm running statistics re-estimated by train-mode forward passes over up to `batches` loader batches."""
    device = next(model.parameters()).device
    model.train()
    for batch in itertools.islice(loader, batches):
        model(*[x.to(device) for x in batch_inputs(batch, input_names)])
    model.eval()


def _amp_dtype(device: torch.device, amp: str | None) -> torch.dtype | None:
    """bf16 (or fp16) autocast on CUDA; fp32 on CPU, where autocast gains little for these small models."""
    if amp in (None, "off", "none", "fp32") or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class OptimizerLearner:
    """What the learners share: their optimizers (`self.optim`) as checkpoint state, and evaluation weights."""

    model: nn.Module
    optim: OptimizerSet
    input_names: tuple[str, ...]

    def end_epoch(self) -> None:
        """Nothing: the schedules advance per step."""

    def use_eval_weights(self, loader: Iterable) -> None:
        """Schedule-free AdamW's averaged iterate (where it is used), with BatchNorm statistics re-estimated on
        up to `BN_BATCHES` batches of `loader`; the next training step switches back."""
        self.optim.use_eval_weights()
        reestimate_batchnorm(self.model, loader, self.input_names)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Optimizer moments, step counts and schedule positions as flat tensors (`OptimizerSet.state_dict`)."""
        return self.optim.state_dict()

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict` (the learner must have been built for the same model and settings)."""
        self.optim.load_state_dict(tensors)


class BackpropLearner(OptimizerLearner):
    """End-to-end backprop: AdamW + warm-up/cosine (or schedule-free AdamW), gradient clipping, autocast where it
    pays. No weight decay on 1-D tensors (norms, biases, embeddings); `lr_scales` gives each stage of a staged net
    its own learning rate (`model_stages`). `input_names`: the model's inputs in mapping batches (for `before_eval`).
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, epochs: int = 1, steps_per_epoch: int = 1,
                 distributed: bool = False, weight_decay: float = 0.05, warmup: float = 0.05,
                 warmup_steps: int | None = None, grad_clip: float | None = 1.0, amp: str | None = "auto",
                 label_smoothing: float = 0.0, optimizer: str = "adamw", lr_scales: Sequence[float] | None = None,
                 input_names: tuple[str, ...] = ("image",), **_: Any):
        self.model = model
        self.input_names = tuple(input_names)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.distributed = distributed and is_distributed()
        trainable = {id(p) for p in self.params}
        stages = [self.params] if lr_scales is None else \
            [[p for p in stage if id(p) in trainable] for stage in model_stages(model)]
        groups = []
        for stage, stage_lr in zip(stages, stage_lrs(len(stages), lr, lr_scales), strict=True):
            groups += [{"params": [p for p in stage if p.ndim > 1], "lr": stage_lr, "weight_decay": weight_decay},
                       {"params": [p for p in stage if p.ndim <= 1], "lr": stage_lr, "weight_decay": 0.0}]
        total = max(1, epochs * steps_per_epoch)
        self.optim = OptimizerSet([groups], kind=optimizer, lr=lr, weight_decay=weight_decay, total_steps=total,
                                  warmup_steps=int(warmup * total) if warmup_steps is None else warmup_steps)
        self.grad_clip = grad_clip
        self.label_smoothing = label_smoothing
        self.device = next(model.parameters()).device
        self.amp_dtype = _amp_dtype(self.device, amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if self.distributed:
            broadcast_from_rank0(model)

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Forward, cross-entropy, backward, (all-reduce), clip, step -> {"loss", "acc", "lr"}."""
        self.optim.use_train_weights()
        self.model.train()
        inputs = [x.to(self.device, non_blocking=True) for x in inputs]
        labels = labels.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.model(*inputs)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        optimizer = self.optim.optimizers[0]
        optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.distributed:
            average_gradients(self.params)
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        self.optim.step(0, self.scaler)
        return {"loss": float(loss.detach()), "acc": float((logits.detach().argmax(1) == labels).float().mean()),
                "lr": lr}

    def before_eval(self, loader: Iterable) -> None:
        """Schedule-free AdamW: its averaged iterate, BatchNorm statistics re-estimated for it. Otherwise nothing:
        backprop keeps BatchNorm statistics up to date while training."""
        if self.optim.schedule_free:
            self.use_eval_weights(loader)
