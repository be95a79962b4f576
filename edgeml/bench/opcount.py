"""Operation counts of one forward pass, measured on real inputs: dense MACs and spike-driven accumulations.

A layer whose input is a spike tensor (its module carries `spike_input = True`, set by the model for layers fed by
LIF neurons) does no multiplications: every *non-zero* input spike adds its weights into the outputs. Its cost is
counted as accumulations, ACs = (MACs the layer would need densely) x (fraction of its input that is non-zero,
measured on this very forward pass) — never an assumed rate. Every other conv / linear counts its dense MACs; the
two attention matmuls are counted through `SelfAttention.core_macs`; each LIF neuron update counts one MAC (the
leak multiply). BatchNorm (folded into the conv at inference), activations and pooling are not counted.
Counts are per sample (divided by the batch size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn

from edgeml.errors import InputError


@dataclass
class OpCount:
    """Per-sample counts: `macs` (dense multiply-accumulates), `acs` (spike accumulations), `spike_rates`
    (measured rate per spiking module), `dense_macs` (what the same net would cost with every layer dense),
    `layers` (name -> {"macs"|"acs": count, "input_rate": rate for spike-fed layers})."""

    macs: float
    acs: float
    spike_rates: dict[str, float] = field(default_factory=dict)
    dense_macs: float = 0.0
    layers: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"macs": self.macs, "acs": self.acs, "dense_macs": self.dense_macs, "spike_rates": self.spike_rates,
                "mean_spike_rate": (sum(self.spike_rates.values()) / len(self.spike_rates)) if self.spike_rates
                else None}


def _layer_macs(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Dense MACs of one call (whole batch)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        k = prod(module.kernel_size) * (module.in_channels // module.groups)
        return y.numel() * k
    if isinstance(module, nn.Linear):
        return y.numel() * module.in_features
    return 0


def count_ops(model: nn.Module, inputs: Sequence[torch.Tensor]) -> OpCount:
    """Run `model(*inputs)` once (no grad) and count its operations per sample."""
    from edgeml.nn.mixer import SelfAttention
    from edgeml.nn.spiking import SpikingTemporalModulator, reset_spike_stats, spike_rates

    if not inputs:
        raise InputError("count_ops needs at least one input tensor")
    batch = int(inputs[0].shape[0])
    layers: dict[str, dict[str, float]] = {}
    totals = {"macs": 0.0, "acs": 0.0, "dense": 0.0}

    def add(name: str, key: str, value: float, rate: float | None = None) -> None:
        entry = layers.setdefault(name, {"macs": 0.0, "acs": 0.0})
        entry[key] += value / batch
        if rate is not None:
            entry.setdefault("_nz", 0.0)
            entry.setdefault("_n", 0.0)
            entry["_nz"] += rate[0]
            entry["_n"] += rate[1]

    def hook(name: str):
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            if isinstance(module, SelfAttention):
                add(name + ".core", "macs", module.core_macs(x.shape[1], x.shape[2]) * x.shape[0])
                totals["dense"] += module.core_macs(x.shape[1], x.shape[2]) * x.shape[0]
                return
            macs = _layer_macs(module, x, output)
            totals["dense"] += macs
            if getattr(module, "spike_input", False):
                nz, n = float((x != 0).sum()), x.numel()
                add(name, "acs", macs * nz / n, (nz, n))
            else:
                add(name, "macs", macs)
        return fn

    def lif_hook(name: str):
        def fn(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            add(name + ".lif", "macs", output.numel())  # one leak multiply per neuron per step
            totals["dense"] += output.numel()
        return fn

    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, SelfAttention)):
            handles.append(m.register_forward_hook(hook(name)))
        if isinstance(m, SpikingTemporalModulator):
            handles.append(m.synapse.register_forward_hook(lif_hook(name)))
    was_training = model.training
    model.eval()
    reset_spike_stats(model)
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for entry in layers.values():
        if "_n" in entry:
            entry["input_rate"] = entry.pop("_nz") / entry.pop("_n")
        totals["macs"] += entry["macs"]
        totals["acs"] += entry["acs"]
    return OpCount(macs=totals["macs"], acs=totals["acs"], spike_rates=spike_rates(model),
                   dense_macs=totals["dense"] / batch, layers=layers)
