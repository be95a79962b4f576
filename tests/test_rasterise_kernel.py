"""edgeml._C.rasterise_mvs (and its CUDA twin) against a straightforward numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from edgeml import _C


def rasterise_reference(rows: np.ndarray, height: int, width: int, grid: int) -> np.ndarray:
    """Paint every block per pixel, later rows on top, then sample each cell's top-left pixel."""
    full = np.zeros((2, height, width), np.float32)
    for w, h, sx, sy, dx, dy in rows.tolist():
        x0, y0 = dx - w // 2, dy - h // 2
        xs, xe = max(x0, 0), min(x0 + w, width)
        ys, ye = max(y0, 0), min(y0 + h, height)
        if xs < xe and ys < ye:
            full[0, ys:ye, xs:xe] = dx - sx
            full[1, ys:ye, xs:xe] = dy - sy
    return np.ascontiguousarray(full[:, ::grid, ::grid])


def random_rows(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Random blocks anywhere (edges, outside, overlapping), random and zero vectors."""
    w = rng.choice([4, 8, 16], n)
    h = rng.choice([4, 8, 16], n)
    dx = rng.integers(-8, width + 8, n)
    dy = rng.integers(-8, height + 8, n)
    v = rng.integers(-40, 41, (n, 2)) * rng.integers(0, 2, (n, 1))  # about half are zero vectors
    return np.stack([w, h, dx - v[:, 0], dy - v[:, 1], dx, dy], 1).astype(np.int32)


@pytest.mark.parametrize("grid", [1, 4, 8])
@pytest.mark.parametrize("size", [(64, 96), (37, 53), (16, 16)])
def test_rasterise_matches_numpy_reference(rng, grid, size):
    height, width = size
    rows = random_rows(rng, 60, height, width)
    got = _C.rasterise_mvs(rows, height, width, grid)
    assert got.shape == (2, -(-height // grid), -(-width // grid))
    np.testing.assert_array_equal(got, rasterise_reference(rows, height, width, grid))


def test_rasterise_tiles_a_macroblock_grid_exactly():
    height, width = 32, 48
    ys, xs = np.mgrid[8:height:16, 8:width:16]
    dx, dy = xs.ravel(), ys.ravel()
    rows = np.stack([np.full_like(dx, 16), np.full_like(dx, 16), dx - 3, dy + 2, dx, dy], 1).astype(np.int32)
    field = _C.rasterise_mvs(rows, height, width, 4)
    assert np.all(field[0] == 3) and np.all(field[1] == -2)


def test_rasterise_with_no_rows_is_zero():
    field = _C.rasterise_mvs(np.zeros((0, 6), np.int32), 20, 30, 4)
    assert field.shape == (2, 5, 8) and not field.any()


@pytest.mark.parametrize(
    ("rows", "match", "error"),
    [
        (np.zeros((3, 6), np.float32), "expected dtype int32", TypeError),
        (np.zeros((3, 5), np.int32), r"expected shape \(\*, 6\), got \(3, 5\)", ValueError),
        (np.zeros((12, 6), np.int32)[::2], "C-contiguous", ValueError),
        ([[1, 2, 3, 4, 5, 6]], "expected a numpy array", TypeError),
    ],
)
def test_rasterise_rejects_bad_arrays_with_clear_errors(rows, match, error):
    with pytest.raises(error, match=match):
        _C.rasterise_mvs(rows, 16, 16, 4)


def test_rasterise_rejects_bad_sizes():
    rows = np.zeros((1, 6), np.int32)
    with pytest.raises(ValueError, match="grid must be one of"):
        _C.rasterise_mvs(rows, 16, 16, 3)
    with pytest.raises(ValueError, match="height must be positive"):
        _C.rasterise_mvs(rows, 0, 16, 4)


@pytest.mark.cuda
@pytest.mark.parametrize("grid", [1, 4, 8])
def test_rasterise_cuda_twin_matches_cpu(rng, grid):
    rows = random_rows(rng, 200, 61, 83)
    np.testing.assert_array_equal(_C.rasterise_mvs_cuda(rows, 61, 83, grid), _C.rasterise_mvs(rows, 61, 83, grid))


def test_cuda_twin_without_device_raises_instead_of_crashing():
    if _C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present; covered by the parity test")
    with pytest.raises(RuntimeError, match="CUDA"):
        _C.rasterise_mvs_cuda(np.zeros((1, 6), np.int32), 16, 16, 4)
