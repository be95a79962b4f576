"""Bad inputs give clear errors, never touch the input, and leave no partial output."""

from __future__ import annotations

import numpy as np
import pytest
from cure_fixtures import TEXT_WIDTH, export_unet_onnx, small_unet, tiny_text_encoder_dir, tree_digest

from edgeml.cure import build_edit, discriminative_projector, edit_module, erase
from edgeml.cure.embed import concept_embeddings, load_text_encoder
from edgeml.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return tiny_text_encoder_dir(tmp_path_factory.mktemp("text_encoder"))


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return export_unet_onnx(small_unet(), tmp_path_factory.mktemp("onnx") / "unet", layout="weights.pb").parent


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_model_without_cross_attention_is_refused(tmp_path):
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8)
    edit = discriminative_projector(np.ones((1, TEXT_WIDTH)))
    with pytest.raises(InputError, match="no cross-attention"):
        edit_module(unet, edit)
    src = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, src)
    from edgeml.cure.apply import edit_safetensors_file

    with pytest.raises(InputError, match="no cross-attention"):
        edit_safetensors_file(src, tmp_path / "out.safetensors", edit)
    assert not (tmp_path / "out.safetensors").exists() and _leftovers(tmp_path) == []


def test_a_text_encoder_of_the_wrong_width_is_refused_without_output(tmp_path, onnx_dir):
    wide = tiny_text_encoder_dir(tmp_path / "wide_text", width=64)
    digest = tree_digest(onnx_dir)
    with pytest.raises(InputError, match="does not match the text-embedding width 64"):
        erase(onnx_dir / "model.onnx", tmp_path / "out", ["circle"], text_encoder=wide)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert tree_digest(onnx_dir) == digest


def test_empty_prompt_lists_are_refused(text_dir, tmp_path):
    enc = load_text_encoder(text_dir)
    with pytest.raises(InputError, match="empty forget list"):
        build_edit(enc, [])
    with pytest.raises(InputError, match="empty concept"):
        concept_embeddings(enc, ["  "])
    with pytest.raises(InputError, match="empty forget list"):
        erase(tmp_path, tmp_path / "out", [], text_encoder=text_dir)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_external_data_is_reported(tmp_path, onnx_dir, text_dir, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(onnx_dir, broken)
    data = broken / "weights.pb"
    if damage == "missing":
        data.unlink()
    else:
        data.write_bytes(data.read_bytes()[:1000])
    digest = tree_digest(broken)
    with pytest.raises(CheckpointError, match="missing" if damage == "missing" else "truncated"):
        erase(broken / "model.onnx", tmp_path / "out", ["circle"], text_encoder=text_dir)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert tree_digest(broken) == digest


def test_an_existing_output_is_kept_unless_forced(tmp_path, onnx_dir, text_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        erase(onnx_dir, out, ["circle"], text_encoder=text_dir)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="is the input"):
        erase(onnx_dir, onnx_dir, ["circle"], text_encoder=text_dir, force=True)


def test_a_failure_while_writing_leaves_no_partial_output(tmp_path, onnx_dir, text_dir, monkeypatch):
    import edgeml.cure.onnx as cure_onnx

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cure_onnx, "copy_with_patches", explode)
    digest = tree_digest(onnx_dir)
    with pytest.raises(OSError, match="disk full"):
        erase(onnx_dir, tmp_path / "out", ["circle"], text_encoder=text_dir)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert tree_digest(onnx_dir) == digest


def test_cli_prints_one_line_and_exits_2_on_bad_input(tmp_path, capsys):
    from edgeml import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["cure", "--model", str(tmp_path / "nope.onnx"), "--forget", "x", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--model" in err and "no such file" in err and len(err.splitlines()) == 1
