"""Model-resolution extraction (issue 19): the fused residual kernel, the field pooling and `extract(size=...)` against
numpy references computed the long way — the full-resolution residual, then its exact area mean — on random planes,
fields and size ratios (integer and fractional, odd sizes, vectors pointing outside the frame), and on real footage.
CUDA twins run where a device exists (skipped with the reason elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeml import _C
from edgeml.errors import InputError, VideoError
from edgeml.video import mv

REAL = Path(__file__).parent / "data" / "megamind_xvid_packed.avi"


def yuv420(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    return [rng.integers(0, 256, (h, w), dtype=np.uint8)] + [
        rng.integers(0, 256, ((h + 1) // 2, (w + 1) // 2), dtype=np.uint8) for _ in range(2)]


def random_case(rng: np.random.Generator, fractional: bool = False) -> dict:
    """Native size, grid, window, output size and a field with vectors up to 40 px (many pointing outside)."""
    h0, w0 = (int(v) for v in rng.integers(9, 90, 2))
    grid = int(rng.choice([1, 2, 4, 8]))
    hs, ws = int(rng.integers(1, h0 + 1)), int(rng.integers(1, w0 + 1))
    window = (int(rng.integers(0, h0 - hs + 1)), int(rng.integers(0, w0 - ws + 1)), hs, ws)
    size = (int(rng.integers(1, hs + 1)), int(rng.integers(1, ws + 1)))
    field = rng.integers(-40, 41, (2, -(-h0 // grid), -(-w0 // grid))).astype(np.float32)
    field *= rng.random(field.shape[1:]) > 0.3
    if fractional:
        field += (rng.random(field.shape) - 0.5).astype(np.float32)
    return {"h0": h0, "w0": w0, "grid": grid, "window": window, "size": size, "field": field}


# (native, window, size): integer ratios, fractional ratios, odd sizes, a crop
FIXED = [((64, 96), (0, 0, 64, 96), (32, 48)), ((64, 96), (0, 0, 64, 96), (16, 16)),
         ((48, 80), (0, 0, 48, 80), (20, 36)), ((37, 53), (0, 0, 37, 53), (16, 24)),
         ((37, 53), (3, 9, 31, 40), (7, 13)), ((528, 720), (0, 96, 528, 528), (224, 224))]


@pytest.mark.parametrize(("native", "window", "size"), FIXED)
@pytest.mark.parametrize("grid", [1, 4, 8])
def test_fused_residual_equals_full_resolution_residual_then_area_mean(rng, simd, native, window, size, grid):
    h0, w0 = native
    cur, ref = yuv420(rng, h0, w0), yuv420(rng, h0, w0)
    field = rng.integers(-60, 61, (2, -(-h0 // grid), -(-w0 // grid))).astype(np.float32)
    got = _C.residual_pooled(cur, ref, field, grid, window, size)
    want = mv.np_residual_pooled(cur, ref, field, grid, window, size)
    assert got.dtype == np.int16 and got.shape == (3, *size)
    assert np.abs(got.astype(np.int32) - want).max() <= 1  # the contract: one least-significant bit
    np.testing.assert_array_equal(got, want)  # what the integer weights give: exact


@pytest.mark.parametrize("fractional", [False, True])
def test_fused_residual_on_random_windows_and_fractional_vectors(rng, simd, fractional):
    for _ in range(40):
        c = random_case(rng, fractional)
        cur, ref = yuv420(rng, c["h0"], c["w0"]), yuv420(rng, c["h0"], c["w0"])
        got = _C.residual_pooled(cur, ref, c["field"], c["grid"], c["window"], c["size"])
        want = mv.np_residual_pooled(cur, ref, c["field"], c["grid"], c["window"], c["size"])
        assert np.abs(got.astype(np.int32) - want).max() <= 1, c


@pytest.mark.parametrize(("native", "window", "size"), [
    ((528, 720), (0, 96, 528, 528), (64, 64)),  # the crop of the real clips at the shipped model's size
    ((61, 90), (4, 8, 53, 70), (13, 21)),  # 17 whole cells (8 + 8 + 1) and a 2-column tail, odd chroma rows
    ((37, 55), (0, 4, 37, 51), (9, 10)),  # up to the right edge of an odd-width 4:2:0 frame
    ((40, 44), (0, 0, 40, 44), (40, 4)),  # every row of full weight, 11 cells (8 + 3)
])
@pytest.mark.parametrize("reach", [3, 300])
def test_fused_residual_at_grid_4_with_vectors_past_the_padded_border(rng, simd, native, window, size, reach):
    """grid 4 on a cell-aligned window (the gathered row kernels over the padded reference): vectors up to `reach` px
    (300: far past the border, every kind of clamp; a third of the rows fractional) equal the reference."""
    h0, w0 = native
    cur, ref = yuv420(rng, h0, w0), yuv420(rng, h0, w0)
    field = rng.integers(-reach, reach + 1, (2, -(-h0 // 4), -(-w0 // 4))).astype(np.float32)
    field[:, ::3] += (rng.random(field[:, ::3].shape) - 0.5).astype(np.float32)
    got = _C.residual_pooled(cur, ref, field, 4, window, size)
    np.testing.assert_array_equal(got, mv.np_residual_pooled(cur, ref, field, 4, window, size))


def test_identity_window_is_the_plain_residual_bit_for_bit(rng):
    cur, ref = yuv420(rng, 37, 53), yuv420(rng, 37, 53)
    field = rng.integers(-20, 21, (2, 10, 14)).astype(np.float32)
    np.testing.assert_array_equal(_C.residual_pooled(cur, ref, field, 4, (0, 0, 37, 53), (37, 53)),
                                  _C.residual(cur, ref, field, 4))


def test_a_same_size_crop_picks_the_window_samples_exactly(rng):
    cur, ref = yuv420(rng, 40, 60), yuv420(rng, 40, 60)
    full = _C.residual(cur, ref, None, 4)
    np.testing.assert_array_equal(_C.residual_pooled(cur, ref, None, 4, (4, 10, 32, 40), (32, 40)),
                                  full[:, 4:36, 10:50])


@pytest.mark.parametrize(("native", "window", "size"), [f for f in FIXED if f[2][0] % 8 == 0 and f[2][1] % 8 == 0])
@pytest.mark.parametrize("grid", [4, 8])
def test_pooled_field_matches_reference_and_scales_vectors(rng, native, window, size, grid):
    h0, w0 = native
    field = rng.integers(-30, 31, (2, -(-h0 // grid), -(-w0 // grid))).astype(np.float32)
    got = _C.pool_field(field, h0, w0, grid, window, size)
    assert got.shape == (2, size[0] // grid, size[1] // grid)
    np.testing.assert_allclose(got, mv.np_pool_field(field, h0, w0, grid, window, size), rtol=1e-6, atol=1e-5)
    uniform = np.stack([np.full(field.shape[1:], 12.0), np.full(field.shape[1:], -6.0)]).astype(np.float32)
    moved = _C.pool_field(uniform, h0, w0, grid, window, size)
    np.testing.assert_allclose(moved[0], 12.0 * size[1] / window[3], rtol=1e-6)
    np.testing.assert_allclose(moved[1], -6.0 * size[0] / window[2], rtol=1e-6)


def test_identity_pooled_field_is_the_field(rng):
    field = (rng.random((2, 10, 14)) * 50 - 25).astype(np.float32)
    np.testing.assert_array_equal(_C.pool_field(field, 37, 53, 4, (0, 0, 37, 53), (37, 53)), field)


def side_data_bytes(rows: np.ndarray, source: np.ndarray) -> bytes:
    """int32 [N, 6] rows as libavcodec's AVMotionVector structs (40 bytes each)."""
    dtype = np.dtype({"names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x",
                                "motion_y", "motion_scale"],
                      "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
                      "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32], "itemsize": 40})
    a = np.zeros(len(rows), dtype)
    a["source"] = source
    for k, name in enumerate(("w", "h", "src_x", "src_y", "dst_x", "dst_y")):
        a[name] = rows[:, k]
    return a.tobytes()


@pytest.mark.parametrize("accumulate", [False, True])
def test_extract_step_equals_the_kernels_in_turn(rng, accumulate):
    from test_video_kernels import random_rows

    h0, w0, grid, window, size = 48, 80, 4, (0, 8, 48, 64), (24, 32)
    rows = random_rows(rng, 80, h0, w0)
    source = np.where(rng.random(80) < 0.2, 1, -1)  # rows from a later frame are not this chain's
    cur, ref = yuv420(rng, h0, w0), yuv420(rng, h0, w0)
    prev = rng.integers(-9, 10, (2, 12, 20)).astype(np.float32)
    field = _C.rasterise_mvs(np.ascontiguousarray(rows[source < 0]), h0, w0, grid)
    if accumulate:
        field = _C.accumulate_mvs(field, prev, h0, w0, grid)
    for mvs in (side_data_bytes(rows, source), np.ascontiguousarray(rows[source < 0])):
        res, pooled = np.empty((3, *size), np.int16), np.empty((2, 6, 8), np.float32)
        native = _C.extract_step(mvs, cur, ref, prev, grid, accumulate, window, size, res, pooled)
        np.testing.assert_array_equal(native, field)
        np.testing.assert_array_equal(pooled, _C.pool_field(field, h0, w0, grid, window, size))
        np.testing.assert_array_equal(res, _C.residual_pooled(cur, ref, field, grid, window, size))


# ------------------------------------------------------------------------------------------------- fused kernel paths


def test_fused_residual_folds_many_full_weight_rows_exactly(rng, simd):
    """More than 128 native rows per output row (the int16 row sums are folded into int32 before they could
    overflow), in tall and wide windows, with clamped vectors; 256 rows end on a fold (no full row after it)."""
    for native, window, size in (((600, 40), (0, 0, 600, 40), (2, 8)), ((301, 520), (1, 3, 300, 516), (1, 3)),
                                 ((260, 33), (0, 0, 260, 33), (1, 1)), ((256, 40), (0, 0, 256, 40), (1, 8))):
        cur, ref = yuv420(rng, *native), yuv420(rng, *native)
        extreme = [np.full(native, 255, np.uint8)] * 3, [np.zeros(native, np.uint8)] * 3  # the largest sums
        field = rng.integers(-80, 81, (2, -(-native[0] // 4), -(-native[1] // 4))).astype(np.float32)
        for a, b in ((cur, ref), extreme):
            np.testing.assert_array_equal(_C.residual_pooled(a, b, field, 4, window, size),
                                          mv.np_residual_pooled(a, b, field, 4, window, size))


def test_fused_residual_of_a_window_too_large_for_int32_sums_is_exact(rng):
    """255 * hs * ws >= 2^31 (a ~3000 x 3000 window): the 64-bit prefix sums and divisions, checked on one plane
    against the area mean of a whole-frame translation (the reference built without a per-pixel gather)."""
    h0, w0, size = 3000, 2900, (3, 5)
    cur, ref = rng.integers(0, 256, (h0, w0), dtype=np.uint8), rng.integers(0, 256, (h0, w0), dtype=np.uint8)
    for vx, vy in ((0, 0), (7, -5)):
        cells = (-(-h0 // 16), -(-w0 // 16))
        field = np.stack([np.full(cells, vx), np.full(cells, vy)])
        got = _C.residual_pooled([cur], [ref], field.astype(np.float32), 16, (0, 0, h0, w0), size)
        warped = ref[np.clip(np.arange(h0) - vy, 0, h0 - 1)][:, np.clip(np.arange(w0) - vx, 0, w0 - 1)]
        want = mv.np_area_mean((cur.astype(np.int16) - warped)[None], (0, 0, h0, w0), size)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["rgb", "strided", "yuv422", "mixed"])
def test_fused_residual_on_packed_strided_and_422_planes(rng, simd, layout):
    """Planes the fused kernel must widen first (packed RGB columns, strided views, 4:2:2 chroma, a strided current
    frame against a planar reference) give the reference numbers."""
    from test_video_kernels import strided

    h0, w0, window, size = 45, 70, (2, 4, 40, 62), (15, 31)
    if layout == "rgb":
        cur = mv.packed_planes(rng.integers(0, 256, (h0, w0, 3), dtype=np.uint8))
        ref = mv.packed_planes(rng.integers(0, 256, (h0, w0, 3), dtype=np.uint8))
    elif layout == "yuv422":
        cur, ref = ([rng.integers(0, 256, (h0, w), dtype=np.uint8) for w in (w0, 35, 35)] for _ in range(2))
    else:
        cur, ref = yuv420(rng, h0, w0), yuv420(rng, h0, w0)
        cur = strided(cur, 3)
        ref = ref if layout == "mixed" else strided(ref, 2)
    for grid in (1, 4, 8):
        field = rng.integers(-30, 31, (2, -(-h0 // grid), -(-w0 // grid))).astype(np.float32)
        np.testing.assert_array_equal(_C.residual_pooled(cur, ref, field, grid, window, size),
                                      mv.np_residual_pooled(cur, ref, field, grid, window, size))


# ------------------------------------------------------------------------------------------------- the stateful chain


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize(("native", "window", "size"), [((48, 80), (0, 8, 48, 64), (24, 32)),
                                                        ((37, 53), (0, 0, 37, 53), (37, 53)),
                                                        ((45, 70), (2, 4, 40, 62), (20, 28))])
def test_extractor_chain_equals_extract_step_in_turn(rng, simd, accumulate, native, window, size):
    """edgeml._C.Extractor (the reference kept in C++, copied once per I-frame) over two GOPs, with side data and
    row arrays, equals extract_step called frame by frame with the reference and previous field passed in."""
    from test_video_kernels import random_rows

    h0, w0 = native
    grid = 4
    identity = size == native
    cells = (-(-h0 // grid), -(-w0 // grid)) if identity else (size[0] // grid, size[1] // grid)
    chain = _C.Extractor(h0, w0, grid, accumulate, window, size)
    ref = prev = None
    for k in range(9):
        frame = yuv420(rng, h0, w0)
        if k % 4 == 0:  # an I-frame
            chain.reset(frame)
            ref, prev, last = frame, None, frame
            continue
        rows = random_rows(rng, 40, h0, w0)
        source = np.where(rng.random(40) < 0.2, 1, -1)
        mvs = side_data_bytes(rows, source) if k % 2 else np.ascontiguousarray(rows[source < 0])
        res, pooled = np.empty((3, *size), np.int16), np.empty((2, *cells), np.float32)
        want_res, want_mv = np.empty_like(res), np.empty_like(pooled)
        chain.step(mvs, frame, res, pooled)
        native_field = _C.extract_step(mvs, frame, ref if accumulate else last, prev, grid, accumulate, window, size,
                                       want_res, want_mv)
        np.testing.assert_array_equal(res, want_res)
        np.testing.assert_array_equal(pooled, want_mv)
        np.testing.assert_array_equal(chain.field, native_field)
        prev, last = (native_field if accumulate else None), frame


def test_extractor_checks_its_inputs(rng):
    chain = _C.Extractor(32, 48, 4, True, (0, 0, 32, 48), (16, 24))
    frame = yuv420(rng, 32, 48)
    res, pooled = np.empty((3, 16, 24), np.int16), np.empty((2, 4, 6), np.float32)
    with pytest.raises(ValueError, match="before reset"):
        chain.step(None, frame, res, pooled)
    with pytest.raises(ValueError, match="3 planes of a 32x48 frame"):
        chain.reset(yuv420(rng, 32, 40))
    chain.reset(frame)
    with pytest.raises(ValueError, match="residual_out"):
        chain.step(None, frame, np.empty((3, 16, 20), np.int16), pooled)
    with pytest.raises(ValueError, match="must divide"):
        _C.Extractor(32, 48, 4, True, (0, 0, 32, 48), (18, 24))
    chain.step(None, frame, res, pooled)  # no vectors: the residual against the I-frame itself
    np.testing.assert_array_equal(res, _C.residual_pooled(frame, frame, None, 4, (0, 0, 32, 48), (16, 24)))


def test_kernels_reject_bad_windows_and_sizes(rng):
    cur = yuv420(rng, 32, 48)
    with pytest.raises(ValueError, match="not inside"):
        _C.residual_pooled(cur, cur, None, 4, (0, 8, 32, 48), (16, 16))
    with pytest.raises(ValueError, match="never upsampled"):
        _C.residual_pooled(cur, cur, None, 4, (0, 0, 32, 48), (40, 48))
    field = np.zeros((2, 8, 12), np.float32)
    with pytest.raises(ValueError, match="must divide"):
        _C.pool_field(field, 32, 48, 4, (0, 0, 32, 48), (18, 24))
    with pytest.raises(ValueError, match="whole number of AVMotionVector"):
        _C.extract_step(b"x" * 41, cur, cur, None, 4, True, (0, 0, 32, 48), (16, 24),
                        np.empty((3, 16, 24), np.int16), np.empty((2, 4, 6), np.float32))


@pytest.mark.cuda
@pytest.mark.parametrize("fractional", [False, True])
def test_cuda_twins_of_the_model_size_kernels_match_cpu(rng, fractional):
    for _ in range(20):
        c = random_case(rng, fractional)
        cur, ref = yuv420(rng, c["h0"], c["w0"]), yuv420(rng, c["h0"], c["w0"])
        args = (cur, ref, c["field"], c["grid"], c["window"], c["size"])
        np.testing.assert_array_equal(_C.residual_pooled_cuda(*args), _C.residual_pooled(*args))
        g = c["grid"]
        size = (c["size"][0] - c["size"][0] % g, c["size"][1] - c["size"][1] % g)
        if min(size) > 0:
            fargs = (c["field"], c["h0"], c["w0"], g, c["window"], size)
            np.testing.assert_array_equal(_C.pool_field_cuda(*fargs), _C.pool_field(*fargs))


def test_model_size_cuda_twins_without_device_raise_instead_of_crashing():
    if _C.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present; covered by the parity test")
    plane, field = [np.zeros((16, 16), np.uint8)], np.zeros((2, 4, 4), np.float32)
    for call in (lambda: _C.residual_pooled_cuda(plane, plane, field, 4, (0, 0, 16, 16), (8, 8)),
                 lambda: _C.pool_field_cuda(field, 16, 16, 4, (0, 0, 16, 16), (8, 8)),
                 lambda: _C.extract_step_cuda(None, plane, plane, None, 4, True, (0, 0, 16, 16), (8, 8),
                                              np.empty((1, 8, 8), np.int16), np.empty((2, 2, 2), np.float32))):
        with pytest.raises(RuntimeError, match="CUDA"):
            call()


# ------------------------------------------------------------------------------------------------- resize policy


@pytest.mark.parametrize(("native", "size", "policy", "window"), [
    ((528, 720), (224, 224), "crop", (0, 96, 528, 528)),
    ((528, 720), (64, 64), "stretch", (0, 0, 528, 720)),
    ((720, 528), (112, 112), "crop", (96, 0, 528, 528)),
    ((480, 640), (96, 128), "crop", (0, 0, 480, 640)),  # same aspect: the whole frame
    ((37, 53), (16, 16), "crop", (0, 8, 36, 36)),  # odd sides: even window, even offsets
    ((64, 64), None, "crop", (0, 0, 64, 64)),
])
def test_resize_plan_windows(native, size, policy, window):
    from edgeml.video.clips import resize_plan

    plan = resize_plan(native, size, policy)
    assert plan.window == window and plan.size == (size or native)
    assert plan.identity == (size is None)
    assert plan.meta()["policy"] == policy and plan.meta()["window"] == list(window)


def test_resize_plan_refuses_to_upsample_and_unknown_policies():
    from edgeml.video.clips import check_model_size, resize_plan

    with pytest.raises(VideoError, match="larger than the video"):
        resize_plan((96, 128), (112, 112), "crop")
    with pytest.raises(VideoError, match="larger than the video"):
        resize_plan((96, 128), (64, 160), "stretch")
    with pytest.raises(InputError, match="unknown resize policy"):
        resize_plan((96, 128), (64, 64), "squash")
    with pytest.raises(InputError, match="multiple of the grid"):
        check_model_size((66, 64), 4)


# ------------------------------------------------------------------------------------------------- real footage


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    from edgeml.video.codec import prepare

    return prepare(REAL, tmp_path_factory.mktemp("canon") / "real.avi", codec="mpeg4", size=(96, 128), gop=12)


@pytest.mark.parametrize("accumulate", [False, True])
def test_extract_at_the_videos_own_size_is_the_full_resolution_output(canonical, accumulate):
    from edgeml.video.clips import extract

    full, meta_full = extract(canonical, accumulate=accumulate)
    same, meta = extract(canonical, size=(96, 128), accumulate=accumulate)
    for k in full:
        assert full[k].dtype == same[k].dtype
        np.testing.assert_array_equal(full[k], same[k])
    assert meta["resize"]["identity"] and meta_full["resize"]["window"] == [0, 0, 96, 128]


@pytest.mark.parametrize(("size", "policy"), [((48, 64), "stretch"), ((32, 32), "crop"), ((24, 40), "stretch")])
def test_extract_at_model_size_equals_the_full_resolution_output_area_averaged(canonical, size, policy):
    """Every tensor at model size == the full-resolution extraction reduced the long way (numpy, libswscale)."""
    import av

    from edgeml.video.clips import extract, resize_plan

    full, _ = extract(canonical, accumulate=True)
    got, meta = extract(canonical, size=size, resize=policy, accumulate=True)
    plan = resize_plan((96, 128), size, policy)
    assert meta["resize"] == plan.meta() and (meta["height"], meta["width"]) == size
    assert (meta["native_height"], meta["native_width"]) == (96, 128)
    np.testing.assert_array_equal(got["frame_index"], full["frame_index"])
    for k in range(len(full["mv"])):
        want = mv.np_area_mean(full["residual"][k], plan.window, size)
        np.testing.assert_array_equal(got["residual"][k], want)
        np.testing.assert_allclose(got["mv"][k], mv.np_pool_field(full["mv"][k], 96, 128, 4, plan.window, size),
                                   rtol=1e-6, atol=1e-5)
    y0, x0, hs, ws = plan.window
    with av.open(str(canonical)) as c:
        first = next(iter(c.decode(video=0)))
        rgb = first.to_ndarray(format="rgb24")
    window = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[y0:y0 + hs, x0:x0 + ws]), format="rgb24")
    want_i = window.reformat(width=size[1], height=size[0], format="rgb24", interpolation="AREA").to_ndarray()
    # libswscale from YUV (ours) vs from RGB (this reference): the same picture up to colour rounding
    assert np.abs(got["iframe"][0].transpose(1, 2, 0).astype(int) - want_i).mean() < 3


def test_extract_on_the_real_xvid_clip_at_224_keeps_every_p_frame():
    from edgeml.video.clips import extract

    full, _ = extract(REAL, grid=8, accumulate=False)
    got, meta = extract(REAL, size=(224, 224), grid=8, accumulate=False, timings=(t := {}))
    assert got["residual"].shape[1:] == (3, 224, 224) and got["mv"].shape[1:] == (2, 28, 28)
    np.testing.assert_array_equal(got["frame_index"], full["frame_index"])
    assert meta["resize"]["window"] == [0, 96, 528, 528] and meta["b_frames"] == "skipped"
    assert all(t[k] > 0 for k in ("decode", "kernels", "decode_cpu", "kernels_cpu"))


def test_clips_at_model_size_are_float_fields_and_rgb_frames_only_when_asked(canonical):
    from edgeml.video.clips import video_clips

    clips = video_clips(canonical, clip_len=4, grid=4, size=(48, 64), resize="stretch", frames=False)
    assert clips and "frames" not in clips[0] and clips[0]["mv"].dtype == np.float32
    assert clips[0]["residual"].shape == (4, 3, 48, 64) and clips[0]["iframe"].shape == (3, 48, 64)
    with_frames = video_clips(canonical, clip_len=4, grid=4, size=(48, 64), resize="stretch")
    assert with_frames[0]["frames"].shape == (5, 3, 48, 64)
    np.testing.assert_array_equal(with_frames[0]["frames"][0], with_frames[0]["iframe"])
    native = video_clips(canonical, clip_len=4, grid=4, frames=False)
    assert native[0]["mv"].dtype == np.int16


@pytest.mark.parametrize(("args", "text"), [(["--size", "128x128"], "larger than the video"),
                                            (["--size", "66x64"], "multiple of the grid"),
                                            (["--size", "64x64", "--grid", "16", "--resize", "bogus"], "invalid")])
def test_extract_cli_refuses_a_size_it_cannot_make(canonical, tmp_path, args, text):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edgeml", "data", "extract", str(canonical), "--out",
                        str(tmp_path / "o.safetensors"), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 or text == "invalid"
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------- MV-only decoding


@pytest.mark.parametrize("codec_name", ["xvid", "mpeg4", "h264"])
@pytest.mark.parametrize("threads", [1, 2])
def test_mv_only_decoding_gives_identical_rows(tmp_path, codec_name, threads):
    from edgeml.video.codec import decode, prepare

    path = REAL if codec_name == "xvid" else prepare(REAL, tmp_path / f"v.{'avi' if codec_name == 'mpeg4' else 'mp4'}",
                                                     codec=codec_name, size=(96, 128))
    full = [(f.pict_type, f.mvs) for f in decode(path)]
    fast = [(f.pict_type, f.mvs) for f in decode(path, mv_only=True, threads=threads)]
    assert len(full) == len(fast) and sum(m is not None for _, m in full) > 10
    for (ka, a), (kb, b) in zip(full, fast, strict=True):
        assert ka == kb and (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_mv_only_refuses_frames():
    from edgeml.video.codec import decode

    with pytest.raises(ValueError, match="mv_only"):
        next(decode(REAL, frames=True, mv_only=True))


@pytest.mark.parametrize("size", [(64, 64), None])
def test_extract_is_the_same_pipelined_and_with_decoder_threads(size):
    """The kernels in a worker thread beside the decoder (extract's default on two or more cores) and libavcodec's
    own frame threads change no number: the same tensors as the inline, single-threaded extraction."""
    from edgeml.video import extract

    want, meta = extract(REAL, size=size, pipeline=False, threads=1)
    for kwargs in ({"pipeline": True}, {"pipeline": True, "threads": 2}, {}):
        got, got_meta = extract(REAL, size=size, **kwargs)
        assert got_meta == meta
        for k, v in want.items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{k} {kwargs}")
