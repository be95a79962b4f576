"""The data verbs (`edgeml data synth/prepare/mvs/extract/build`) against a generated corpus of bad inputs: each case
exits 2 with one stderr line, no traceback or signal, leaves every input byte-identical and writes nothing.

Videos are made here with PyAV (nothing committed, nothing downloaded); sentinels live outside the working folder.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from tests.video.encode import encode_frames

from .harness import Guard, assert_clean_error, run_cli

FRAMES = 26


def good_video(path: Path, label: str = "left", seed: int = 0, frames: int = FRAMES) -> Path:
    """A canonical synth-style video (mpeg4 in AVI, GOP 12, no B-frames) with real motion."""
    from edgeml.video.synth import encode_video, render_video

    encode_video(path, render_video(label, np.random.default_rng(seed), (64, 64), frames))
    return path


def declare_frames(avi: bytes, count: int) -> bytes:
    """The same AVI with its headers (avih, strh, dmlh) declaring `count` frames."""
    data = bytearray(avi)
    for tag, offset in ((b"avih", 16), (b"strh", 32), (b"dmlh", 0)):
        at = data.find(tag)
        if at >= 0:
            struct.pack_into("<I", data, at + 8 + offset, count)
    return bytes(data)


def audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as out:
        st = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pkt in [*st.encode(frame), *st.encode(None)]:
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One folder of inputs, good and bad, shared by the cases (each case proves it unchanged)."""
    d = tmp_path_factory.mktemp("corpus")
    good = good_video(d / "good.avi").read_bytes()
    (d / "truncated.avi").write_bytes(good[: len(good) // 2])
    (d / "not_a_video.avi").write_text("this is a text file, not a video\n" * 50)
    (d / "empty.avi").write_bytes(b"")
    audio_only(d / "audio_only.wav")
    encode_frames(d / "zero_frames.avi", "mpeg4", 0)
    encode_frames(d / "intra_only.avi", "mjpeg", 8, pix_fmt="yuvj420p")
    (d / "declares_2e31_frames.avi").write_bytes(declare_frames(good, 2**31))
    (d / "declares_one_more.avi").write_bytes(declare_frames(good, FRAMES + 1))
    (d / "a_folder.avi").mkdir()
    return d


# (input file, text the one error line must contain); the same for every verb that decodes
BAD_VIDEOS = {
    "missing": ("no_such.avi", "not found"),
    "folder": ("a_folder.avi", "is a folder"),
    "empty": ("empty.avi", "empty"),
    "not_a_video": ("not_a_video.avi", "not a readable media file"),
    "audio_only": ("audio_only.wav", "no video stream"),
    "zero_frames": ("zero_frames.avi", "zero-frame"),
    "truncated": ("truncated.avi", "truncated"),
}


def _out_args(verb: str, out: Path) -> list[str]:
    return ["--csv", str(out.with_suffix(".csv"))] if verb == "mvs" else ["--out", str(out)]


@pytest.mark.parametrize("case", sorted(BAD_VIDEOS))
@pytest.mark.parametrize("verb", ["prepare", "mvs", "extract"])
def test_bad_video_is_one_clean_error_and_writes_nothing(corpus, tmp_path, verb, case):
    name, text = BAD_VIDEOS[case]
    out = tmp_path / ("o.safetensors" if verb == "extract" else "o.avi")
    guards = Guard(corpus), Guard(tmp_path)
    assert_clean_error(run_cli(["data", verb, corpus / name, *_out_args(verb, out)]), contains=text)
    for g in guards:
        g.assert_untouched()


@pytest.mark.parametrize("verb", ["mvs", "extract"])
def test_intra_only_video_has_no_motion_vectors(corpus, tmp_path, verb):
    guards = Guard(corpus), Guard(tmp_path)
    assert_clean_error(run_cli(["data", verb, corpus / "intra_only.avi", *_out_args(verb, tmp_path / "o.safetensors")]),
                       contains="intra-only")
    for g in guards:
        g.assert_untouched()


def test_truncated_video_is_refused_by_a_resizing_extract(corpus, tmp_path):
    """--size re-encodes first; the re-encode must not keep the frames before the cut and carry on."""
    guards = Guard(corpus), Guard(tmp_path)
    assert_clean_error(run_cli(["data", "extract", corpus / "truncated.avi", "--size", "32x32",
                                "--out", tmp_path / "o.safetensors"]), contains="truncated")
    for g in guards:
        g.assert_untouched()


def test_truncated_video_is_not_prepared_from_its_first_frames(corpus, tmp_path):
    from edgeml.errors import VideoError
    from edgeml.video.codec import prepare

    with pytest.raises(VideoError, match="truncated"):
        prepare(corpus / "truncated.avi", tmp_path / "p.avi")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["declares_2e31_frames.avi", "declares_one_more.avi"])
def test_a_declared_frame_count_is_neither_trusted_nor_a_truncation(corpus, tmp_path, name):
    """A header's frame count (2^31, or one more than written as FFmpeg's AVI muxing does) changes nothing: the
    same tensors as the honest file, and prepare/mvs succeed."""
    from safetensors.numpy import load_file

    for f in (name, "good.avi"):
        r = run_cli(["data", "extract", corpus / f, "--out", tmp_path / f"{f}.safetensors"])
        assert r.rc == 0, r.stderr
    got, want = load_file(tmp_path / f"{name}.safetensors"), load_file(tmp_path / "good.avi.safetensors")
    assert sorted(got) == sorted(want) and len(want["residual"]) == FRAMES - 3  # 26 frames = 3 I + 23 P
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert run_cli(["data", "mvs", corpus / name, "--csv", tmp_path / "m.csv"]).rc == 0
    assert run_cli(["data", "prepare", corpus / name, "--out", tmp_path / "p.avi"]).rc == 0

    from edgeml.video.codec import decode

    assert sum(1 for _ in decode(tmp_path / "p.avi", mvs=False)) == FRAMES


def libavcodec_csv(path: Path) -> str:
    """The rows libavcodec exports, read with plain PyAV (every frame, full decode), in extract_mvs.c's CSV form."""
    import av

    from edgeml.video.codec import CSV_HEADER, format_mv_rows

    text = [CSV_HEADER + "\n"]
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        st.codec_context.options = {"flags2": "+export_mvs"}
        for n, frame in enumerate(c.decode(st)):
            sd = frame.side_data.get("MOTION_VECTORS")
            if sd is not None and len(sd):
                text.append(format_mv_rows(n + 1, sd.to_ndarray()))
    return "".join(text)


def test_a_declared_but_missing_frame_decodes_fully_at_model_size(corpus, tmp_path):
    """An AVI declaring one frame more than it holds (as FFmpeg's AVI muxing of mpeg4 does): `data mvs` (MV-only
    decoding) equals libavcodec's rows, and `data extract --size` / `data build --size` (no re-encode) keep every
    frame — the same tensors as the honest file."""
    import json

    from safetensors.numpy import load_file

    name = "declares_one_more.avi"
    assert run_cli(["data", "mvs", corpus / name, "--csv", tmp_path / "m.csv"]).rc == 0
    assert (tmp_path / "m.csv").read_text() == libavcodec_csv(corpus / name)
    for f in (name, "good.avi"):
        r = run_cli(["data", "extract", corpus / f, "--size", "32x32", "--accumulate",
                     "--out", tmp_path / f"{f}.st.safetensors"])
        assert r.rc == 0, r.stderr
    got, want = load_file(tmp_path / f"{name}.st.safetensors"), load_file(tmp_path / "good.avi.st.safetensors")
    assert len(want["residual"]) == FRAMES - 3 and got["residual"].shape[2:] == (32, 32)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    src = tmp_path / "src" / "left"
    src.mkdir(parents=True)
    (src / name).write_bytes((corpus / name).read_bytes())
    r = run_cli(["data", "build", tmp_path / "src", tmp_path / "cache", "--size", "32x32", "--clip-len", "8",
                 "--workers", "1"])
    assert r.rc == 0, r.stderr
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert not index["broken"] and sum(index["clips"].values()) == 2  # GOPs of 12: two with 8 P-frames
    assert index["meta"]["resize"] == "crop" and index["meta"]["size"] == [32, 32]


def test_build_reports_a_video_smaller_than_the_model_and_refuses_a_grid_that_does_not_divide(corpus, tmp_path):
    import json

    src = tmp_path / "src" / "left"
    src.mkdir(parents=True)
    (src / "good.avi").write_bytes((corpus / "good.avi").read_bytes())
    guard = Guard(tmp_path)
    assert_clean_error(run_cli(["data", "build", tmp_path / "src", tmp_path / "cache", "--size", "36x36",
                                "--grid", "8"]), contains="multiple of the grid")
    guard.assert_untouched()
    r = run_cli(["data", "build", tmp_path / "src", tmp_path / "cache", "--size", "128x128", "--workers", "1"])
    assert r.rc == 0, r.stderr
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert len(index["broken"]) == 1 and "larger than the video" in index["broken"][0]["reason"]


# ------------------------------------------------------------------------------------------------ inputs are sacred


@pytest.fixture
def work(tmp_path) -> Path:
    """tmp_path/work with a private copy of a good video, and a sentinel outside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "sentinel.txt").write_text("do not touch\n")
    w = tmp_path / "work"
    w.mkdir()
    good_video(w / "v.avi")
    return w


@pytest.mark.parametrize(("verb", "flag"), [("prepare", "--out"), ("mvs", "--csv"), ("extract", "--out")])
@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink"])
def test_an_output_that_is_the_input_is_refused(work, verb, flag, how):
    video = work / "v.avi"
    target = {"same_path": video, "symlink": work / "link.safetensors", "hardlink": work / "hard.safetensors"}[how]
    if how == "symlink":
        target.symlink_to(video)
    elif how == "hardlink":
        target.hardlink_to(video)
    if verb != "extract" and how != "same_path":
        target = target.rename(target.with_suffix(".avi"))
    guard = Guard(work.parent)
    assert_clean_error(run_cli(["data", verb, video, flag, target]), contains="is the input")
    guard.assert_untouched()


@pytest.mark.parametrize(("verb", "out"), [("prepare", "p.avi"), ("mvs", "m.csv"), ("extract", "x.safetensors")])
def test_the_temp_file_of_a_killed_run_is_removed_by_the_next_run(work, verb, out):
    stale = work / f".{out}.k1ll3d.tmp"
    stale.write_bytes(b"half written")
    flag = "--csv" if verb == "mvs" else "--out"
    assert run_cli(["data", verb, work / "v.avi", flag, work / out]).rc == 0
    assert not stale.exists() and (work / out).is_file()


def test_an_output_folder_is_refused_for_a_file_output(work):
    (work / "dir.safetensors").mkdir()
    guard = Guard(work.parent)
    assert_clean_error(run_cli(["data", "extract", work / "v.avi", "--out", work / "dir.safetensors"]),
                       contains="is a folder")
    guard.assert_untouched()


@pytest.fixture
def source(tmp_path) -> Path:
    """A tiny class-folder source: 2 classes x 2 videos, and a sentinel outside the working folder."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "sentinel.avi").write_bytes(b"not yours")
    src = tmp_path / "work" / "src"
    for c, label in enumerate(("left", "right")):
        (src / label).mkdir(parents=True)
        for i in range(2):
            good_video(src / label / f"{label}_{i}.avi", label, seed=10 * c + i, frames=14)
    return src


@pytest.mark.parametrize(("cache", "text"), [
    (".", "is the input"),  # CACHE == SOURCE
    ("..", "holds the input"),  # CACHE holds SOURCE
    ("left", "holds the input"),  # CACHE is a class folder of SOURCE
    ("cache", "inside the source folder"),  # a new folder inside SOURCE
])
def test_build_refuses_a_cache_on_or_in_its_source(source, cache, text):
    guard = Guard(source.parent.parent)
    assert_clean_error(run_cli(["data", "build", source, source / cache, "--clip-len", "4"]), contains=text)
    guard.assert_untouched()


def test_build_refuses_split_list_paths_that_leave_the_source(source):
    """A UCF-101 split file is not the user's writing: `../outside/x.avi` or an absolute path is refused."""
    lists = source / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 left\n2 right\n")
    (lists / "testlist01.txt").write_text("left/left_0.avi\n")
    for entry in ("../../outside/sentinel.avi 1", f"{source.parent.parent / 'outside' / 'sentinel.avi'} 1"):
        (lists / "trainlist01.txt").write_text(f"left/left_1.avi 1\n{entry}\n")
        guard = Guard(source.parent.parent)
        assert_clean_error(run_cli(["data", "build", source, source.parent / "cache", "--clip-len", "4"]),
                           contains="trainlist01.txt")
        guard.assert_untouched()


# ------------------------------------------------------------------------------------------------ bad numbers


BAD_ARGS = {
    "synth": [["--per-class", "0"], ["--per-class", "-3"], ["--per-class", "x"], ["--frames", "0"],
              ["--size", "10x10"], ["--size", "33x33"], ["--size", "0x64"], ["--workers", "-1"], ["--seed", "-1"],
              ["--size", "100000x100000"]],
    "prepare": [["--gop", "0"], ["--gop", "-1"], ["--quality", "0"], ["--quality", "32"], ["--size", "15x16"],
                ["--size", "9000x9000"], ["--size", "axb"], ["--codec", "vp9"],
                ["--codec", "h264", "--quality", "9"], ["--gop", "3000000000"]],
    "extract": [["--grid", "3"], ["--size", "-4x4"], ["--size", "17x16"], ["--grid", "nan"]],
    "build": [["--clip-len", "0"], ["--clip-len", "-2"], ["--workers", "-1"], ["--split", "0"], ["--grid", "5"],
              ["--size", "1x1"], ["--size", "31x32"], ["--workers", "1.5"]],
}


def _argv(verb: str, tmp_path: Path, video: Path) -> list:
    return {"synth": ["data", "synth", tmp_path / "synth"],
            "prepare": ["data", "prepare", video, "--out", tmp_path / "p.avi"],
            "extract": ["data", "extract", video, "--out", tmp_path / "o.safetensors"],
            "build": ["data", "build", video.parent, tmp_path / "cache"]}[verb]


@pytest.mark.parametrize(("verb", "extra"), [(v, a) for v, cases in BAD_ARGS.items() for a in cases],
                         ids=[f"{v}:{' '.join(a)}" for v, cases in BAD_ARGS.items() for a in cases])
def test_bad_numbers_are_one_clean_error(corpus, tmp_path, verb, extra):
    guards = Guard(corpus), Guard(tmp_path)
    assert_clean_error(run_cli([*_argv(verb, tmp_path, corpus / "good.avi"), *extra]))
    for g in guards:
        g.assert_untouched()


@pytest.mark.parametrize("verb", ["synth", "build"])
def test_a_file_where_a_folder_is_expected_is_refused(corpus, tmp_path, verb):
    (tmp_path / "file").write_text("x")
    argv = (["data", "synth", tmp_path / "file"] if verb == "synth"
            else ["data", "build", corpus / "good.avi", tmp_path / "cache"])
    guards = Guard(corpus), Guard(tmp_path)
    assert_clean_error(run_cli(argv))
    for g in guards:
        g.assert_untouched()
    if verb == "build":
        guard = Guard(tmp_path)
        assert_clean_error(run_cli(["data", "build", corpus, tmp_path / "file"]), contains="is a file")
        guard.assert_untouched()
