"""The run folder: a non-empty one needs --resume or --force, --force never deletes an input, a killed
checkpoint write leaves a temp file the next run removes, and a library call leaves torch's threads as they were."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from edgeml.errors import CheckpointError, DataError, InputError
from edgeml.io import load_checkpoint, save_checkpoint
from edgeml.training.loop import train

FAST = dict(batch_size=8, lr=3e-3, progress=False, threads=1)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tiny_clips, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    train(tiny_model(), tiny_clips, out, epochs=1, seed=5, **FAST)
    return out


def test_non_empty_run_folder_needs_resume_or_force_and_stays_untouched(tiny_clips, finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    before = _snapshot(out)
    with pytest.raises(InputError, match="not empty.*--resume.*--force"):
        train(tiny_model(), tiny_clips, out, epochs=1, **FAST)
    assert _snapshot(out) == before


def test_force_replaces_the_runs_outputs_and_nothing_else(tiny_clips, finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    (out / "notes.txt").write_text("mine")
    train(tiny_model(), tiny_clips, out, epochs=1, seed=6, force=True, **FAST)
    assert (out / "notes.txt").read_text() == "mine"
    for name in ("last.safetensors", "best.safetensors"):
        assert load_checkpoint(out / name)[1]["seed"] == 6  # the new run's, not the old one's
    assert (out / "metrics.jsonl").read_text().count('"epoch": 1,') == 1  # one run's history, not two


def test_force_refuses_an_out_that_holds_the_data(tiny_clips, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_clips, out / "clips")
    before = _snapshot(out)
    with pytest.raises(InputError, match="holds the input"):
        train(tiny_model(), out / "clips", out, epochs=1, force=True, **FAST)
    assert _snapshot(out) == before


KILL_ON_SECOND_LAST_WRITE = """
import os, signal, sys
real_fsync, writes = os.fsync, []

def fsync(fd):  # kill -9 in the middle of the second write of last.safetensors (epoch 2)
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.safetensors."):
        writes.append(fd)
        if len(writes) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real_fsync(fd)

os.fsync = fsync
from edgeml.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_checkpoint_write_leaves_a_temp_that_the_next_run_removes(tiny_clips, tmp_path):
    out = tmp_path / "out"
    args = ["train", "--model", "video_spiking", "--size", "tiny", "--data", str(tiny_clips), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--threads", "1", "--no-progress"]
    proc = subprocess.run([sys.executable, "-c", KILL_ON_SECOND_LAST_WRITE, *args], capture_output=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    stale = sorted(out.glob(".last.safetensors.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # what atomic_write leaves behind a kill -9
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 1
    unrelated = [out / ".notes.tmp", out / ".last.safetensors.keep", out / ".other.safetensors.abc.tmp"]
    for p in unrelated:
        p.write_text("not ours")

    from edgeml.cli import main

    assert main([*args, "--resume"]) == 0
    assert not stale[0].exists()
    assert all(p.read_text() == "not ours" for p in unrelated)  # only `.{output}.*.tmp` names are removed
    assert load_checkpoint(out / "last.safetensors")[1]["epoch"] == 2


def test_a_folder_holding_only_stale_temps_counts_as_empty(tiny_clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".last.safetensors.a1b2c3d4.tmp").write_bytes(b"half a checkpoint")
    train(tiny_model(), tiny_clips, out, epochs=1, **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "last.safetensors", "metrics.jsonl"]


@pytest.mark.parametrize("meta_patch, problem", [({"epoch": "1"}, "'epoch'"), ({"epoch": -2}, "'epoch'"),
                                                 ({"best_top1": "high"}, "'best_top1'")])
def test_resume_refuses_run_state_of_the_wrong_type(tiny_clips, finished_run, tmp_path, meta_patch, problem):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    tensors, meta = load_checkpoint(out / "last.safetensors")
    save_checkpoint(out / "last.safetensors", tensors, {**meta, **meta_patch})
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match=problem):
        train(tiny_model(), tiny_clips, out, epochs=2, resume=True, **FAST)
    assert _snapshot(out) == before


def test_resume_refuses_a_corrupt_metrics_log(tiny_clips, finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n{broken\n')
    with pytest.raises(CheckpointError, match="metrics log is corrupt"):
        train(tiny_model(), tiny_clips, out, epochs=2, resume=True, **FAST)


def test_library_call_restores_torch_threads(tiny_clips, tmp_path):
    torch.set_num_threads(2)  # the autouse fixture restores the session's own count afterwards
    train(tiny_model(), tiny_clips, tmp_path / "a", epochs=1, **{**FAST, "threads": 1})
    assert torch.get_num_threads() == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):  # also when the call fails after setting them
        train(tiny_model(), tmp_path / "empty", tmp_path / "b", epochs=1, **{**FAST, "threads": 1})
    assert torch.get_num_threads() == 2
