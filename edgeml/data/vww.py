"""Visual Wake Words: person / no-person labels from COCO-format annotations, images read at 96 or 128.

The standard rule (Chowdhery et al. 2019; TF-slim `build_visualwakewords_data_lib.py`, pyvww): an image is
"person" (1) when at least one annotation of the person category has `area / (image width x height)` STRICTLY
above 0.005; crowd annotations count like any other; an image without annotations is "no person" (0).
COCO's `area` field is the object's mask area — `area="bbox"` uses the box `w x h` instead.
"""

from __future__ import annotations

import json
import math
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeml.errors import DataError, InputError
from edgeml.paths import confined

THRESHOLD = 0.005
CLASSES = ["no person", "person"]


def _number(value: Any, what: str) -> float:
    """A finite number >= 0 from the annotations (bools and strings are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DataError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _area(annotation: dict[str, Any], source: str) -> float:
    if source == "bbox":
        box = annotation["bbox"]
        if not isinstance(box, list) or len(box) != 4:
            raise DataError(f"annotation {annotation.get('id')}: bbox must be [x, y, w, h], got {box!r}")
        return _number(box[2], "bbox width") * _number(box[3], "bbox height")
    return _number(annotation["area"], f"annotation {annotation.get('id')} area")


def _image_areas(coco: dict[str, Any]) -> dict[int, float]:
    """{image id: width x height} of the `images` list; ids unique, sizes positive."""
    images = coco["images"]
    if not isinstance(images, list):
        raise DataError("'images' must be a list")
    areas: dict[int, float] = {}
    for img in images:
        image_id = img["id"]
        if image_id in areas:
            raise DataError(f"image id {image_id!r} appears twice")
        areas[image_id] = _number(img["width"], "image width") * _number(img["height"], "image height")
        if areas[image_id] <= 0:
            raise DataError(f"image {image_id!r} has an empty size {img['width']}x{img['height']}")
    return areas


def person_labels(coco: dict[str, Any], *, threshold: float = THRESHOLD, category: str = "person",
                  area: str = "area") -> dict[int, int]:
    """{image id: 1 if a `category` object covers more than `threshold` of the image, else 0} for every image."""
    if area not in ("area", "bbox"):
        raise ValueError(f"area must be 'area' or 'bbox', got {area!r}")
    try:
        ids = {c["id"] for c in coco.get("categories", []) if c["name"] == category}
        if not ids:
            raise DataError(f"no category named {category!r} in the annotations",
                            fix="pass COCO instances annotations (they define the person category)")
        images = _image_areas(coco)
        labels = dict.fromkeys(images, 0)
        for ann in coco.get("annotations", []):
            image_id = ann["image_id"]
            if image_id not in images:
                raise DataError(f"annotation {ann.get('id')} refers to unknown image {image_id}")
            if ann["category_id"] in ids and _area(ann, area) / images[image_id] > threshold:
                labels[image_id] = 1
    except (KeyError, TypeError) as e:
        raise DataError(f"malformed COCO annotations (missing or bad field {e})") from None
    return labels


def _annotation_file(root: Path, split: str) -> Path:
    names = {"train": ["train"], "val": ["val", "minival"], "test": ["test", "minival", "val"]}[split]
    for name in names:
        for folder in (root, root / "annotations"):
            found = sorted(folder.glob(f"instances_{name}*.json")) + sorted(folder.glob(f"{name}*.json"))
            if found:
                return found[0]
    raise DataError(f"no annotation file for split {split!r}", path=root,
                    fix="expected instances_<split>*.json or <split>*.json (COCO format) in the folder "
                        "or its annotations/ subfolder")


def _file_name(image: dict[str, Any]) -> str:
    name = image.get("file_name")
    if not isinstance(name, str):
        raise DataError(f"image {image.get('id')!r} has no file_name string (got {name!r})")
    return name


class VWWDataset(Dataset):
    """COCO-format VWW split; item = {"image": float32 [3, size, size] in [0, 1], "label": int64 (1 = person)}."""

    def __init__(self, annotations: str | PathLike, images_dir: str | PathLike, *, size: int = 128,
                 augment: bool = False, threshold: float = THRESHOLD, area: str = "area"):
        self.annotations = Path(annotations)
        try:
            coco = json.loads(self.annotations.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read COCO annotations ({e})", path=self.annotations) from None
        if not isinstance(coco, dict):
            raise DataError("COCO annotations must be a JSON object", path=self.annotations)
        try:
            labels = person_labels(coco, threshold=threshold, area=area)
        except DataError as e:
            raise DataError(e.problem, path=self.annotations, fix=e.fix) from None
        self.images_dir = Path(images_dir)
        try:  # file names come from the annotations: they must stay inside the images folder
            self.items = [(confined(self.images_dir, _file_name(img), what="image file_name"), labels[img["id"]])
                          for img in coco["images"]]
        except InputError as e:
            raise DataError(e.problem, path=self.annotations, fix=e.fix) from None
        self.size, self.augment = size, augment
        self.classes = list(CLASSES)
        self.meta = {"in_channels": 3, "image_size": size, "num_classes": 2, "source": str(self.annotations)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.items[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image ({e})", path=path) from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        if self.augment and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return {"image": image, "label": torch.tensor(label, dtype=torch.int64)}


def vww_dataset(root: str | PathLike, split: str, *, size: int = 128, annotations: str | PathLike | None = None,
                images: str | PathLike | None = None, augment: bool | None = None, **rule: Any) -> VWWDataset:
    """VWW split at `root`: annotations found by split name, images in `images`, root/images, root/<split> or root."""
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}", fix="use train, val or test")
    root = Path(root)
    ann = Path(annotations) if annotations else _annotation_file(root, split)
    if images is None:
        images = next((d for d in (root / "images", root / split) if d.is_dir()), root)
    augment = split == "train" if augment is None else augment
    return VWWDataset(ann, images, size=size, augment=augment, **rule)
