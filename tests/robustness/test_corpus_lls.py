"""Corpus for the LLS engine: `edgeml finetune`, the engine binding and the standalone `edgeml-finetune` over
missing / empty / truncated / tampered / hostile (CRC-valid) packs, bad data, bad --blocks, an output that is
the input, and bad numbers. Every case: exit 2, one stderr line, no traceback, no signal, nothing written."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgeml.errors import CheckpointError
from edgeml.lls.device import finetune_binary, write_idx_folder
from edgeml.lls.pack import ALIGN, MAGIC, PREAMBLE, VERSION, read_pack, write_pack

from .harness import Guard, Outcome, assert_clean_error, run_cli, run_process

# -- a tiny valid pack and CRC-valid hostile variants of it ---------------------------------------------------


def tiny_model() -> nn.Module:
    """conv block (1 -> 4, 8x8) -> max pool -> linear block (64 -> 8) -> classifier (3 classes)."""
    from edgeml.lls.rule import LLSBlock
    from edgeml.models.lls_nets import LLSNet, conv_block, linear_block

    torch.manual_seed(0)
    kw = dict(mode="lls", num_classes=3, waveform="square", temperature=1.0, label_smoothing=0.0)
    blocks = [LLSBlock(conv_block(1, 4), feature_dim=16, pool=2, **kw), LLSBlock(linear_block(64, 8),
                                                                                  feature_dim=8, pool=None, **kw)]
    transitions = [nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), nn.Identity()]
    return LLSNet(blocks, transitions, nn.Linear(8, 3), dict(mode="lls", in_channels=1, num_classes=3,
                                                             image_size=8)).eval()


def pack_parts(path: Path) -> tuple[Any, bytes]:
    """(header dict, data section) of a pack."""
    raw = path.read_bytes()
    _, _, _, header_len, data_len = PREAMBLE.unpack_from(raw)
    start = -(-(PREAMBLE.size + header_len) // ALIGN) * ALIGN
    return json.loads(raw[PREAMBLE.size: PREAMBLE.size + header_len]), raw[start: start + data_len]


def assemble(header: Any, data: bytes, *, crc: bool = True) -> bytes:
    """Pack bytes of `header` (any JSON value) and `data`, with a correct CRC unless `crc` is False."""
    head = json.dumps(header).encode()
    pre = PREAMBLE.pack(MAGIC, VERSION, 0, len(head), len(data))
    body = pre + head + b"\0" * (-(len(pre) + len(head)) % ALIGN) + data
    return body + struct.pack("<I", zlib.crc32(body) if crc else 0)


def _set(*keys: Any, value: Any) -> Callable[[Any], None]:
    def edit(h: Any) -> None:
        for k in keys[:-1]:
            h = h[k]
        h[keys[-1]] = value
    return edit


# name -> (header edit, what the one error line must mention). Block 0 ops: conv, bn, leaky_relu, maxpool, flatten.
HOSTILE: dict[str, tuple[Callable[[Any], None], str]] = {
    "conv_stride_0": (_set("blocks", 0, "ops", 0, "stride", value=[0, 0]), "stride"),
    "conv_negative_padding": (_set("blocks", 0, "ops", 0, "padding", value=[-1, -1]), "padding"),
    "conv_groups_0": (_set("blocks", 0, "ops", 0, "groups", value=0), "groups"),
    "pool_kernel_0": (_set("blocks", 0, "ops", 3, "kernel", value=0), "kernel"),
    "pool_stride_0": (_set("blocks", 0, "ops", 3, "stride", value=0), "stride"),
    "pool_kernel_larger_than_input": (_set("blocks", 0, "ops", 3, "kernel", value=100), "kernel"),
    "shape_overflows": (_set("tensors", "classifier.weight", "shape", value=[2 ** 32, 2 ** 32]), "inconsistent"),
    "shape_huge_integer": (_set("tensors", "classifier.weight", "shape", value=[10 ** 30]), "classifier.weight"),
    "shape_zero": (_set("tensors", "classifier.bias", "shape", value=[0]), "classifier.bias"),
    "offset_outside_file": (_set("tensors", "classifier.bias", "offset", value=2 ** 40), "inconsistent"),
    "offset_beyond_2_53": (_set("tensors", "classifier.bias", "offset", value=2 ** 62), "classifier.bias"),
    "offset_negative": (_set("tensors", "classifier.bias", "offset", value=-64), "inconsistent"),
    "num_classes_0": (_set("num_classes", value=0), "num_classes"),
    "input_dim_0": (_set("input", "shape", value=[1, 0, 8]), "input"),
    "optimizer_unknown": (_set("optimizer", "name", value="rmsprop"), "rmsprop"),
    "lr_0": (_set("optimizer", "lr", value=0), "lr"),
    "lr_negative": (_set("optimizer", "lr", value=-0.1), "lr"),
    "lr_nan": (_set("optimizer", "lr", value=float("nan")), "nan"),
    "betas_out_of_range": (_set("optimizer", "betas", value=[1.5, 0.9]), "betas"),
    "tap_out_of_range": (_set("blocks", 0, "tap", value=99), "tap"),
    "temperature_0": (_set("blocks", 0, "local", "temperature", value=0), "temperature"),
    "batchnorm_eps_0": (_set("blocks", 0, "ops", 1, "eps", value=0), "eps"),
    "no_blocks": (_set("blocks", value=[]), "blocks"),
    "blocks_not_a_list": (_set("blocks", value={"a": 1}), "blocks"),
}


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> Path:
    """root/model.pack, root/data (IDX train + t10k, 8x8, 3 classes) and root/hostile/<case>.pack."""
    root = tmp_path_factory.mktemp("lls-corpus")
    write_pack(root / "model.pack", tiny_model(), train_blocks="last:2", optimizer={"name": "sgd", "lr": 0.05})
    rng = np.random.default_rng(0)
    write_idx_folder(root / "data", rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), np.arange(12) % 3)
    write_idx_folder(root / "data", rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), np.arange(6) % 3, "t10k")
    (root / "hostile").mkdir()
    for name, (edit, _) in HOSTILE.items():
        header, data = pack_parts(root / "model.pack")
        edit(header)
        (root / "hostile" / f"{name}.pack").write_bytes(assemble(header, data))
    raw = (root / "model.pack").read_bytes()
    (root / "empty.pack").write_bytes(b"")
    (root / "truncated.pack").write_bytes(raw[: len(raw) // 2])
    tampered = bytearray(raw)
    tampered[len(raw) // 2] ^= 0x40
    (root / "tampered.pack").write_bytes(bytes(tampered))
    (root / "folder.pack").mkdir()
    return root


def test_the_base_pack_is_valid_and_fine_tunes(device, tmp_path):
    """The corpus mutates a pack that works: the binary fine-tunes it and writes a new pack."""
    out = tmp_path / "tuned.pack"
    r = run_process([finetune_binary(), "--pack", device / "model.pack", "--data", device / "data", "--out", out,
                     "--batch", "4", "--quiet"])
    assert r.rc == 0, r.stderr
    assert json.loads(r.stdout)["steps"] == 3
    assert not np.array_equal(read_pack(out).tensors["classifier.weight"],
                              read_pack(device / "model.pack").tensors["classifier.weight"])


# -- hostile packs: Python reader, engine binding, edgeml finetune, standalone binary --------------------------

@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_pack_is_refused_by_the_python_reader_or_the_engine(device, name):
    """Python's read_pack refuses every field it can range-check; the rest (shape fit) is the engine's."""
    path = device / "hostile" / f"{name}.pack"
    if name == "pool_kernel_larger_than_input":  # in range; only the engine knows the input is 4x... smaller
        read_pack(path)
        return
    with pytest.raises(CheckpointError, match="(?i)" + HOSTILE[name][1]):
        read_pack(path)


def _loop_in_subprocess(script: str, cases: list[Any], cwd: Path) -> list[dict[str, Any]]:
    """Run `script` over `cases` in ONE fresh interpreter; a signal shows as the process dying on a case."""
    r = run_process([sys.executable, "-c", script, json.dumps(cases)], timeout=300, cwd=cwd)
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.rc == 0, f"died (rc {r.rc}) on case {cases[len(results)] if len(results) < len(cases) else '?'}: " \
                      f"{r.stderr[-1500:]}"
    assert len(results) == len(cases)
    return results


ENGINE_LOOP = """
import json, sys
from edgeml.errors import CheckpointError
from edgeml.lls.device import open_engine
for path in json.loads(sys.argv[1]):
    try:
        open_engine(path, 4)
        kind, message = "loaded", ""
    except CheckpointError as e:
        kind, message = "CheckpointError", str(e)
    except Exception as e:  # anything else is a bug the test reports
        kind, message = type(e).__name__, str(e)
    print(json.dumps({"kind": kind, "message": message}), flush=True)
"""


def test_hostile_packs_are_refused_by_the_cpp_engine_through_the_binding(device):
    """The C++ loader's own checks (no Python pre-check): each is a one-line CheckpointError, no signal."""
    names = list(HOSTILE)
    results = _loop_in_subprocess(ENGINE_LOOP, [str(device / "hostile" / f"{n}.pack") for n in names], device)
    for name, res in zip(names, results, strict=True):
        assert res["kind"] == "CheckpointError", f"{name}: {res}"
        assert "\n" not in res["message"] and HOSTILE[name][1].lower() in res["message"].lower(), f"{name}: {res}"


CLI_LOOP = """
import json, sys
sys.path.insert(0, {root!r})
from tests.robustness.harness import run_cli
for argv in json.loads(sys.argv[1]):
    o = run_cli(argv)
    print(json.dumps({{"rc": o.rc, "stderr": o.stderr, "stdout": o.stdout}}), flush=True)
"""


def test_edgeml_finetune_refuses_hostile_packs(device, tmp_path):
    """`edgeml finetune` over every hostile pack (in one subprocess: native code may not take pytest down)."""
    out = tmp_path / "out.pack"
    guard = Guard(device)
    cases = [["finetune", "--pack", str(device / "hostile" / f"{n}.pack"), "--data", str(device / "data"), "--out",
              str(out), "--batch", "4"] for n in HOSTILE]
    script = CLI_LOOP.format(root=str(Path(__file__).resolve().parents[2]))
    for name, res in zip(HOSTILE, _loop_in_subprocess(script, cases, tmp_path), strict=True):
        outcome = Outcome(res["rc"], res["stderr"], res["stdout"])
        assert_clean_error(outcome, contains=HOSTILE[name][1])
    assert not out.exists()
    guard.assert_untouched()


@pytest.mark.parametrize("name", HOSTILE)
def test_standalone_binary_refuses_hostile_packs(device, tmp_path, name):
    out = tmp_path / "out.pack"
    guard = Guard(device)
    r = run_process([finetune_binary(), "--pack", device / "hostile" / f"{name}.pack", "--data", device / "data",
                     "--out", out, "--batch", "4", "--quiet"])
    assert_clean_error(r, contains=HOSTILE[name][1])
    assert not out.exists()
    guard.assert_untouched()


# -- bad files, data, blocks and numbers -------------------------------------------------------------------

BAD_FILES = {"missing": ("missing.pack", "not found"), "empty": ("empty.pack", "not an edgeml LLS pack"),
             "truncated": ("truncated.pack", "truncated"), "tampered": ("tampered.pack", "checksum"),
             "folder": ("folder.pack", "")}


@pytest.mark.parametrize("case", BAD_FILES)
def test_edgeml_finetune_refuses_bad_pack_files(device, tmp_path, case):
    name, expected = BAD_FILES[case]
    guard = Guard(device)
    outcome = run_cli(["finetune", "--pack", device / name, "--data", device / "data", "--out", tmp_path / "o.pack"])
    assert_clean_error(outcome, contains=expected)
    guard.assert_untouched()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("case", BAD_FILES)
def test_standalone_binary_refuses_bad_pack_files(device, tmp_path, case):
    name, expected = BAD_FILES[case]
    guard = Guard(device)
    r = run_process([finetune_binary(), "--pack", device / name, "--data", device / "data", "--out",
                     tmp_path / "o.pack"])
    assert_clean_error(r, contains=expected if case != "missing" else "cannot open")
    guard.assert_untouched()
    assert not list(tmp_path.iterdir())


BAD_ARGS = {
    "blocks_last_0": (["--blocks", "last:0"], "trains no block"),
    "blocks_negative": (["--blocks", "last:-1"], "last:N"),
    "blocks_garbage": (["--blocks", "first:2"], "last:N"),
    "blocks_not_a_tail": (["--blocks", "0,2"], "last:N"),
    "blocks_too_many": (["--blocks", "last:9"], "last"),
    "epochs_0": (["--epochs", "0"], "--epochs"),
    "batch_negative": (["--batch", "-4"], "--batch"),
    "batch_text": (["--batch", "12abc"], "--batch"),
    "lr_nan": (["--lr", "nan"], "--lr"),
    "lr_0": (["--lr", "0"], "--lr"),
    "lr_inf": (["--lr", "inf"], "--lr"),
    "contrast_inf": (["--contrast", "inf"], "--contrast"),
    "brightness_nan": (["--brightness", "nan"], "--brightness"),
    "limit_0": (["--limit", "0"], "--limit"),
    "seed_negative": (["--seed", "-1"], "--seed"),
    "optimizer_unknown": (["--optimizer", "rmsprop"], "--optimizer"),
    "data_missing": (["--data", "{root}/no-such-folder"], "not found"),
    "data_is_a_file": (["--data", "{root}/model.pack"], "file"),
}


@pytest.mark.parametrize("case", BAD_ARGS)
def test_edgeml_finetune_refuses_bad_arguments(device, tmp_path, case):
    extra, expected = BAD_ARGS[case]
    extra = [a.format(root=device) for a in extra]
    argv = ["finetune", "--pack", device / "model.pack", "--data", device / "data", "--out", tmp_path / "o.pack"]
    argv += extra
    guard = Guard(device)
    assert_clean_error(run_cli(argv), contains=expected)
    guard.assert_untouched()
    assert not list(tmp_path.iterdir())


BINARY_BAD_ARGS = {
    "blocks_last_0": (["--blocks", "last:0"], "--blocks"),
    "blocks_garbage": (["--blocks", "first:2"], "--blocks"),
    "blocks_too_many": (["--blocks", "last:9"], "cannot train the last 9"),
    "epochs_0": (["--epochs", "0"], "--epochs"),
    "batch_trailing_text": (["--batch", "12abc"], "--batch"),
    "lr_nan": (["--lr", "nan"], "--lr"),
    "lr_negative": (["--lr", "-1"], "--lr"),
    "arena_negative": (["--arena-bytes", "-1"], "--arena-bytes"),
    "arena_too_small": (["--arena-bytes", "64"], "arena too small"),
    "seed_negative": (["--seed", "-1"], "--seed"),
    "max_steps_negative": (["--max-steps", "-3"], "--max-steps"),
    "optimizer_unknown": (["--optimizer", "rmsprop"], "--optimizer"),
    "unknown_option": (["--frobnicate", "1"], "unknown option"),
    "missing_value": (["--batch"], "missing value"),
    "data_missing": (["--data", "{root}/no-such-folder"], "not found"),
}


@pytest.mark.parametrize("case", BINARY_BAD_ARGS)
def test_standalone_binary_refuses_bad_arguments(device, tmp_path, case):
    extra, expected = BINARY_BAD_ARGS[case]
    extra = [a.format(root=device) for a in extra]
    argv = ["--pack", device / "model.pack", "--data", device / "data", "--out", tmp_path / "o.pack", *extra]
    guard = Guard(device)
    assert_clean_error(run_process([finetune_binary(), *argv]), contains=expected)
    guard.assert_untouched()
    assert not list(tmp_path.iterdir())


def test_standalone_binary_refuses_idx_dimensions_that_overflow(device, tmp_path):
    """A labels/images header whose dims multiply past 2^64 to the file size is refused, not indexed."""
    data = tmp_path / "data"
    write_idx_folder(data, np.zeros((4, 8, 8), np.uint8), np.zeros(4))
    # 4 * 2^31 * 2^31 = 2^64 wraps to 0 in uint64: an empty payload "matches" unless dims are checked first.
    (data / "train-images-idx3-ubyte").write_bytes(struct.pack(">4B3I", 0, 0, 8, 3, 4, 2 ** 31, 2 ** 31))
    guard = Guard(tmp_path)
    r = run_process([finetune_binary(), "--pack", device / "model.pack", "--data", data, "--out",
                     tmp_path / "o.pack"])
    assert_clean_error(r, contains="IDX dimension 1")
    guard.assert_untouched()


# -- the output is never an input ---------------------------------------------------------------------------

def _aliases(device: Path, tmp_path: Path) -> dict[str, Path]:
    """Outputs that are the input pack under another name, and a folder holding it."""
    work = tmp_path / "work"
    work.mkdir()
    pack = work / "model.pack"
    pack.write_bytes((device / "model.pack").read_bytes())
    os.link(pack, work / "hardlink.pack")
    (work / "symlink.pack").symlink_to(pack)
    return {"same": pack, "dotted": work / "." / "model.pack", "hardlink": work / "hardlink.pack",
            "symlink": work / "symlink.pack", "folder": work}


@pytest.mark.parametrize("alias", ["same", "dotted", "hardlink", "symlink", "folder"])
def test_edgeml_finetune_refuses_an_output_that_is_the_input(device, tmp_path, alias):
    out = _aliases(device, tmp_path)[alias]
    guard = Guard(tmp_path)
    outcome = run_cli(["finetune", "--pack", tmp_path / "work" / "model.pack", "--data", device / "data", "--out",
                       out, "--batch", "4"])
    assert_clean_error(outcome, contains="input" if alias != "folder" else "folder")
    guard.assert_untouched()


@pytest.mark.parametrize("alias", ["same", "dotted", "hardlink", "symlink", "folder"])
def test_standalone_binary_refuses_an_output_that_is_the_input(device, tmp_path, alias):
    out = _aliases(device, tmp_path)[alias]
    guard = Guard(tmp_path)
    r = run_process([finetune_binary(), "--pack", tmp_path / "work" / "model.pack", "--data", device / "data",
                     "--out", out, "--batch", "4", "--quiet"])
    assert_clean_error(r, contains="input" if alias != "folder" else "folder")
    guard.assert_untouched()


def test_standalone_binary_refuses_an_output_that_is_a_data_file(device, tmp_path):
    data = tmp_path / "data"
    write_idx_folder(data, np.zeros((4, 8, 8), np.uint8), np.zeros(4))
    guard = Guard(tmp_path)
    r = run_process([finetune_binary(), "--pack", device / "model.pack", "--data", data, "--out",
                     data / "train-labels-idx1-ubyte", "--quiet"])
    assert_clean_error(r, contains="is the input")
    guard.assert_untouched()


def test_edgeml_finetune_refuses_a_checkpoint_pack_over_the_checkpoint(device, tmp_path):
    """With --checkpoint, --pack is written: it may not be the checkpoint (nor --out the pack)."""
    ckpt = tmp_path / "best.safetensors"
    ckpt.write_bytes(b"not read: refused before")
    guard = Guard(tmp_path)
    outcome = run_cli(["finetune", "--checkpoint", ckpt, "--pack", ckpt, "--data", device / "data", "--out",
                       tmp_path / "o.pack"])
    assert_clean_error(outcome, contains="--pack is the input")
    guard.assert_untouched()
