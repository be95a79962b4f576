"""IDX reader and the Fashion-MNIST data set: good files, corrupt files, missing data."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from idx_fixture import idx_bytes, make_idx_folder

from edgeml.data import DEFAULT_ROOTS, open_image_dataset
from edgeml.data.idx import read_idx
from edgeml.errors import DataError


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzip_and_raw_idx(tmp_path, gz):
    root = make_idx_folder(tmp_path / "d", gz=gz)
    ds = open_image_dataset(root, "train", augment=False)
    assert len(ds) == 12 and ds.meta["in_channels"] == 1 and ds.meta["image_size"] == 28
    item = ds[3]
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert item["label"].item() == 3 and round(item["image"][0, 0, 0].item() * 255) == 3
    assert len(open_image_dataset(root, "test")) == 6


def test_int32_idx_round_trips(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), arr)


def test_corrupt_header_is_a_clear_error(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + b"\x00" * 32)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)


def test_truncated_data_is_a_clear_error(tmp_path):
    data = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    (tmp_path / "x").write_bytes(data[:-10])
    with pytest.raises(DataError, match="announces shape"):
        read_idx(tmp_path / "x")


def test_mismatched_image_and_label_counts(tmp_path):
    root = make_idx_folder(tmp_path / "d", gz=False)
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(11, np.uint8)))
    with pytest.raises(DataError, match="12 images but 11 labels"):
        open_image_dataset(root, "train")


def test_missing_dataset_path_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        open_image_dataset(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        open_image_dataset("fashion-mnist", "train", root=tmp_path / "nowhere")


def test_missing_label_file_names_it(tmp_path):
    root = make_idx_folder(tmp_path / "d")
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        open_image_dataset(root, "test")


def test_training_split_is_augmented_by_default(tmp_path):
    root = make_idx_folder(tmp_path / "d")
    ds = open_image_dataset(root, "train")
    torch.manual_seed(0)
    assert ds.augment and any(not torch.equal(ds[0]["image"], ds[0]["image"]) for _ in range(5))


@pytest.mark.skipif(not DEFAULT_ROOTS["fashion-mnist"].is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train, test = open_image_dataset("fashion-mnist", "train"), open_image_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes[9] == "ankle boot" and test.labels.bincount().tolist() == [1000] * 10


@pytest.mark.parametrize("images, problem", [
    (np.zeros((12, 28, 28), np.int32), "uint8 images"),  # another dtype would be cast silently
    (np.zeros((12, 0, 28), np.uint8), "size 0x28"),
    (np.zeros((12, 1, 28, 28), np.uint8), r"images \[N, H, W\]"),
])
def test_images_of_the_wrong_kind_are_refused(tmp_path, images, problem):
    root = make_idx_folder(tmp_path / "d", gz=False)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(DataError, match=problem):
        open_image_dataset(root, "train")


def test_header_dimensions_whose_product_overflows_int64_are_refused(tmp_path):
    # 2^31 x 2^31 x 4 = 2^64 wraps to 0 in int64, which an empty payload would match; Python ints do not wrap
    (tmp_path / "x").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 4))
    with pytest.raises(DataError, match="announces shape"):
        read_idx(tmp_path / "x")


def test_label_outside_the_classes_is_refused(tmp_path):
    root = make_idx_folder(tmp_path / "d", gz=False)
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(12, 10, np.uint8)))  # Fashion-MNIST: 0..9
    with pytest.raises(DataError, match=r"labels outside 0\.\.9"):
        open_image_dataset(root, "train")


def test_empty_split_without_class_names_is_an_empty_dataset(tmp_path):
    from edgeml.data.idx import idx_dataset

    root = make_idx_folder(tmp_path / "d", n_train=0, gz=False)
    assert len(idx_dataset(root, "train")) == 0  # the trainer then says "no samples"
