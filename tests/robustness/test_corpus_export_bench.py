"""`edgeml export`, `bench`, `report`, `demo` and `info` against a generated corpus of bad inputs: each case exits
2 with one stderr line, no traceback or signal, before any long work; every input (checkpoints, artefacts, results
files, sentinels outside the working folder) stays byte-identical and nothing is written.

Inputs are made here (a checkpoint, an artefact folder with a hostile ONNX, results files); nothing committed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from onnx import TensorProto, helper

from edgeml.io import save_checkpoint

from .harness import Guard, assert_clean_error, run_cli

MODEL = "lls_smallconv"


def _hostile_onnx(path: Path, location: str) -> None:
    """y = x + W, W stored as external data at `location`."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [4], vals=b"\0" * 16, raw=True)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[w])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """tmp_path/work/{ck.safetensors, other.safetensors, junk.safetensors, art/, bad-art/, results...} and
    tmp_path/outside/secret.bin (a sentinel that a hostile ONNX points at)."""
    w = tmp_path / "work"
    w.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(b"\1" * 16)
    save_checkpoint(w / "ck.safetensors", {"model.x": torch.zeros(2)}, {"model": MODEL, "config": {}})
    save_checkpoint(w / "other.safetensors", {"model.x": torch.zeros(2)}, {"model": "x3d_s", "config": {}})
    (w / "junk.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{not json at all" + b"\0" * 32)
    (w / "data").mkdir()
    (w / "data" / "index.json").write_text("{}")
    manifest = {"format": "edgeml-export", "model": MODEL, "inputs": [{"name": "x"}], "outputs": [{"name": "y"}]}
    for name, location in (("art", "weights.bin"), ("bad-art", "../../outside/secret.bin")):
        (w / name).mkdir()
        (w / name / "manifest.json").write_text(json.dumps(manifest))
        _hostile_onnx(w / name / "model.onnx", location)
    (w / "art" / "weights.bin").write_bytes(b"\0" * 16)
    (w / "not-json.json").write_text("{ this is not json")
    (w / "other-schema.json").write_text(json.dumps({"schema": "something.else", "schema_version": 1}))
    (w / "no-parts.json").write_text(json.dumps({"schema": "edgeml.bench", "schema_version": 1, "input": "random"}))
    (w / "a-file").write_text("x")
    (w / "rep").mkdir()
    (w / "rep" / "report.md").write_text(json.dumps({"schema": "edgeml.bench"}))
    (w / "bad-type.toml").write_text('backend = "onnxruntime"\nopset = "17"\n')
    (w / "unknown-key.toml").write_text('backend = "onnxruntime"\nopset = 17\nfast = true\n')
    return w


def _check(root: Path, argv: list[str], contains: str) -> None:
    guard = Guard(root)
    assert_clean_error(run_cli(argv), contains=contains)
    guard.assert_untouched()


EXPORT = ["export", "--model", MODEL, "--target", "x86-cpu"]
EXPORT_CASES = {
    "calib-zero": (["--calib-samples", "0", "--out", "{w}/o"], "--calib-samples"),
    "calib-negative": (["--calib-samples", "-3", "--out", "{w}/o"], "--calib-samples"),
    "parity-nan": (["--parity-samples", "nan", "--out", "{w}/o"], "--parity-samples"),
    "tune-negative": (["--tune-trials", "-1", "--out", "{w}/o"], "--tune-trials"),
    "opset-zero": (["--opset", "0", "--out", "{w}/o"], "--opset"),
    "opset-too-new": (["--opset", "99", "--random-init", "--out", "{w}/o"], "opset 99"),
    "unknown-target": (["--target", "jetsn", "--random-init", "--out", "{w}/o"], "unknown target"),
    "target-bad-type": (["--target", "{w}/bad-type.toml", "--random-init", "--out", "{w}/o"], "key 'opset'"),
    "target-unknown-key": (["--target", "{w}/unknown-key.toml", "--random-init", "--out", "{w}/o"], "'fast'"),
    "unknown-model": (["--model", "nope", "--random-init", "--out", "{w}/o"], "unknown model"),
    "out-is-checkpoint": (["--checkpoint", "{w}/ck.safetensors", "--out", "{w}/ck.safetensors", "--force"],
                          "--out"),
    "out-holds-checkpoint": (["--checkpoint", "{w}/ck.safetensors", "--out", "{w}", "--force"], "holds the input"),
    "out-holds-data": (["--random-init", "--data", "{w}/data", "--out", "{w}", "--force"], "holds the input"),
    "out-exists": (["--random-init", "--out", "{w}/art"], "--force"),
    "out-is-a-file": (["--random-init", "--out", "{w}/a-file", "--force"], "not a folder"),
    "checkpoint-missing": (["--checkpoint", "{w}/nope.safetensors", "--out", "{w}/o"], "checkpoint not found"),
    "checkpoint-is-folder": (["--checkpoint", "{w}/data", "--out", "{w}/o"], "checkpoint not found"),
    "checkpoint-junk": (["--checkpoint", "{w}/junk.safetensors", "--out", "{w}/o"], "checkpoint"),
    "checkpoint-not-checkpoint": (["--checkpoint", "{w}/a-file", "--out", "{w}/o"], "checkpoint"),
    "checkpoint-other-model": (["--checkpoint", "{w}/other.safetensors", "--out", "{w}/o"], "not 'lls_smallconv'"),
}


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_export_bad_input(work: Path, case: str):
    argv, contains = EXPORT_CASES[case]
    _check(work.parent, [*EXPORT, *(a.format(w=work) for a in argv)], contains)


BENCH = ["bench", "--artefact", "{w}/art", "--backend", "ort"]
BENCH_CASES = {
    "repeats-zero": (["--repeats", "0"], "--repeats"),
    "warmup-negative": (["--warmup", "-1"], "--warmup"),
    "videos-zero": (["--videos", "0"], "--videos"),
    "threads-negative": (["--threads", "-2"], "--threads"),
    "threads-nan": (["--threads", "nan"], "--threads"),
    "batch-sizes-word": (["--batch-sizes", "1,x"], "--batch-sizes"),
    "batch-sizes-zero": (["--batch-sizes", "4,0"], "--batch-sizes"),
    "batch-sizes-empty": (["--batch-sizes", ","], "--batch-sizes"),
    "unknown-backend": (["--backend", "openvino"], "--backend"),
    "artefact-missing": (["--artefact", "{w}/nope"], "not found"),
    "artefact-without-manifest": (["--artefact", "{w}/data"], "no manifest.json"),
    "out-is-the-manifest": (["--out", "{w}/art/manifest.json"], "is the input"),
    "out-is-a-folder": (["--out", "{w}/data"], "is a folder"),
    "inputs-not-the-models": ([], "not model 'lls_smallconv''s inputs"),
    "external-data-escapes": (["--artefact", "{w}/bad-art"], "external-data location"),
    "backend-not-in-artefact": (["--backend", "ort-int8"], "no model.int8.onnx"),
    "input-data-without-data": (["--input", "data"], "--data"),
}


@pytest.mark.parametrize("case", BENCH_CASES)
def test_bench_bad_input(work: Path, case: str):
    argv, contains = BENCH_CASES[case]
    _check(work.parent, [a.format(w=work) for a in [*BENCH, *argv]], contains)


REPORT_CASES = {
    "results-is-a-folder": (["{w}/data"], "is a folder"),
    "results-missing": (["{w}/nope.json"], "not found"),
    "results-not-json": (["{w}/not-json.json"], "not valid JSON"),
    "results-other-schema": (["{w}/other-schema.json"], "not an edgeml bench results file"),
    "results-missing-parts": (["{w}/no-parts.json"], "lacks or mistypes"),
    "out-is-a-file": (["{w}/no-parts.json", "--out", "{w}/a-file"], "is a file"),
    "out-would-overwrite-a-result": (["{w}/rep/report.md", "--out", "{w}/rep"], "is the input"),
}


@pytest.mark.parametrize("case", REPORT_CASES)
def test_report_bad_input(work: Path, case: str):
    argv, contains = REPORT_CASES[case]
    argv = [a.format(w=work) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(work / "report-out")]
    _check(work.parent, ["report", *argv], contains)


DEMO_CASES = {
    "epochs-zero": (["--epochs", "0"], "--epochs"),
    "epochs-nan": (["--epochs", "nan"], "--epochs"),
    "threads-negative": (["--threads", "-1"], "--threads"),
    "out-is-a-file": (["--out", "{w}/a-file"], "--out is a file"),
    "report-is-a-file": (["--report", "{w}/a-file"], "--report is a file"),
}


@pytest.mark.parametrize("case", DEMO_CASES)
def test_demo_bad_arguments_fail_before_any_work(work: Path, case: str):
    argv, contains = DEMO_CASES[case]
    defaults = {"--out": str(work / "demo"), "--report": str(work / "report")}
    argv = [a.format(w=work) for a in argv]
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    _check(work.parent, ["demo", *argv], contains)


@pytest.mark.parametrize("argv, contains", [(["--bogus"], "unrecognized"), (["--json", "extra"], "unrecognized")])
def test_info_bad_arguments(work: Path, argv: list[str], contains: str):
    _check(work.parent, ["info", *argv], contains)


BENCH_MODEL = ["bench", "--model", MODEL, "--repeats", "1", "--batch-sizes", "1"]
BENCH_MODEL_CASES = {
    "checkpoint-junk": (["--backend", "torch", "--checkpoint", "{w}/junk.safetensors"], "checkpoint"),
    "checkpoint-missing": (["--backend", "torch", "--checkpoint", "{w}/nope.safetensors"], "not found"),
    "checkpoint-other-model": (["--backend", "torch", "--checkpoint", "{w}/other.safetensors"], "x3d_s"),
    "no-weights": (["--backend", "torch"], "--random-init"),
    "unknown-target": (["--backend", "ort", "--random-init", "--target", "jetsn"], "unknown target"),
    "no-target": (["--backend", "ort", "--random-init"], "--target"),
}


@pytest.mark.parametrize("case", BENCH_MODEL_CASES)
def test_bench_model_bad_input(work: Path, case: str):
    argv, contains = BENCH_MODEL_CASES[case]
    _check(work.parent, [a.format(w=work) for a in [*BENCH_MODEL, *argv]], contains)
