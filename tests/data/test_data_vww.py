"""Visual Wake Words: the standard person rule on a generated COCO-format fixture, images at 96 / 128."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeml.data import open_image_dataset
from edgeml.data.vww import person_labels
from edgeml.errors import DataError

W, H = 200, 100  # image area 20,000 px: the 0.5% threshold is 100 px


def _coco() -> dict:
    images = [{"id": i, "width": W, "height": H, "file_name": f"img{i}.jpg"} for i in range(1, 8)]
    person, dog = 1, 18

    def ann(aid, image, cat, area, bbox=(0, 0, 10, 10), crowd=0):
        return {"id": aid, "image_id": image, "category_id": cat, "area": area, "bbox": list(bbox), "iscrowd": crowd}

    annotations = [
        ann(1, 1, person, 101.0),                       # just above 0.5% -> person
        ann(2, 2, person, 99.0),                        # just below -> no person
        ann(3, 3, person, 100.0),                       # exactly 0.5%: the rule is strictly greater -> no person
        ann(4, 4, person, 5000.0, crowd=1),             # crowd annotation above the threshold -> person
        ann(5, 5, dog, 9000.0),                         # big non-person object -> no person
        ann(6, 6, person, 50.0, bbox=(0, 0, 20, 20)),   # mask area below, box area (400) above
        ann(7, 6, dog, 20.0),
        # image 7 has no annotations at all -> no person
    ]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": person, "name": "person"}, {"id": dog, "name": "dog"}]}


def test_standard_rule_on_fixture():
    labels = person_labels(_coco())
    assert labels == {1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 0, 7: 0}


def test_box_area_variant():
    assert person_labels(_coco(), area="bbox")[6] == 1


def test_annotation_for_unknown_image_is_an_error():
    coco = _coco()
    coco["annotations"].append({"id": 99, "image_id": 42, "category_id": 1, "area": 1.0, "bbox": [0, 0, 1, 1]})
    with pytest.raises(DataError, match="unknown image 42"):
        person_labels(coco)


def _fixture(root: Path) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    coco = _coco()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    rng = np.random.default_rng(0)
    for img in coco["images"]:
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "images" / img["file_name"])
    return root


@pytest.mark.parametrize("size", [96, 128])
def test_dataset_reads_images_at_size(tmp_path, size):
    ds = open_image_dataset(_fixture(tmp_path / "vww"), "val", size=size)
    assert len(ds) == 7 and ds.classes == ["no person", "person"] and ds.meta["image_size"] == size
    item = ds[0]
    assert item["image"].shape == (3, size, size) and 0.0 <= item["image"].min() <= item["image"].max() <= 1.0
    assert [ds[i]["label"].item() for i in range(7)] == [1, 0, 0, 1, 0, 0, 0]


def test_missing_image_is_a_clear_error(tmp_path):
    root = _fixture(tmp_path / "vww")
    (root / "images" / "img2.jpg").unlink()
    with pytest.raises(DataError, match="img2.jpg"):
        open_image_dataset(root, "train")[1]


def test_missing_split_annotations(tmp_path):
    root = _fixture(tmp_path / "vww")
    with pytest.raises(DataError, match="no annotation file for split 'test'"):
        (root / "annotations" / "instances_val.json").unlink()
        open_image_dataset(root, "test")


def _learnable_fixture(root: Path, n: int = 8) -> Path:
    """Odd ids hold a big person (label 1) and are bright; even ids are dark with no annotation (label 0)."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    images = [{"id": i, "width": W, "height": H, "file_name": f"img{i}.png"} for i in range(n)]
    people = [{"id": i, "image_id": i, "category_id": 1, "area": 5000.0, "bbox": [0, 0, 100, 50]}
              for i in range(1, n, 2)]
    coco = {"images": images, "annotations": people, "categories": [{"id": 1, "name": "person"}]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(coco))
    rng = np.random.default_rng(0)
    for img in images:
        base = 170 if img["id"] % 2 else 40
        pixels = (base + rng.integers(0, 60, (H, W, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / img["file_name"])
    return root


def test_vww_batches_train_every_block_of_the_mobilenet_locally(tmp_path):
    import torch
    from torch.utils.data import DataLoader

    from edgeml.lls.trainer import LocalLearner
    from edgeml.registry import create_model

    ds = open_image_dataset(_learnable_fixture(tmp_path / "vww"), "train", size=96, augment=False)
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["label"].tolist() == [0, 1] * 4
    torch.set_num_threads(1)  # restored by the autouse fixture; many threads only contend on a shared CPU
    torch.manual_seed(0)
    model = create_model("lls_vww", mode="lls", image_size=96)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}  # not buffers: BN stats move anyway
    learner = LocalLearner(model, mode="lls", lr=5e-3, epochs=1, steps_per_epoch=8)
    steps = [learner.train_step([batch["image"]], batch["label"]) for _ in range(8)]
    assert len([k for k in steps[0] if k.startswith("local_loss_")]) == 14
    # the first block learns from its own local loss alone: a large, steady drop
    assert steps[-1]["local_loss_0"] < 0.25 * steps[0]["local_loss_0"]
    after = dict(model.named_parameters())
    moved = {k.split(".")[1] for k in before if k.startswith("blocks.") and not torch.equal(before[k], after[k])}
    assert moved == {str(i) for i in range(14)}  # every block stepped its own optimizer
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])


def _with_images(root: Path, mutate) -> Path:
    coco = _coco()
    mutate(coco)
    (root / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    return root


@pytest.mark.parametrize("name", ["../../outside/secret.jpg", "/abs/secret.jpg", "link/secret.jpg"])
def test_image_file_names_cannot_leave_the_images_folder(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(outside / "secret.jpg")
    root = _fixture(tmp_path / "work" / "vww")
    (root / "images" / "link").symlink_to(outside, target_is_directory=True)
    _with_images(root, lambda c: c["images"][0].update(file_name=name.replace("/abs", str(outside))))
    with pytest.raises(DataError, match="file_name"):
        open_image_dataset(root, "val")  # refused when the annotations are read, before any image is opened


@pytest.mark.parametrize("mutate, problem", [
    (lambda c: c["images"][0].update(width=0), "empty size"),  # was a ZeroDivisionError
    (lambda c: c["images"][0].pop("file_name"), "no file_name"),
    (lambda c: c["images"][0].update(file_name=5), "no file_name"),
    (lambda c: c["images"][1].update(id=1), "appears twice"),
    (lambda c: c["annotations"][0].update(area="abc"), "area must be a finite number"),
    (lambda c: c["annotations"][0].update(area=float("nan")), "area must be a finite number"),
    (lambda c: c.update(images=5), "'images' must be a list"),
])
def test_malformed_annotations_are_a_clear_error(tmp_path, mutate, problem):
    root = _with_images(_fixture(tmp_path / "vww"), mutate)
    with pytest.raises(DataError, match=problem):
        open_image_dataset(root, "val")
