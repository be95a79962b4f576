"""LIF dynamics, surrogate gradients and the spiking temporal modulator."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgeml.errors import ConfigError
from edgeml.nn.spiking import LIF, SpikingTemporalModulator, spike, surrogate_grad


def _run(lif: LIF, xs: list[float]) -> tuple[list[float], list[float]]:
    u = torch.zeros(1)
    a = torch.zeros(1)
    spikes, membranes = [], []
    for x in xs:
        s, u, a = lif.step(torch.tensor([x]), u, a)
        spikes.append(float(s))
        membranes.append(float(u))
    return spikes, membranes


def test_lif_soft_reset_matches_hand_computed_sequence():
    # u1 = .6; u2 = .3 + .6 = .9; u3 = .45 + .6 = 1.05 -> spike, 1.05 - 1 = .05; u4 = .025 + 1.5 -> spike, .525;
    # u5 = .2625
    spikes, u = _run(LIF(tau=0.5, theta=1.0, reset="soft"), [0.6, 0.6, 0.6, 1.5, 0.0])
    assert spikes == [0, 0, 1, 1, 0]
    assert u == pytest.approx([0.6, 0.9, 0.05, 0.525, 0.2625], abs=1e-6)


def test_lif_hard_reset_zeroes_the_membrane_after_a_spike():
    spikes, u = _run(LIF(tau=0.5, theta=1.0, reset="hard"), [0.6, 0.6, 0.6, 1.5, 0.4])
    assert spikes == [0, 0, 1, 1, 0]
    assert u == pytest.approx([0.6, 0.9, 0.0, 0.0, 0.4])


def test_dynamic_threshold_rises_after_spikes_and_decays():
    # tau=1, theta0=1, beta=.5, trace decay .5, x = 1 each step:
    # t1 u=1 th=1 -> spike, u=0, a=1; t2 u=1 th=1.5 -> none, a=.5; t3 u=2 th=1.25 -> spike, u=.75, a=1.25;
    # t4 u=1.75 th=1.625 -> spike, u=.125
    lif = LIF(tau=1.0, theta=1.0, reset="soft", beta=0.5, trace_decay=0.5)
    spikes, u = _run(lif, [1.0, 1.0, 1.0, 1.0])
    assert spikes == [1, 0, 1, 1]
    assert u == pytest.approx([0.0, 1.0, 0.75, 0.125])
    fixed, _ = _run(LIF(tau=1.0, theta=1.0, reset="soft"), [1.0, 1.0, 1.0, 1.0])
    assert fixed == [1, 1, 1, 1]


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "arctan"])
def test_spikes_are_exactly_zero_or_one(surrogate):
    lif = LIF(surrogate=surrogate, beta=0.3)
    x = (torch.randn(4, 6, 3, 5, 5) * 2).requires_grad_()
    s = lif(x)
    assert set(torch.unique(s).tolist()) <= {0.0, 1.0}
    assert 0 < float(s.detach().mean()) < 1


@pytest.mark.parametrize("slope", [1.0, 5.0, 25.0])
def test_fast_sigmoid_gradient_matches_its_formula(slope):
    x = torch.linspace(-2, 2, 41).requires_grad_()
    spike(x, "fast_sigmoid", slope).sum().backward()
    expected = 1.0 / (1.0 + slope * x.detach().abs()) ** 2
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(surrogate_grad("fast_sigmoid", x.detach(), slope), expected)


@pytest.mark.parametrize("slope", [1.0, 2.0, 10.0])
def test_arctan_gradient_matches_its_formula(slope):
    x = torch.linspace(-2, 2, 41).requires_grad_()
    spike(x, "arctan", slope).sum().backward()
    expected = (slope / 2) / (1 + (math.pi / 2 * slope * x.detach()) ** 2)
    torch.testing.assert_close(x.grad, expected)


def test_detach_reset_changes_the_gradient():
    def grad(detach: bool) -> torch.Tensor:
        x = torch.full((1, 4, 1), 0.8, requires_grad=True)
        LIF(tau=0.9, detach_reset=detach)(x).sum().backward()
        return x.grad

    assert not torch.allclose(grad(True), grad(False))


def test_bad_lif_settings_are_config_errors():
    with pytest.raises(ConfigError, match="reset"):
        LIF(reset="sideways")
    with pytest.raises(ConfigError, match="surrogate"):
        LIF(surrogate="relu")


def test_modulator_returns_spikes_and_their_rate():
    torch.manual_seed(0)
    mod = SpikingTemporalModulator(nn.Conv2d(2, 4, 3, padding=1), LIF(theta=0.2)).eval()
    x = torch.randn(3, 5, 2, 6, 6)
    spikes, stats = mod(x)
    assert spikes.shape == (3, 5, 4, 6, 6)
    assert set(torch.unique(spikes).tolist()) <= {0.0, 1.0}
    assert float(stats["rate"]) == pytest.approx(float(spikes.mean()))
    assert stats["per_step"].shape == (5,)
    assert mod.spike_rate == pytest.approx(float(spikes.mean()))


def test_modulator_step_equals_its_sequence_forward():
    torch.manual_seed(0)
    mod = SpikingTemporalModulator(nn.Conv2d(2, 4, 3, padding=1), LIF(theta=0.2, beta=0.3)).eval()
    x = torch.randn(2, 4, 2, 5, 5)
    spikes, _ = mod(x)
    u = a = torch.zeros(2, 4, 5, 5)
    for t in range(4):
        s, u, a = mod.step(x[:, t], u, a)
        assert torch.equal(s, spikes[:, t])
