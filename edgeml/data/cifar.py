"""CIFAR-10 / CIFAR-100 in the official python layout, read WITHOUT arbitrary pickle execution.

The official batches are Python pickles of `{b"data": uint8 [N, 3072], b"labels" | b"fine_labels": [...]}`.
A plain `pickle.load` would run whatever a tampered file asks for; `SafeUnpickler` resolves only the few
numpy constructors a numpy array needs (and nothing else), so a malicious file is a DataError, never code.
"""

from __future__ import annotations

import pickle
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.data.idx import ArrayImageDataset
from edgeml.errors import DataError

# The globals a pickled numpy array refers to (numpy 1.x and 2.x module paths), and `_codecs.encode`, which
# protocol-2 pickles written by Python 3 use for raw bytes. No callable here can run code or touch files.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that only builds builtin containers, numbers, bytes/str and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_load_pickle(path: str | PathLike) -> Any:
    """Unpickle `path` with `SafeUnpickler` (latin1 for Python-2 str payloads, as numpy needs)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError("file not found", path=path, fix="unpack the official CIFAR python archive there") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"not a plain CIFAR pickle ({e})", path=path,
                        fix="use the official cifar-10/100 python files; other pickles are refused") from None
    if not isinstance(obj, dict):
        raise DataError(f"expected a dict, found {type(obj).__name__}", path=path)
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _names(values: Any, path: Path) -> list[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, bytes | str) for v in values):
        raise DataError("label names must be a list of strings", path=path)
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_load_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"missing 'data' or '{label_key}' in the batch", path=path)
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"expected uint8 data [N, 3072], got {data.dtype} {data.shape}", path=path)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(f"expected a list of integer labels, got {labels.dtype} {labels.shape}", path=path)
    labels = labels.astype(np.int64)
    if len(data) != len(labels):
        raise DataError(f"{len(data)} images but {len(labels)} labels", path=path)
    return data.reshape(-1, 3, 32, 32), labels


def cifar_dataset(root: str | PathLike, split: str, *, label: str = "fine",
                  augment: bool | None = None) -> ArrayImageDataset:
    """CIFAR-10 (`cifar-10-batches-py`) or CIFAR-100 (`cifar-100-python`, fine or coarse labels) at `root`."""
    root = Path(root)
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}", fix="use train, val or test")
    if (root / "batches.meta").is_file() or (root / "data_batch_1").is_file():
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        label_key, meta_file, names_key = "labels", root / "batches.meta", "label_names"
    elif (root / "meta").is_file():
        files = [root / ("train" if split == "train" else "test")]
        label_key = f"{label}_labels"
        meta_file, names_key = root / "meta", f"{label}_label_names"
    else:
        raise DataError("not a CIFAR python folder", path=root,
                        fix="unpack cifar-10-python.tar.gz / cifar-100-python.tar.gz and pass the folder inside")
    parts = [_read_batch(f, label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    meta = safe_load_pickle(meta_file) if meta_file.is_file() else {}
    classes = _names(meta[names_key], meta_file) if names_key in meta \
        else [str(i) for i in range(int(labels.max(initial=0)) + 1)]
    augment = split == "train" if augment is None else augment
    return ArrayImageDataset(images, labels, classes, augment=augment, source=str(root))
