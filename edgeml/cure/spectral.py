"""CURE's spectral eraser: projectors from forget/retain embeddings and the edit `W ← W (I − P_dis)`.

For embeddings `X ∈ R^{n×d}` (rows = prompts), SVD `X = U Σ Vᵀ`, energies `r_i = σ_i² / Σ_j σ_j²`,
expansion `f(r; α) = α r / ((α − 1) r + 1)` and projector `P = V diag(f(r)) Vᵀ` (d×d). With forget and retain
projectors `P_f`, `P_r`: `P_dis = P_f − P_f P_r` (= `P_f` without retain prompts).

`P_dis` has rank ≤ n_forget, so it is kept as a low-rank product `P_dis = L R` (`L` [d, k], `R` [k, d]) and
applied as `W − (W L) R`: two thin GEMMs per layer instead of a dense d×d product. Projectors are built in
float64; weights keep their dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgeml.errors import InputError

GRAM_ROWS = 256  # from this many embedding rows (and fewer than their width) the basis comes from X Xᵀ


def expansion(r: np.ndarray, alpha: float) -> np.ndarray:
    """Energy expansion f(r; α) = α r / ((α − 1) r + 1): identity at α = 1, → 1 for every r > 0 as α → ∞."""
    if not alpha > 0:
        raise InputError(f"alpha must be > 0, got {alpha}", fix="use e.g. --alpha 2 (objects/styles) or 5")
    r = np.asarray(r, np.float64)
    return alpha * r / ((alpha - 1.0) * r + 1.0)


def _check_embeddings(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"{what} embeddings must be a non-empty [n, d] matrix, got shape {tuple(x.shape)}",
                         fix=f"pass at least one {what} prompt")
    if not np.isfinite(x).all():
        raise InputError(f"{what} embeddings contain NaN or inf")
    return x


def spectral_basis(x: np.ndarray | torch.Tensor, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] embeddings -> (V [d, k], f(r) [k]) with `P = V diag(f) Vᵀ`; null directions (σ ≈ 0) dropped."""
    x = _check_embeddings(x, "concept")
    n, d = x.shape
    eps = np.finfo(np.float64).eps
    if GRAM_ROWS <= n < d:
        # Many prompts (100 concepts × 5 templates): eigenvectors of the n×n Gram matrix X Xᵀ give V = Xᵀ U Σ⁻¹,
        # 5× faster than the SVD of X at n = 500, d = 2048. Energies are the eigenvalues themselves; directions
        # below σ₀·√(d·eps) are dropped (their energy share < d·eps: f(r) is ~0 for any sane α).
        energy, u = np.linalg.eigh(x @ x.T)
        energy, u = energy[::-1], u[:, ::-1]
        if energy[0] <= 0:
            raise InputError("embeddings are all zero; they span no direction to erase")
        keep = energy > energy[0] * max(n, d) * eps
        v = (x.T @ u[:, keep]) / np.sqrt(energy[keep])
        return v, expansion(energy[keep] / energy[energy > 0].sum(), alpha)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    energy = s**2
    total = energy.sum()
    if total == 0:
        raise InputError("embeddings are all zero; they span no direction to erase")
    keep = s > s[0] * max(x.shape) * eps
    return vt[keep].T, expansion(energy[keep] / total, alpha)


def spectral_projector(x: np.ndarray | torch.Tensor, alpha: float) -> np.ndarray:
    """[n, d] embeddings -> dense projector P = V diag(f(r; α)) Vᵀ [d, d] (float64)."""
    v, f = spectral_basis(x, alpha)
    return (v * f) @ v.T


@dataclass(frozen=True)
class LowRankEdit:
    """An input-side edit `W ← W (I − D)` with `D = left @ right` (left [d, k], right [k, d], float64).

    CURE's `D` is `P_dis`; UCE's closed form also has this shape (see `edgeml.cure.uce`).
    """

    left: np.ndarray
    right: np.ndarray

    @property
    def width(self) -> int:
        return self.left.shape[0]

    def dense(self) -> np.ndarray:
        """D as a [d, d] float64 matrix."""
        return self.left @ self.right

    def rank(self, rtol: float = 1e-10) -> int:
        """Numerical rank of D (at most k), from k×k factors: L R = Q_L (R_L R_Rᵀ) Q_Rᵀ with L = Q_L R_L and
        Rᵀ = Q_R R_R (a d×d SVD took seconds at SDXL's d = 2048)."""
        k = self.left.shape[1]
        if k == 0:
            return 0
        if k >= self.width:
            s = np.linalg.svd(self.dense(), compute_uv=False)
        else:
            s = np.linalg.svd(np.linalg.qr(self.left, mode="r") @ np.linalg.qr(self.right.T, mode="r").T,
                              compute_uv=False)
        return int((s > rtol * max(s[0], 1e-300)).sum())

    def _check(self, n_in: int, name: str) -> None:
        if n_in != self.width:
            raise InputError(f"{name}: input width {n_in} does not match the text-embedding width {self.width}",
                             fix="use the text encoder the model was trained with")

    def apply_weight(self, w: torch.Tensor | np.ndarray, name: str = "weight") -> torch.Tensor | np.ndarray:
        """W [out, d] -> W (I − D) = W − (W L) R, same dtype and type as given."""
        self._check(w.shape[-1], name)
        if isinstance(w, torch.Tensor):
            w64 = w.detach().to(torch.float64)
            left, right = torch.from_numpy(self.left), torch.from_numpy(self.right)
            return (w64 - (w64 @ left) @ right).to(w.dtype)
        w64 = np.asarray(w, np.float64)
        return (w64 - (w64 @ self.left) @ self.right).astype(w.dtype)

    def apply_transposed(self, b: torch.Tensor | np.ndarray, name: str = "weight") -> torch.Tensor | np.ndarray:
        """Stored-transposed B = Wᵀ [d, out] (also packed K|V [d, 2·out]) -> (I − D)ᵀ B = B − Rᵀ (Lᵀ B).

        D is not symmetric, so dropping this transpose silently gives a different edit.
        """
        self._check(b.shape[0], name)
        if isinstance(b, torch.Tensor):
            b64 = b.detach().to(torch.float64)
            left, right = torch.from_numpy(self.left), torch.from_numpy(self.right)
            return (b64 - right.T @ (left.T @ b64)).to(b.dtype)
        b64 = np.asarray(b, np.float64)
        return (b64 - self.right.T @ (self.left.T @ b64)).astype(b.dtype)


def discriminative_projector(forget: np.ndarray | torch.Tensor, retain: np.ndarray | torch.Tensor | None = None,
                             alpha: float = 2.0) -> LowRankEdit:
    """P_dis = P_f − P_f P_r as a low-rank edit; forget [n_f, d], retain [n_r, d] or None (then P_dis = P_f).

    With P_f = V_f diag(f_f) V_fᵀ: P_dis = V_f · diag(f_f) (V_fᵀ − (V_fᵀ V_r) diag(f_r) V_rᵀ), rank ≤ n_f.
    """
    vf, ff = spectral_basis(forget, alpha)
    right = vf.T
    if retain is not None and len(retain):
        retain = _check_embeddings(retain, "retain")
        if retain.shape[1] != vf.shape[0]:
            raise InputError(f"retain embeddings have width {retain.shape[1]}, forget ones {vf.shape[0]}")
        vr, fr = spectral_basis(retain, alpha)
        right = right - ((vf.T @ vr) * fr) @ vr.T
    return LowRankEdit(left=np.ascontiguousarray(vf), right=np.ascontiguousarray(ff[:, None] * right))


def apply_to_weights(edit: LowRankEdit, weights: dict[str, torch.Tensor], *, inplace: bool = False,
                     stats: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """{name: W [out, d]} -> ({name: W (I − D)}, {name: norm statistics}); one shared factorisation for all layers.

    Per layer this is two thin GEMMs, `W·L` [out, k] then `W − (W·L)·R` as one `addmm` in the weight's compute
    dtype (float32 for float16/bfloat16 storage), in place when `inplace` and the dtype allows: nothing
    [out, d]-sized is allocated. `W·L` is computed as `(Lᵀ·Wᵀ)ᵀ`: MKL's kernel for a row-major W times a k-column
    matrix ran 2× slower than the transposed product. L, R come from float64 SVDs; rounding them to float32 costs
    ~k·eps relative, far below float32 weight storage precision.
    With `stats`, the norms (‖W‖, ‖ΔW‖, ‖W'‖) come from one more thin product and one read of W.
    """
    out, norms = {}, {}
    factors: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for name, w in weights.items():
        edit._check(w.shape[-1], name)
        w = w.detach()
        compute = torch.float64 if w.dtype == torch.float64 else torch.float32
        if compute not in factors:
            left = torch.from_numpy(edit.left).to(compute)
            right = torch.from_numpy(edit.right).to(compute)
            factors[compute] = (left.T.contiguous(), right, right.contiguous(), (right @ right.T).double())
        left_t, right, right_rows, rrt = factors[compute]
        wc = w if w.dtype == compute else w.to(compute)
        wl = (left_t @ wc.T).T                             # [out, k]
        if stats:
            wr64 = (right_rows @ wc.T).T.double()          # [out, k]: for ⟨W, ΔW⟩
            norm2 = float(torch.linalg.vector_norm(wc)) ** 2
            wl64 = wl.double()
            change2 = float(((wl64 @ rrt) * wl64).sum())
            after2 = max(norm2 - 2 * float((wl64 * wr64).sum()) + change2, 0.0)
            norm = norm2 ** 0.5
            norms[name] = {"norm": norm, "norm_change": change2 ** 0.5, "norm_after": after2 ** 0.5,
                           "relative_change": change2 ** 0.5 / norm if norm else 0.0}
        if inplace and w.dtype == compute:
            w.addmm_(wl, right, alpha=-1)
            out[name] = w
        else:
            out[name] = torch.addmm(wc, wl, right, alpha=-1).to(w.dtype)
    return out, norms
