"""Mirror augmentation for clip caches: label swaps from mirror.json, exact mirrored tensors, bad files."""

from __future__ import annotations

import shutil

import pytest
import torch

from edgeml.errors import DataError
from edgeml.video.synth import CLASSES


def test_the_synth_mirror_swaps_reach_the_cache_as_label_permutations(clip_cache):
    from edgeml.video.datasets import ClipDataset

    mirror = ClipDataset(clip_cache, "train").meta["mirror"]
    named = {axis: {CLASSES[i]: CLASSES[j] for i, j in enumerate(perm) if i != j} for axis, perm in mirror.items()}
    assert named == {"horizontal": {"left": "right", "right": "left", "rotate_cw": "rotate_ccw",
                                    "rotate_ccw": "rotate_cw"},
                     "vertical": {"up": "down", "down": "up", "rotate_cw": "rotate_ccw", "rotate_ccw": "rotate_cw"}}


@pytest.mark.parametrize(("axis", "dim", "channel"), [("horizontal", -1, 0), ("vertical", -2, 1)])
def test_a_mirrored_clip_flips_pixels_and_cells_and_negates_one_vector_component(clip_cache, axis, dim, channel):
    from edgeml.video.datasets import ClipDataset, mirror_clip

    ds = ClipDataset(clip_cache, "train")
    item = ds[0]
    perm = ds.meta["mirror"][axis]
    out = mirror_clip(item, axis, perm)
    for k in ("iframe", "residual", "frames"):
        assert torch.equal(out[k], item[k].flip(dim))
    assert torch.equal(out["mv"][:, channel], -item["mv"][:, channel].flip(dim))
    assert torch.equal(out["mv"][:, 1 - channel], item["mv"][:, 1 - channel].flip(dim))
    assert int(out["label"]) == perm[int(item["label"])]
    back = mirror_clip(out, axis, perm)  # a mirror is its own inverse
    assert all(torch.equal(back[k], item[k]) for k in item)


def test_a_leftward_clip_mirrored_looks_like_a_rightward_one(clip_cache):
    from edgeml.video.datasets import ClipDataset, mirror_clip

    ds = ClipDataset(clip_cache, "train")
    i = next(i for i in range(len(ds)) if ds.classes[int(ds[i]["label"])] == "left")
    item = ds[i]
    moving = item["mv"][-1].norm(dim=0) > 1  # cells of the moving shape at the last step
    assert item["mv"][-1, 0][moving].mean() < 0  # the shape moves left: its vectors (dst - src) point left
    out = mirror_clip(item, "horizontal", ds.meta["mirror"]["horizontal"])
    assert ds.classes[int(out["label"])] == "right"
    assert out["mv"][-1, 0][moving.flip(-1)].mean() > 0


def test_augmented_items_are_the_original_or_one_of_its_mirrors(clip_cache):
    from edgeml.video.datasets import ClipDataset, mirror_clip

    plain, aug = ClipDataset(clip_cache, "train"), ClipDataset(clip_cache, "train", augment=True)
    item, (h, v) = plain[0], (plain.meta["mirror"][a] for a in ("horizontal", "vertical"))
    variants = [item, mirror_clip(item, "horizontal", h), mirror_clip(item, "vertical", v),
                mirror_clip(mirror_clip(item, "horizontal", h), "vertical", v)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(24):
        got = aug[0]
        match = [j for j, var in enumerate(variants) if all(torch.equal(got[k], var[k]) for k in var)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {0, 1, 2, 3}


def test_a_cache_without_mirror_json_is_never_mirrored(synth_dir, tmp_path):
    from edgeml.video.datasets import ClipDataset, build_clip_cache

    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    (src / "mirror.json").unlink()
    cache = build_clip_cache(src, tmp_path / "cache", clip_len=8, grid=4, size=(64, 64), workers=1, progress=False)
    plain, aug = ClipDataset(cache, "train"), ClipDataset(cache, "train", augment=True)
    assert aug.meta["mirror"] == {}
    assert all(torch.equal(aug[0][k], plain[0][k]) for _ in range(8) for k in plain[0])


@pytest.mark.parametrize("content", ['{"horizontal": {"left": "sideways"}}', '{"diagonal": {}}', "[1, 2]", "{oops"])
def test_a_bad_mirror_json_is_a_clear_error_before_anything_is_built(synth_dir, tmp_path, content):
    from edgeml.video.datasets import build_clip_cache

    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    (src / "mirror.json").write_text(content)
    with pytest.raises(DataError, match="mirror.json"):
        build_clip_cache(src, tmp_path / "cache", clip_len=8, grid=4, size=(64, 64), workers=1, progress=False)
    assert not (tmp_path / "cache").exists()
    assert (src / "mirror.json").read_text() == content  # the input is left as it was
