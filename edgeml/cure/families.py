"""Model families CURE edits, told apart by their weights: which text encoders exist and the context width.

| family        | text encoders (states the UNet reads)                              | context |
|---------------|--------------------------------------------------------------------|---------|
| SD 1.x        | CLIP ViT-L/14, last hidden state                                   | 768     |
| SD 2.x        | OpenCLIP ViT-H/14 (tokenizer pads with "!"), penultimate layer + final norm | 1024 |
| SDXL          | CLIP ViT-L/14 ⊕ OpenCLIP ViT-bigG/14, penultimate states per token  | 2048    |
| SDXL refiner  | OpenCLIP ViT-bigG/14, penultimate states                           | 1280    |

The layout (which encoders, which tokenizer padding) names the family; the widths say whether it has the
published sizes (tiny test pipelines have the layout with other widths). One projector acts on the whole context,
so for SDXL it edits both encoders' parts of every K/V input.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeml.cure.embed import OPEN_CLIP_PAD, TextEncoder, describe_encoder
from edgeml.errors import InputError


@dataclass(frozen=True)
class Family:
    """A model family: its name, the published encoder widths and what its pipeline feeds the UNet."""

    name: str
    label: str
    widths: tuple[int, ...]
    context: str


FAMILIES = {f.name: f for f in (
    Family("sd1", "SD 1.x", (768,), "CLIP ViT-L/14 last hidden state"),
    Family("sd2", "SD 2.x", (1024,), "OpenCLIP ViT-H/14 penultimate layer + final norm"),
    Family("sdxl", "SDXL", (768, 1280), "CLIP ViT-L/14 ⊕ OpenCLIP ViT-bigG/14 penultimate states, per token"),
    Family("sdxl-refiner", "SDXL refiner", (1280,), "OpenCLIP ViT-bigG/14 penultimate states"),
)}
BY_CONTEXT = {sum(f.widths): f for f in FAMILIES.values()}


def _layout(parts: list[dict]) -> str | None:
    """Family name from the encoders' layout (components, states, padding), or None for a custom encoder."""
    names = [p.get("component") for p in parts]
    if names == ["text_encoder", "text_encoder_2"] and all(p.get("states") == "penultimate" for p in parts):
        return "sdxl"
    if names == ["text_encoder_2"] and parts[0].get("states") == "penultimate":
        return "sdxl-refiner"
    if len(parts) == 1 and parts[0].get("kind") in ("clip_text_model", "onnx") and names[0] == "text_encoder":
        return "sd2" if parts[0].get("pad_token") == OPEN_CLIP_PAD else "sd1"
    return None


def detect_family(context_width: int, encoder: TextEncoder) -> dict:
    """The edit report's family entry: name, label, context width, encoders, whether the widths are published."""
    parts = describe_encoder(encoder)
    name = _layout(parts)
    widths = tuple(int(p["width"]) for p in parts)
    if name is None:
        by_width = BY_CONTEXT.get(context_width)
        return {"name": "custom", "label": "custom text encoder", "context_width": context_width,
                "unet_context_like": by_width.label if by_width else None, "encoders": parts,
                "published_widths": False}
    fam = FAMILIES[name]
    published = widths == fam.widths
    label = fam.label if published else f"{fam.label} layout (widths {'+'.join(map(str, widths))}, not published)"
    return {"name": name, "label": label, "context_width": context_width, "context": fam.context,
            "encoders": parts, "published_widths": published}


def check_context(context_width: int, encoder: TextEncoder, where: str = "") -> None:
    """Refuse a text encoder whose (concatenated) width is not the UNet's cross-attention input width."""
    if int(encoder.width) == context_width:
        return
    parts = describe_encoder(encoder)
    given = " + ".join(f"{p['component']} {p['width']}" for p in parts)
    wanted = BY_CONTEXT.get(context_width)
    hint = f" ({wanted.label}: {wanted.context})" if wanted else ""
    raise InputError(f"the UNet's cross-attention input width {context_width}{hint} does not match the "
                     f"text-embedding width {encoder.width} ({given})", path=where or None,
                     fix="use the text encoder(s) the UNet was trained with (--text-encoder PIPELINE_FOLDER)")
