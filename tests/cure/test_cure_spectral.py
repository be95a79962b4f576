"""CURE's spectral math (docs/architecture.md §6) and the UCE closed form, on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeml.cure.spectral import LowRankEdit, apply_to_weights, discriminative_projector, expansion, spectral_projector
from edgeml.cure.uce import uce_edit


def closed_form_projector(x: np.ndarray, alpha: float) -> np.ndarray:
    """P = V f(r) Vᵀ from the eigen-decomposition of XᵀX (an independent route to the SVD's V and σ²)."""
    evals, evecs = np.linalg.eigh(x.T @ x)
    evals = np.clip(evals, 0, None)
    r = evals / evals.sum()
    f = alpha * r / ((alpha - 1) * r + 1)
    return (evecs * f) @ evecs.T


def test_expansion_is_identity_at_alpha_one_and_grows_with_alpha():
    r = np.linspace(0.01, 1, 20)
    np.testing.assert_allclose(expansion(r, 1.0), r)
    values = [expansion(r, a) for a in (1, 2, 5, 50, 1e6)]
    assert all((b >= a).all() for a, b in zip(values, values[1:], strict=False))
    np.testing.assert_allclose(values[-1], 1.0, atol=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 5.0])
def test_p_dis_matches_closed_form(rng, alpha):
    xf, xr = rng.normal(size=(6, 32)), rng.normal(size=(10, 32))
    pf, pr = closed_form_projector(xf, alpha), closed_form_projector(xr, alpha)
    np.testing.assert_allclose(spectral_projector(xf, alpha), pf, atol=1e-10)
    np.testing.assert_allclose(discriminative_projector(xf, xr, alpha).dense(), pf - pf @ pr, atol=1e-10)
    np.testing.assert_allclose(discriminative_projector(xf, None, alpha).dense(), pf, atol=1e-10)


def test_p_dis_rank_is_at_most_the_number_of_forget_embeddings(rng):
    edit = discriminative_projector(rng.normal(size=(3, 64)), rng.normal(size=(20, 64)), 2.0)
    assert edit.left.shape == (64, 3)
    assert edit.rank() == 3


def _disjoint(rng, d=64):
    """Forget embeddings in dims 0..3, retain embeddings in dims 4..11 (orthogonal subspaces)."""
    xf = np.zeros((4, d))
    xf[:, :4] = rng.normal(size=(4, 4))
    xr = np.zeros((8, d))
    xr[:, 4:12] = rng.normal(size=(8, 8))
    return xf, xr


def test_forget_shrinks_and_retain_is_kept_in_the_disjoint_large_alpha_case(rng):
    xf, xr = _disjoint(rng)
    w = rng.normal(size=(40, 64))
    edit = discriminative_projector(xf, xr, alpha=1e6)
    w2 = edit.apply_weight(w)
    forget_ratio = np.linalg.norm(w2 @ xf.T) / np.linalg.norm(w @ xf.T)
    retain_change = np.linalg.norm((w2 - w) @ xr.T) / np.linalg.norm(w @ xr.T)
    print(f"‖W'x_f‖/‖Wx_f‖ = {forget_ratio:.2e}, retain relative change = {retain_change:.2e}")
    assert forget_ratio < 1e-3
    assert retain_change <= 0.01


def _sweep(rng, with_retain: bool):
    d = 48
    shared = rng.normal(size=(1, d))
    xf = rng.normal(size=(4, d)) + 2 * shared           # forget and the other prompts overlap through `shared`
    xo = rng.normal(size=(6, d)) + 2 * shared
    w = rng.normal(size=(30, d))
    forget, damage = [], []
    for alpha in (1.0, 2.0, 5.0, 20.0, 100.0):
        w2 = discriminative_projector(xf, xo if with_retain else None, alpha).apply_weight(w)
        forget.append(np.linalg.norm(w2 @ xf.T) / np.linalg.norm(w @ xf.T))
        damage.append(np.linalg.norm((w2 - w) @ xo.T) / np.linalg.norm(w @ xo.T))
    print("retain" if with_retain else "no retain", "forget ratio", np.round(forget, 4), "damage", np.round(damage, 4))
    return forget, damage


def _decreasing(v):
    return all(b < a for a, b in zip(v, v[1:], strict=False))


def test_alpha_trades_forgetting_against_collateral_damage_monotonically(rng):
    """Without retain prompts, a larger α erases more of the forget prompts and hurts overlapping ones more."""
    forget, damage = _sweep(rng, with_retain=False)
    assert _decreasing(forget)
    assert _decreasing(damage[::-1])
    assert forget[-1] < 0.2 < forget[0]


def test_alpha_protects_retain_prompts_more_as_it_grows(rng):
    """With the overlapping prompts as the retain set, a larger α expands P_r too: their damage falls."""
    _, damage = _sweep(rng, with_retain=True)
    assert _decreasing(damage)


def test_transposed_storage_gets_the_transposed_edit(rng):
    edit = discriminative_projector(rng.normal(size=(3, 16)), rng.normal(size=(5, 16)), 2.0)
    d = edit.dense()
    assert not np.allclose(d, d.T), "P_dis must be asymmetric for this test to mean anything"
    w = rng.normal(size=(10, 16))
    np.testing.assert_allclose(edit.apply_weight(w), w @ (np.eye(16) - d), atol=1e-12)
    np.testing.assert_allclose(edit.apply_transposed(w.T), (w @ (np.eye(16) - d)).T, atol=1e-12)
    assert not np.allclose(edit.apply_transposed(w.T), (np.eye(16) - d) @ w.T, atol=1e-3)


def test_packed_kv_weight_equals_separate_edits(rng):
    edit = discriminative_projector(rng.normal(size=(2, 16)), None, 2.0)
    k, v = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
    packed = np.concatenate([k.T, v.T], axis=1)           # [in, 2·out] as in fused MatMul_KV weights
    out = edit.apply_transposed(packed)
    np.testing.assert_allclose(out[:, :8], edit.apply_weight(k).T, atol=1e-12)
    np.testing.assert_allclose(out[:, 8:], edit.apply_weight(v).T, atol=1e-12)


def test_layer_edit_matches_the_dense_formula_keeps_dtype_and_reports_norms(rng):
    edit = discriminative_projector(rng.normal(size=(3, 24)), rng.normal(size=(4, 24)), 2.0)
    weights = {f"l{i}": torch.randn(8 * (i + 1), 24, dtype=torch.float32) for i in range(4)}
    weights["half"] = torch.randn(16, 24).half()
    out, stats = apply_to_weights(edit, weights)
    for name, w in weights.items():
        assert out[name].dtype == w.dtype
        ref = torch.from_numpy(w.double().numpy() @ (np.eye(24) - edit.dense())).to(w.dtype)
        torch.testing.assert_close(out[name], ref, rtol=1e-3 if w.dtype == torch.float16 else 1e-6, atol=1e-6)
        delta = (out[name].double() - w.double()).norm().item()
        assert stats[name]["norm_change"] == pytest.approx(delta, rel=1e-3 if w.dtype == torch.float16 else 1e-5)
        assert stats[name]["norm_after"] == pytest.approx(out[name].double().norm().item(), rel=1e-3)


def test_sequential_erasures_compose(rng):
    e1 = discriminative_projector(rng.normal(size=(2, 16)), None, 2.0)
    e2 = discriminative_projector(rng.normal(size=(2, 16)), None, 2.0)
    w = rng.normal(size=(5, 16))
    twice = e2.apply_weight(e1.apply_weight(w))
    np.testing.assert_allclose(twice, w @ (np.eye(16) - e1.dense()) @ (np.eye(16) - e2.dense()), atol=1e-12)


def test_uce_matches_its_closed_form(rng):
    d, lam = 20, 0.5
    c, cg, cp = rng.normal(size=(3, d)), rng.normal(size=(1, d)), rng.normal(size=(5, d))
    w = rng.normal(size=(12, d))
    num = lam * w + sum(np.outer(w @ cg[0], ci) for ci in c) + sum(np.outer(w @ cj, cj) for cj in cp)
    den = lam * np.eye(d) + c.T @ c + cp.T @ cp
    expected = num @ np.linalg.inv(den)
    edit = uce_edit(c, cg, cp, lam=lam)
    np.testing.assert_allclose(edit.apply_weight(w), expected, atol=1e-9)
    assert edit.rank() <= 3


def test_low_rank_edit_rejects_a_width_mismatch():
    from edgeml.errors import InputError

    edit = LowRankEdit(np.zeros((16, 1)), np.zeros((1, 16)))
    with pytest.raises(InputError, match="does not match"):
        edit.apply_weight(np.zeros((4, 32)))


def test_many_rows_take_the_gram_path_and_give_the_svd_projector(monkeypatch):
    """500 prompts × width 2048 (100 concepts × 5 templates at SDXL width): X Xᵀ eigenvectors = the SVD basis."""
    import edgeml.cure.spectral as spectral

    rng = np.random.default_rng(7)
    x = rng.normal(size=(500, 40)) @ rng.normal(size=(40, 2048)) + 1e-3 * rng.normal(size=(500, 2048))
    fast = spectral.spectral_projector(x, 2.0)
    monkeypatch.setattr(spectral, "GRAM_ROWS", 10**9)
    exact = spectral.spectral_projector(x, 2.0)
    np.testing.assert_allclose(fast, exact, atol=1e-9 * np.abs(exact).max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_block_edit_in_place_is_one_result_for_every_layout_block_size_and_report_flag(rng, monkeypatch, dtype):
    """The block update gives the same values whether W is contiguous or stored transposed (an ONNX weight's `.T`;
    up to float32 summation order), edited in place or copied, with or without norms (bit for bit), with blocks of
    3 rows (ragged last block) or one block; the values follow W (I − D) and the norms the edited tensor."""
    import edgeml.cure.spectral as spectral

    edit = discriminative_projector(rng.normal(size=(3, 32)), rng.normal(size=(4, 32)), 2.0)
    w = torch.from_numpy(rng.normal(size=(20, 32))).to(dtype)
    full, full_stats = apply_to_weights(edit, {"w": w})
    monkeypatch.setattr(spectral, "BLOCK_BYTES", 3 * 32 * (8 if dtype == torch.float64 else 4))
    got = {}
    for layout in ("contiguous", "transposed"):
        for stats in (True, False):
            stored = w.clone() if layout == "contiguous" else w.T.contiguous()
            view = stored if layout == "contiguous" else stored.T
            out, norms = apply_to_weights(edit, {"w": view}, inplace=True, stats=stats)
            assert out["w"] is view or out["w"].data_ptr() == view.data_ptr()
            got[layout, stats] = view.clone()
            if stats:
                for key in ("norm", "norm_change", "norm_after"):
                    assert norms["w"][key] == pytest.approx(full_stats["w"][key], rel=1e-6)
    first = got["contiguous", True]
    for layout in ("contiguous", "transposed"):   # the norms never change the edited values
        assert torch.equal(got[layout, True], got[layout, False])
    # A transposed weight is edited in its own layout: equal up to float32 summation order in W·L.
    # (float16 / bfloat16: a float32 difference may flip one rounding, one step of the stored type).
    step = 1e-6 if dtype in (torch.float32, torch.float64) else torch.finfo(dtype).eps
    scale = step * float(first.double().abs().max())
    torch.testing.assert_close(got["transposed", True], first, rtol=0, atol=scale)
    assert not torch.equal(first, w), "nothing was edited"
    ref = torch.from_numpy(w.double().numpy() @ (np.eye(32) - edit.dense()))
    tol = {torch.float16: 1e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    torch.testing.assert_close(first.double(), ref.to(dtype).double(), rtol=tol, atol=tol)
    torch.testing.assert_close(full["w"], first, rtol=tol, atol=tol)
    delta = (first.double() - w.double()).norm().item()
    assert full_stats["w"]["norm_change"] == pytest.approx(delta, rel=10 * tol)


def test_threads_edit_whole_weights_so_the_values_do_not_depend_on_the_thread_count(rng):
    edit = discriminative_projector(rng.normal(size=(2, 40)), None, 2.0)
    weights = {f"w{i}": torch.from_numpy(rng.normal(size=(8 + i, 40))).float() for i in range(6)}
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, s1 = apply_to_weights(edit, weights)
        torch.set_num_threads(3)
        three, s3 = apply_to_weights(edit, weights)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(one[n], three[n]) for n in weights) and s1 == s3
    assert not any(torch.equal(one[n], weights[n]) for n in weights)
