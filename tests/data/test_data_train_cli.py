"""`edgeml train --model lls_smallconv --mode lls --data <IDX folder>` through the shared loop and CLI."""

from __future__ import annotations

import json

from idx_fixture import make_idx_folder

from edgeml.cli import main
from edgeml.io import load_checkpoint


def test_edgeml_train_lls_mode_on_an_idx_folder(tmp_path, capsys):
    data = make_idx_folder(tmp_path / "fmnist", n_train=16, n_test=8)
    out = tmp_path / "run"
    code = main(["train", "--model", "lls_smallconv", "--mode", "lls_m", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--lr", "5e-3", "--threads", "1", "--no-progress", "--json"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(printed[printed.index("{\n"):])  # the per-epoch summary lines come first
    assert result["epochs_done"] == 1 and "test" in result
    tensors, meta = load_checkpoint(out / "last.safetensors", expect_model="lls_smallconv")
    assert meta["config"]["mode"] == "lls_m" and tensors["model.blocks.3.head"].shape == (10,)
    assert meta["data"]["name"] == "fmnist" and meta["data"]["kind"] == "image set"
    assert len(meta["data"]["sha256"]) == 64 and meta["data"]["settings"]["image_size"] == 28
    assert str(tmp_path) not in json.dumps(meta)  # provenance is portable: no path of this machine
    assert (out / "metrics.jsonl").is_file()


def test_edgeml_train_missing_dataset_is_one_line_error(tmp_path, capsys):
    code = main(["train", "--model", "lls_smallconv", "--mode", "lls", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"])
    assert code == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_edgeml_train_sizes_the_model_from_the_image_set(tmp_path, capsys):
    from test_data_cifar import make_cifar10

    data = make_cifar10(tmp_path / "cifar-10-batches-py", n=4)  # 3 x 32 x 32, 10 classes; SmallConv's default: 1 x 28
    out = tmp_path / "run"
    code = main(["train", "--model", "lls_smallconv", "--mode", "lls", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--no-augment"])
    assert code == 0, capsys.readouterr().err
    _, meta = load_checkpoint(out / "last.safetensors", expect_model="lls_smallconv")
    assert (meta["config"]["in_channels"], meta["config"]["image_size"], meta["config"]["num_classes"]) == (3, 32, 10)
