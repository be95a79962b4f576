"""LLS nets through the shared training loop (`edgeml.training.loop.train`): checkpoints with local heads, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeml.data.idx import ArrayImageDataset
from edgeml.io import load_checkpoint
from edgeml.registry import create_model
from edgeml.training.loop import train


def _data(n: int = 32) -> dict[str, ArrayImageDataset]:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 2
    images = rng.integers(0, 80, (n, 1, 16, 16), dtype=np.uint8)
    images[labels == 0, :, :, :8] += 170
    images[labels == 1, :, :, 8:] += 170
    ds = ArrayImageDataset(images, labels, ["left", "right"])
    return {"train": ds, "val": ds, "test": ds}


@pytest.mark.parametrize("mode", ["lls_mxm"])
def test_train_loop_checkpoints_local_heads_and_resumes(tmp_path, mode):
    torch.manual_seed(0)
    model = create_model("lls_smallconv", num_classes=2, image_size=16)
    result = train(model, _data(), tmp_path, epochs=1, batch_size=8, lr=5e-3, mode=mode, progress=False)
    assert result["epochs_done"] == 1 and "test" in result
    tensors, meta = load_checkpoint(tmp_path / "last.safetensors", expect_model="lls_smallconv")
    assert meta["config"]["mode"] == mode
    assert any(k.startswith("learner.opt4.") for k in tensors), "per-block optimizer state is checkpointed"
    if mode == "lls_mxm":
        assert tensors["model.blocks.0.head"].shape == (2, 2)
    rebuilt = create_model("lls_smallconv", checkpoint=tmp_path / "best.safetensors")
    assert rebuilt.mode == mode

    again = create_model("lls_smallconv", num_classes=2, image_size=16)
    resumed = train(again, _data(), tmp_path, epochs=2, batch_size=8, lr=5e-3, mode=mode, resume=True,
                    progress=False)
    assert resumed["epochs_done"] == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "epoch" in x] == [1, 2]
    assert lines[-1]["test"]["top1"] > 0.9
