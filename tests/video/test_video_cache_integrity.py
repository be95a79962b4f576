"""The clip cache stays trustworthy: shards carry a sha256 in index.json that the training reader checks, paths in
the index stay inside the cache, a killed build leaves no worker processes and its temp files are cleaned."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeml.errors import DataError, InputError


@pytest.fixture
def cache_copy(clip_cache, tmp_path) -> Path:
    dst = tmp_path / "cache"
    shutil.copytree(clip_cache, dst)
    return dst


def _index(cache: Path) -> dict:
    return json.loads((cache / "index.json").read_text())


def _write_index(cache: Path, index: dict) -> None:
    (cache / "index.json").write_text(json.dumps(index))


def test_index_records_the_sha256_of_every_shard(clip_cache):
    entries = [e for s in ("train", "val", "test") for e in _index(clip_cache)["splits"][s]]
    assert len(entries) == 32
    for e in entries:
        assert e["sha256"] == hashlib.sha256((clip_cache / e["shard"]).read_bytes()).hexdigest()


def test_a_bit_flipped_shard_is_a_data_error_not_training_data(cache_copy):
    from edgeml.video.datasets import ClipDataset

    entry = _index(cache_copy)["splits"]["train"][0]
    shard = cache_copy / entry["shard"]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x01  # inside the tensor bytes: the file still parses as safetensors
    shard.write_bytes(bytes(data))
    ds = ClipDataset(cache_copy, "train")
    with pytest.raises(DataError, match="sha256") as e:
        ds[0]
    assert str(e.value).startswith(str(shard)) and "\n" not in str(e.value)
    ds[len(ds) - 1]  # the other shards still read


def test_a_shard_is_hashed_once_not_on_every_item(cache_copy, monkeypatch):
    from edgeml.video import datasets

    calls = []
    real = datasets.hashlib.sha256
    monkeypatch.setattr(datasets.hashlib, "sha256", lambda data=b"": calls.append(1) or real(data))
    ds = datasets.ClipDataset(cache_copy, "train", max_open=1)
    first_shard = [i for i in range(len(ds)) if ds._items[i][0] == ds._items[0][0]]
    for i in first_shard + [len(ds) - 1] + first_shard:  # evicted and reopened: not re-hashed
        ds[i]
    assert len(calls) == 2


def test_an_old_index_without_checksums_asks_for_a_rebuild_that_adds_them(cache_copy, synth_dir):
    from edgeml.video.datasets import ClipDataset, build_clip_cache

    index = _index(cache_copy)
    index["format"] = 1
    for s in index["splits"].values():
        for e in s:
            del e["sha256"]
    _write_index(cache_copy, index)
    with pytest.raises(DataError, match="without shard checksums"):
        ClipDataset(cache_copy, "train")
    build_clip_cache(synth_dir, cache_copy, clip_len=8, grid=4, size=(64, 64), workers=1, progress=False)
    rebuilt = _index(cache_copy)
    assert rebuilt["build"] == {"videos_built": 0, "videos_reused": 32}
    assert len(ClipDataset(cache_copy, "train")) == len(ClipDataset(cache_copy, "train"))
    assert all(len(e["sha256"]) == 64 for e in rebuilt["splits"]["train"])


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/hostname", "shards/../../x.safetensors"])
def test_an_index_shard_path_outside_the_cache_is_refused(cache_copy, shard):
    from edgeml.video.datasets import ClipDataset

    index = _index(cache_copy)
    index["splits"]["train"][0]["shard"] = shard
    _write_index(cache_copy, index)
    with pytest.raises(InputError, match="shard path in index.json"):
        ClipDataset(cache_copy, "train")


@pytest.mark.parametrize("bad", [{"label": 99}, {"clips": "3"}, {"sha256": None}])
def test_a_malformed_index_entry_is_a_data_error(cache_copy, bad):
    from edgeml.video.datasets import ClipDataset

    index = _index(cache_copy)
    index["splits"]["val"][0].update(bad)
    _write_index(cache_copy, index)
    with pytest.raises(DataError, match="val entry"):
        ClipDataset(cache_copy, "train")


def test_a_rebuild_cleans_the_temp_files_of_a_killed_shard_write(cache_copy, synth_dir):
    from edgeml.video.datasets import WORK_DIR, build_clip_cache

    stale = [cache_copy / "shards" / ".left_000-abc.safetensors.x1y2.tmp", cache_copy / "status" / ".a.json.z9.tmp",
             cache_copy / WORK_DIR / "job-k1" / "canonical.avi"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half written")
    build_clip_cache(synth_dir, cache_copy, clip_len=8, grid=4, size=(64, 64), workers=1, progress=False)
    assert not any(p.exists() for p in stale) and not (cache_copy / WORK_DIR).exists()


def test_killing_a_build_kills_its_worker_processes(synth_dir, tmp_path):
    import psutil

    cache = tmp_path / "cache"
    code = ("from edgeml.video.datasets import build_clip_cache\n"
            "if __name__ == '__main__':\n"
            f"    build_clip_cache({str(synth_dir)!r}, {str(cache)!r}, size=(48, 48), workers=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.time() + 120
        workers: list[psutil.Process] = []
        while time.time() < deadline and not list((cache / "shards").glob("*.safetensors")):
            workers = [c for c in parent.children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
            time.sleep(0.05)
        assert len(workers) >= 2, "the build should have started its worker processes"
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, as an OOM killer or `kill -9 PID` would
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=10)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, f"workers outlived the killed build: {[p.pid for p in alive]}"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
