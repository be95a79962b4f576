"""The learners' optimizers: AdamW + warm-up/cosine schedule or schedule-free AdamW, one per parameter set.

`OptimizerSet` holds one optimizer and one LR schedule per parameter set (one set for end-to-end training, one per
block for local learning) and writes their state as flat tensors for the checkpoint: `opt{i}.{param}.{key}`,
`sched{i}.last_epoch`, and for schedule-free AdamW its per-group counters `sf{i}.{group}.{key}` and
`sf.eval_weights`. Schedule-free AdamW (package `schedulefree`) evaluates the averaged iterate: `use_eval_weights`
swaps it into the model, `use_train_weights` swaps the training point back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from edgeml.errors import ConfigError, MissingDependencyError

OPTIMIZERS = ("adamw", "adamw_schedulefree")
SF_GROUP_KEYS = ("k", "weight_sum", "lr_max")  # schedule-free AdamW's per-group state beside the tensors


def cosine_schedule(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """LR factor: linear warm-up over `warmup_steps`, then cosine from 1 to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))

    return factor


def _constant(step: int) -> float:
    return 1.0


class OptimizerSet:
    """One optimizer + LR schedule per parameter set (each a list of torch param-group dicts)."""

    def __init__(self, param_sets: list[list[dict[str, Any]]], *, kind: str = "adamw", lr: float,
                 weight_decay: float, warmup_steps: int, total_steps: int):
        if kind not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
        self.schedule_free = kind == "adamw_schedulefree"
        if self.schedule_free:
            try:
                from schedulefree import AdamWScheduleFree
            except ImportError as exc:
                raise MissingDependencyError("schedulefree", extra="lls", purpose="schedule-free AdamW") from exc
            self.optimizers: list[torch.optim.Optimizer] = [
                AdamWScheduleFree(g, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps) for g in param_sets]
            schedule = _constant  # the optimizer warms up and averages itself
        else:
            self.optimizers = [torch.optim.AdamW(g, lr=lr, weight_decay=weight_decay) for g in param_sets]
            schedule = cosine_schedule(max(1, total_steps), warmup_steps)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, schedule) for o in self.optimizers]
        # A schedule-free optimizer starts in eval mode: the first training step switches it to training.
        self.eval_weights = self.schedule_free

    def step(self, i: int, scaler: torch.amp.GradScaler | None = None) -> None:
        """Step optimizer `i` on the gradients it holds (through `scaler` under fp16), then its schedule."""
        if scaler is not None:
            scaler.step(self.optimizers[i])
            scaler.update()
        else:
            self.optimizers[i].step()
        self.schedulers[i].step()

    def use_train_weights(self) -> None:
        """Schedule-free: put the training point back into the model (before a training step)."""
        if self.eval_weights:
            for opt in self.optimizers:
                opt.train()
            self.eval_weights = False

    def use_eval_weights(self) -> None:
        """Schedule-free: put the averaged iterate into the model (before an evaluation); else nothing."""
        if self.schedule_free and not self.eval_weights:
            for opt in self.optimizers:
                opt.eval()
            self.eval_weights = True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Moments, step counts and schedule positions as flat tensors (see the module docstring)."""
        out: dict[str, torch.Tensor] = {}
        for i, (opt, sched) in enumerate(zip(self.optimizers, self.schedulers, strict=True)):
            for pid, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    out[f"opt{i}.{pid}.{key}"] = torch.as_tensor(value).detach().clone()
            out[f"sched{i}.last_epoch"] = torch.tensor(sched.last_epoch)
            if self.schedule_free:  # per group: groups may carry different lr factors
                for j, group in enumerate(opt.param_groups):
                    for key in SF_GROUP_KEYS:
                        out[f"sf{i}.{j}.{key}"] = torch.tensor(float(group[key]), dtype=torch.float64)
        if self.schedule_free:  # a checkpoint written after an evaluation holds the averaged iterate
            out["sf.eval_weights"] = torch.tensor(self.eval_weights)
        return out

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Inverse of `state_dict` (same parameter sets and grouping)."""
        for i, (opt, sched) in enumerate(zip(self.optimizers, self.schedulers, strict=True)):
            full = opt.state_dict()
            state: dict[int, dict[str, torch.Tensor]] = {}
            for name, value in tensors.items():
                if name.startswith(f"opt{i}."):
                    pid, key = name[len(f"opt{i}."):].split(".", 1)
                    state.setdefault(int(pid), {})[key] = value
            full["state"] = state
            opt.load_state_dict(full)
            if f"sched{i}.last_epoch" in tensors:
                sched.last_epoch = int(tensors[f"sched{i}.last_epoch"])
                for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
                    group["lr"] = base * sched.lr_lambdas[0](sched.last_epoch)
        if self.schedule_free and "sf.eval_weights" in tensors:
            self.eval_weights = bool(tensors["sf.eval_weights"])
            for i, opt in enumerate(self.optimizers):
                for j, group in enumerate(opt.param_groups):
                    for key in SF_GROUP_KEYS:
                        value = float(tensors[f"sf{i}.{j}.{key}"])
                        group[key] = int(value) if key == "k" else value
                    group["train_mode"] = not self.eval_weights
