"""The LLS local loss for one block's output, its closed-form gradient, and `LLSBlock`.

For a block output `a` ([B, C, H, W] conv or [B, N] linear), with the block's input detached:

    u = adaptive_avg_pool(a, (p, p)).flatten(1)          [B, D]   (D = C p p; a [B, N] output: D = N, no pooling)
    z = u / max(||u||_2, 1e-12)                           [B, D]   (F.normalize; the random basis: z = u)
    s = z B^T                                             [B, K]   (B: fixed periodic basis, edgeml.lls.basis)
    y = s (lls) | s * m (lls_m, m [K]) | s M (lls_mxm, M [K, K])
    L = CE(y / T, label, label_smoothing)                 mean over the batch

`local_learnable` is the classic local-classifier baseline: `y = u W^T` with a learnable `W` [K, D] and no
normalisation (as in the authors' `LocalLosses` mode); the `random` waveform is their `LLS_Random`: the same
unnormalised path through a fixed random matrix (edgeml.lls.basis). This is exactly the authors' public code
(`compute_LLS` in models/layers/lls_layers.py); the C++ engine (csrc/lls) reproduces `local_loss_grad`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import ConfigError
from edgeml.lls.basis import WAVEFORMS, is_periodic, periodic_basis

MODES = ("bp", "lls", "lls_m", "lls_mxm", "local_learnable")
LOCAL_MODES = ("lls", "lls_m", "lls_mxm", "local_learnable")
NORM_EPS = 1e-12  # F.normalize's eps


@dataclass(frozen=True)
class LocalRule:
    """Hyper-parameters of the local loss of one block (the authors' defaults: square wave, T = 0.5)."""

    mode: str = "lls"
    num_classes: int = 10
    pool: int | None = None  # p for [B, C, H, W] outputs; for [B, N] outputs None keeps all N features
    waveform: str = "square"
    temperature: float = 0.5
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in LOCAL_MODES:
            raise ValueError(f"local rule mode must be one of {LOCAL_MODES}, got {self.mode!r}")
        if self.waveform not in WAVEFORMS:
            raise ValueError(f"waveform must be one of {WAVEFORMS}, got {self.waveform!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")


def check_mode(mode: str) -> str:
    """`mode` if it is a known training mode, else a ConfigError listing them."""
    if mode not in MODES:
        raise ConfigError(f"unknown training mode {mode!r}", fix=f"choose one of: {', '.join(MODES)}")
    return mode


def head_shape(mode: str, num_classes: int, feature_dim: int) -> tuple[int, ...] | None:
    """Shape of the learnable local head of `mode` (None for lls / bp: the basis is fixed)."""
    return {"lls_m": (num_classes,), "lls_mxm": (num_classes, num_classes),
            "local_learnable": (num_classes, feature_dim)}.get(mode)


def _bins(size: int, out: int) -> list[tuple[int, int]]:
    """Adaptive-pooling windows [start, end) of torch's adaptive_avg_pool (they overlap when size % out != 0)."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def pool_features(a: torch.Tensor, pool: int | None) -> torch.Tensor:
    """[B, C, H, W] -> [B, C p p] by adaptive average pooling; [B, N] -> [B, N] (or [B, pool])."""
    if a.dim() == 4:
        if pool is None:
            raise ValueError("a conv block's local loss needs a pooling size p")
        return F.adaptive_avg_pool2d(a, (pool, pool)).flatten(1)
    if a.dim() == 2:
        return a if pool is None or pool == a.shape[1] else F.adaptive_avg_pool1d(a.unsqueeze(1), pool).squeeze(1)
    raise ValueError(f"block output must be [B, C, H, W] or [B, N], got shape {tuple(a.shape)}")


def _unpool_features(grad_u: torch.Tensor, shape: torch.Size, pool: int | None) -> torch.Tensor:
    """Adjoint of `pool_features`: [B, D] -> gradient of the block output, `shape`."""
    if len(shape) == 2:
        if pool is None or pool == shape[1]:
            return grad_u
        grad = grad_u.new_zeros(shape)
        for j, (s, e) in enumerate(_bins(shape[1], pool)):
            grad[:, s:e] += grad_u[:, j:j + 1] / (e - s)
        return grad
    b, c, h, w = shape
    g = grad_u.reshape(b, c, pool, pool)
    grad = grad_u.new_zeros(shape)
    for i, (hs, he) in enumerate(_bins(h, pool)):
        for j, (ws, we) in enumerate(_bins(w, pool)):
            grad[:, :, hs:he, ws:we] += (g[:, :, i, j] / ((he - hs) * (we - ws)))[:, :, None, None]
    return grad


def local_logits(a: torch.Tensor, rule: LocalRule, head: torch.Tensor | None = None) -> torch.Tensor:
    """Local prediction `y` [B, K] of a block output `a` (before the temperature)."""
    u = pool_features(a, rule.pool)
    if rule.mode == "local_learnable":
        return u @ head.t()
    z = F.normalize(u, dim=1, eps=NORM_EPS) if is_periodic(rule.waveform) else u
    s = z @ periodic_basis(rule.num_classes, z.shape[1], rule.waveform, device=z.device, dtype=z.dtype).t()
    if rule.mode == "lls_m":
        return s * head
    if rule.mode == "lls_mxm":
        return s @ head
    return s


def local_loss(a: torch.Tensor, labels: torch.Tensor, rule: LocalRule,
               head: torch.Tensor | None = None) -> torch.Tensor:
    """The LLS loss of one block output `a` for int64 `labels` [B] (a scalar, autograd-differentiable)."""
    y = local_logits(a, rule, head)
    return F.cross_entropy(y / rule.temperature, labels, label_smoothing=rule.label_smoothing)


def local_loss_grad(a: torch.Tensor, labels: torch.Tensor, rule: LocalRule, head: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Closed-form `(L, dL/da, dL/dhead)` without autograd — the reference the C++ engine reproduces.

    Backward of the chain above: `g = (softmax(y/T) - q) / (T B)` with `q` the smoothed one-hot target;
    `ds = g` (lls), `g * m` (lls_m), `g M^T` (lls_mxm); `dz = ds B`; through the normalisation
    `du = (dz - z (z . dz)) / ||u||` (the random basis: `du = dz`); then the adjoint of the adaptive average
    pooling.
    """
    a = a.detach()
    batch, k = a.shape[0], rule.num_classes
    u = pool_features(a, rule.pool)
    normalised = rule.mode != "local_learnable" and is_periodic(rule.waveform)
    if normalised:
        norm = u.norm(dim=1, keepdim=True)
        z = u / norm.clamp_min(NORM_EPS)
    else:
        z = u
    if rule.mode != "local_learnable":
        basis = periodic_basis(k, z.shape[1], rule.waveform, device=z.device, dtype=z.dtype)
        s = z @ basis.t()
    y = {"lls": lambda: s, "lls_m": lambda: s * head, "lls_mxm": lambda: s @ head,
         "local_learnable": lambda: z @ head.t()}[rule.mode]()
    logp = torch.log_softmax(y / rule.temperature, dim=1)
    target = torch.full_like(y, rule.label_smoothing / k)
    target[torch.arange(batch), labels] += 1.0 - rule.label_smoothing
    loss = -(target * logp).sum(1).mean()
    g = (logp.exp() - target) / (rule.temperature * batch)  # dL/dy [B, K]

    grad_head = None
    if rule.mode == "local_learnable":
        grad_head = g.t() @ z
        grad_u = g @ head
    else:
        if rule.mode == "lls_m":
            grad_head = (g * s).sum(0)
            ds = g * head
        elif rule.mode == "lls_mxm":
            grad_head = s.t() @ g
            ds = g @ head.t()
        else:
            ds = g
        dz = ds @ basis
        if normalised:
            # F.normalize divides by max(||u||, eps): below eps it is a plain scaling, with no projection.
            proj = torch.where(norm > NORM_EPS, z * (z * dz).sum(1, keepdim=True), torch.zeros_like(dz))
            grad_u = (dz - proj) / norm.clamp_min(NORM_EPS)
        else:
            grad_u = dz
    return loss, _unpool_features(grad_u, a.shape, rule.pool), grad_head


class LLSBlock(nn.Module):
    """A trainable block (conv/linear + BN + activation) with its local rule and learnable local head.

    `forward(x)` is the plain block (inference, BP mode); `local_loss(x, labels)` runs the block on the
    DETACHED input and returns `(output, loss)`, so the loss's gradient stops at the block boundary. The
    optimizer lives in the trainer (one per block); `head` ([K] | [K, K] | [K, D] | absent) is a submodule
    parameter, so checkpoints carry it.
    """

    def __init__(self, block: nn.Module, *, mode: str, num_classes: int, feature_dim: int, pool: int | None,
                 waveform: str = "square", temperature: float = 0.5, label_smoothing: float = 0.0):
        super().__init__()
        self.block = block
        self.feature_dim = feature_dim
        self.rule = LocalRule("lls", num_classes, pool, waveform, temperature, label_smoothing)
        self.head: nn.Parameter | None = None
        self.set_mode(mode)

    def set_mode(self, mode: str) -> None:
        """Switch the training mode; a head of a new shape is freshly initialised (do this before training)."""
        self.mode = check_mode(mode)
        self.rule = replace(self.rule, mode=mode if mode != "bp" else "lls")
        shape = head_shape(mode, self.rule.num_classes, self.feature_dim)
        if shape is None:
            self.head = None
        elif self.head is None or tuple(self.head.shape) != shape:
            # The authors' initialisation: 0.01 N(0, 1) for the modulations, 0.1 N(0, 1) for local classifiers.
            scale = 0.1 if mode == "local_learnable" else 0.01
            self.head = nn.Parameter(scale * torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def local_loss(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(block(x.detach()), L)` — L's gradient reaches this block's parameters and head only."""
        if self.mode == "bp":
            raise RuntimeError("this block was built for mode 'bp': it has no local loss")
        out = self.block(x.detach())
        return out, local_loss(out, labels, self.rule, self.head)
