"""The skeleton: CLI, errors, atomic IO, checkpoints, registry."""

from __future__ import annotations

import json
import os

import pytest
import torch

from edgeml import cli
from edgeml.errors import CheckpointError, EdgeMLError, InputError, MissingDependencyError
from edgeml.io import atomic_dir, atomic_write, load_checkpoint, save_checkpoint, write_json
from edgeml.registry import create_model, list_models, model_spec


def test_info_json_reports_every_field(capsys):
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["compiled_core"]["present"] is True
    assert isinstance(info["compiled_core"]["cuda_built"], bool)
    assert set(info["packages"]) == {"torch", "onnx", "onnxruntime", "av", "tvm", "tensorrt"}
    assert info["packages"]["torch"].startswith("2.")
    assert isinstance(info["power_sensors"], list)
    assert info["cpu_count"] == os.cpu_count()


def test_every_verb_has_useful_help(capsys):
    parser = cli.build_parser()
    verbs = parser._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    assert "info" in verbs
    for name, sub in verbs.items():
        text = sub.format_help()
        assert sub.description and len(sub.description) > 20, f"`edgeml {name} --help` lacks a description"
        assert "usage:" in text


def test_cli_prints_edgeml_errors_on_one_line_and_exits_2(capsys, monkeypatch):
    def boom(args):
        raise InputError("no such video", path="x.mp4", fix="check the path")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(func=boom)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "edgeml: error: x.mp4: no such video. check the path"
    assert "Traceback" not in err


def test_missing_dependency_error_names_the_extra():
    msg = str(MissingDependencyError("apache-tvm", extra="tvm", purpose="the TVM backend"))
    assert "pip install 'edgeml[tvm]'" in msg and "apache-tvm" in msg


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_dir_needs_force_and_replaces_whole(tmp_path):
    out = tmp_path / "art"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(InputError, match="--force"), atomic_dir(out):
        pass
    with pytest.raises(ValueError), atomic_dir(out, force=True) as d:
        (d / "b.txt").write_text("2")
        raise ValueError("export failed")
    assert sorted(os.listdir(out)) == ["a.txt"]
    with atomic_dir(out, force=True) as d:
        (d / "b.txt").write_text("2")
    assert sorted(os.listdir(out)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["art"]


def test_checkpoint_round_trip_keeps_meta(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"model.w": torch.arange(6.0).reshape(2, 3)}, {"model": "m", "epoch": 3})
    tensors, meta = load_checkpoint(path, expect_model="m")
    assert meta == {"model": "m", "epoch": 3}
    assert torch.equal(tensors["model.w"], torch.arange(6.0).reshape(2, 3))


def test_corrupt_or_foreign_checkpoints_are_clear_errors(tmp_path):
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"model.w": torch.ones(100)}, {"model": "m"})
    with pytest.raises(CheckpointError, match="not 'other'"):
        load_checkpoint(path, expect_model="other")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_write_json_is_readable(tmp_path):
    write_json(tmp_path / "x.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": [1, 2]}


def test_unknown_model_lists_valid_ones():
    with pytest.raises(EdgeMLError, match="unknown model 'nope'"):
        model_spec("nope")
    with pytest.raises(EdgeMLError, match="unknown model"):
        create_model("nope")
    assert list_models() == sorted(list_models())
