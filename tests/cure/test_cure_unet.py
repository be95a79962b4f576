"""CURE on real diffusers UNets (small config): in memory, safetensors, diffusers folders and ONNX files."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from cure_fixtures import (
    TEXT_WIDTH,
    UNetOut,
    assert_same_edit,
    export_unet_onnx,
    onnx_initializers,
    small_unet,
    tiny_text_encoder_dir,
    tree_digest,
    unet_inputs,
)

from edgeml.cure import build_edit, cross_attention_layers, discriminative_projector, edit_module, erase
from edgeml.cure.embed import load_text_encoder
from edgeml.cure.onnx import edit_onnx, find_text_kv_weights


@pytest.fixture(scope="module")
def edit():
    rng = np.random.default_rng(3)
    return discriminative_projector(rng.normal(size=(3, TEXT_WIDTH)), rng.normal(size=(5, TEXT_WIDTH)), 2.0)


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return tiny_text_encoder_dir(tmp_path_factory.mktemp("text_encoder"))


def test_in_memory_edit_touches_exactly_the_cross_attention_kv(edit):
    unet = small_unet()
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    rows = edit_module(unet, edit)
    layers = cross_attention_layers(unet)
    assert len(layers) == 8 and len(rows) == 8
    changed = {k for k, v in unet.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{n}.weight" for n in layers}
    assert all("attn2" in k for k in changed)
    assert all(r["relative_change"] > 0 for r in rows)


@pytest.mark.parametrize("layout,fold", [("weights.pb", True), ("model.onnx_data", False), ("per-tensor", True),
                                         ("embedded", False)])
def test_onnx_edit_gives_the_in_memory_tensors_and_runs_like_the_edited_unet(tmp_path, edit, layout, fold):
    import onnxruntime as ort

    unet = small_unet()
    src = export_unet_onnx(unet, tmp_path / "in", layout=layout, fold=fold)
    digest = tree_digest(src.parent)
    kv = find_text_kv_weights(__import__("onnx").load(str(src), load_external_data=False))
    assert len(kv) == 8 and all(w.stored_transposed == fold for w in kv)

    (tmp_path / "out").mkdir()
    rows = edit_onnx(src, tmp_path / "out", edit)
    assert len(rows) == 8
    assert tree_digest(src.parent) == digest, "the input ONNX folder was modified"

    edited = copy.deepcopy(unet)
    edit_module(edited, edit)
    mem = [lin.weight.detach().numpy() for lin in cross_attention_layers(edited).values()]
    init = onnx_initializers(tmp_path / "out" / "model.onnx")
    onnx_w = [init[w.initializer].T if w.stored_transposed else init[w.initializer] for w in kv]
    for a, b in zip(sorted(mem, key=lambda x: x.sum()), sorted(onnx_w, key=lambda x: x.sum()), strict=True):
        assert_same_edit(a, b) if fold else np.testing.assert_array_equal(a, b)

    feeds = dict(zip(("sample", "timestep", "encoder_hidden_states"), (t.numpy() for t in unet_inputs()),
                     strict=True))
    sess = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, feeds)
    with torch.no_grad():
        ref = UNetOut(edited)(*unet_inputs()).numpy()
        orig = UNetOut(unet)(*unet_inputs()).numpy()
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print(f"{layout}: edited ONNX vs edited torch relative error {rel:.2e}")
    assert rel <= 1e-4
    assert np.linalg.norm(got - orig) / np.linalg.norm(orig) > 1e-3, "the edit changed nothing visible"


def test_safetensors_file_edit_equals_in_memory_edit_and_keeps_the_input(tmp_path, edit):
    from safetensors.torch import load_file, save_file

    unet = small_unet()
    src = tmp_path / "unet.safetensors"
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, src, metadata={"origin": "test"})
    digest = tree_digest(src)
    from edgeml.cure.apply import edit_safetensors_file

    rows = edit_safetensors_file(src, tmp_path / "out.safetensors", edit)
    assert len(rows) == 8 and tree_digest(src) == digest
    edited = copy.deepcopy(unet)
    edit_module(edited, edit)
    got = load_file(tmp_path / "out.safetensors")
    for k, v in edited.state_dict().items():
        assert torch.equal(got[k], v), k


def test_text_encoder_embeddings_and_onnx_text_encoder_agree(tmp_path, text_dir):
    from transformers import BertModel

    enc = load_text_encoder(text_dir)
    assert enc.width == TEXT_WIDTH
    model = BertModel.from_pretrained(text_dir).eval()
    onnx_dir = tmp_path / "onnx_text"
    onnx_dir.mkdir()
    ids = torch.ones(1, 8, dtype=torch.long)
    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model.requires_grad_(False)

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    torch.onnx.export(Wrapped(), (ids, ids), str(onnx_dir / "model.onnx"), dynamo=False, opset_version=17,
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})
    onnx_enc = load_text_encoder(onnx_dir / "model.onnx", tokenizer=text_dir)
    prompts = ["a photo of a red circle", "van gogh", ""]
    a, b = enc.encode(prompts), onnx_enc.encode(prompts)
    np.testing.assert_array_equal(a.real, b.real)
    np.testing.assert_allclose(a.states, b.states, atol=1e-4)
    assert a.real[2].sum() == 2 and a.special[2].sum() == 2     # "" is [CLS] [SEP]


def test_aggregation_modes_give_the_expected_rows(text_dir):
    from edgeml.cure.embed import aggregate, concept_embeddings

    enc = load_text_encoder(text_dir)
    t = enc.encode(["a red circle"])                          # [CLS] a red circle [SEP]
    words = t.states[0, 1:4].astype(np.float64)
    np.testing.assert_allclose(aggregate(t, "mean")[0], words.mean(0))
    np.testing.assert_allclose(aggregate(t, "last")[0], words[-1])
    np.testing.assert_allclose(aggregate(t, "eot")[0], t.states[0, 4])
    assert aggregate(t, "all").shape == (5, TEXT_WIDTH)
    rows = concept_embeddings(enc, ["circle", "red"], templates=("{}", "a photo of {}"))
    assert rows.shape == (4, TEXT_WIDTH)


def test_clip_tokenizer_from_the_open_clip_vocabulary_file():
    from edgeml.cure.embed import clip_bpe_vocab_path, clip_tokenizer

    if clip_bpe_vocab_path() is None:
        pytest.skip("open-clip-torch (which ships the CLIP BPE vocabulary) is not installed")
    ids = clip_tokenizer()("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_erase_on_a_diffusers_folder_writes_a_new_folder_and_report(tmp_path, text_dir):
    import shutil

    from edgeml import cli

    pipe = tmp_path / "pipe"
    small_unet().save_pretrained(pipe / "unet")
    shutil.copytree(text_dir, pipe / "text_encoder")
    shutil.copytree(text_dir, pipe / "tokenizer")
    digest = tree_digest(pipe)
    code = cli.main(["cure", "--model", str(pipe), "--forget", "circle", "--forget", "red", "--retain", "square",
                     "--out", str(tmp_path / "erased")])
    assert code == 0
    assert tree_digest(pipe) == digest
    import json

    report = json.loads((tmp_path / "erased" / "cure_report.json").read_text())
    assert report["tensors_edited"] == 8 and report["rank"] <= 2 * 5
    assert (tmp_path / "erased" / "text_encoder" / "config.json").is_file()
    from diffusers import UNet2DConditionModel

    out = UNet2DConditionModel.from_pretrained(tmp_path / "erased" / "unet")
    enc = load_text_encoder(pipe)
    edit, info = build_edit(enc, ["circle", "red"], ["square"])
    ref = small_unet()
    edit_module(ref, edit)
    for k, v in ref.state_dict().items():
        assert torch.equal(out.state_dict()[k], v), k


def test_uce_runs_through_the_same_paths(tmp_path, text_dir):
    pipe = tmp_path / "pipe"
    small_unet().save_pretrained(pipe / "unet")
    report = erase(pipe, tmp_path / "uce", ["circle"], ["square"], method="uce", text_encoder=text_dir)
    assert report["method"] == "uce" and report["tensors_edited"] == 8 and report["rank"] == 5
