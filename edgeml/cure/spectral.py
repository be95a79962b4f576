"""CURE's spectral eraser: projectors from forget/retain embeddings and the edit `W ← W (I − P_dis)`.

For embeddings `X ∈ R^{n×d}` (rows = prompts), SVD `X = U Σ Vᵀ`, energies `r_i = σ_i² / Σ_j σ_j²`,
expansion `f(r; α) = α r / ((α − 1) r + 1)` and projector `P = V diag(f(r)) Vᵀ` (d×d). With forget and retain
projectors `P_f`, `P_r`: `P_dis = P_f − P_f P_r` (= `P_f` without retain prompts).

`P_dis` has rank ≤ n_forget, so it is kept as a low-rank product `P_dis = L R` (`L` [d, k], `R` [k, d]) and
applied as `W − (W L) R`: two thin GEMMs per layer instead of a dense d×d product. Projectors are built in
float64; weights keep their dtype.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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


# Size of one block of a weight edited at a time: the compute-dtype block and its update stay in a core's L2 cache
# between the products, so each weight is read from memory once and written once (the memory floor).
BLOCK_BYTES = 1 << 18


def apply_to_weights(edit: LowRankEdit, weights: dict[str, torch.Tensor], *, inplace: bool = False,
                     stats: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, float]]]:
    """{name: W [out, d]} -> ({name: W (I − D)}, {name: norm statistics}); one shared factorisation for all layers.

    W may be row-major or stored transposed (an ONNX weight stored as B = Wᵀ [d, out] is passed as `B.T`), in any
    float dtype. With `inplace` the given tensors are overwritten (`out[name]` shares their memory), else edited
    copies are returned. Each weight is edited block by block in its storage order (`_edit_blocks_`): rows of W as
    `W − (W L) R`, rows of Wᵀ as `Wᵀ − Rᵀ (Lᵀ Wᵀ)`, on a cache-resident float32 block (float64 for float64 weights)
    converted by torch; the thin products run in numpy's BLAS (MKL's kernels for a k-column product ran 4–8×
    slower on this AMD CPU). Nothing [out, d]-sized is allocated. L, R come from float64 SVDs; rounding them to
    float32 costs ~k·eps relative, far below float32 weight storage precision.
    With `stats`, the norms (‖W‖, ‖ΔW‖, ‖W'‖) come from the same pass (one more thin product per block).
    With torch.get_num_threads() > 1, that many weights are edited at a time.
    """
    out, norms = {}, {}
    factors: dict[torch.dtype, _Factors] = {}
    for name, w in weights.items():
        edit._check(w.shape[-1], name)
        out[name] = w.detach() if inplace else w.detach().clone()
        compute = torch.float64 if w.dtype == torch.float64 else torch.float32
        if compute not in factors:
            factors[compute] = _Factors.of(edit, compute)

    def one(w: torch.Tensor) -> tuple[float, float, float]:
        return _edit_blocks_(w, factors[torch.float64 if w.dtype == torch.float64 else torch.float32], stats)

    # Weights are independent: with torch's thread count > 1 they are edited by that many threads (BLAS and torch's
    # copies release the GIL), each weight by one thread, so the values never depend on the thread count.
    workers = min(torch.get_num_threads(), len(out))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            results = dict(zip(out, pool.map(one, out.values()), strict=True))
    else:
        results = {name: one(w) for name, w in out.items()}
    for name, sums in results.items():
        if stats:
            norm2, cross, change2 = sums
            norm = norm2 ** 0.5
            after2 = max(norm2 - 2 * cross + change2, 0.0)
            norms[name] = {"norm": norm, "norm_change": change2 ** 0.5, "norm_after": after2 ** 0.5,
                           "relative_change": change2 ** 0.5 / norm if norm else 0.0}
    return out, norms


@dataclass(frozen=True)
class _Factors:
    """L [d, k], R [k, d] and their transposes (C-contiguous numpy arrays of one compute dtype), and R Rᵀ in float64
    (for ‖ΔW‖² = Σ (W L)(R Rᵀ)(W L)ᵀ)."""

    dtype: torch.dtype
    left: np.ndarray
    right: np.ndarray
    left_t: np.ndarray
    right_t: np.ndarray
    rrt: np.ndarray

    @classmethod
    def of(cls, edit: LowRankEdit, dtype: torch.dtype) -> _Factors:
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        left, right = (np.ascontiguousarray(m, np_dtype) for m in (edit.left, edit.right))
        return cls(dtype, left, right, np.ascontiguousarray(left.T), np.ascontiguousarray(right.T),
                   edit.right @ edit.right.T)


def _edit_blocks_(w: torch.Tensor, f: _Factors, stats: bool) -> tuple[float, float, float]:
    """W ← W − (W L) R in place, block by block in storage order; -> (‖W‖², ⟨W L, W Rᵀ⟩, ‖ΔW‖²) of the original W
    when `stats` (zeros otherwise; ⟨W, ΔW⟩ = ⟨W L, W Rᵀ⟩). The edited values do not depend on `stats`.

    Per block: convert into a reused contiguous buffer (torch's vectorised copy) unless W already is one, W L into
    its rows of a [out, k] array, the rank-k update into a reused buffer, subtract, convert back."""
    transposed = w.shape[0] > 1 and w.stride(0) == 1 and w.stride(1) != 1    # W = Bᵀ, B row-major [d, out]
    store = w.T if transposed else w
    n_out, d = w.shape
    span = max(1, min(n_out, BLOCK_BYTES // max(1, d * f.left.itemsize)))  # rows of W per block
    np_dtype = f.left.dtype
    k = f.left.shape[1]
    wl_all = np.empty((k, n_out) if transposed else (n_out, k), np_dtype)   # (W L)ᵀ or W L
    wr_all = np.empty_like(wl_all) if stats else None
    upd = np.empty(span * d, np_dtype)
    # A transposed weight's column blocks are strided: copied too (BLAS and the subtraction on them ran 2× slower).
    direct = w.dtype == f.dtype and store.is_contiguous() and not transposed
    buf = None if direct else torch.empty(span * d, dtype=f.dtype)
    norm2 = 0.0
    for i in range(0, n_out, span):
        rows = min(span, n_out - i)
        blk = store[:, i:i + rows] if transposed else store[i:i + rows]
        shape = (d, rows) if transposed else (rows, d)
        b = blk if buf is None else buf[:rows * d].view(shape).copy_(blk)
        x = b.numpy()
        if transposed:
            wl = np.matmul(f.left_t, x, out=wl_all[:, i:i + rows])
            if stats:
                np.matmul(f.right, x, out=wr_all[:, i:i + rows])
            delta = np.matmul(f.right_t, wl, out=upd[:rows * d].reshape(shape))
        else:
            wl = np.matmul(x, f.left, out=wl_all[i:i + rows])
            if stats:
                np.matmul(x, f.right_t, out=wr_all[i:i + rows])
            delta = np.matmul(wl, f.right, out=upd[:rows * d].reshape(shape))
        if stats:
            norm2 += float(np.dot(x.reshape(-1), x.reshape(-1)))   # x is contiguous: no copy
        np.subtract(x, delta, out=x)
        if buf is not None:
            blk.copy_(b)
    if not stats:
        return 0.0, 0.0, 0.0
    wl64, wr64 = wl_all.astype(np.float64), wr_all.astype(np.float64)
    if transposed:
        wl64, wr64 = wl64.T, wr64.T
    return norm2, float(np.sum(wl64 * wr64)), float(np.sum((wl64 @ f.rrt) * wl64))
