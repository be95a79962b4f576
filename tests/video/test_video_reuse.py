"""State the front end keeps between frames and videos for speed — each thread's libswscale context, residual blocks
handed out as views — changes no number: outputs equal the ones computed with fresh state, in any video order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REAL = Path(__file__).parent / "data" / "megamind_xvid_packed.avi"


def _synth_video(synth_dir: Path) -> Path:
    return sorted((synth_dir / "train" / "left").glob("*.avi"))[0]


def _rgb_fresh_and_shared(path: Path, size: tuple[int, int] | None, policy: str) -> tuple[list, list]:
    """Every frame's model_rgb with a fresh reformatter per frame, and with the thread's shared one."""
    from av.video.reformatter import VideoReformatter

    from edgeml.video import codec
    from edgeml.video.clips import model_rgb, resize_plan

    fresh, shared = [], []
    for fr in codec.decode(path, mvs=False, frames=True):
        plan = resize_plan((fr.frame.height, fr.frame.width), size, policy)
        fresh.append(model_rgb(fr.frame, plan, VideoReformatter()))
        shared.append(model_rgb(fr.frame, plan))
    return fresh, shared


def test_the_threads_reformatter_gives_what_a_fresh_one_gives_whatever_came_before(synth_dir):
    """One libswscale context per thread, reused across frames, sizes, windows and videos: the same pixels as a new
    context per frame, and the same clips in either order of videos."""
    from edgeml.video.clips import extract_clips

    synth = _synth_video(synth_dir)
    cases = [(synth, None, "crop"), (REAL, (64, 64), "crop"), (synth, (32, 48), "stretch"), (REAL, (48, 64), "stretch"),
             (synth, (64, 64), "crop")]
    for path, size, policy in cases:
        fresh, shared = _rgb_fresh_and_shared(path, size, policy)
        for a, b in zip(fresh, shared, strict=True):
            np.testing.assert_array_equal(a, b)

    def clips(path: Path, size: tuple[int, int]) -> list[dict]:
        return extract_clips(path, clip_len=4, grid=4, size=size, frames=True)

    first = clips(synth, (64, 64))
    clips(REAL, (224, 224))  # another size and window in between
    again = clips(synth, (64, 64))
    assert len(first) == len(again) > 0
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize(("size", "frames"), [(None, True), ((32, 48), True), ((64, 64), False)])
def test_extract_clips_are_video_clips_in_float32(synth_dir, size, frames):
    """extract_clips builds float32 straight from the kernels' outputs: the same values as converting video_clips'
    compact arrays, C-contiguous."""
    from edgeml.video.clips import extract_clips, to_float, video_clips

    path = _synth_video(synth_dir)
    kwargs = {"clip_len": 4, "grid": 4, "size": size, "resize": "stretch", "frames": frames}
    compact, direct = video_clips(path, **kwargs), extract_clips(path, **kwargs)
    assert len(compact) == len(direct) > 0
    for c, d in zip(compact, direct, strict=True):
        want = to_float(c)
        assert want.keys() == d.keys() and ("frames" in d) == frames
        for k in want:
            assert d[k].dtype == np.float32 and d[k].flags.c_contiguous, k
            np.testing.assert_array_equal(d[k], want[k], err_msg=k)


def test_steps_block_is_a_view_only_of_consecutive_rows():
    """Per-step residuals from one block come back as that block's slice (no copy); anything else is stacked."""
    from edgeml.video.clips import _BlockAllocator, _steps_block

    alloc = _BlockAllocator(3)
    rows = [alloc(k, 3, 4, 5) for k in range(5)]  # two blocks: rows 0-2, then 3-4
    for k, r in enumerate(rows):
        r[...] = k
    inside = _steps_block(rows[:3])
    assert np.shares_memory(inside, rows[0]) and inside.shape == (3, 3, 4, 5)
    tail = _steps_block(rows[1:3])
    assert np.shares_memory(tail, rows[1]) and [int(t[0, 0, 0]) for t in tail] == [1, 2]
    for picked in (rows[2:5], rows[2::-1], [rows[0], rows[2]], [rows[0][:, :2]]):  # across blocks, out of order, gaps
        got = _steps_block(picked)
        assert not any(np.shares_memory(got, r) for r in rows)
        np.testing.assert_array_equal(got, np.stack(picked))


def test_extract_opens_the_video_once_and_reports_what_probe_reports(synth_dir, monkeypatch):
    """The stream facts in extract's metadata come from the container it decodes, not from a second open."""
    from edgeml.video import codec
    from edgeml.video.clips import extract

    path = _synth_video(synth_dir)
    info = codec.probe(path)
    opened = []
    real_open = codec.open_video
    monkeypatch.setattr(codec, "open_video", lambda p: opened.append(p) or real_open(p))
    _, meta = extract(path, size=(32, 32))
    assert len(opened) == 1
    assert (meta["codec"], meta["profile"], meta["fps"]) == (info.codec, info.profile, info.fps)
    assert (meta["native_height"], meta["native_width"]) == (info.height, info.width)


def test_an_extractor_reused_from_video_to_video_gives_a_fresh_ones_numbers(tmp_path):
    from edgeml.video import clips, extract
    from edgeml.video.codec import prepare

    other = prepare(REAL, tmp_path / "same_size.avi", codec="mpeg4", gop=5)  # same 720x528, other GOPs and pixels

    def run(path: Path, fresh: bool) -> dict:
        if fresh:
            clips._IDLE_EXTRACTORS.clear()
        tensors, _ = extract(path, size=(64, 96), accumulate=True)
        return tensors

    want = {p: run(p, fresh=True) for p in (REAL, other)}
    clips._IDLE_EXTRACTORS.clear()
    first = None
    for p in (REAL, other, REAL, other):
        got = run(p, fresh=False)
        idle = [native for _, native in clips._IDLE_EXTRACTORS]
        first = first or idle[0]
        assert idle == [first]  # the one Extractor, taken and given back video after video
        for k, v in want[p].items():
            np.testing.assert_array_equal(got[k], v, err_msg=f"{p.name} {k}")
