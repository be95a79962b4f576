"""The motion-vector kernels (edgeml._C: rasterise, accumulate, residual, warp) and their CUDA twins against
straightforward numpy references: random fields and block layouts, blocks at frame edges, odd sizes, zero vectors,
vectors pointing outside the frame. CUDA tests run where a device exists (skipped with the reason elsewhere)."""

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


def test_cuda_twins_without_device_raise_instead_of_crashing():
    if _C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present; covered by the parity tests")
    field = np.zeros((2, 4, 4), np.float32)
    plane = [np.zeros((16, 16), np.uint8)]
    for call in (lambda: _C.rasterise_mvs_cuda(np.zeros((1, 6), np.int32), 16, 16, 4),
                 lambda: _C.accumulate_mvs_cuda(field, field, 16, 16, 4),
                 lambda: _C.residual_cuda(plane, plane, field, 4),
                 lambda: _C.warp_cuda(plane, field, 4),
                 lambda: _C.p_step_cuda(np.zeros((0, 6), np.int32), plane, plane, None, 4, False)):
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


# ------------------------------------------------------------------------------------------------- accumulate


def random_field(rng: np.random.Generator, height: int, width: int, grid: int, reach: int = 20) -> np.ndarray:
    """Whole-pixel vectors, about a third zero, many pointing outside the frame."""
    shape = (2, -(-height // grid), -(-width // grid))
    v = rng.integers(-reach, reach + 1, shape) * (rng.random(shape[1:]) > 0.33)
    return v.astype(np.float32)


def accumulate_reference(field, prev, height, width, grid):
    """Per cell: its vector plus the previous accumulated vector at the cell its source pixel falls in."""
    out = field.copy()
    if prev is None:
        return out
    for i in range(field.shape[1]):
        for j in range(field.shape[2]):
            vx, vy = field[0, i, j], field[1, i, j]
            sx = min(max(int(np.floor(j * grid - vx)), 0), width - 1)
            sy = min(max(int(np.floor(i * grid - vy)), 0), height - 1)
            out[0, i, j] += prev[0, sy // grid, sx // grid]
            out[1, i, j] += prev[1, sy // grid, sx // grid]
    return out


@pytest.mark.parametrize("grid", [1, 4, 8])
@pytest.mark.parametrize("size", [(48, 64), (37, 53), (9, 7)])
def test_accumulate_matches_numpy_reference(rng, simd, grid, size):
    h, w = size
    field, prev = random_field(rng, h, w, grid), random_field(rng, h, w, grid, reach=60)
    np.testing.assert_array_equal(_C.accumulate_mvs(field, prev, h, w, grid), accumulate_reference(field, prev, h, w,
                                                                                                    grid))
    np.testing.assert_array_equal(_C.accumulate_mvs(field, None, h, w, grid), field)


def test_accumulate_chains_per_pixel_back_to_the_iframe(rng):
    """grid 1: after T steps, following the accumulated vector from p lands where following the chain does."""
    h, w, steps = 23, 31, 5
    fields = [random_field(rng, h, w, 1, reach=4) for _ in range(steps)]
    acc = None
    for f in fields:
        acc = _C.accumulate_mvs(f, acc, h, w, 1)
    for y in range(h):
        for x in range(w):
            py, px, total = y, x, np.zeros(2)
            for f in reversed(fields):  # walk back frame by frame, clamping at the borders
                vx, vy = f[0, py, px], f[1, py, px]
                total += (vx, vy)
                px, py = min(max(int(px - vx), 0), w - 1), min(max(int(py - vy), 0), h - 1)
            np.testing.assert_array_equal(acc[:, y, x], total)


def test_accumulate_of_a_uniform_translation_adds_up():
    field = np.zeros((2, 8, 8), np.float32)
    field[0] = 2.0  # everything moved 2 px right per step
    acc = None
    for _ in range(3):
        acc = _C.accumulate_mvs(field, acc, 32, 32, 4)
    assert np.all(acc[0] == 6) and np.all(acc[1] == 0)


def test_accumulate_rejects_mismatched_fields():
    with pytest.raises(ValueError, match=r"prev: expected shape \(2, 4, 4\)"):
        _C.accumulate_mvs(np.zeros((2, 4, 4), np.float32), np.zeros((2, 4, 5), np.float32), 16, 16, 4)


# ------------------------------------------------------------------------------------------------- residual / warp


def yuv420(rng: np.random.Generator, h: int, w: int, pad: int = 0) -> list[np.ndarray]:
    """Y, U, V planes with odd-size rounding and (pad > 0) row padding like a decoder's line size."""
    planes = []
    for ph, pw in ((h, w), ((h + 1) // 2, (w + 1) // 2), ((h + 1) // 2, (w + 1) // 2)):
        buf = rng.integers(0, 256, (ph, pw + pad), dtype=np.uint8)
        planes.append(buf[:, :pw])
    return planes


def warp_reference(ref, field, grid):
    """Per pixel and plane: the reference sample at the clamped source pixel (chroma at half resolution)."""
    h, w = ref[0].shape
    out = np.zeros((len(ref), h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            sx, sy = x, y
            if field is not None:
                sx = min(max(int(np.floor(x - field[0, y // grid, x // grid])), 0), w - 1)
                sy = min(max(int(np.floor(y - field[1, y // grid, x // grid])), 0), h - 1)
            for c, p in enumerate(ref):
                ky, kx = int(p.shape[0] != h), int(p.shape[1] != w)
                out[c, y, x] = p[sy >> ky, sx >> kx]
    return out


def upsample(planes):
    h, w = planes[0].shape
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([p[ys >> int(p.shape[0] != h), xs >> int(p.shape[1] != w)] for p in planes]).astype(np.int16)


@pytest.mark.parametrize("grid", [1, 4, 8])
@pytest.mark.parametrize("size", [(32, 48), (21, 35)])
def test_residual_and_warp_match_numpy_reference_on_yuv420(rng, grid, size):
    h, w = size
    cur, ref = yuv420(rng, h, w, pad=5), yuv420(rng, h, w)
    field = random_field(rng, h, w, grid)
    warped = warp_reference(ref, field, grid)
    np.testing.assert_array_equal(_C.warp(ref, field, grid), warped)
    res = _C.residual(cur, ref, field, grid)
    assert res.dtype == np.int16 and res.shape == (3, h, w)
    np.testing.assert_array_equal(res, upsample(cur) - warped.astype(np.int16))
    np.testing.assert_array_equal(res + warped, upsample(cur))  # cur == residual + warp(ref), exactly


def test_residual_on_packed_rgb_views_and_zero_field(rng):
    cur, ref = (rng.integers(0, 256, (19, 26, 3), dtype=np.uint8) for _ in range(2))
    from edgeml.video.mv import packed_planes

    res = _C.residual(packed_planes(cur), packed_planes(ref), None, 4)
    np.testing.assert_array_equal(res, cur.transpose(2, 0, 1).astype(np.int16) - ref.transpose(2, 0, 1))
    np.testing.assert_array_equal(_C.residual(packed_planes(cur), packed_planes(ref),
                                              np.zeros((2, 5, 7), np.float32), 4), res)


def test_residual_rejects_bad_planes(rng):
    a = yuv420(rng, 16, 16)
    with pytest.raises(ValueError, match="same number of planes"):
        _C.residual(a, a[:2], None, 4)
    with pytest.raises(ValueError, match="neither 16 nor half"):
        _C.residual([a[0], np.zeros((5, 8), np.uint8)], [a[0], np.zeros((5, 8), np.uint8)], None, 4)
    with pytest.raises(TypeError, match="uint8"):
        _C.residual([a[0].astype(np.int16)], [a[0]], None, 4)


def test_numpy_baselines_equal_the_kernels(rng):
    """The numpy implementations the benchmark races against compute the same numbers."""
    from edgeml.video import mv

    h, w, g = 45, 61, 4
    rows = random_rows(rng, 80, h, w)
    np.testing.assert_array_equal(mv.np_rasterise(rows, h, w, g), _C.rasterise_mvs(rows, h, w, g))
    f, p = random_field(rng, h, w, g), random_field(rng, h, w, g)
    np.testing.assert_array_equal(mv.np_accumulate(f, p, h, w, g), _C.accumulate_mvs(f, p, h, w, g))
    cur, ref = yuv420(rng, h, w, pad=3), yuv420(rng, h, w)
    np.testing.assert_array_equal(mv.np_residual(cur, ref, f, g), _C.residual(cur, ref, f, g))


@pytest.mark.parametrize("accumulate", [False, True])
def test_p_step_equals_the_three_kernels_in_turn(rng, accumulate):
    h, w, g = 45, 61, 4
    rows = random_rows(rng, 80, h, w)
    prev = random_field(rng, h, w, g)
    cur, ref = yuv420(rng, h, w, pad=3), yuv420(rng, h, w)
    field = _C.rasterise_mvs(rows, h, w, g)
    if accumulate:
        field = _C.accumulate_mvs(field, prev, h, w, g)
    out = np.empty((3, h, w), np.int16)
    got_f, got_r = _C.p_step(rows, cur, ref, prev, g, accumulate, out)
    np.testing.assert_array_equal(got_f, field)
    np.testing.assert_array_equal(got_r, _C.residual(cur, ref, field, g))
    assert got_r is out or np.shares_memory(got_r, out)


@pytest.mark.cuda
@pytest.mark.parametrize("grid", [1, 4, 8])
def test_accumulate_residual_warp_cuda_twins_match_cpu(rng, grid):
    h, w = 61, 83
    field, prev = random_field(rng, h, w, grid), random_field(rng, h, w, grid, reach=60)
    np.testing.assert_array_equal(_C.accumulate_mvs_cuda(field, prev, h, w, grid),
                                  _C.accumulate_mvs(field, prev, h, w, grid))
    np.testing.assert_array_equal(_C.accumulate_mvs_cuda(field, None, h, w, grid), field)
    cur, ref = yuv420(rng, h, w, pad=7), yuv420(rng, h, w)
    np.testing.assert_array_equal(_C.residual_cuda(cur, ref, field, grid), _C.residual(cur, ref, field, grid))
    np.testing.assert_array_equal(_C.residual_cuda(cur, ref, None, grid), _C.residual(cur, ref, None, grid))
    np.testing.assert_array_equal(_C.warp_cuda(ref, field, grid), _C.warp(ref, field, grid))
    rows = random_rows(rng, 150, h, w)
    for a, b in zip(_C.p_step_cuda(rows, cur, ref, prev, grid, True), _C.p_step(rows, cur, ref, prev, grid, True),
                    strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------------- strided / fractional


def fractional_field(rng: np.random.Generator, height: int, width: int, grid: int, reach: int = 12) -> np.ndarray:
    """Vectors in quarter pixels of both signs, none whole: floor and truncation toward zero differ on every
    negative source offset (e.g. v = +1.25 reads x - 1.25, floor -> x - 2, truncation -> x - 1)."""
    shape = (2, -(-height // grid), -(-width // grid))
    whole = rng.integers(-reach, reach + 1, shape)
    frac = rng.choice([0.25, 0.5, 0.75], shape)
    return (whole + frac).astype(np.float32)


def strided(planes: list[np.ndarray], step: int) -> list[np.ndarray]:
    """The same samples as views with a column stride of `step` bytes (a packed-pixel layout)."""
    out = []
    for p in planes:
        buf = np.zeros((p.shape[0], p.shape[1] * step), np.uint8)
        buf[:, ::step] = p
        out.append(buf[:, ::step])
    return out


@pytest.mark.parametrize("grid", [1, 4, 8])
def test_residual_and_warp_on_packed_rgb_follow_a_nonzero_field(rng, grid):
    """Packed RGB channels (column stride 3) take the generic strided path; it must apply the field like the
    planar path does."""
    from edgeml.video.mv import packed_planes

    h, w = 29, 43
    cur, ref = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    field = random_field(rng, h, w, grid, reach=6)
    assert np.abs(field).max() > 0
    warped = warp_reference(packed_planes(ref), field, grid)
    assert not np.array_equal(warped, ref.transpose(2, 0, 1))  # the field really moves samples
    np.testing.assert_array_equal(_C.warp(packed_planes(ref), field, grid), warped)
    np.testing.assert_array_equal(_C.residual(packed_planes(cur), packed_planes(ref), field, grid),
                                  cur.transpose(2, 0, 1).astype(np.int16) - warped)


@pytest.mark.parametrize(("cur_step", "ref_step"), [(2, 2), (1, 3), (4, 1)])
def test_residual_on_strided_yuv420_matches_planar(rng, cur_step, ref_step):
    """Strided views of subsampled chroma (and mixed strided/planar pairs) give the planar numbers exactly."""
    h, w, grid = 37, 50, 4
    cur, ref = yuv420(rng, h, w), yuv420(rng, h, w)
    field = random_field(rng, h, w, grid, reach=9)
    want = upsample(cur) - warp_reference(ref, field, grid).astype(np.int16)
    np.testing.assert_array_equal(_C.residual(strided(cur, cur_step), strided(ref, ref_step), field, grid), want)
    np.testing.assert_array_equal(_C.warp(strided(ref, ref_step), field, grid), warp_reference(ref, field, grid))


@pytest.mark.parametrize("grid", [1, 4, 8])
def test_fractional_vectors_are_floored_in_residual_and_warp(rng, grid):
    h, w = 33, 47
    cur, ref = yuv420(rng, h, w, pad=3), yuv420(rng, h, w)
    field = fractional_field(rng, h, w, grid)
    warped = warp_reference(ref, field, grid)  # np.floor of x - v
    np.testing.assert_array_equal(_C.warp(ref, field, grid), warped)
    np.testing.assert_array_equal(_C.residual(cur, ref, field, grid), upsample(cur) - warped.astype(np.int16))
    rgb_cur, rgb_ref = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    from edgeml.video.mv import packed_planes

    np.testing.assert_array_equal(_C.warp(packed_planes(rgb_ref), field, grid),
                                  warp_reference(packed_planes(rgb_ref), field, grid))


def test_a_fractional_vector_reads_the_floored_source_pixel():
    """v = +0.5 at x reads x - 0.5 -> floor x - 1 (truncation toward zero would read x itself)."""
    ref = [np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)]
    field = np.full((2, 4, 4), 0.5, np.float32)
    got = _C.warp(ref, field, 4)[0]
    ys, xs = np.mgrid[0:16, 0:16]
    np.testing.assert_array_equal(got, ref[0][np.maximum(ys - 1, 0), np.maximum(xs - 1, 0)])
    field[:] = -0.5  # reads x + 0.5 -> floor x (the same pixel)
    np.testing.assert_array_equal(_C.warp(ref, field, 4)[0], ref[0])


@pytest.mark.parametrize("grid", [1, 4])
def test_accumulate_with_fractional_vectors_matches_numpy_reference(rng, simd, grid):
    h, w = 37, 53
    field, prev = fractional_field(rng, h, w, grid), fractional_field(rng, h, w, grid, reach=30)
    np.testing.assert_array_equal(_C.accumulate_mvs(field, prev, h, w, grid),
                                  accumulate_reference(field, prev, h, w, grid))


@pytest.mark.cuda
@pytest.mark.parametrize("grid", [1, 4])
def test_cuda_twins_match_cpu_on_strided_planes_and_fractional_vectors(rng, grid):
    from edgeml.video.mv import packed_planes

    h, w = 41, 58
    field, prev = fractional_field(rng, h, w, grid), fractional_field(rng, h, w, grid, reach=30)
    np.testing.assert_array_equal(_C.accumulate_mvs_cuda(field, prev, h, w, grid),
                                  _C.accumulate_mvs(field, prev, h, w, grid))
    cur, ref = yuv420(rng, h, w, pad=3), yuv420(rng, h, w)
    np.testing.assert_array_equal(_C.residual_cuda(cur, ref, field, grid), _C.residual(cur, ref, field, grid))
    rgb_cur, rgb_ref = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2))
    cur3, ref3 = packed_planes(rgb_cur), packed_planes(rgb_ref)
    np.testing.assert_array_equal(_C.residual_cuda(cur3, ref3, field, grid), _C.residual(cur3, ref3, field, grid))
    np.testing.assert_array_equal(_C.warp_cuda(ref3, field, grid), _C.warp(ref3, field, grid))
