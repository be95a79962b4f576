"""UCE's closed-form edit (Gandikota et al.) as the baseline, in the same low-rank form as CURE.

Per cross-attention K/V weight W [out, d], with erased embeddings c_i, guide embeddings c_g (e.g. of ""), preserved
embeddings c_j and λ:

    W' = [λW + s_e Σ_i (W c_g) c_iᵀ + s_p Σ_j (W c_j) c_jᵀ] · [λI + s_e Σ_i c_i c_iᵀ + s_p Σ_j c_j c_jᵀ]⁻¹

Because the targets W c_g and W c_j are themselves linear in W, this is W' = W (I − D) with
D = s_e Σ_i (c_i − c_g) c_iᵀ M⁻¹ (M = the bracket on the right): one d×d matrix of rank ≤ #erased for every layer,
so it runs through the same in-memory / safetensors / ONNX paths as CURE (packed K|V weights included).
"""

from __future__ import annotations

import numpy as np
import torch

from edgeml.cure.spectral import LowRankEdit, _check_embeddings
from edgeml.errors import InputError


def uce_edit(erase: np.ndarray | torch.Tensor, guide: np.ndarray | torch.Tensor,
             preserve: np.ndarray | torch.Tensor | None = None, *, lam: float = 0.5, erase_scale: float = 1.0,
             preserve_scale: float = 1.0) -> LowRankEdit:
    """erase [n, d], guide [n, d] or [1, d] (broadcast), preserve [m, d] or None -> the edit D (rank ≤ n)."""
    c = _check_embeddings(erase, "forget")
    g = _check_embeddings(guide, "guide")
    if g.shape[0] == 1:
        g = np.repeat(g, len(c), axis=0)
    if g.shape != c.shape:
        raise InputError(f"guide embeddings {g.shape} must match the erased ones {c.shape} (or be a single row)")
    if lam <= 0:
        raise InputError(f"lambda must be > 0, got {lam}")
    d = c.shape[1]
    m = lam * np.eye(d) + erase_scale * c.T @ c
    if preserve is not None and len(preserve):
        p = _check_embeddings(preserve, "retain")
        if p.shape[1] != d:
            raise InputError(f"preserved embeddings have width {p.shape[1]}, erased ones {d}")
        m += preserve_scale * p.T @ p
    right = np.linalg.solve(m, c.T).T                         # Cᵀ M⁻¹ (M is symmetric)
    return LowRankEdit(left=np.ascontiguousarray(erase_scale * (c - g).T), right=np.ascontiguousarray(right))
