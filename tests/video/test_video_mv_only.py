"""MV-only decoding (issue 19, `edgeml data mvs`): what libavcodec is told to skip (MV_ONLY_OPTIONS, and MPEG-4's
reduced-resolution reconstruction) never changes a row, at the real clip's size and at sizes that are not multiples
of the macroblock or of the 1/8 scale; and reading the vectors does not keep decoded frames alive."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).parent / "data" / "megamind_xvid_packed.avi"


def rows(path: Path, **kw) -> list[tuple[str, int | None, np.ndarray | None]]:
    from edgeml.video.codec import decode

    return [(f.pict_type, f.pts, f.mvs) for f in decode(path, **kw)]


@pytest.mark.parametrize(("source", "size"),
                         [("xvid", None), ("mpeg4", None), ("mpeg4", (66, 94)), ("mpeg4", (18, 30))],
                         ids=["xvid-packed-B-528x720", "mpeg4-528x720", "mpeg4-66x94", "mpeg4-18x30"])
def test_mv_only_rows_equal_the_full_decode(tmp_path, source, size):
    from edgeml.video.codec import MV_ONLY_CODEC_OPTIONS, prepare, probe

    path = REAL if source == "xvid" else prepare(REAL, tmp_path / "v.avi", codec="mpeg4", size=size)
    assert probe(path).codec in MV_ONLY_CODEC_OPTIONS  # the reduced reconstruction is what this test covers
    full, fast = rows(path), rows(path, mv_only=True)
    assert len(full) == len(fast) == 40 and sum(m is not None for *_, m in full) > 30
    for (ka, pa, a), (kb, pb, b) in zip(full, fast, strict=True):
        assert (ka, pa) == (kb, pb) and (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and len(a) > 0
            np.testing.assert_array_equal(a, b)


def test_rows_are_pyavs_motion_vectors():
    """The structured rows (MV_DTYPE over the side data, no per-frame dtype) equal PyAV's own to_ndarray()."""
    import av

    from edgeml.video.codec import MV_DTYPE, side_mvs

    with av.open(str(REAL)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        n = 0
        for frame in container.decode(stream):
            sd = side_mvs(frame)
            if sd is not None:
                want = frame.side_data.get("MOTION_VECTORS").to_ndarray()
                got = np.frombuffer(sd, MV_DTYPE)
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)
                n += 1
    assert n > 30


@pytest.mark.parametrize("kw", [{"mv_only": True}, {"frames": True}, {"frames": True, "defer_mvs": True}],
                         ids=["mv-only", "frames", "deferred"])
def test_decoded_frames_are_freed_without_the_cyclic_gc(kw):
    """Reading a frame's vectors must not tie it into a reference cycle (PyAV's cached frame.side_data points back
    at the frame): with the cyclic GC off, no decoded frame outlives its iteration."""
    import av

    from edgeml.video.codec import decode, side_mvs

    def live_frames() -> int:
        return sum(type(o) is av.VideoFrame for o in gc.get_objects())

    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before, seen = live_frames(), 0
        for fr in decode(REAL, **kw):
            mvs = side_mvs(fr.frame) if kw.get("defer_mvs") else fr.mvs
            seen += mvs is not None
            del fr, mvs
        assert seen > 30
        assert live_frames() == before
    finally:
        if was:
            gc.enable()


def printf_rows(framenum: int, mvs: np.ndarray) -> str:
    """extract_mvs.c's printf, one row at a time (the reference for format_mv_rows)."""
    return "".join(f"{framenum},{int(m['source']):2d},{int(m['w']):2d},{int(m['h']):2d},{int(m['src_x']):4d},"
                   f"{int(m['src_y']):4d},{int(m['dst_x']):4d},{int(m['dst_y']):4d},0x{int(m['flags']):x}\n"
                   for m in mvs)


def test_csv_rows_are_extract_mvs_printf():
    """format_mv_rows (one %-format per frame) == the per-row printf, on the real clip and on rows at the limits of
    every field (negative positions, 255-wide blocks, flags beyond 2^63), and an empty frame."""
    from edgeml.video.codec import MV_DTYPE, decode, format_mv_rows

    real = [(f.index + 1, f.mvs) for f in decode(REAL, mv_only=True) if f.mvs is not None]
    assert sum(len(m) for _, m in real) > 50_000
    for n, m in real:
        assert format_mv_rows(n, m) == printf_rows(n, m)
    rng = np.random.default_rng(0)
    edge = np.zeros(64, MV_DTYPE)
    for k in ("source", "w", "h", "src_x", "src_y", "dst_x", "dst_y"):
        info = np.iinfo(MV_DTYPE[k])
        edge[k] = rng.integers(info.min, info.max, 64, endpoint=True, dtype=MV_DTYPE[k])
    edge["src_x"][:2], edge["dst_y"][:2] = (-32768, 32767), (-1, 9999)
    for flags in (rng.integers(0, 16, 64, dtype=np.uint64), np.full(64, 2**64 - 1, np.uint64)):
        edge["flags"] = flags
        assert format_mv_rows(2**31 - 1, edge) == printf_rows(2**31 - 1, edge)
    assert format_mv_rows(7, edge[:0]) == ""
