"""Folder layouts the cache builder understands: pre-split (synth), UCF-101 and HMDB-51 split files, plain folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeml.errors import DataError
from edgeml.video.datasets import scan_layout


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_presplit_synth_layout(synth_dir):
    layout, classes, items = scan_layout(synth_dir)
    assert layout == "presplit" and classes[:2] == ["left", "right"]
    assert {s for _, _, s in items} == {"train", "val", "test"}
    assert all(p.parts[-3] == s and p.parts[-2] == c for p, c, s in items)


def test_ucf101_official_split_with_group_held_out_for_val(tmp_path):
    root = tmp_path / "UCF-101"
    for g in (1, 5, 8, 10):
        touch(root / "ApplyEyeMakeup" / f"v_ApplyEyeMakeup_g{g:02d}_c01.avi")
        touch(root / "Archery" / f"v_Archery_g{g:02d}_c01.avi")
    lists = root / "ucfTrainTestlist"
    touch(lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    train = [f"{c}/v_{c}_g{g:02d}_c01.avi {i}" for i, c in enumerate(("ApplyEyeMakeup", "Archery"), 1) for g in (8, 10)]
    test = [f"{c}/v_{c}_g{g:02d}_c01.avi" for c in ("ApplyEyeMakeup", "Archery") for g in (1, 5)]
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    layout, classes, items = scan_layout(root, split=1)
    assert layout == "ucf101" and classes == ["ApplyEyeMakeup", "Archery"]
    split = {p.name: s for p, _, s in items}
    assert split["v_Archery_g08_c01.avi"] == "train" and split["v_Archery_g10_c01.avi"] == "val"
    assert split["v_Archery_g01_c01.avi"] == "test" and split["v_Archery_g05_c01.avi"] == "test"
    with pytest.raises(DataError, match="trainlist02.txt missing"):
        scan_layout(root, split=2)


def test_hmdb51_split_files(tmp_path):
    root = tmp_path / "hmdb51"
    for name in ("a.avi", "b.avi", "c.avi"):
        touch(root / "brush_hair" / name)
    touch(tmp_path / "testTrainMulti_7030_splits" / "brush_hair_test_split1.txt").write_text(
        "a.avi 1\nb.avi 2\nc.avi 0\n")
    layout, classes, items = scan_layout(root)
    assert layout == "hmdb51" and classes == ["brush_hair"]
    assert {p.name: s for p, _, s in items} == {"a.avi": "train", "b.avi": "test", "c.avi": "val"}


def test_plain_class_folders_split_deterministically(tmp_path):
    for i in range(40):
        touch(tmp_path / ("cat" if i % 2 else "dog") / f"clip{i}.mp4")
    layout, classes, items = scan_layout(tmp_path)
    assert layout == "folders" and classes == ["cat", "dog"]
    assert items == scan_layout(tmp_path)[2] and {s for _, _, s in items} == {"train", "val", "test"}


def test_folder_without_videos_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        scan_layout(tmp_path)
