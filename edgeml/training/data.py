"""The data side of a run: a data set's splits, each rank's sample order, loaders, batches and provenance.

`data` is a clip cache folder (video models), an image data set name or folder (image models), or a mapping
{"train"|"val"|"test": Dataset}. `describe_data` is what a checkpoint records about it: a portable description
(name, kind, content hash, settings), never a path of the machine.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from edgeml.errors import ConfigError, DataError

HEADER_BYTES = 1 << 16  # how much of each image-set file its content hash reads (the IDX headers and first images)
CACHE_SETTINGS = ("clip_len", "grid", "size", "accumulate", "resize")  # what a clip cache's provenance records


def open_split(task: str, data: Any, split: str, **opts: Any) -> torch.utils.data.Dataset:
    """The `split` of `data` for a model of `task`: a mapping {split: Dataset}, a clip cache or an image set."""
    if isinstance(data, Mapping):
        if split not in data:
            raise DataError(f"no {split!r} split among {sorted(data)}")
        ds = data[split]
    elif task == "video":
        from edgeml.video.datasets import ClipDataset

        path = Path(data)
        if not path.is_dir():
            raise DataError("not a clip cache folder" if path.exists() else "clip cache folder not found", path=path,
                            fix="build one with `edgeml data build VIDEOS_DIR CACHE_DIR`")
        if not any(path.iterdir()):
            raise DataError("clip cache folder is empty", path=path,
                            fix="build one with `edgeml data build VIDEOS_DIR CACHE_DIR`")
        ds = ClipDataset(path, split, augment=opts.get("augment", split == "train"))
    elif task == "image":
        from edgeml.data import open_image_dataset

        ds = open_image_dataset(data, split, **opts)
    else:
        raise ConfigError(f"edgeml train does not handle models of task {task!r}")
    if len(ds) == 0:
        raise DataError(f"the {split!r} split has no samples", path=None if isinstance(data, Mapping) else data)
    return ds


def open_optional_split(task: str, data: Any, split: str, **opts: Any) -> torch.utils.data.Dataset | None:
    """`open_split` without augmentation, or None where `data` has no such split."""
    try:
        return open_split(task, data, split, **{**opts, "augment": False})
    except DataError:
        return None


def data_config(ds: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The model config a data set implies (classes; clip length, grid and size of a clip cache; channels and size
    of an image set), limited to the keys the model takes (`defaults`)."""
    meta = dict(getattr(ds, "meta", {}) or {})
    config: dict[str, Any] = {"num_classes": len(ds.classes)} if getattr(ds, "classes", None) else {}
    if "size" in meta and isinstance(meta["size"], list | tuple):  # a clip cache: [H, W]
        config["height"], config["width"] = meta["size"]
    config.update({k: meta[k] for k in ("clip_len", "grid", "in_channels", "image_size", "num_classes") if k in meta})
    return {k: v for k, v in config.items() if k in defaults}


def describe_data(task: str, data: Any, train_ds: Any, opts: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint records about its data: {"name", "kind", "sha256", "settings"} — portable, no paths.

    A clip cache: its folder name, the SHA-256 of its index.json (which holds every shard's SHA-256) and its clip
    settings. An image set: the data set's name (or its folder's name), a SHA-256 over the names, sizes and first
    64 KiB of the folder's files, and its image settings. A mapping of datasets: "in-memory".
    """
    if isinstance(data, Mapping):
        return {"name": "in-memory", "kind": "in-memory", "sha256": None,
                "settings": {"splits": {k: len(v) for k, v in data.items()}}}
    meta = dict(getattr(train_ds, "meta", {}) or {})
    if task == "video":
        index = Path(data) / "index.json"
        return {"name": Path(data).resolve().name, "kind": "clip cache",
                "sha256": hashlib.sha256(index.read_bytes()).hexdigest(),
                "settings": {k: meta[k] for k in CACHE_SETTINGS if k in meta}}
    from edgeml.data import DEFAULT_ROOTS, NAMES

    key = str(data).lower()
    named = key in NAMES
    folder = Path(opts.get("root") or DEFAULT_ROOTS.get(key, data)) if named else Path(data)
    settings = {k: meta[k] for k in ("in_channels", "image_size", "num_classes") if k in meta}
    settings.update({k: v for k, v in opts.items() if k != "root" and isinstance(v, bool | int | float | str)})
    return {"name": key if named else folder.resolve().name, "kind": "image set",
            "sha256": _folder_digest(folder) if folder.is_dir() else None, "settings": settings}


def _folder_digest(folder: Path) -> str:
    """SHA-256 over the names, sizes and first `HEADER_BYTES` of the files directly in `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            digest.update(f.read(HEADER_BYTES))
    return digest.hexdigest()


def epoch_indices(n: int, seed: int, epoch: int, rank: int, world: int, shuffle: bool = True) -> list[int]:
    """This rank's sample order for one epoch: a (seed, epoch) permutation, padded so every rank gets as many."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    per_rank = math.ceil(n / world)
    order += order[: per_rank * world - n]
    return order[rank::world]


def make_loader(ds: Any, indices: list[int], batch_size: int, workers: int, drop_last: bool
                ) -> torch.utils.data.DataLoader:
    """A loader over `ds` in the order `indices`."""
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=indices, num_workers=workers,
                                       drop_last=drop_last, persistent_workers=False)


def batch_inputs(batch: Any, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The tensors `names` of a mapping batch, or all items but the last (the label) of a tuple batch."""
    if isinstance(batch, Mapping):
        missing = [k for k in names if k not in batch]
        if missing:
            raise DataError(f"data items lack {missing} (they have {sorted(batch)})",
                            fix="use a data set made for this model's task")
        return [batch[k] for k in names]
    return list(batch[:-1])


def split_batch(batch: Any, input_names: tuple[str, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(model inputs in `input_names` order, labels [B]) of a loader batch: a mapping, or a tuple (*inputs, label)."""
    if isinstance(batch, Mapping):
        *inputs, labels = batch_inputs(batch, (*input_names, "label"))
        return inputs, labels
    *inputs, labels = batch
    return list(inputs), labels
