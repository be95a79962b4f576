"""Bad input gives a clear VideoError (CLI: one line, exit 2), never a crash or a hang; a cache build skips and
reports broken videos, and a killed build resumes without redoing finished videos."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeml.errors import EdgeMLError, VideoError
from tests.video.encode import encode_frames

EDGEML = [sys.executable, "-m", "edgeml"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, request) -> dict[str, tuple[Path, str]]:
    """name -> (file, text the error must contain)."""
    import av

    d = tmp_path_factory.mktemp("bad")
    good = next((request.getfixturevalue("synth_dir") / "train" / "left").glob("*.avi")).read_bytes()
    (d / "truncated.avi").write_bytes(good[: len(good) // 2])
    (d / "not_a_video.mp4").write_text("this is a text file, not a video\n" * 50)
    with av.open(str(d / "audio_only.wav"), "w") as out:
        st = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for pkt in [*st.encode(frame), *st.encode(None)]:
            out.mux(pkt)
    encode_frames(d / "zero_frames.avi", "mpeg4", 0)
    encode_frames(d / "intra_only.avi", "mjpeg", 8, pix_fmt="yuvj420p")
    return {"truncated": (d / "truncated.avi", "truncated"),
            "not_a_video": (d / "not_a_video.mp4", "not a readable media file"),
            "audio_only": (d / "audio_only.wav", "no video stream (found: audio)"),
            "zero_frames": (d / "zero_frames.avi", "zero-frame video"),
            "intra_only": (d / "intra_only.avi", "intra-only")}


CASES = ["truncated", "not_a_video", "audio_only", "zero_frames", "intra_only"]


@pytest.mark.parametrize("case", CASES)
def test_api_raises_a_clear_video_error(bad_inputs, case):
    from edgeml.video.clips import extract, extract_clips

    path, text = bad_inputs[case]
    for call in (lambda: extract(path), lambda: extract_clips(path, clip_len=4, grid=4)):
        with pytest.raises(VideoError, match=re.escape(text)) as e:
            call()
        assert str(e.value).startswith(f"{path}: ")


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("verb", ["extract", "mvs"])
def test_cli_exits_2_with_one_line_and_never_hangs(bad_inputs, case, verb, tmp_path):
    path, text = bad_inputs[case]
    out = ["--out", str(tmp_path / "o.safetensors")] if verb == "extract" else ["--csv", str(tmp_path / "o.csv")]
    r = subprocess.run([*EDGEML, "data", verb, str(path), *out], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_prepare_of_a_bad_input_is_a_video_error(bad_inputs, tmp_path):
    from edgeml.video.codec import prepare

    with pytest.raises(EdgeMLError):
        prepare(bad_inputs["not_a_video"][0], tmp_path / "x.avi")
    assert not (tmp_path / "x.avi").exists()


def _copy_tree(src: Path, dst: Path) -> None:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())


def test_build_skips_and_reports_broken_videos(synth_dir, bad_inputs, tmp_path, capsys):
    from edgeml.video.datasets import ClipDataset, build_clip_cache

    src = tmp_path / "src"
    _copy_tree(synth_dir / "train", src / "train")
    _copy_tree(synth_dir / "test", src / "test")
    for case in CASES:
        (src / "train" / "left" / bad_inputs[case][0].name).write_bytes(bad_inputs[case][0].read_bytes())
    cache = build_clip_cache(src, tmp_path / "cache", clip_len=8, size=(64, 64), workers=2, progress=False)
    index = json.loads((cache / "index.json").read_text())
    broken = {Path(b["video"]).name for b in index["broken"]}
    # .wav is not a video suffix, so it is not even picked up; every other bad file is skipped and reported
    assert broken == {bad_inputs[c][0].name for c in CASES if c != "audio_only"}
    assert all(b["reason"] for b in index["broken"])
    assert "truncated" in capsys.readouterr().out
    assert len(ClipDataset(cache, "train")) == 2 * 2 * 8  # the good videos are all there


def test_killed_build_resumes_without_redoing_finished_videos(synth_dir, tmp_path):
    cache = tmp_path / "cache"
    code = ("from edgeml.video.datasets import build_clip_cache;"
            f"build_clip_cache({str(synth_dir)!r}, {str(cache)!r}, workers=1, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    shards = cache / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*.safetensors"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.safetensors")}
    assert 3 <= len(done) < 32, "the build should have been killed part-way"
    assert not (cache / "index.json").exists()

    from edgeml.video.datasets import ClipDataset, build_clip_cache

    build_clip_cache(synth_dir, cache, workers=1, progress=False)
    index = json.loads((cache / "index.json").read_text())
    assert index["build"] == {"videos_built": 32 - len(done), "videos_reused": len(done)}
    for name, mtime in done.items():
        assert (shards / name).stat().st_mtime_ns == mtime  # finished shards untouched
    assert not list(shards.glob(".*.tmp"))  # a temp file left by the killed write is cleaned up
    assert sum(len(ClipDataset(cache, s)) for s in ("train", "val", "test")) == 32 * 2


def test_a_script_without_a_main_guard_gets_a_clear_error_not_a_broken_pool(tmp_path):
    # spawned workers re-import the calling script; unguarded, each one fails to start and the pool breaks
    script = tmp_path / "unguarded.py"
    script.write_text("from edgeml.video.synth import make_synth_dataset\n"
                      f"make_synth_dataset({str(tmp_path / 'synth')!r}, per_class=3, frames=4, workers=2, "
                      "progress=False)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("edgeml.errors.EdgeMLError: a synth videos worker process exited abruptly"), last
    assert "if __name__ == '__main__':" in last
