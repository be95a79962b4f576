"""`edgeml train` against a generated corpus of bad inputs: each case exits 2 with one stderr line, no traceback or
signal, before any training starts; every input (data, existing run folders, sentinels) stays byte-identical and
nothing is written.

Data sets are made here (an MNIST-layout IDX folder, a COCO-format VWW folder); nothing committed, nothing downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from .harness import Guard, assert_clean_error, run_cli

MODEL = ["--model", "lls_smallconv", "--mode", "lls", "--epochs", "1", "--batch-size", "8", "--threads", "1",
         "--no-progress"]


def _idx_fixture():
    """tests/data/idx_fixture.py (the one MNIST-layout writer of the suite), loaded by path."""
    path = Path(__file__).resolve().parents[1] / "data" / "idx_fixture.py"
    spec = importlib.util.spec_from_file_location("idx_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """An IDX data folder and a finished one-epoch run of lls_smallconv on it."""
    from edgeml.training.loop import train_from_args

    root = tmp_path_factory.mktemp("train_corpus")
    data = _idx_fixture().make_idx_folder(root / "idx", n_train=16, n_test=8, gz=False)
    train_from_args("lls_smallconv", data, root / "run", epochs=1, batch_size=8, lr=5e-3, mode="lls",
                    threads=1, progress=False)
    return {"data": data, "run": root / "run"}


@pytest.fixture
def work(tmp_path, assets) -> Path:
    """tmp_path/work/{idx, run} (copies) and tmp_path/outside/sentinel.txt."""
    shutil.copytree(assets["data"], tmp_path / "work" / "idx")
    shutil.copytree(assets["run"], tmp_path / "work" / "run")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "sentinel.txt").write_text("untouched")
    return tmp_path / "work"


def _check(root: Path, argv: list[str], contains: str) -> None:
    guard = Guard(root)
    assert_clean_error(run_cli(["train", *argv]), contains=contains)
    guard.assert_untouched()


# --- arguments: checked where they are parsed -------------------------------------------------------------------

@pytest.mark.parametrize("extra, contains", [
    (["--lr", "-1"], "--lr"), (["--lr", "nan"], "finite"), (["--lr", "inf"], "finite"), (["--lr", "0"], "--lr"),
    (["--threads", "-2"], "--threads"), (["--threads", "0"], "--threads"), (["--epochs", "0"], "--epochs"),
    (["--epochs", "2.5"], "--epochs"), (["--batch-size", "0"], "--batch-size"), (["--workers", "-1"], "--workers"),
    (["--weight-decay", "-0.1"], "--weight-decay"), (["--weight-decay", "nan"], "finite"), (["--seed", "-1"], "--seed"),
    (["--resume", "--force"], "not allowed with"),
])
def test_bad_number_or_flag_is_refused_at_parse_time(tmp_path, work, extra, contains):
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new", *extra], contains)


@pytest.mark.parametrize("extra, contains", [
    (["--set", "unknown=1"], "unknown --set key 'unknown'"),
    (["--set", "num_classes=abc"], "'num_classes' of model 'lls_smallconv' must be int"),
    (["--set", "in_channels=1.5"], "'in_channels' of model 'lls_smallconv' must be int"),
    (["--set", "temperature=NaN"], "finite"), (["--set", "temperature=1e400"], "finite"),
    (["--set", "temperature=0"], "temperature"), (["--set", "waveform=triangle"], "waveform"),
    (["--set", "novalue"], "KEY=VALUE"), (["--set", "=3"], "KEY=VALUE"),
    (["--size", "tiny"], "has no sizes"), (["--mode", "bogus"], "unknown training mode 'bogus'"),
])
def test_bad_model_config_is_refused_naming_the_key(tmp_path, work, extra, contains):
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new", *extra], contains)


def test_unknown_set_key_lists_the_valid_keys(tmp_path, work):
    outcome = run_cli(["train", *MODEL, "--data", work / "idx", "--out", work / "new", "--set", "depth=3"])
    assert_clean_error(outcome, contains="valid keys: image_size, in_channels, label_smoothing, mode")


def test_unknown_model_lists_the_registered_ones(tmp_path, work):
    argv = ["--model", "nope", "--data", work / "idx", "--out", work / "new", "--no-progress"]
    guard = Guard(tmp_path)
    outcome = run_cli(["train", *argv])
    assert_clean_error(outcome, contains="unknown model 'nope'")
    # tests register models of their own, so the list depends on what ran before: check the shipped ones are named
    assert all(name in outcome.stderr for name in ("lls_smallconv", "video_spiking", "rgb_baseline"))
    guard.assert_untouched()


@pytest.mark.parametrize("data, contains", [("missing", "not found"), ("idx/train-images-idx3-ubyte", "is a file")])
def test_data_that_is_missing_or_a_file_is_refused(tmp_path, work, data, contains):
    _check(tmp_path, [*MODEL, "--data", work / data, "--out", work / "new"], contains)


def test_out_that_is_a_file_is_refused(tmp_path, work):
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", tmp_path / "outside" / "sentinel.txt"], "not a folder")


# --- the run folder: inputs are sacred -------------------------------------------------------------------------

def test_existing_run_folder_without_resume_or_force_is_refused(tmp_path, work):
    outcome_line = "pass --resume to continue its run, or --force to start over"
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "run"], outcome_line)


@pytest.mark.parametrize("flag", ["--force", "--resume"])
def test_out_holding_the_data_is_refused_even_with_a_flag(tmp_path, work, flag):
    shutil.copytree(work / "idx", work / "run" / "idx")
    _check(tmp_path, [*MODEL, "--data", work / "run" / "idx", "--out", work / "run", flag], "holds the input")


def test_out_that_is_the_data_is_refused(tmp_path, work):
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "idx", "--force"], "is the input")


def test_resume_without_a_checkpoint_is_refused(tmp_path, work):
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new", "--resume"], "nothing to resume")


# --- checkpoints and metrics read on --resume ------------------------------------------------------------------

def _rewrite_meta(path: Path, meta_json: str) -> None:
    from safetensors.torch import load, save

    path.write_bytes(save(load(path.read_bytes()), metadata={"edgeml": meta_json}))


def _patched_meta(path: Path, **patch) -> str:
    from edgeml.io import load_checkpoint

    return json.dumps({**load_checkpoint(path)[1], **patch})


@pytest.mark.parametrize("make_meta, contains", [
    (lambda p: "{not json", "not valid JSON"),
    (lambda p: "[1, 2]", "JSON object naming its model"),
    (lambda p: '{"epoch": 1}', "JSON object naming its model"),
    (lambda p: _patched_meta(p, config=[1]), "'config' must be a JSON object"),
    (lambda p: _patched_meta(p, config={"depth": 9}), "unknown checkpoint config key 'depth'"),
    (lambda p: _patched_meta(p, config={"num_classes": "ten"}), "'num_classes'"),
    (lambda p: _patched_meta(p, epoch="1"), "'epoch'"),
    (lambda p: _patched_meta(p, epoch=None), "'epoch'"),
    (lambda p: _patched_meta(p, best_top1=[0.5]), "'best_top1'"),
    (lambda p: _patched_meta(p, model="lls_vgg8"), "checkpoint is for model 'lls_vgg8'"),
])
def test_resume_from_bad_checkpoint_metadata_is_refused(tmp_path, work, make_meta, contains):
    last = work / "run" / "last.safetensors"
    _rewrite_meta(last, make_meta(last))
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "run", "--resume"], contains)


@pytest.mark.parametrize("cut", [0, 7, 100, -1])
def test_resume_from_a_truncated_checkpoint_is_refused(tmp_path, work, cut):
    last = work / "run" / "last.safetensors"
    last.write_bytes(last.read_bytes()[:cut])
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "run", "--resume"], "checkpoint")


def test_resume_with_a_corrupt_metrics_log_is_refused(tmp_path, work):
    (work / "run" / "metrics.jsonl").write_text("{broken\n")
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "run", "--resume"], "metrics log is corrupt")


def test_resume_of_another_models_run_is_refused(tmp_path, work):
    argv = [*MODEL, "--data", work / "idx", "--out", work / "run", "--resume"]
    argv[1] = "lls_vgg8"
    _check(tmp_path, argv, "checkpoint is for model 'lls_smallconv'")


# --- data sets read by train -----------------------------------------------------------------------------------

def test_idx_with_a_bad_header_is_refused(tmp_path, work):
    (work / "idx" / "train-images-idx3-ubyte").write_bytes(b"\x12\x34\x08\x03" + b"\0" * 64)
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new"], "bad magic")


def test_idx_with_labels_out_of_range_is_refused(tmp_path, work):
    idx_bytes = _idx_fixture().idx_bytes
    (work / "idx" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(16, 42, np.uint8)))
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new"], "labels outside 0..9")


def test_truncated_idx_is_refused(tmp_path, work):
    images = work / "idx" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    _check(tmp_path, [*MODEL, "--data", work / "idx", "--out", work / "new"], "announces shape")


@pytest.mark.parametrize("file_name", ["../../outside/sentinel.txt", "ABS", "link/sentinel.txt"])
def test_vww_file_names_leaving_the_folder_are_refused(tmp_path, work, file_name):
    from PIL import Image

    vww = work / "vww"
    (vww / "images").mkdir(parents=True)
    (vww / "images" / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    name = str(tmp_path / "outside" / "sentinel.txt") if file_name == "ABS" else file_name
    images = [{"id": 1, "width": 32, "height": 32, "file_name": name},
              {"id": 2, "width": 32, "height": 32, "file_name": "ok.png"}]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(vww / "images" / "ok.png")
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    for split in ("train", "val"):
        (vww / f"instances_{split}.json").write_text(json.dumps(coco))
    argv = ["--model", "lls_vww", "--data", vww, "--out", work / "new", "--epochs", "1", "--no-progress"]
    _check(tmp_path, argv, "file_name")
