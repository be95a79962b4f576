"""Spiking building blocks: LIF neurons with surrogate gradients and the spiking temporal modulator.

LIF dynamics per step t (elementwise):
    u_t = tau * u_{t-1} + x_t                    (leaky integration; u_{t-1} is the post-reset membrane)
    theta_t = theta + beta * a_{t-1}             (dynamic threshold; beta = 0 gives the fixed threshold)
    s_t = H(u_t - theta_t)   (1 where u_t >= theta_t, else 0: spikes are exactly 0/1)
    u_t <- u_t - s_t * theta_t   (soft reset)   or   u_t * (1 - s_t)   (hard reset)
    a_t = decay * a_{t-1} + s_t                  (spike trace that raises the threshold after recent spikes)
Backward replaces dH/dx by a surrogate: fast-sigmoid 1 / (1 + k|x|)^2 or arctan (k/2) / (1 + (pi/2 k x)^2).
`detach_reset` stops gradients through the reset term (a common stabiliser).

Outside autograd (inference, export) the Heaviside is a plain comparison, so exported graphs hold no custom op.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from edgeml.errors import ConfigError


class _HeavisideSpike(torch.autograd.Function):
    """Exact 0/1 spikes forward; subclasses give the surrogate gradient in `backward`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x >= 0).to(x.dtype)


class _FastSigmoidSpike(_HeavisideSpike):
    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * x.abs()) ** 2, None


class _ArctanSpike(_HeavisideSpike):
    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        k = ctx.slope
        return grad * (k / 2.0) / (1.0 + (math.pi / 2.0 * k * x) ** 2), None


SURROGATES: dict[str, type[torch.autograd.Function]] = {"fast_sigmoid": _FastSigmoidSpike, "arctan": _ArctanSpike}


def surrogate_grad(name: str, x: torch.Tensor, slope: float) -> torch.Tensor:
    """The surrogate derivative dS/dx the backward pass uses, as a formula (for tests and plots)."""
    if name == "fast_sigmoid":
        return 1.0 / (1.0 + slope * x.abs()) ** 2
    if name == "arctan":
        return (slope / 2.0) / (1.0 + (math.pi / 2.0 * slope * x) ** 2)
    raise ConfigError(f"unknown surrogate {name!r}", fix=f"choose one of {sorted(SURROGATES)}")


def spike(x: torch.Tensor, surrogate: str = "fast_sigmoid", slope: float = 5.0) -> torch.Tensor:
    """Heaviside H(x) (1 where x >= 0) with the named surrogate gradient when autograd needs one."""
    if torch.is_grad_enabled() and x.requires_grad:
        if surrogate not in SURROGATES:
            raise ConfigError(f"unknown surrogate {surrogate!r}", fix=f"choose one of {sorted(SURROGATES)}")
        return SURROGATES[surrogate].apply(x, slope)
    return (x >= 0).to(x.dtype)


class LIF(nn.Module):
    """Leaky integrate-and-fire neurons stepping one time step at a time.

    `step(x [B, ...], u [B, ...], a [B, ...]) -> (s, u', a')`; the state (u, a) is explicit so a streaming
    export can carry it between calls. `a` (the spike trace) is only used with `beta > 0`.
    """

    def __init__(self, tau: float = 0.5, theta: float = 1.0, reset: str = "soft", detach_reset: bool = True,
                 surrogate: str = "fast_sigmoid", slope: float = 5.0, beta: float = 0.0, trace_decay: float = 0.8):
        super().__init__()
        if reset not in ("soft", "hard"):
            raise ConfigError(f"unknown reset {reset!r}", fix="use 'soft' or 'hard'")
        if surrogate not in SURROGATES:
            raise ConfigError(f"unknown surrogate {surrogate!r}", fix=f"choose one of {sorted(SURROGATES)}")
        if not 0.0 <= tau <= 1.0:
            raise ConfigError(f"leak tau must lie in [0, 1], got {tau}")
        self.tau, self.theta, self.reset, self.detach_reset = tau, theta, reset, detach_reset
        self.surrogate, self.slope, self.beta, self.trace_decay = surrogate, slope, beta, trace_decay

    @property
    def dynamic(self) -> bool:
        return self.beta != 0.0

    def step(self, x: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One step: input current x, membrane u, spike trace a (all [B, ...]) -> (spikes, u', a')."""
        u = self.tau * u + x
        theta = self.theta + self.beta * a if self.dynamic else self.theta
        s = spike(u - theta, self.surrogate, self.slope)
        r = s.detach() if self.detach_reset else s
        u = u - r * theta if self.reset == "soft" else u * (1.0 - r)
        a = self.trace_decay * a + s.detach() if self.dynamic else a
        return s, u, a

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] input currents -> [B, T, ...] spikes, from zero state."""
        steps = x_seq.unbind(1)  # one Split in ONNX, not a Gather per step (TVM warns on each Gather)
        u = torch.zeros_like(steps[0])
        a = torch.zeros_like(u)
        out = []
        for x_t in steps:
            s, u, a = self.step(x_t, u, a)
            out.append(s)
        return torch.stack(out, 1)

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, theta={self.theta}, reset={self.reset}, surrogate={self.surrogate}, "
                f"slope={self.slope}, beta={self.beta}")


class SpikingTemporalModulator(nn.Module):
    """A synapse (conv/linear + norm) feeding LIF neurons, stepped over the P-frame sequence.

    `step(x_t, u, a) -> (s_t, u', a')`: x_t is this step's input ([B, C, h, w] for conv synapses); the synapse
    output current drives the neurons. `spikes(x_seq [B, T, ...]) -> [B, T, ...]` runs a whole sequence layer by
    layer; `forward(x_seq) -> (spikes, stats)`, stats =
    {"rate": mean spike rate, "per_step": rate per step [T]}. The module also accumulates spike counts while
    in eval mode, read by `spike_rates(model)` (what `edgeml train` logs during evaluation).
    """

    def __init__(self, synapse: nn.Module, lif: LIF | None = None):
        super().__init__()
        self.synapse = synapse
        self.lif = lif or LIF()
        self._spikes = 0.0  # eval-time counters (plain floats: no state_dict entry, safe under inference_mode)
        self._neurons = 0

    def init_state(self, current_shape: tuple[int, ...], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero membrane and trace of shape `current_shape` ([B, C, h, w])."""
        z = like.new_zeros(current_shape)
        return z, z.clone()

    def step(self, x: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, u, a = self.lif.step(self.synapse(x), u, a)
        self._count(s)
        return s, u, a

    def spikes(self, x_seq: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] inputs -> [B, T, ...] spikes from zero state, layer by layer: the synapse runs once over all
        B*T steps (it has no state), then the neurons step through time. Equals `step` in a loop (eval mode; in
        training BatchNorm sees the B*T currents together instead of B per step)."""
        b, t = x_seq.shape[:2]
        spikes = self.lif(self.synapse(x_seq.flatten(0, 1)).unflatten(0, (b, t)))
        self._count(spikes)
        return spikes

    def forward(self, x_seq: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        spikes = self.spikes(x_seq)
        per_step = spikes.detach().flatten(2).mean(dim=(0, 2))
        return spikes, {"rate": spikes.detach().mean(), "per_step": per_step}

    def _count(self, s: torch.Tensor) -> None:
        if not self.training and not torch.jit.is_tracing() and not _exporting():
            self._spikes += float(s.detach().sum())
            self._neurons += s.numel()

    def reset_stats(self) -> None:
        self._spikes, self._neurons = 0.0, 0

    @property
    def spike_rate(self) -> float | None:
        """Mean spike rate since the last reset (None before any eval step)."""
        n = float(self._neurons)
        return float(self._spikes) / n if n else None


def _exporting() -> bool:
    is_exporting: Callable[[], bool] | None = getattr(torch.onnx, "is_in_onnx_export", None)
    return bool(is_exporting and is_exporting()) or torch.compiler.is_compiling()


def reset_spike_stats(model: nn.Module) -> None:
    """Zero the eval-time spike counters of every modulator in `model`."""
    for m in model.modules():
        if isinstance(m, SpikingTemporalModulator):
            m.reset_stats()


def spike_rates(model: nn.Module) -> dict[str, float]:
    """Mean spike rate per modulator (by module name) measured since the last `reset_spike_stats`."""
    return {name: m.spike_rate for name, m in model.named_modules()
            if isinstance(m, SpikingTemporalModulator) and m.spike_rate is not None}
