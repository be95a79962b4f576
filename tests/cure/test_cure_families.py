"""CURE on the model families people run: SD 1.x, SD 2.x, SDXL (and its refiner), as diffusers folders, single-file
LDM checkpoints and ONNX exports — tiny random pipelines with the real layouts, built here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cure_fixtures import (
    FAMILY_ENCODERS,
    assert_same_edit,
    export_family_onnx,
    family_pipeline,
    family_unet,
    ldm_single_file,
    onnx_initializers,
    safetensors_raw,
    tree_digest,
)

from edgeml.cure import build_edit
from edgeml.cure.embed import aggregate, concept_embeddings, load_text_encoder
from edgeml.cure.spectral import discriminative_projector
from edgeml.errors import InputError

FAMILIES = list(FAMILY_ENCODERS)
FORGET, RETAIN = ["van gogh"], ["claude monet"]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("families")
    return {f: family_pipeline(root / f, f) for f in FAMILIES}


def _unet_file(folder):
    return next((folder / "unet").glob("*.safetensors"))


def _kv(key: str) -> bool:
    return key.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))


def _assert_one_projector(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], d: np.ndarray) -> None:
    """Every K/V weight is W (I − D) for the one D, and all changes share D's row space."""
    kv = sorted(k for k in before if _kv(k))
    assert kv and set(kv) == {k for k in after if _kv(k)}
    for k in kv:
        w = before[k].double().numpy()
        np.testing.assert_allclose(after[k].double().numpy(), w - w @ d, atol=2e-6, rtol=0, err_msg=k)
    changes = np.concatenate([after[k].double().numpy() - before[k].double().numpy() for k in kv])
    s = np.linalg.svd(changes, compute_uv=False)
    assert (s > 1e-6 * s[0]).sum() <= np.linalg.matrix_rank(d, tol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_diffusers_folder_edit_detects_the_family_and_applies_one_projector(tmp_path, pipes, family, capsys):
    from safetensors.torch import load_file

    from edgeml import cli

    pipe = pipes[family]
    digest = tree_digest(pipe)
    assert cli.main(["cure", "--model", str(pipe), "--forget", *FORGET, "--retain", *RETAIN,
                     "--out", str(tmp_path / "out")]) == 0
    assert tree_digest(pipe) == digest
    report = json.loads((tmp_path / "out" / "cure_report.json").read_text())
    assert report["family"]["name"] == family
    assert report["family"]["context_width"] == sum(w for _, w, _, _ in FAMILY_ENCODERS[family])
    assert [e["component"] for e in report["family"]["encoders"]] == [n for n, *_ in FAMILY_ENCODERS[family]]
    assert "layout" in capsys.readouterr().out  # the printed summary names the family (tiny widths: "layout")
    raw_in, raw_out = safetensors_raw(_unet_file(pipe)), safetensors_raw(_unet_file(tmp_path / "out"))
    assert {k for k in raw_in if raw_in[k] != raw_out[k]} == {k for k in raw_in if _kv(k)}
    for rel in (p.relative_to(pipe) for p in pipe.rglob("*") if p.is_file() and p.parent.name != "unet"):
        assert (tmp_path / "out" / rel).read_bytes() == (pipe / rel).read_bytes(), rel
    edit, _ = build_edit(load_text_encoder(pipe), FORGET, RETAIN)
    _assert_one_projector(load_file(_unet_file(pipe)), load_file(_unet_file(tmp_path / "out")), edit.dense())


@pytest.mark.parametrize("family", FAMILIES)
def test_single_file_checkpoint_edit_uses_its_own_text_encoders(tmp_path, pipes, family):
    """The LDM-layout file's text encoders give the pipeline's embeddings: the same K/V edit as the folder's, and
    every other tensor (UNet, encoders, VAE) byte-identical."""
    from edgeml.cure import erase

    src = ldm_single_file(pipes[family], tmp_path / "model.safetensors", family)
    digest = tree_digest(src)
    report = erase(src, tmp_path / "edited.safetensors", FORGET, RETAIN)
    assert tree_digest(src) == digest
    assert report["family"]["name"] == family
    raw_in, raw_out = safetensors_raw(src), safetensors_raw(tmp_path / "edited.safetensors")
    changed = {k for k in raw_in if raw_in[k] != raw_out[k]}
    assert changed == {k for k in raw_in if _kv(k)} and all(k.startswith("model.diffusion_model.") for k in changed)
    assert (tmp_path / "edited.safetensors").stat().st_size == src.stat().st_size
    folder_edit, _ = build_edit(load_text_encoder(pipes[family]), FORGET, RETAIN)
    from safetensors.torch import load_file

    _assert_one_projector(load_file(src), load_file(tmp_path / "edited.safetensors"), folder_edit.dense())


def test_single_file_without_text_encoders_needs_text_encoder_folder(tmp_path, pipes):
    from edgeml.cure import erase

    src = ldm_single_file(pipes["sdxl"], tmp_path / "unet_only.safetensors", "sdxl", with_text=False)
    with pytest.raises(InputError, match="--text-encoder"):
        erase(src, tmp_path / "a.safetensors", FORGET)
    report = erase(src, tmp_path / "b.safetensors", FORGET, text_encoder=pipes["sdxl"])
    assert report["family"]["name"] == "sdxl" and report["tensors_edited"] == 8


@pytest.mark.parametrize("family", [pytest.param("sd2", marks=pytest.mark.slow), "sdxl"])
def test_onnx_export_edit_equals_the_folder_edit(tmp_path, pipes, family):
    from safetensors.torch import load_file

    from edgeml.cure import erase
    from edgeml.cure.onnx import find_text_kv_weights

    unet = family_unet(family)
    src = export_family_onnx(unet, family, tmp_path / "onnx")
    report = erase(src, tmp_path / "out", FORGET, RETAIN, text_encoder=pipes[family])
    assert report["family"]["name"] == family and report["tensors_edited"] == 8
    erase(pipes[family], tmp_path / "folder_out", FORGET, RETAIN)
    want = [v.numpy() for k, v in load_file(_unet_file(tmp_path / "folder_out")).items() if _kv(k)]
    before, after = onnx_initializers(src), onnx_initializers(tmp_path / "out" / "model.onnx")
    kv = {w.initializer for w in find_text_kv_weights(__import__("onnx").load(str(src), load_external_data=False))}
    for name in before:
        if name not in kv:
            assert before[name].tobytes() == after[name].tobytes(), name
    got = [after[n].T for n in kv]
    for a, b in zip(sorted(want, key=lambda x: x.sum()), sorted(got, key=lambda x: x.sum()), strict=True):
        assert_same_edit(a, b)


def test_sdxl_projector_acts_on_both_encoders_parts_of_the_context(pipes):
    """An encoder-1-only projector (SD 1.x thinking) leaves the text_encoder_2 half of the concept untouched."""
    enc = load_text_encoder(pipes["sdxl"])
    w1 = enc.parts[0].width
    xf = concept_embeddings(enc, FORGET)
    full = discriminative_projector(xf, None, alpha=1000.0)
    part1 = discriminative_projector(xf[:, :w1], None, alpha=1000.0)
    only1 = np.zeros((enc.width, enc.width))
    only1[:w1, :w1] = part1.dense()
    d = full.dense()
    assert np.linalg.norm(d[w1:, w1:]) > 0.1 * np.linalg.norm(d)  # the projector reaches text_encoder_2's part
    w = np.random.default_rng(0).normal(size=(32, enc.width))
    kept_full = np.linalg.norm(w @ (np.eye(enc.width) - d) @ xf.T) / np.linalg.norm(w @ xf.T)
    kept_only1 = np.linalg.norm(w @ (np.eye(enc.width) - only1) @ xf.T) / np.linalg.norm(w @ xf.T)
    print(f"K/V response kept: full projector {kept_full:.3f}, encoder-1-only {kept_only1:.3f}")
    assert kept_full < 0.05 and kept_only1 > 0.5


def test_open_clip_bang_padding_is_not_a_token_of_the_prompt(pipes):
    """SD 2.x's tokenizer pads with "!" (id 0): batched rows equal one-prompt rows, also without an attention mask,
    and a literal "!" in a prompt stays a real token."""
    enc = load_text_encoder(pipes["sd2"])
    assert enc.tokenizer.pad_token == "!"
    prompts = ["a cat!", "a photo of a very large dog in the park"]
    t = enc.encode(prompts)
    assert t.real[0].sum() == 5 and not t.real[0, 5:].any()           # <bos> a cat ! <eot>, then "!" padding
    alone = [enc.encode([p]) for p in prompts]
    for mode in ("mean", "eot", "last", "all"):
        batched = aggregate(t, mode)
        single = np.concatenate([aggregate(a, mode) for a in alone])
        np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5, err_msg=mode)
    enc.tokenizer.model_input_names = ["input_ids"]                     # no attention mask from the tokenizer
    try:
        np.testing.assert_allclose(aggregate(enc.encode(prompts), "mean"), aggregate(t, "mean"), atol=1e-5)
    finally:
        enc.tokenizer.model_input_names = ["input_ids", "attention_mask"]


@pytest.mark.parametrize("unet_family,text_family", [("sdxl", "sd1"), ("sdxl-refiner", "sdxl"), ("sd1", "sdxl")])
def test_a_text_encoder_that_does_not_fit_the_unet_is_a_one_line_error(tmp_path, pipes, capsys, unet_family,
                                                                       text_family):
    from edgeml import cli

    code = cli.main(["cure", "--model", str(pipes[unet_family]), "--forget", "x", "--text-encoder",
                     str(pipes[text_family]), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not match" in err, err
    assert not (tmp_path / "out").exists()


def test_a_concept_file_of_100_concepts_is_one_batched_pass_and_one_projector(tmp_path, pipes):
    from edgeml.cure import erase

    concepts = [f"concept number {i}" for i in range(100)]
    (tmp_path / "forget.txt").write_text("# artists to erase\n" + "\n".join(concepts) + "\n\n")
    enc = load_text_encoder(pipes["sd1"])
    calls = []
    real_encode = enc.encode
    enc.encode = lambda prompts, **kw: calls.append(len(prompts)) or real_encode(prompts, **kw)
    edit, info = build_edit(enc, concepts, ["claude monet"])
    assert info["forget_rows"] == 500 and sum(calls) == 505 and len(calls) <= 505 // 32 + 2
    report = erase(pipes["sd1"], tmp_path / "out", [f"@{tmp_path / 'forget.txt'}"], ["claude monet"])
    assert report["forget"] == concepts and report["forget_rows"] == 500 and report["rank"] == edit.rank()


@pytest.mark.parametrize("fmt", ["diffusers", pytest.param("single_file", marks=pytest.mark.slow)])
def test_erasing_an_edited_model_composes_and_reports_both_edits(tmp_path, pipes, fmt):
    from safetensors.torch import load_file

    from edgeml.cure import erase

    pipe = pipes["sdxl"]
    src = pipe if fmt == "diffusers" else ldm_single_file(pipe, tmp_path / "m.safetensors", "sdxl")
    first, second = (tmp_path / f"e{i}{'' if fmt == 'diffusers' else '.safetensors'}" for i in (1, 2))
    erase(src, first, ["van gogh"])
    report = erase(first, second, ["claude monet"])
    assert [e["forget"] for e in report["edits"]] == [["van gogh"], ["claude monet"]]
    assert all(e["family"] == "sdxl" for e in report["edits"])
    files = [_unet_file(p) if fmt == "diffusers" else p for p in (src, second)]
    enc = load_text_encoder(pipe)
    d1, d2 = (build_edit(enc, [c])[0].dense() for c in ("van gogh", "claude monet"))
    before, after = load_file(files[0]), load_file(files[1])
    for k in (k for k in before if _kv(k)):
        w = before[k].double().numpy()
        np.testing.assert_allclose(after[k].double().numpy(), w @ (np.eye(len(d1)) - d1) @ (np.eye(len(d1)) - d2),
                                   atol=2e-6, rtol=0)
