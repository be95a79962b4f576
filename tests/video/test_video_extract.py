"""`edgeml data extract` / edgeml.video.clips.extract on real footage, re-encoded canonically (P-only GOPs).

Exactness: for every P-frame, decoded frame == residual + warp(reference, field) in integer arithmetic, where the
reference is the previous decoded frame ("previous" mode) or the GOP's I-frame with the accumulated field ("iframe"
mode). The decoded frames and the warp here are computed independently of the extraction code (numpy, per plane).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).parent / "data" / "megamind_xvid_packed.avi"


@pytest.fixture(scope="module", params=["mpeg4", "h264"])
def canonical(request, tmp_path_factory) -> Path:
    from edgeml.video.codec import prepare

    suffix = ".avi" if request.param == "mpeg4" else ".mp4"
    return prepare(REAL, tmp_path_factory.mktemp("canon") / f"real{suffix}", codec=request.param, size=(96, 128),
                   gop=12)


def decoded_yuv(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Every decoded frame as full-size [3, H, W] YUV (chroma repeated), and the picture types."""
    import av

    frames, types = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width] for p in f.planes]
            h, w = planes[0].shape
            up = [np.repeat(np.repeat(p, 2, 0), 2, 1)[:h, :w] if p.shape != (h, w) else p for p in planes]
            frames.append(np.stack(up).astype(np.int16))
            types.append(av.video.frame.PictureType(f.pict_type).name)
    return frames, types


def warp(image: np.ndarray, field: np.ndarray, grid: int) -> np.ndarray:
    """[C, H, W] sampled at p - field(cell of p), nearest, clamped."""
    _, h, w = image.shape
    ys, xs = np.mgrid[0:h, 0:w]
    fx, fy = field[0][ys // grid, xs // grid], field[1][ys // grid, xs // grid]
    sx = np.clip(xs - fx.astype(np.int64), 0, w - 1)
    sy = np.clip(ys - fy.astype(np.int64), 0, h - 1)
    return image[:, sy, sx]


@pytest.mark.parametrize("accumulate", [False, True])
def test_decoded_frame_equals_residual_plus_warped_reference(canonical, accumulate):
    from edgeml.video.clips import extract

    frames, types = decoded_yuv(canonical)
    assert set(types) == {"I", "P"} and types[0] == "I"
    t, meta = extract(canonical, grid=4, accumulate=accumulate)
    assert meta["accumulate"] == ("iframe" if accumulate else "previous") and meta["warp"] == "nearest"
    assert len(t["mv"]) == types.count("P") > 20
    assert np.abs(t["mv"]).max() > 0
    iframe_of = {}
    last_i = 0
    for i, kind in enumerate(types):
        last_i = i if kind == "I" else last_i
        iframe_of[i] = last_i
    for k, idx in enumerate(t["frame_index"].tolist()):
        ref = frames[iframe_of[idx]] if accumulate else frames[idx - 1]
        np.testing.assert_array_equal(frames[idx], t["residual"][k].astype(np.int16) + warp(ref, t["mv"][k], 4))


def test_accumulated_fields_follow_the_per_step_chain(canonical):
    from edgeml import _C
    from edgeml.video.clips import extract

    step, _ = extract(canonical, grid=4, accumulate=False)
    acc, _ = extract(canonical, grid=4, accumulate=True)
    h, w = step["residual"].shape[2:]
    chain = None
    for k in range(len(step["mv"])):
        first = k == 0 or step["gop_index"][k] != step["gop_index"][k - 1]
        chain = _C.accumulate_mvs(step["mv"][k], None if first else chain, h, w, 4)
        np.testing.assert_array_equal(acc["mv"][k], chain)


def test_extract_cli_writes_tensors_and_metadata(canonical, tmp_path):
    from safetensors import safe_open

    from edgeml.cli import main

    out = tmp_path / "x.safetensors"
    assert main(["data", "extract", str(canonical), "--out", str(out), "--grid", "8", "--accumulate"]) == 0
    with safe_open(str(out), "np") as f:
        meta = json.loads(f.metadata()["edgeml"])
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    n = len(t["frame_index"])
    assert t["iframe"].dtype == np.uint8 and t["iframe"].shape == (meta["gops"], 3, 96, 128)
    assert t["mv"].dtype == np.float32 and t["mv"].shape == (n, 2, 12, 16)
    assert t["residual"].dtype == np.int16 and t["residual"].shape == (n, 3, 96, 128)
    assert t["gop_index"].shape == (n,) and t["gop_index"].max() == meta["gops"] - 1
    assert meta["codec"] in ("mpeg4", "h264") and meta["gop_size"] == 12 and meta["grid"] == 8
    assert meta["accumulate"] == "iframe" and meta["warp"] == "nearest"


def test_b_frames_are_skipped_and_never_used_as_reference(tmp_path):
    """Non-canonical input (XviD with packed B-frames): B-frames are left out, P-steps stay exact."""
    from edgeml.video.clips import extract

    frames, types = decoded_yuv(REAL)
    t, meta = extract(REAL, grid=8, accumulate=False)
    assert meta["b_frames"] == "skipped"
    kept = t["frame_index"].tolist()
    assert kept == [i for i, k in enumerate(types) if k == "P" and "I" in types[:i]]
    prev_anchor = {i: max(j for j in range(i) if types[j] in "IP") for i in kept}
    for k, idx in enumerate(kept):
        ref = frames[prev_anchor[idx]]
        np.testing.assert_array_equal(frames[idx], t["residual"][k].astype(np.int16) + warp(ref, t["mv"][k], 8))


def test_extract_with_size_reads_the_native_stream_without_reencoding():
    """--size no longer re-encodes: the GOPs and frame indices are the original XviD ones (not a canonical GOP 12)."""
    from edgeml.video.clips import extract

    native, _ = extract(REAL, grid=4)
    t, meta = extract(REAL, grid=4, size=(64, 80), resize="stretch")
    assert t["residual"].shape[2:] == (64, 80) and meta["codec"] == "mpeg4"
    assert meta["profile"] == "Advanced Simple Profile" and meta["resize"]["policy"] == "stretch"
    np.testing.assert_array_equal(t["frame_index"], native["frame_index"])
    np.testing.assert_array_equal(t["gop_index"], native["gop_index"])
