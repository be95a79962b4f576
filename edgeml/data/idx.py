"""IDX files (MNIST / Fashion-MNIST, gzip or raw) and the image dataset built on them.

IDX layout: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per dimension,
then the big-endian data. Every inconsistency (magic, truncated data, image/label counts, label range)
is a DataError naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from edgeml.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_MNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle boot"]
MNIST_CLASSES = [str(i) for i in range(10)]
_SPLIT_PREFIX = {"train": "train", "val": "t10k", "test": "t10k"}


def read_idx(path: str | PathLike) -> np.ndarray:
    """The array stored in an IDX file (`.gz` or raw), e.g. uint8 [N, 28, 28] images or [N] labels."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file ({e.strerror})", path=path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"corrupt gzip stream ({e})", path=path, fix="re-install or re-download the file") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _DTYPES or raw[3] == 0:
        raise DataError("not an IDX file (bad magic number in the header)", path=path,
                        fix="pass the MNIST-format *-idx?-ubyte(.gz) files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("IDX header is truncated", path=path)
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize  # Python ints: a hostile header cannot overflow the check
    if len(raw) - header != expected:
        raise DataError(f"IDX header announces shape {dims} ({expected} data bytes) but the file holds "
                        f"{len(raw) - header}", path=path, fix="the file is truncated or corrupt; get it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"missing {stem}(.gz)", path=root, fix="the folder must hold the four IDX files of "
                    "MNIST / Fashion-MNIST (apt-get install dataset-fashion-mnist, or the official files)")


def load_idx_split(root: str | PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H, W] and int64 labels [N] of `split` (train | val | test; val = the test files)."""
    if split not in _SPLIT_PREFIX:
        raise DataError(f"unknown split {split!r}", fix="use train, val or test")
    root = Path(root)
    if not root.is_dir():
        raise DataError("data set folder not found", path=root,
                        fix="install Fashion-MNIST with `apt-get install dataset-fashion-mnist` "
                            "(/usr/share/datasets/fashion-mnist) or put the official IDX files there")
    prefix = _SPLIT_PREFIX[split]
    img_path, lab_path = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}",
                        path=root)
    if images.dtype != np.uint8 or labels.dtype.kind not in "iu":
        raise DataError(f"expected uint8 images and integer labels, got {images.dtype} and {labels.dtype}",
                        path=root, fix="pass MNIST-format files (images are unsigned bytes)")
    if min(images.shape[1:]) < 1:
        raise DataError(f"images of size {images.shape[1]}x{images.shape[2]}", path=img_path)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels", path=root,
                        fix=f"{img_path.name} and {lab_path.name} must come from the same release")
    return images.astype(np.uint8, copy=False), labels.astype(np.int64)


def augment_crop_flip(image: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """RandomCrop(H, padding=pad) + RandomHorizontalFlip on one image [C, H, W] (torch's global RNG)."""
    _, h, w = image.shape
    padded = F.pad(image, (pad, pad, pad, pad))
    i, j = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    out = padded[:, i:i + h, j:j + w]
    if flip and bool(torch.rand(()) < 0.5):
        out = out.flip(-1)
    return out


class ArrayImageDataset(Dataset):
    """Images held in memory as uint8 [N, C, H, W]; item = {"image": float32 [C, H, W] in [0, 1], "label"}."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], *, augment: bool = False,
                 source: str = ""):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if self.labels.numel() and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(classes)):
            raise DataError(f"labels outside 0..{len(classes) - 1}", path=source or None)
        self.classes = list(classes)
        self.augment = augment
        _, c, h, w = self.images.shape
        self.meta = {"in_channels": c, "image_size": h, "num_classes": len(classes), "source": source}

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.images[i].float().div_(255.0)
        if self.augment:
            image = augment_crop_flip(image)
        return {"image": image, "label": self.labels[i]}


def idx_dataset(root: str | PathLike, split: str, *, classes: list[str] | None = None,
                augment: bool | None = None) -> ArrayImageDataset:
    """MNIST-format data set at `root`; train split augmented (crop pad 4 + flip, as the LLS paper) by default."""
    images, labels = load_idx_split(root, split)
    augment = split == "train" if augment is None else augment
    classes = classes or [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    return ArrayImageDataset(images[:, None], labels, classes,
                             augment=augment, source=str(root))
