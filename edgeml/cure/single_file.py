"""Text encoders inside single-file checkpoints of the original LDM layout (what A1111 / ComfyUI load).

The UNet lives under `model.diffusion_model.` (its K/V keys end in `attn2.to_k.weight` / `attn2.to_v.weight`, as
in diffusers); the text encoders, when the file holds them, under:

| prefix                                 | family       | layout                | states the UNet reads            |
|----------------------------------------|--------------|-----------------------|----------------------------------|
| `cond_stage_model.transformer.`        | SD 1.x       | transformers CLIP     | last hidden state                |
| `cond_stage_model.model.`              | SD 2.x       | OpenCLIP              | penultimate layer + final norm   |
| `conditioner.embedders.0.transformer.` | SDXL         | transformers CLIP     | penultimate (hidden_states[-2])  |
| `conditioner.embedders.1.model.`       | SDXL         | OpenCLIP              | penultimate, no final norm       |
| `conditioner.embedders.0.model.`       | SDXL refiner | OpenCLIP              | penultimate, no final norm       |

Each is rebuilt as a transformers `CLIPTextModel` from the file's own tensors (read through the checked safetensors
header; nothing is unpickled or downloaded). The configuration comes from the tensor shapes, with 64-wide attention
heads (true of CLIP ViT-L, OpenCLIP ViT-H and ViT-bigG). Tokenizers: `--tokenizer`, else the CLIP BPE vocabulary,
padded with end-of-text (CLIP) or "!" (OpenCLIP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeml.cure.apply import LDM_UNET_PREFIX, read_safetensors_header, read_tensor
from edgeml.cure.embed import OPEN_CLIP_PAD, ConcatTextEncoder, TextEncoder, TransformersTextEncoder, clip_tokenizer
from edgeml.errors import CheckpointError, InputError

HEAD_WIDTH = 64


@dataclass(frozen=True)
class EncoderSlot:
    """Where a text encoder sits in a single file and what the UNet reads from it."""

    prefix: str
    component: str      # the diffusers component it corresponds to
    layout: str         # "clip" (transformers key names) or "open_clip"
    states: str         # "last" or "penultimate"
    drop_last: bool = False  # SD 2.x: OpenCLIP's penultimate layer + final norm = a model one layer shorter


SLOTS = (
    EncoderSlot("cond_stage_model.transformer.", "text_encoder", "clip", "last"),
    EncoderSlot("cond_stage_model.model.", "text_encoder", "open_clip", "last", drop_last=True),
    EncoderSlot("conditioner.embedders.0.transformer.", "text_encoder", "clip", "penultimate"),
    EncoderSlot("conditioner.embedders.1.model.", "text_encoder_2", "open_clip", "penultimate"),
    EncoderSlot("conditioner.embedders.0.model.", "text_encoder_2", "open_clip", "penultimate"),
)
_MARKER = {"clip": "embeddings.token_embedding.weight", "open_clip": "token_embedding.weight"}


def is_ldm_layout(path: str | Path) -> bool:
    """Whether a safetensors file is a single-file checkpoint in the LDM layout (header only)."""
    header, _, _ = read_safetensors_header(Path(path))
    return any(k.startswith(LDM_UNET_PREFIX) for k in header)


def encoder_slots(header: dict) -> list[EncoderSlot]:
    """The text encoders a single file holds, in pipeline order (text_encoder, then text_encoder_2)."""
    found = [s for s in SLOTS if any(k.startswith(s.prefix) and k.endswith(_MARKER[s.layout]) for k in header)]
    return sorted(found, key=lambda s: s.component)


def _layer_count(keys: list[str], pattern: str) -> int:
    idx = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not idx or idx != set(range(max(idx) + 1)):
        raise CheckpointError(f"text encoder layers {sorted(idx)[:8]} are not numbered 0..n-1")
    return len(idx)


def _open_clip_to_clip(sd: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """OpenCLIP text-tower tensors -> transformers CLIPTextModel names (first `layers` blocks)."""
    out = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
           "text_model.final_layer_norm.weight": sd["ln_final.weight"],
           "text_model.final_layer_norm.bias": sd["ln_final.bias"]}
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for i in range(layers):
        src, dst = f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for part in ("weight", "bias"):
            for a, b in names.items():
                out[f"{dst}{b}.{part}"] = sd[f"{src}{a}.{part}"]
            q, k, v = sd[f"{src}attn.in_proj_{part}"].chunk(3, dim=0)
            out.update({f"{dst}self_attn.q_proj.{part}": q, f"{dst}self_attn.k_proj.{part}": k,
                        f"{dst}self_attn.v_proj.{part}": v})
    return out


def _build_clip(sd: dict[str, torch.Tensor], slot: EncoderSlot, where: Path):
    """A transformers CLIPTextModel from one slot's tensors (prefix stripped)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    try:
        if slot.layout == "open_clip":
            layers = _layer_count(list(sd), r"transformer\.resblocks\.(\d+)\.")
            sd = _open_clip_to_clip(sd, layers - 1 if slot.drop_last else layers)
            layers -= slot.drop_last
        else:
            if not any(k.startswith("text_model.") for k in sd):  # old LDM files store CLIPTextTransformer keys
                sd = {f"text_model.{k}": v for k, v in sd.items()}
            layers = _layer_count(list(sd), r"text_model\.encoder\.layers\.(\d+)\.")
        vocab, width = sd["text_model.embeddings.token_embedding.weight"].shape
        positions = sd["text_model.embeddings.position_embedding.weight"].shape[0]
        inner = sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"the text encoder under {slot.prefix!r} is incomplete or malformed ({e})",
                              path=where, fix="pass --text-encoder with the pipeline's diffusers folder") from None
    if min(vocab, width, positions, inner, layers) < 1:
        raise CheckpointError(f"the text encoder under {slot.prefix!r} has an empty dimension (vocabulary {vocab}, "
                              f"width {width}, positions {positions}, layers {layers})", path=where)
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=width, intermediate_size=inner, num_hidden_layers=layers,
                            num_attention_heads=max(1, width // HEAD_WIDTH), max_position_embeddings=positions,
                            hidden_act="gelu" if slot.layout == "open_clip" else "quick_gelu")
    model = CLIPTextModel(config).eval()
    wanted = model.state_dict()
    if not any(k.startswith("text_model.") for k in wanted):  # transformers 5 dropped the text_model wrapper
        sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if k in wanted}
    missing = sorted(k for k in set(wanted) - set(sd) if not k.endswith("position_ids"))
    bad = [k for k, v in sd.items() if tuple(v.shape) != tuple(wanted[k].shape)]
    if missing or bad:
        what = f"missing {missing[0]}" if missing else f"{bad[0]} has shape {list(sd[bad[0]].shape)}"
        raise CheckpointError(f"the text encoder under {slot.prefix!r} does not fit a CLIP text model ({what})",
                              path=where, fix="pass --text-encoder with the pipeline's diffusers folder")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    return model


def single_file_text_encoder(path: str | Path, tokenizer: str | Path | None = None) -> TextEncoder | None:
    """The text encoder(s) a single-file checkpoint holds, as its pipeline runs them; None when it holds none."""
    path = Path(path)
    header, _, base = read_safetensors_header(path)
    slots = encoder_slots(header)
    if not slots:
        return None
    if tokenizer is not None and len(slots) > 1:
        raise InputError("--tokenizer names one tokenizer, this SDXL checkpoint has two text encoders", path=path,
                         fix="leave --tokenizer out (the CLIP BPE vocabulary is used for both)")
    parts = []
    for slot in slots:
        keys = [k for k in header if k.startswith(slot.prefix) and not k.endswith("position_ids")]
        sd = {k[len(slot.prefix):]: read_tensor(path, header[k], base) for k in keys
              if header[k]["dtype"] in ("F32", "F16", "BF16", "F64")}
        model = _build_clip(sd, slot, path)
        tok = _tokenizer(tokenizer, OPEN_CLIP_PAD if slot.layout == "open_clip" else "<|endoftext|>")
        if model.config.vocab_size < len(tok):  # a token id past the embedding table would crash, not err
            raise CheckpointError(f"the text encoder under {slot.prefix!r} embeds {model.config.vocab_size} tokens, "
                                  f"its tokenizer has {len(tok)}", path=path,
                                  fix="pass --text-encoder with the pipeline's diffusers folder")
        enc = TransformersTextEncoder.from_model(model, tok, states=slot.states, component=slot.component)
        enc.source = f"{path.name}:{slot.prefix}"
        parts.append(enc)
    return ConcatTextEncoder(parts) if len(parts) > 1 else parts[0]


def _tokenizer(folder: str | Path | None, pad: str):
    if folder is None:
        return clip_tokenizer(pad)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot load the tokenizer ({type(e).__name__})", path=folder,
                         fix="pass --tokenizer with a folder saved by transformers") from None
