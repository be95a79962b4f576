"""`edgeml finetune`: fine-tunes a pack on an IDX folder, reports accuracy before/after, step latency and memory,
and writes the output pack without touching the input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeml.cli import main
from edgeml.errors import InputError
from edgeml.io import sha256_file
from edgeml.lls.device import finetune, write_idx_folder
from edgeml.lls.pack import read_pack, write_pack
from edgeml.registry import create_model


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls_mxm").eval()
    pack = write_pack(tmp_path / "in.pack", model, model_name="lls_smallconv")
    rng = np.random.default_rng(0)
    # A learnable device task: the label is written into the image as a bright stripe.
    labels = rng.integers(0, 10, 96)
    images = rng.integers(0, 60, (96, 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, :, 2 * y + 4: 2 * y + 7] = 250
    write_idx_folder(tmp_path / "data", images[:64], labels[:64])
    write_idx_folder(tmp_path / "data", images[64:], labels[64:], "t10k")
    return pack, tmp_path / "data"


def test_finetune_verb_reports_and_writes_a_new_pack(setup, tmp_path, capsys):
    pack, data = setup
    digest = sha256_file(pack)
    code = main(["finetune", "--model", "lls_smallconv", "--pack", str(pack), "--data", str(data), "--out",
                 str(tmp_path / "out.pack"), "--blocks", "last:2", "--epochs", "3", "--batch", "16", "--lr", "0.01",
                 "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 12 and result["trainable_blocks"] == [3, 4]
    assert result["accuracy_after"] > result["accuracy_before"]
    assert result["step_ms_mean"] > 0 and result["peak_rss_mb"] > 0 and result["arena_bytes"] > 0
    assert sha256_file(pack) == digest
    assert read_pack(tmp_path / "out.pack").trainable_blocks == [3, 4]


def test_finetune_refuses_a_pack_of_another_model(setup, tmp_path):
    pack, data = setup
    with pytest.raises(InputError, match="not 'lls_vww'"):
        finetune(pack, data, tmp_path / "o.pack", model="lls_vww", progress=False)


def test_finetune_refuses_data_of_another_shape(setup, tmp_path):
    pack, _ = setup
    write_idx_folder(tmp_path / "big", np.zeros((8, 32, 32), np.uint8), np.zeros(8))
    write_idx_folder(tmp_path / "big", np.zeros((8, 32, 32), np.uint8), np.zeros(8), "t10k")
    with pytest.raises(InputError, match="the pack expects"):
        finetune(pack, tmp_path / "big", tmp_path / "o.pack", progress=False)
    assert not (tmp_path / "o.pack").exists()
