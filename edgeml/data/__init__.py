"""Image data sets for the LLS flow: IDX (MNIST / Fashion-MNIST), CIFAR-10/100 (python layout), VWW (COCO).

`open_image_dataset(name_or_path, split, **opts)` is the one way in; every data set yields
`{"image": float32 [C, H, W] in [0, 1], "label": int64}` and has `.classes` and `.meta`
(`in_channels`, `image_size`, `num_classes`). Nothing downloads: a missing data set is a DataError saying
how to get it.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from edgeml.errors import DataError

# Where Debian's dataset-* packages install the data sets.
DEFAULT_ROOTS = {
    "fashion-mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
_HOWTO = {
    "fashion-mnist": "install it with `apt-get install dataset-fashion-mnist` or put the official IDX files "
                     "(train-images-idx3-ubyte.gz, ...) in a folder and pass that folder",
    "mnist": "put the official MNIST IDX files (train-images-idx3-ubyte.gz, ...) in a folder and pass that folder",
    "cifar10": "unpack the official cifar-10-python.tar.gz and pass the cifar-10-batches-py folder",
    "cifar100": "unpack the official cifar-100-python.tar.gz and pass the cifar-100-python folder",
    "vww": "pass a folder with COCO-format `annotations.json` (or instances_*.json) and the images",
}
NAMES = tuple(_HOWTO)


def _kind_of_folder(root: Path) -> str:
    if any(root.glob("*-images-idx3-ubyte*")):
        return "idx"
    if (root / "data_batch_1").is_file() or (root / "test_batch").is_file():
        return "cifar10"
    if (root / "train").is_file() and (root / "meta").is_file():
        return "cifar100"
    if any(root.glob("*.json")) or any(root.glob("annotations/*.json")):
        return "vww"
    raise DataError("cannot tell which data set this folder holds", path=root,
                    fix="expected MNIST IDX files, a CIFAR python folder or COCO-format VWW annotations")


def open_image_dataset(name_or_path: str | PathLike, split: str, **opts: Any) -> Dataset:
    """A named data set (fashion-mnist, mnist, cifar10, cifar100 — at its default place) or a folder.

    `split`: train | val | test (IDX and CIFAR have no official validation split: val is the test set, the
    accuracy the LLS paper reports). `opts` go to the reader (e.g. `augment=False`, `size=96` for VWW,
    `root=` to point a name at another folder).
    """
    from edgeml.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, idx_dataset

    key = str(name_or_path).lower()
    root = opts.pop("root", None)
    if key in NAMES:
        if root is None and key not in DEFAULT_ROOTS:
            raise DataError(f"data set {key!r} has no default location", fix=f"{_HOWTO[key]} (as --data PATH)")
        root = Path(root or DEFAULT_ROOTS[key])
        if not root.is_dir():
            raise DataError(f"data set {key!r} not found", path=root, fix=_HOWTO[key])
        kind = {"fashion-mnist": "idx", "mnist": "idx"}.get(key, key)
    else:
        root = Path(name_or_path)
        if not root.exists():
            raise DataError("data set path not found", path=root,
                            fix=f"pass an existing folder or one of {', '.join(NAMES)} "
                                f"(Fashion-MNIST: {_HOWTO['fashion-mnist']})")
        if not root.is_dir():
            raise DataError("data set path is a file, not a folder", path=root,
                            fix=f"pass the folder that holds the data set or one of {', '.join(NAMES)}")
        kind = _kind_of_folder(root)
    if kind == "idx":
        classes = MNIST_CLASSES if key == "mnist" else FASHION_MNIST_CLASSES
        return idx_dataset(root, split, classes=classes, **opts)
    if kind in ("cifar10", "cifar100"):
        from edgeml.data.cifar import cifar_dataset

        return cifar_dataset(root, split, **opts)
    from edgeml.data.vww import vww_dataset

    return vww_dataset(root, split, **opts)
