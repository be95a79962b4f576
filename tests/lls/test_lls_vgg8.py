"""lls_vgg8 is the authors' LLS_VGG8: its local-loss widths, and one training step of every mode at every input size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeml.lls.rule import MODES
from edgeml.lls.trainer import LocalLearner
from edgeml.registry import create_model

# LLS_VGG8 (the authors' models/vgg.py): pooling_size 4, 2, 2, 2, 2, 2 on conv blocks of 128, 256, 256, 256, 512,
# 512 channels, so the local losses see 128·4², 256·2², 256·2², 256·2², 512·2², 512·2² features; the FC block
# (2048 -> 1024) uses all 1024 units.
AUTHORS_WIDTHS = [2048, 1024, 1024, 1024, 2048, 2048, 1024]


def test_local_loss_widths_are_the_authors():
    model = create_model("lls_vgg8")
    assert [b.feature_dim for b in model.blocks] == AUTHORS_WIDTHS
    assert [b.rule.pool for b in model.blocks] == [4, 2, 2, 2, 2, 2, None]
    assert model.classifier.in_features == 1024


# every mode at the Fashion-MNIST and CIFAR sizes; at VWW's 128 px (4.8 GMACs per image in conv 2) the local rule
# only, the rest is the same code at another size
CASES = [(mode, 1, 28) for mode in MODES] + [(mode, 3, 32) for mode in MODES] + [("lls", 3, 128)]


@pytest.mark.parametrize("mode,channels,size", CASES)
def test_one_step_of_every_mode_changes_the_trained_weights(mode, channels, size):
    torch.manual_seed(0)
    model = create_model("lls_vgg8", mode=mode, in_channels=channels, image_size=size, num_classes=2)
    images, labels = torch.rand(2, channels, size, size), torch.tensor([0, 1])
    before = [p.detach().clone() for p in model.parameters()]
    if mode == "bp":
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    else:
        stats = LocalLearner(model, mode=mode, lr=1e-2, epochs=1, steps_per_epoch=1).train_step([images], labels)
        assert len([k for k in stats if k.startswith("local_loss_")]) == len(AUTHORS_WIDTHS)
    changed = [not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(changed[: 2]) and sum(changed) >= len(AUTHORS_WIDTHS)  # every block's conv/linear moved
    assert model(images).shape == (2, 2)


def test_vww_fixture_trains_lls_vgg8_at_128px_and_the_engine_finetunes_it(tmp_path, capsys):
    """The paper's VWW setting end to end on the COCO-layout fixture: `edgeml train` one epoch of LLS_VGG8 at 128 px,
    then `edgeml finetune` writes a pack from the checkpoint and steps its last blocks in the C++ engine (its parity
    with the PyTorch step is tests/lls_engine/test_lls_engine_parity.py's vgg8 cases)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from test_data_vww import _fixture  # the COCO-layout VWW fixture: 7 images, person / no person

    from edgeml.cli import main
    from edgeml.lls.pack import read_pack

    data = _fixture(tmp_path / "vww")
    run = tmp_path / "run"
    assert main(["train", "--model", "lls_vgg8", "--mode", "lls", "--data", str(data), "--out", str(run),
                 "--set", "image_size=128", "--set", "num_classes=2", "--epochs", "1", "--batch-size", "4",
                 "--threads", "1", "--no-augment", "--no-progress", "--json"]) == 0
    out = capsys.readouterr().out
    trained = json.loads(out[out.index("\n{") + 1:])  # after the per-epoch log lines
    assert trained["epochs_done"] == 1 and 0.0 <= trained["test"]["top1"] <= 1.0
    assert main(["finetune", "--model", "lls_vgg8", "--checkpoint", str(run / "best.safetensors"),
                 "--pack", str(tmp_path / "vgg8.pack"), "--data", str(data), "--out", str(tmp_path / "tuned.pack"),
                 "--blocks", "last:2", "--batch", "4", "--limit", "4", "--eval-limit", "2", "--threads", "1",
                 "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["trainable_blocks"] == [6, 7] and tuned["steps"] == 1 and tuned["train_samples"] == 4
    assert np.isfinite(tuned["loss_first"]) and np.isfinite(tuned["loss_last"])
    header = read_pack(tmp_path / "tuned.pack").header
    assert header["model"] == "lls_vgg8" and header["input"]["shape"] == [3, 128, 128]
    before, after = read_pack(tmp_path / "vgg8.pack"), read_pack(tmp_path / "tuned.pack")
    assert not np.array_equal(before.float_tensor("classifier.weight"), after.float_tensor("classifier.weight"))
    assert np.array_equal(before.float_tensor("blocks.0.block.0.weight"), after.float_tensor("blocks.0.block.0.weight"))
