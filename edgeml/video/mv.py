"""Front of the compiled motion-vector kernels (edgeml._C): rows, fields, accumulation, residuals.

Conventions (docs/architecture.md §3): a field is float32 `[2, ceil(H/g), ceil(W/g)]` (channel 0 = x), painted with
each block's `dst - src` in whole pixels; cell (i, j) stands for pixel (i*g, j*g). A pixel p came from `p - field(p)`
in the reference. Warping is nearest-neighbour with clamping at the borders (vectors are whole pixels, so bilinear would
give the same numbers); residual = current - warp(reference), so current == residual + warp(reference) exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeml import _C

GRIDS = (1, 2, 4, 8, 16)
WARP = "nearest"


def mv_rows(mvs: np.ndarray | None, *, source: str = "past") -> np.ndarray:
    """Structured AVMotionVector rows -> int32 [N, 6] (w, h, src_x, src_y, dst_x, dst_y) for the kernels.

    source: "past" keeps rows predicted from an earlier frame (`source < 0`: all rows of a P-frame), "future" those
    from a later one (`source > 0`, B-frames only), "all" every row.
    """
    if mvs is None or len(mvs) == 0:
        return np.zeros((0, 6), np.int32)
    if source == "past":
        mvs = mvs[mvs["source"] < 0]
    elif source == "future":
        mvs = mvs[mvs["source"] > 0]
    elif source != "all":
        raise ValueError(f"source must be past, future or all, got {source!r}")
    out = np.empty((len(mvs), 6), np.int32)
    for k, name in enumerate(("w", "h", "src_x", "src_y", "dst_x", "dst_y")):
        out[:, k] = mvs[name]
    return out


def _pick(name: str, device: str) -> Any:
    if device == "cpu":
        return getattr(_C, name)
    if device == "cuda":
        return getattr(_C, name + "_cuda")
    raise ValueError(f"device must be cpu or cuda, got {device!r}")


def rasterise(rows: np.ndarray, height: int, width: int, grid: int, *, device: str = "cpu") -> np.ndarray:
    """int32 [N, 6] rows -> float32 field [2, ceil(H/g), ceil(W/g)] (last covering block wins; uncovered = 0)."""
    return _pick("rasterise_mvs", device)(rows, height, width, grid)


def accumulate(field: np.ndarray, prev: np.ndarray | None, height: int, width: int, grid: int, *,
               device: str = "cpu") -> np.ndarray:
    """One step of the chain to the I-frame: out(p) = field(p) + prev(clamp(p - field(p))); prev None = I-frame."""
    return _pick("accumulate_mvs", device)(field, prev, height, width, grid)


def residual(cur: list[np.ndarray], ref: list[np.ndarray], field: np.ndarray | None, grid: int, *,
             device: str = "cpu", out: np.ndarray | None = None) -> np.ndarray:
    """Planes (Y, U, V or R, G, B; 2-D uint8, any strides) -> int16 [C, H, W] = cur - warp(ref, field), written into
    `out` (C-contiguous int16 [C, H, W]) when given."""
    return _pick("residual", device)(cur, ref, field, grid, out)


def p_step(rows: np.ndarray, cur: list[np.ndarray], ref: list[np.ndarray], prev: np.ndarray | None, grid: int, *,
           accumulate: bool, device: str = "cpu", out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One P-frame in one compiled call: rasterise -> (accumulate onto `prev`) -> residual against `ref`.
    -> (field [2, H/g, W/g], residual int16 [C, H, W]); the same numbers as the three kernels in turn."""
    return _pick("p_step", device)(rows, cur, ref, prev, grid, accumulate, out)


def warp(ref: list[np.ndarray], field: np.ndarray | None, grid: int, *, device: str = "cpu") -> np.ndarray:
    """Planes warped by `field` (nearest, clamped; chroma upsampled by repetition) -> uint8 [C, H, W]."""
    return _pick("warp", device)(ref, field, grid)


def frame_planes(frame: Any) -> list[np.ndarray]:
    """An av.VideoFrame's planes as zero-copy 2-D uint8 views (no colour conversion), e.g. Y, U, V for yuv420p."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray"):
        frame = frame.reformat(format="yuv420p")
    out = []
    for p in frame.planes:
        buf = np.frombuffer(p, np.uint8)
        out.append(buf.reshape(-1, p.line_size)[: p.height, : p.width])
    return out


def packed_planes(image: np.ndarray) -> list[np.ndarray]:
    """uint8 [H, W, C] (e.g. RGB) -> C zero-copy plane views for the kernels."""
    return [image[:, :, c] for c in range(image.shape[2])]


# ----------------------------------------------------------------------------------------------------------------
# numpy implementations of the same kernels: the baseline of benchmarks/video_extract.py and a fallback to read.


def np_rasterise(rows: np.ndarray, height: int, width: int, grid: int) -> np.ndarray:
    """numpy twin of rasterise: paint each block's cells (slice assignment per row; later rows win)."""
    ho, wo = -(-height // grid), -(-width // grid)
    out = np.zeros((2, ho, wo), np.float32)
    for w, h, sx, sy, dx, dy in rows.tolist():
        x0, y0 = dx - w // 2, dy - h // 2
        j0, j1 = max(-(-x0 // grid), 0), min(-(-(x0 + w) // grid), wo)
        i0, i1 = max(-(-y0 // grid), 0), min(-(-(y0 + h) // grid), ho)
        if i0 < i1 and j0 < j1:
            out[0, i0:i1, j0:j1] = dx - sx
            out[1, i0:i1, j0:j1] = dy - sy
    return out


def np_accumulate(field: np.ndarray, prev: np.ndarray | None, height: int, width: int, grid: int) -> np.ndarray:
    """numpy twin of accumulate (vectorised gather)."""
    if prev is None:
        return field.copy()
    ho, wo = field.shape[1:]
    ys, xs = np.mgrid[0:ho, 0:wo] * grid
    sx = np.clip(np.floor(xs - field[0]).astype(np.int64), 0, width - 1) // grid
    sy = np.clip(np.floor(ys - field[1]).astype(np.int64), 0, height - 1) // grid
    return field + prev[:, sy, sx]


def np_residual(cur: list[np.ndarray], ref: list[np.ndarray], field: np.ndarray | None, grid: int) -> np.ndarray:
    """numpy twin of residual (vectorised gather; chroma planes upsampled by repetition)."""
    h, w = cur[0].shape
    ys, xs = np.mgrid[0:h, 0:w]
    if field is None:
        sy, sx = ys, xs
    else:
        fx, fy = field[0][ys // grid, xs // grid], field[1][ys // grid, xs // grid]
        sx = np.clip(np.floor(xs - fx).astype(np.int64), 0, w - 1)
        sy = np.clip(np.floor(ys - fy).astype(np.int64), 0, h - 1)
    out = np.empty((len(cur), h, w), np.int16)
    for c, (a, b) in enumerate(zip(cur, ref, strict=True)):
        ky, kx = (0 if a.shape[0] == h else 1), (0 if a.shape[1] == w else 1)
        out[c] = a[ys >> ky, xs >> kx].astype(np.int16) - b[sy >> ky, sx >> kx]
    return out


def area_weights(out: int, size: int) -> np.ndarray:
    """int64 [out, size]: the exact area weights of `size` native pixels averaged to `out` (rows sum to `size`;
    native pixel v spans [v*out, (v+1)*out), output k spans [k*size, (k+1)*size))."""
    k = np.arange(out)[:, None]
    v = np.arange(size)[None, :]
    lo = np.maximum(k * size, v * out)
    hi = np.minimum((k + 1) * size, (v + 1) * out)
    return np.maximum(hi - lo, 0).astype(np.int64)


def round_half_away(num: np.ndarray, den: int) -> np.ndarray:
    """num / den rounded to the nearest integer, halves away from zero (integers in, int64 out)."""
    q = (2 * np.abs(num) + den) // (2 * den)
    return np.where(num < 0, -q, q)


def np_area_mean(image: np.ndarray, window: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Integer [C, H0, W0] -> int64 [C, H, W]: the exact area mean of `window` (y0, x0, hs, ws), rounded half away."""
    y0, x0, hs, ws = window
    wy, wx = area_weights(size[0], hs), area_weights(size[1], ws)
    part = image[:, y0:y0 + hs, x0:x0 + ws].astype(np.int64)
    return round_half_away(np.matmul(np.matmul(wy, part), wx.T), hs * ws)  # int64 sums: exact


def np_residual_pooled(cur: list[np.ndarray], ref: list[np.ndarray], field: np.ndarray | None, grid: int,
                       window: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """The reference of residual_pooled: the full-resolution residual, then its exact area mean -> int16 [C, H, W]."""
    return np_area_mean(np_residual(cur, ref, field, grid), window, size).astype(np.int16)


def np_pool_field(field: np.ndarray, height: int, width: int, grid: int, window: tuple[int, int, int, int],
                  size: tuple[int, int]) -> np.ndarray:
    """The reference of pool_field: the field spread to every pixel, area-averaged over each model cell's window
    part, vectors scaled by (W/ws, H/hs) -> float32 [2, H/g, W/g]."""
    y0, x0, hs, ws = window
    h, w = size
    per_pixel = np.repeat(np.repeat(field.astype(np.float64), grid, 1), grid, 2)[:, :height, :width]
    wy = area_weights(h, hs).reshape(h // grid, grid, hs).sum(1).astype(np.float64)
    wx = area_weights(w, ws).reshape(w // grid, grid, ws).sum(1).astype(np.float64)
    mean = np.matmul(np.matmul(wy, per_pixel[:, y0:y0 + hs, x0:x0 + ws]), wx.T) / (grid * hs * grid * ws)
    return (mean * np.array([w / ws, h / hs])[:, None, None]).astype(np.float32)
