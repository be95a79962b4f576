"""`edgeml export` verb: --list-targets, one-line errors with exit code 2, an artefact from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import export_tiny
import pytest

from edgeml.cli import main


def test_list_targets_shows_every_profile_and_the_alias(capsys: pytest.CaptureFixture):
    assert main(["export", "--list-targets"]) == 0
    out = capsys.readouterr().out
    for name in ("jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "x86-cpu", "x86-tvm", "rpi4", "cuda-gpu"):
        assert name in out
    assert "jetson" in out and "tensorrt" in out and "tvm" in out


@pytest.mark.parametrize("argv, words", [
    (["--model", "nope", "--target", "x86-cpu"], ["unknown model 'nope'", "choose one of"]),
    (["--model", export_tiny.IMAGE, "--target", "nope"], ["unknown target 'nope'", "x86-tvm", "jetson (="]),
    (["--target", "x86-cpu"], ["--model is required"]),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, argv, words):
    assert main(["export", *argv, "--out", str(tmp_path / "o"), "--random-init"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words)
    assert not (tmp_path / "o").exists()


def test_export_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "cli"
    assert main(["export", "--model", export_tiny.IMAGE, "--target", "x86-cpu", "--out", str(out),
                 "--random-init", "--opset", "16"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["opset"] == 16 and m["weights"]["source"] == "random-init"
    assert "parity ort_fp32" in capsys.readouterr().out
    assert main(["export", "--model", export_tiny.IMAGE, "--target", "x86-cpu", "--out", str(out),
                 "--random-init"]) == 2
    assert "--force" in capsys.readouterr().err


def test_export_takes_model_options_like_train(tmp_path: Path):
    out = tmp_path / "set"
    assert main(["export", "--model", export_tiny.IMAGE, "--target", "x86-cpu", "--out", str(out), "--random-init",
                 "--set", "image_size=20", "--set", "num_classes=3"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["image_size"] == 20 and m["outputs"][0]["shape"] == [1, 3]


@pytest.mark.parametrize("item, words", [
    ("image_sise=20", ["unknown --set key 'image_sise'", "valid keys:"]),
    ("image_size=big", ["--set key 'image_size'", "must be int"]),
    ("image_size", ["--set 'image_size' is not KEY=VALUE"]),
    ("image_size=NaN", ["expected a finite number"]),
])
def test_bad_model_options_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, item, words):
    assert main(["export", "--model", export_tiny.IMAGE, "--out", str(tmp_path / "o"), "--random-init",
                 "--set", item]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "o").exists()
