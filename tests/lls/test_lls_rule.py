"""The LLS rule: fixed basis, local loss and its gradient, and the block boundary."""

from __future__ import annotations

import math

import pytest
import torch

from edgeml.lls import basis as basis_module
from edgeml.lls.basis import periodic_basis
from edgeml.lls.rule import LOCAL_MODES, LLSBlock, LocalRule, head_shape, local_loss, local_loss_grad, pool_features
from edgeml.registry import create_model


def test_basis_equals_closed_form_sine():
    k, d = 10, 64
    basis = periodic_basis(k, d, "sine", dtype=torch.float64)
    for i in range(k):
        f = 50.0 + (512.0 - 50.0) * i / (k - 1)
        for n in range(d):
            assert basis[i, n].item() == pytest.approx(math.sin(f * n), abs=1e-9)


def test_square_basis_is_sign_of_sine_and_has_no_parameters():
    sine = periodic_basis(10, 128, "sine", dtype=torch.float64)
    square = periodic_basis(10, 128, "square")
    assert torch.equal(square, torch.sign(sine).float())
    assert set(square.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert not square.requires_grad


def test_basis_is_cached_and_built_on_request_device():
    a = periodic_basis(10, 32, "square", device="cpu")
    assert a is periodic_basis(10, 32, "square", device="cpu")
    assert a.device.type == "cpu" and a.shape == (10, 32)
    with pytest.raises(ValueError, match="waveform"):
        periodic_basis(10, 32, "triangle")


def test_random_basis_is_the_authors_llsrandom_matrix_pooled_to_the_width():
    """LLS_Random: a fixed 0.1 N(0, 1) [K, 2048] matrix, adaptive-average-pooled to D; seeded, so runs agree."""
    full = periodic_basis(10, 2048, "random", dtype=torch.float64)
    assert full.std().item() == pytest.approx(0.1, rel=0.05) and abs(full.mean().item()) < 0.01
    half = periodic_basis(10, 1024, "random", dtype=torch.float64)
    assert torch.allclose(half, 0.5 * (full[:, 0::2] + full[:, 1::2]), atol=1e-15)
    assert torch.equal(basis_module._random_basis(10, 1024), half)  # drawn afresh, not only cached


def test_random_basis_takes_unnormalised_features_as_the_authors_compute_locallosses():
    torch.manual_seed(0)
    a = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    rule = LocalRule("lls", num_classes=5, pool=2, waveform="random", temperature=0.5)
    u = pool_features(a, 2)
    y = u @ periodic_basis(5, 16, "random", dtype=torch.float64).t()
    labels = torch.tensor([0, 2, 4])
    expected = torch.nn.functional.cross_entropy(y / 0.5, labels)
    assert local_loss(a, labels, rule).item() == pytest.approx(expected.item(), rel=1e-12)
    assert local_loss(3.0 * a, labels, rule).item() != pytest.approx(expected.item(), rel=1e-3)


def test_pooling_matches_torch_adaptive_pooling_on_uneven_sizes():
    a = torch.randn(2, 3, 7, 7)
    assert pool_features(a, 2).shape == (2, 12)
    assert torch.allclose(pool_features(a, 2), torch.nn.functional.adaptive_avg_pool2d(a, 2).flatten(1))
    assert pool_features(torch.randn(2, 9), None).shape == (2, 9)


CASES = [((3, 4, 7, 7), 2), ((3, 2, 8, 8), 4), ((3, 12), None)]


def _head(mode: str, rule: LocalRule, dim: int) -> torch.Tensor | None:
    shape = head_shape(mode, rule.num_classes, dim)
    return None if shape is None else torch.randn(shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("waveform", ["square", "random"])
@pytest.mark.parametrize("mode", LOCAL_MODES)
@pytest.mark.parametrize(("shape", "pool"), CASES)
def test_closed_form_gradient_matches_autograd(mode, shape, pool, waveform):
    torch.manual_seed(0)
    rule = LocalRule(mode, num_classes=5, pool=pool, waveform=waveform, temperature=0.5, label_smoothing=0.1)
    a = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4])
    head = _head(mode, rule, pool_features(a, pool).shape[1])
    loss = local_loss(a, labels, rule, head)
    loss.backward()
    ref_loss, grad_a, grad_head = local_loss_grad(a, labels, rule, head)
    assert ref_loss.item() == pytest.approx(loss.item(), rel=1e-12)
    assert torch.allclose(grad_a, a.grad, atol=1e-12, rtol=1e-9)
    if head is not None:
        assert torch.allclose(grad_head, head.grad, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("mode", LOCAL_MODES)
def test_gradient_matches_finite_differences(mode):
    torch.manual_seed(1)
    rule = LocalRule(mode, num_classes=4, pool=2, waveform="sine", temperature=0.5, label_smoothing=0.0)
    a = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    labels = torch.tensor([1, 2])
    head = _head(mode, rule, 12)
    head = None if head is None else head.detach()
    _, grad, _ = local_loss_grad(a, labels, rule, head)
    eps = 1e-6
    for idx in [(0, 0, 0, 0), (1, 2, 4, 3), (0, 1, 2, 2), (1, 0, 3, 1)]:
        plus, minus = a.clone(), a.clone()
        plus[idx] += eps
        minus[idx] -= eps
        numeric = (local_loss(plus, labels, rule, head) - local_loss(minus, labels, rule, head)) / (2 * eps)
        assert grad[idx].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-9)


def test_gradient_check_is_sensitive_to_a_wrong_basis():
    """The autograd comparison can fail: the gradient under another waveform differs."""
    a = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1])
    _, square, _ = local_loss_grad(a, labels, LocalRule("lls", 3, 2, "square"))
    _, sine, _ = local_loss_grad(a, labels, LocalRule("lls", 3, 2, "sine"))
    assert not torch.allclose(square, sine)


def _run_blocks(mode: str) -> tuple[list[torch.Tensor], set[int], torch.nn.Module]:
    """Forward SmallConv block by block; hooks on every block boundary record which ones a gradient crosses."""
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode=mode)
    model.train()
    crossed: set[int] = set()
    image, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    x = model.scale_input(image)
    losses = []
    for i, (block, transition) in enumerate(zip(model.blocks, model.transitions, strict=True)):
        if x.requires_grad:
            x.register_hook(lambda g, i=i: crossed.add(i))  # fires iff a gradient flows into block i's input
        if mode == "bp":
            out = block(x)
            losses.append(local_loss(out, labels, block.rule))
        else:
            out, loss = block.local_loss(x, labels)
            losses.append(loss)
        x = transition(out)
    return losses, crossed, model


def _touched(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_lls_gradient_stops_at_the_block_boundary():
    losses, crossed, model = _run_blocks("lls")
    sum(losses).backward()
    assert crossed == set(), f"gradients crossed into blocks {sorted(crossed)}"
    model.zero_grad(set_to_none=True)
    losses, _, model = _run_blocks("lls")
    losses[2].backward()
    assert _touched(model) and all(n.startswith("blocks.2.") for n in _touched(model))


def test_bp_control_gradient_crosses_block_boundaries():
    losses, crossed, model = _run_blocks("bp")
    losses[2].backward()
    assert crossed == {1, 2}
    assert any(n.startswith("blocks.0.") for n in _touched(model))


def test_block_has_its_learnable_head_only_in_modulated_modes():
    conv = torch.nn.Conv2d(1, 2, 3)
    assert LLSBlock(conv, mode="lls", num_classes=10, feature_dim=8, pool=2).head is None
    assert LLSBlock(conv, mode="lls_m", num_classes=10, feature_dim=8, pool=2).head.shape == (10,)
    assert LLSBlock(conv, mode="lls_mxm", num_classes=10, feature_dim=8, pool=2).head.shape == (10, 10)
    assert LLSBlock(conv, mode="local_learnable", num_classes=10, feature_dim=8, pool=2).head.shape == (10, 8)
    with pytest.raises(RuntimeError, match="bp"):
        LLSBlock(conv, mode="bp", num_classes=10, feature_dim=8, pool=2).local_loss(torch.rand(1, 1, 5, 5),
                                                                                     torch.tensor([0]))
