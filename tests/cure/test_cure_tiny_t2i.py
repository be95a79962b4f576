"""tiny_t2i: the registered model, the procedural caption set and the committed checkpoints."""

from __future__ import annotations

import torch

from edgeml.cure import cross_attention_layers
from edgeml.models.tiny_t2i import ASSET_DIR, ATTRIBUTES, make_caption_set
from edgeml.registry import create_model, list_models, model_spec


def test_tiny_t2i_is_registered_as_a_t2i_model_with_cross_attention_on_minilm_width():
    assert "tiny_t2i" in list_models(task="t2i")
    spec = model_spec("tiny_t2i")
    model = create_model("tiny_t2i").eval()
    inputs = spec.example_inputs(model, 2)
    with torch.no_grad():
        assert model(*inputs).shape == (2, 3, 32, 32)
    layers = cross_attention_layers(model)
    assert layers and all(lin.in_features == 384 for lin in layers.values())


def test_caption_set_is_balanced_and_captions_name_the_attributes():
    data = make_caption_set(400, seed=5)
    assert data.images.shape == (400, 3, 32, 32) and data.images.dtype.name == "uint8"
    for k, values in enumerate(ATTRIBUTES.values()):
        counts = torch.bincount(torch.from_numpy(data.labels[:, k]), minlength=len(values))
        assert counts.min() > 400 / len(values) / 2
    shapes = ATTRIBUTES["shape"]
    assert all(shapes[lab[0]] in cap for lab, cap in zip(data.labels, data.captions, strict=True))


def test_committed_judge_reads_fresh_images():
    judge = create_model("tiny_t2i_judge", checkpoint=ASSET_DIR / "judge.safetensors")
    data = make_caption_set(300, seed=123)
    pred = judge.predict(torch.from_numpy(data.images))
    for k, name in enumerate(ATTRIBUTES):
        acc = (pred[name].numpy() == data.labels[:, k]).mean()
        assert acc >= 0.95, f"judge {name} accuracy {acc:.2f}"


def test_committed_judge_reads_tinted_darker_images_like_clean_ones():
    # Under-trained samples come out tinted and darker; the judge reads channels relative to the background.
    judge = create_model("tiny_t2i_judge", checkpoint=ASSET_DIR / "judge.safetensors")
    data = make_caption_set(300, seed=321)
    images = torch.from_numpy(data.images).float()
    gain, offset = torch.tensor([0.85, 0.95, 0.8])[:, None, None], torch.tensor([-30.0, 10.0, -20.0])[:, None, None]
    tinted = images * gain + offset
    pred = judge.predict(tinted.clamp(0, 255).round().to(torch.uint8))
    for k, name in enumerate(ATTRIBUTES):
        acc = (pred[name].numpy() == data.labels[:, k]).mean()
        assert acc >= 0.9, f"judge {name} accuracy on tinted images {acc:.2f}"


def test_erase_on_an_edgeml_tiny_t2i_checkpoint_uses_minilm_and_keeps_the_metadata(tmp_path):
    from edgeml.cure import erase
    from edgeml.io import load_checkpoint, save_checkpoint

    model = create_model("tiny_t2i", width=16)
    src = tmp_path / "tiny.safetensors"
    save_checkpoint(src, {f"model.{k}": v for k, v in model.state_dict().items()},
                    {"model": "tiny_t2i", "config": {"width": 16}})
    report = erase(src, tmp_path / "erased.safetensors", ["circle"], ["square", "triangle"])
    assert report["tensors_edited"] == len(cross_attention_layers(model)) and report["text_width"] == 384
    tensors, meta = load_checkpoint(tmp_path / "erased.safetensors", expect_model="tiny_t2i")
    assert meta["config"] == {"width": 16}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(tensors[f"model.{k}"], v)}
    assert changed and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in changed)
    assert (tmp_path / "erased.cure.json").is_file()


def test_evaluation_scores_every_prompt_group_of_a_case():
    from edgeml.cure.evaluate import RED_TEAM, ConceptCase, score_case
    from edgeml.models.tiny_t2i import MiniLMText, TinyT2IJudge

    torch.manual_seed(0)
    model, judge = create_model("tiny_t2i", width=16).eval(), TinyT2IJudge().eval()
    case = ConceptCase("colour", "red", RED_TEAM["red"][:2])
    scores = score_case(model, judge, MiniLMText(), case, n=1, steps=2)
    assert set(scores) == {"erased", "related", "unrelated", "erased_other_attributes", "red_team", "chance"}
    assert scores["chance"] == 0.25 and all(0 <= v <= 1 for v in scores.values())


def test_tiny_t2i_text_encoder_is_causal_like_clip_and_zeroes_padding():
    # SD's CLIP text encoder is causal; tiny_t2i runs MiniLM the same way, so "circle" is in no state before it.
    from edgeml.models.tiny_t2i import MAX_TOKENS, MiniLMText

    text = MiniLMText()
    states = text(["a striped red circle", "a striped red square"])
    assert states.shape == (2, MAX_TOKENS, 384)
    assert torch.equal(states[0, :4], states[1, :4])          # [CLS] a striped red: identical prefixes
    assert not torch.allclose(states[0, 4], states[1, 4])      # the shape word itself differs
    tokens = text.encode(["a striped red circle"])
    assert tokens.real[0].sum() == 6 and tokens.special[0, [0, 5]].all()
    assert not states[0, 6:].any()                             # padding carries nothing
    bidirectional = MiniLMText(causal=False)(["a striped red circle", "a striped red square"])
    assert not torch.allclose(bidirectional[0, 1], bidirectional[1, 1])
