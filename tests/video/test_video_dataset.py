"""synth -> build_clip_cache -> ClipDataset: the ready-to-train path and its contracts (docs/architecture.md §3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeml.errors import DataError
from edgeml.video.synth import CLASSES


def test_synth_set_has_splits_classes_and_real_codec(synth_dir):
    from edgeml.video.codec import decode, probe

    assert (synth_dir / "classes.txt").read_text().split() == list(CLASSES)
    assert len(CLASSES) >= 8
    for split in ("train", "val", "test"):
        assert {p.name for p in (synth_dir / split).iterdir()} == set(CLASSES)
    video = next((synth_dir / "train" / "left").glob("*.avi"))
    assert probe(video).codec == "mpeg4"
    types = "".join(f.pict_type for f in decode(video))
    assert types == ("I" + "P" * 11) * 2 + "IP"  # GOP 12, no B-frames


def test_clip_dataset_items_follow_the_contract(clip_cache):
    from edgeml.video.datasets import ClipDataset

    ds = ClipDataset(clip_cache, "train")
    assert ds.classes == list(CLASSES)
    assert ds.meta["clip_len"] == 8 and ds.meta["grid"] == 4 and ds.meta["size"] == [64, 64]
    assert len(ds) == 2 * 2 * len(CLASSES)  # 2 train videos per class, 2 full GOPs each
    item = ds[0]
    shapes = {k: tuple(v.shape) for k, v in item.items()}
    assert shapes == {"iframe": (3, 64, 64), "mv": (8, 2, 16, 16), "residual": (8, 3, 64, 64),
                      "frames": (9, 3, 64, 64), "label": (), "video": ()}
    assert all(v.dtype == torch.float32 for k, v in item.items() if k not in ("label", "video"))
    assert item["label"].dtype == torch.int64 and item["video"].dtype == torch.int64
    videos = [int(ds[i]["video"]) for i in range(len(ds))]
    assert videos == sorted(videos) and len(set(videos)) == 2 * len(CLASSES)  # 2 clips (GOPs) per video
    assert torch.equal(item["frames"][0], item["iframe"])
    assert item["mv"].abs().sum() > 0 and item["residual"].min() < 0
    assert sorted(set(ds.labels())) == list(range(len(CLASSES)))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    assert next(iter(loader))["mv"].shape == (4, 8, 2, 16, 16)


def test_extract_clips_equals_the_cached_items(clip_cache, synth_dir):
    from edgeml.video.clips import extract_clips
    from edgeml.video.datasets import ClipDataset

    index = json.loads((clip_cache / "index.json").read_text())
    entry = index["splits"]["test"][0]
    timings: dict = {}
    clips = extract_clips(synth_dir / entry["video"], clip_len=8, grid=4, size=(64, 64), timings=timings)
    ds = ClipDataset(clip_cache, "test")
    first = ds[0]
    for k in ("iframe", "mv", "residual", "frames"):
        np.testing.assert_array_equal(clips[0][k], first[k].numpy())
    assert timings["decode"] > 0 and timings["kernels"] > 0


def test_dataset_without_cache_names_the_fix(tmp_path):
    from edgeml.video.datasets import ClipDataset

    with pytest.raises(DataError, match="edgeml data build"):
        ClipDataset(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        ClipDataset(tmp_path, "dev")


def test_shard_bytes_depend_on_the_clips_only_not_on_the_process_that_wrote_them(synth_dir, clip_cache, tmp_path):
    """safetensors writes its metadata in hash-map order, random per process: sorted, a rebuild in other worker
    processes gives the same bytes (and sha256) for every shard."""
    import shutil

    from edgeml.video.datasets import build_clip_cache

    src = tmp_path / "src"
    shutil.copytree(synth_dir / "train" / "left", src / "left")
    shutil.copytree(synth_dir / "train" / "right", src / "right")
    a = build_clip_cache(src, tmp_path / "a", clip_len=8, grid=4, size=(64, 64), workers=2, progress=False)
    b = build_clip_cache(src, tmp_path / "b", clip_len=8, grid=4, size=(64, 64), workers=1, progress=False)
    shards = sorted(p.name for p in (a / "shards").iterdir())
    assert len(shards) == 4
    assert all((a / "shards" / n).read_bytes() == (b / "shards" / n).read_bytes() for n in shards)
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
    for shard in (clip_cache / "shards").iterdir():
        assert shard.read_bytes()[8:].startswith(b'{"__metadata__":{"clips":'), shard.name


def test_engine_ray_without_ray_installed_names_the_extra(synth_dir, tmp_path, monkeypatch, capsys):
    import sys

    from edgeml import cli
    from edgeml.errors import MissingDependencyError
    from edgeml.video.datasets import build_clip_cache

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"ray is not installed.*pip install 'edgeml\[ray\]'"):
        build_clip_cache(synth_dir, tmp_path / "cache", engine="ray", progress=False)
    assert not (tmp_path / "cache").exists()  # refused before anything is written
    assert cli.main(["data", "build", str(synth_dir), str(tmp_path / "c2"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edgeml[ray]" in err[0]


def test_an_address_without_the_ray_engine_is_refused(synth_dir, tmp_path, capsys):
    from edgeml import cli

    assert cli.main(["data", "build", str(synth_dir), str(tmp_path / "c"), "--address", "auto"]) == 2
    assert "needs --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
