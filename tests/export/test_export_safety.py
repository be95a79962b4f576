"""export never writes over its inputs, cleans what a killed export left, ignores stale metadata folders, and
confines every ONNX external-data location to the model's folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import export_tiny
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from robustness.harness import Guard

from edgeml.errors import InputError
from edgeml.export import export_model
from edgeml.export.onnx import check_external_data
from edgeml.export.runtime import OrtRuntime, open_runtime
from edgeml.io import save_checkpoint


def _checkpoint(path: Path, **meta: object) -> Path:
    torch.manual_seed(0)
    net = export_tiny.TinyCNN()
    save_checkpoint(path, {f"model.{k}": v for k, v in net.state_dict().items()},
                    {"model": export_tiny.IMAGE, "config": {}, **meta})
    return path


@pytest.mark.parametrize("where", ["same", "parent"])
def test_out_that_is_or_holds_the_checkpoint_is_refused_even_with_force(tmp_path: Path, where: str):
    work = tmp_path / "work"
    work.mkdir()
    ck = _checkpoint(work / "cnn.safetensors")
    out = ck if where == "same" else work
    guard = Guard(tmp_path)
    with pytest.raises(InputError, match="--out"):
        export_model(export_tiny.IMAGE, "x86-cpu", out, checkpoint=ck, force=True)
    guard.assert_untouched()


def test_out_that_holds_the_data_folder_is_refused(tmp_path: Path):
    data = tmp_path / "work" / "clips"
    data.mkdir(parents=True)
    (data / "index.json").write_text("{}")
    guard = Guard(tmp_path)
    with pytest.raises(InputError, match="holds the input"):
        export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / "work", random_init=True, data=data, force=True)
    guard.assert_untouched()


def _kill_inside_atomic_dir(out: Path) -> None:
    """A real kill -9 while an export's folder is half built (as `export_model` builds it: edgeml.io.atomic_dir)."""
    code = ("import os, signal, sys\nfrom edgeml.io import atomic_dir\n"
            "with atomic_dir(sys.argv[1], force=True) as tmp:\n"
            "    (tmp / 'model.onnx').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, timeout=120)
    assert proc.returncode == -9


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_next_export_removes_what_a_killed_export_left(tmp_path: Path):
    out = tmp_path / "art"
    _kill_inside_atomic_dir(out)
    assert [n.endswith(".tmp") for n in _hidden(out)] == [True]  # what kill -9 leaves behind
    (tmp_path / ".art.abc.old" / "art").mkdir(parents=True)  # a kill between the two renames of a --force
    (tmp_path / ".other.x.tmp").mkdir()  # another folder's temp: not ours to remove
    export_model(export_tiny.IMAGE, "x86-cpu", out, random_init=True, simplify=False)
    assert _hidden(out) == [] and (tmp_path / ".other.x.tmp").is_dir()
    assert (out / "manifest.json").is_file()


def test_export_without_data_ignores_the_folder_named_in_the_checkpoint(tmp_path: Path):
    """Without --data: random inputs, whether or not the checkpoint's recorded data folder exists here."""
    recorded = tmp_path / "old-run" / "clips"
    ck = _checkpoint(tmp_path / "cnn.safetensors", data=str(recorded))
    reports = []
    for exists in (False, True):
        if exists:
            recorded.mkdir(parents=True)
            (recorded / "stale.txt").write_text("left over from an earlier run")
        out = export_model(export_tiny.IMAGE, "x86-cpu", tmp_path / f"art-{exists}", checkpoint=ck,
                           simplify=False)
        rep = json.loads((out / "parity.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["data"] is None and "random inputs" in rep["calibration"]
        reports.append({k: rep[k] for k in ("calibration", "summary")})
    assert reports[0] == reports[1]


def _external_model(folder: Path, location: str) -> Path:
    """y = x + W with W stored as external data at `location` (relative to `folder`, or not)."""
    folder.mkdir(parents=True, exist_ok=True)
    w = helper.make_tensor("W", TensorProto.FLOAT, [4], vals=b"\0" * 16, raw=True)
    w.data_location = TensorProto.EXTERNAL
    del w.external_data[:]
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    w.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[w])
    path = folder / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    s = tmp_path / "outside" / "secret.bin"
    s.parent.mkdir()
    s.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return s


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_external_data_leaving_the_model_folder_is_refused(tmp_path: Path, secret: Path, how: str):
    art = tmp_path / "art"
    if how == "symlink":
        art.mkdir()
        (art / "weights.bin").symlink_to(secret)
    location = {"dotdot": "../outside/secret.bin", "absolute": str(secret), "symlink": "weights.bin"}[how]
    model = _external_model(art, location)
    (art / "manifest.json").write_text(json.dumps({"model": "m", "inputs": [{"name": "x"}],
                                                   "outputs": [{"name": "y"}]}))
    guard = Guard(tmp_path)
    with pytest.raises(InputError, match="external-data location of 'W'"):
        check_external_data(model)
    with pytest.raises(InputError, match="external-data location"):
        open_runtime(art, "ort")
    guard.assert_untouched()


def test_external_data_inside_the_folder_is_read(tmp_path: Path):
    art = tmp_path / "art"
    model = _external_model(art, "weights/w.bin")
    (art / "weights").mkdir()
    (art / "weights" / "w.bin").write_bytes(np.full(4, 2.0, np.float32).tobytes())
    assert check_external_data(model) == [art / "weights" / "w.bin"]
    y = OrtRuntime(model).run({"x": np.ones(4, np.float32)})[0]
    np.testing.assert_array_equal(y, np.full(4, 3.0, np.float32))


def test_a_file_that_is_not_onnx_is_an_input_error(tmp_path: Path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\xff" * 64)  # wire type 7 does not exist: never a protobuf (random bytes sometimes are)
    with pytest.raises(InputError, match="not a readable ONNX model"):
        check_external_data(bad)
