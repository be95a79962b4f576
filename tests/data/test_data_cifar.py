"""CIFAR python batches load through the restricted unpickler; anything else is refused, never executed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgeml.data import open_image_dataset
from edgeml.data.cifar import safe_load_pickle
from edgeml.errors import DataError


def _write(path: Path, obj: object, protocol: int = 2) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def make_cifar10(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        _write(root / name, {b"batch_label": b"x", b"labels": [i % 10 for i in range(n)], b"data": data})
    _write(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072})
    return root


def test_cifar10_fixture_loads(tmp_path):
    root = make_cifar10(tmp_path / "cifar-10-batches-py")
    train = open_image_dataset(root, "train", augment=False)
    assert len(train) == 20 and train.classes[3] == "c3" and train.meta["in_channels"] == 3
    item = train[1]
    assert item["image"].shape == (3, 32, 32) and item["label"].item() == 1
    assert len(open_image_dataset(root, "test")) == 4


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar100_fixture_with_fine_and_coarse_labels(tmp_path, protocol):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    data = np.zeros((3, 3072), np.uint8)
    for name in ("train", "test"):
        _write(root / name, {"data": data, "fine_labels": [5, 99, 0], "coarse_labels": [1, 19, 0]}, protocol)
    _write(root / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                           "coarse_label_names": [f"k{i}" for i in range(20)]}, protocol)
    assert open_image_dataset(root, "train")[1]["label"].item() == 99
    coarse = open_image_dataset(root, "test", label="coarse")
    assert coarse[1]["label"].item() == 19 and len(coarse.classes) == 20


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    _write(tmp_path / "data_batch_1", {b"data": _Evil(marker), b"labels": [0]})
    with pytest.raises(DataError, match="refusing to load global"):
        safe_load_pickle(tmp_path / "data_batch_1")
    assert not marker.exists()


def test_malformed_batch_is_a_clear_error(tmp_path):
    root = make_cifar10(tmp_path / "c")
    _write(root / "test_batch", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="3072"):
        open_image_dataset(root, "test")


@pytest.mark.parametrize("labels, problem", [
    (["a", "b"], "integer labels"),
    ([0.5, 1.7], "integer labels"),  # would be truncated to 0 and 1
    ([[0], [1]], "integer labels"),
    (None, "integer labels"),
    ([0, 10], r"labels outside 0\.\.9"),
    ([0, -1], r"labels outside 0\.\.9"),
])
def test_bad_labels_are_a_clear_error(tmp_path, labels, problem):
    root = make_cifar10(tmp_path / "c")
    _write(root / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels})
    with pytest.raises(DataError, match=problem):
        open_image_dataset(root, "test")


def test_label_names_that_are_not_a_list_of_strings_are_refused(tmp_path):
    root = make_cifar10(tmp_path / "c")
    _write(root / "batches.meta", {b"label_names": 3})
    with pytest.raises(DataError, match="label names"):
        open_image_dataset(root, "test")


def test_truncated_batch_is_a_clear_error(tmp_path):
    root = make_cifar10(tmp_path / "c")
    (root / "test_batch").write_bytes((root / "test_batch").read_bytes()[:100])
    with pytest.raises(DataError, match="not a plain CIFAR pickle"):
        open_image_dataset(root, "test")
