"""The weight pack and the engine's input checks: round trips, truncated / tampered / newer packs, wrong data,
too small an arena — clear errors — and the input pack never modified (output written atomically)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from edgeml import _C
from edgeml.errors import CheckpointError, ConfigError, InputError
from edgeml.io import sha256_file
from edgeml.lls.device import open_engine
from edgeml.lls.pack import parse_blocks, read_pack, write_pack
from edgeml.registry import create_model


@pytest.fixture
def pack(tmp_path):
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls_m").eval()
    return write_pack(tmp_path / "in.pack", model, train_blocks="last:2", model_name="lls_smallconv"), model


def corrupt(path, out, edit) -> str:
    data = bytearray(path.read_bytes())
    edit(data)
    out.write_bytes(bytes(data))
    return str(out)


def test_pack_round_trips_header_and_tensors(pack):
    path, model = pack
    p = read_pack(path)
    assert p.header["version"] == 1 and p.header["model"] == "lls_smallconv"
    assert p.trainable_blocks == [3, 4]
    assert p.header["blocks"][0]["local"]["mode"] == "lls_m" and p.header["blocks"][0]["local"]["pool"] == 4
    for name, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            np.testing.assert_array_equal(p.tensors[name], v.numpy())
    data = path.read_bytes()
    header_len = struct.unpack_from("<Q", data, 16)[0]
    offsets = [e["offset"] for e in p.header["tensors"].values()]
    assert all(o % 64 == 0 for o in offsets) and ((32 + header_len + 63) // 64 * 64) % 64 == 0
    assert _C.lls_read_pack_header(str(path)).startswith("{")  # the C++ reader accepts it too


def test_truncated_pack_is_rejected_by_python_and_cpp(pack, tmp_path):
    bad = corrupt(pack[0], tmp_path / "t.pack", lambda d: d.__delitem__(slice(len(d) - 100, None)))
    with pytest.raises(CheckpointError, match="truncated"):
        read_pack(bad)
    with pytest.raises(CheckpointError, match="truncated"):
        open_engine(bad, 4)


def test_tampered_pack_fails_the_checksum(pack, tmp_path):
    def flip(d):
        d[-40] ^= 0x01

    bad = corrupt(pack[0], tmp_path / "x.pack", flip)
    with pytest.raises(CheckpointError, match="checksum"):
        read_pack(bad)
    with pytest.raises(CheckpointError, match="checksum"):
        open_engine(bad, 4)


def test_newer_format_version_says_to_update(pack, tmp_path):
    bad = corrupt(pack[0], tmp_path / "v.pack", lambda d: d.__setitem__(slice(8, 12), struct.pack("<I", 2)))
    with pytest.raises(CheckpointError, match="newer"):
        read_pack(bad)
    with pytest.raises(CheckpointError, match="newer than this engine"):
        open_engine(bad, 4)


def test_not_a_pack(tmp_path):
    junk = tmp_path / "junk.pack"
    junk.write_bytes(b"hello world, not a pack at all" * 3)
    with pytest.raises(CheckpointError, match="not an edgeml LLS pack"):
        read_pack(junk)
    with pytest.raises(CheckpointError, match="not an edgeml LLS pack"):
        open_engine(junk, 4)


def test_data_of_the_wrong_shape(pack):
    engine = open_engine(pack[0], 4)
    with pytest.raises(InputError, match="does not fit"):
        engine.train_step(np.zeros((4, 3, 28, 28), np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="sized for"):
        engine.train_step(np.zeros((5, 1, 28, 28), np.float32), np.zeros(5, np.int64))
    with pytest.raises(InputError, match="labels outside"):
        engine.train_step(np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 2, 10]))


def test_too_small_an_arena_is_a_clear_error_at_load(pack):
    need = open_engine(pack[0], 8).required_bytes
    with pytest.raises(InputError, match="arena too small"):
        open_engine(pack[0], 8, arena_bytes=need // 2)
    assert open_engine(pack[0], 8, arena_bytes=need).arena_bytes == need


def test_steps_allocate_nothing_beyond_the_arena(pack):
    engine = open_engine(pack[0], 8)
    peak = engine.arena_peak
    x = np.random.default_rng(0).uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    for _ in range(3):
        engine.train_step(x, np.arange(8) % 10)
    assert engine.arena_peak == peak == engine.required_bytes


def test_input_pack_never_modified_and_output_atomic(pack, tmp_path):
    path = pack[0]
    digest = sha256_file(path)
    engine = open_engine(path, 4)
    engine.train_step(np.zeros((4, 1, 28, 28), np.float32), np.array([1, 2, 3, 4]))
    with pytest.raises(InputError, match="is the input"):
        engine.save(path)
    out = engine.save(tmp_path / "out.pack")
    assert sha256_file(path) == digest
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".out.pack")]
    updated = read_pack(out)
    assert not np.array_equal(updated.tensors["classifier.weight"], read_pack(path).tensors["classifier.weight"])
    np.testing.assert_array_equal(updated.tensors["blocks.0.block.0.weight"],
                                  read_pack(path).tensors["blocks.0.block.0.weight"])


def test_block_specs():
    assert parse_blocks("last:2", 5) == [3, 4]
    assert parse_blocks("all", 3) == [0, 1, 2]
    assert parse_blocks("0,3", 5) == [0, 3]
    with pytest.raises(ConfigError):
        parse_blocks("last:9", 5)
    with pytest.raises(ConfigError):
        parse_blocks("first:2", 5)


def test_unsupported_mode_is_refused(tmp_path):
    model = create_model("lls_smallconv", mode="local_learnable")
    with pytest.raises(ConfigError, match="fine-tunes modes"):
        write_pack(tmp_path / "l.pack", model)


def test_random_basis_is_refused_naming_the_waveform(tmp_path):
    """The engine computes the square and sine closed forms; a net trained with the random basis says so."""
    model = create_model("lls_smallconv", mode="lls", waveform="random").eval()
    with pytest.raises(ConfigError, match="not 'random'"):
        write_pack(tmp_path / "r.pack", model)
    assert not (tmp_path / "r.pack").exists()


def test_pack_from_an_edgeml_train_checkpoint(tmp_path):
    from edgeml.io import save_checkpoint
    from edgeml.lls.pack import pack_from_checkpoint

    torch.manual_seed(1)
    model = create_model("lls_vww", mode="lls_m", image_size=32)
    ckpt = tmp_path / "best.safetensors"
    save_checkpoint(ckpt, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"model": "lls_vww", "config": model.config, "epoch": 1})
    p = read_pack(pack_from_checkpoint(ckpt, tmp_path / "vww.pack", train_blocks="last:3"))
    assert p.header["model"] == "lls_vww" and p.header["input"]["shape"] == [3, 32, 32]
    assert p.trainable_blocks == [12, 13, 14]
    np.testing.assert_array_equal(p.tensors["blocks.5.head"], model.state_dict()["blocks.5.head"].numpy())
    assert open_engine(tmp_path / "vww.pack", 2).trainable_blocks == [12, 13, 14]


def test_optimizer_defaults_are_the_same_in_python_and_cpp():
    """One schema: the C++ OptimizerSpec defaults equal edgeml.lls.pack.DEFAULT_OPTIMIZER field by field."""
    from edgeml.lls.pack import DEFAULT_OPTIMIZER

    cpp = _C.lls_optimizer_defaults()
    assert set(cpp) == set(DEFAULT_OPTIMIZER)
    for key, value in DEFAULT_OPTIMIZER.items():
        expected = value if isinstance(value, (str, bool)) else np.float32(value)
        got = cpp[key] if isinstance(value, (str, bool)) else np.float32(cpp[key])
        np.testing.assert_array_equal(got, expected, err_msg=key)


@pytest.mark.parametrize("optimizer", [None, {}, {"name": "sgd"}, {"lr": 0.02, "betas": [0.8, 0.99]}])
def test_a_pack_without_optimizer_fields_trains_the_same_in_python_and_cpp(pack, tmp_path, optimizer):
    """The engine's optimizer for a header missing fields = the Python reader's (check_optimizer) reading."""
    from edgeml.lls.pack import check_optimizer, write_pack_raw

    full = read_pack(pack[0])
    header = {k: v for k, v in full.header.items() if k != "optimizer"}
    if optimizer is not None:
        header["optimizer"] = optimizer
    path = write_pack_raw(tmp_path / "sparse.pack", header, full.tensors)
    python = check_optimizer(read_pack(path).header.get("optimizer"))
    cpp = open_engine(path, 2).optimizer_spec
    assert cpp["name"] == python["name"] and cpp["nesterov"] == python["nesterov"]
    for key in ("lr", "momentum", "dampening", "weight_decay", "eps", "betas"):
        np.testing.assert_array_equal(np.float32(cpp[key]), np.float32(python[key]), err_msg=key)
