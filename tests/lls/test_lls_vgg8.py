"""lls_vgg8 is the authors' LLS_VGG8: its local-loss widths, and one training step of every mode at every input size."""

from __future__ import annotations

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
