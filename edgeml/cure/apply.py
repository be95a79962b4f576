"""Apply an input-side edit `W ← W (I − D)` to every cross-attention K/V projection of a diffusion UNet.

Targets: a `UNet2DConditionModel` (or any module holding diffusers cross-attention) in memory, a safetensors
state dict file (diffusers or original SD key names, edgeml checkpoints), and a diffusers pipeline folder.
Cross-attention K/V are the projections whose input is the text embedding: `Attention.is_cross_attention`
modules in memory, keys ending in `attn2.to_k.weight` / `attn2.to_v.weight` on disk.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeml.cure._files import NUMPY_DTYPES, copy_with_patches, read_range
from edgeml.cure.spectral import LowRankEdit, apply_to_weights
from edgeml.errors import CheckpointError, InputError

CROSS_KV_KEY = re.compile(r"(^|\.)attn2\.to_[kv]\.weight$")


def cross_attention_layers(module: nn.Module) -> dict[str, nn.Linear]:
    """Every cross-attention key/value projection: {"down_blocks.1.attentions.0...attn2.to_k": Linear}."""
    found = {}
    for name, sub in module.named_modules():
        if getattr(sub, "is_cross_attention", False) and hasattr(sub, "to_k") and hasattr(sub, "to_v"):
            for proj in ("to_k", "to_v"):
                found[f"{name}.{proj}"] = getattr(sub, proj)
    if not found:
        raise InputError("the model has no cross-attention layer (no K/V projection reads a text embedding)",
                         fix="pass a text-conditioned UNet such as diffusers' UNet2DConditionModel")
    return found


def tensor_report(name: str, w: torch.Tensor, stats: dict[str, float], *, layout: str = "out,in") -> dict:
    """One edit-report row: name, stored shape/dtype/layout, ‖W‖, ‖W'‖, ‖W' − W‖ and ‖W' − W‖ / ‖W‖."""
    shape = list(w.shape) if layout == "out,in" else list(w.shape)[::-1]
    return {"name": name, "shape": shape, "dtype": str(w.dtype).replace("torch.", ""), "layout": layout, **stats}


@torch.no_grad()
def edit_module(module: nn.Module, edit: LowRankEdit, *, report: bool = True) -> list[dict]:
    """Edit every cross-attention K/V weight of `module` in place (one batched float64 update); -> report rows."""
    layers = cross_attention_layers(module)
    weights = {n: lin.weight for n, lin in layers.items()}
    new, stats = apply_to_weights(edit, weights, inplace=True)
    for n, lin in layers.items():
        if new[n] is not lin.weight:
            lin.weight.copy_(new[n])
    return [tensor_report(n, weights[n], stats[n]) for n in layers] if report else []


def _safetensors_header(path: Path) -> tuple[dict, int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError("not a safetensors file (shorter than its header)", path=path)
        n = struct.unpack("<Q", raw)[0]
        head = f.read(n)
    try:
        header = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError("not a safetensors file (bad header)", path=path) from None
    return header, 8 + n


def safetensors_kv_keys(path: Path) -> list[str]:
    """Cross-attention K/V weight keys in a safetensors file (header only)."""
    header, _ = _safetensors_header(path)
    return [k for k in header if k != "__metadata__" and CROSS_KV_KEY.search(k)]


def edit_safetensors_file(src: str | Path, dst: str | Path, edit: LowRankEdit) -> list[dict]:
    """Copy `src` to `dst` with its cross-attention K/V weights edited in place in the byte stream; -> report rows.

    Only those tensors' bytes are read and rewritten; dtype, key order and metadata stay as they were.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError("safetensors file not found", path=src)
    header, base = _safetensors_header(src)
    keys = [k for k in header if k != "__metadata__" and CROSS_KV_KEY.search(k)]
    if not keys:
        raise InputError("no cross-attention K/V weights (keys ending in attn2.to_k.weight / attn2.to_v.weight)",
                         path=src, fix="pass the UNet weights of a text-conditioned diffusion model")
    size = src.stat().st_size
    weights, spans = {}, {}
    for k in keys:
        info = header[k]
        if info["dtype"] not in NUMPY_DTYPES and info["dtype"] != "BF16":
            raise InputError(f"{k}: dtype {info['dtype']} is not supported", path=src)
        start, end = info["data_offsets"]
        if base + end > size:
            raise CheckpointError(f"{k} points past the end of the file (truncated?)", path=src)
        count = int(np.prod(info["shape"]))
        if info["dtype"] == "BF16":
            raw = read_range(src, base + start, count, np.uint16)
            t = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(read_range(src, base + start, count, NUMPY_DTYPES[info["dtype"]]))
        weights[k] = t.reshape(info["shape"])
        spans[k] = base + start
    new, stats = apply_to_weights(edit, weights)
    rows = [tensor_report(k, weights[k], stats[k]) for k in keys]
    patches = [(spans[k], _tensor_bytes(new[k])) for k in keys]
    copy_with_patches(src, dst, patches)
    return rows


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def unet_weight_files(folder: Path) -> list[Path]:
    """The UNet safetensors files of a diffusers pipeline folder (all variants and shards)."""
    unet = folder / "unet"
    files = sorted(unet.glob("*.safetensors"))
    if not files:
        bins = sorted(unet.glob("*.bin"))
        if bins:
            raise InputError("the UNet weights are pickled (.bin); edgeml never unpickles", path=unet,
                             fix="convert them to safetensors (diffusers: save_pretrained(safe_serialization=True))")
        raise InputError("no UNet weights (unet/*.safetensors) in this folder", path=folder,
                         fix="pass a diffusers pipeline folder, a .safetensors file or an ONNX UNet")
    return files


def edit_diffusers_folder(src: str | Path, dst_tmp: Path, edit: LowRankEdit) -> list[dict]:
    """Copy a diffusers pipeline folder into `dst_tmp` (a fresh folder) with its UNet K/V weights edited."""
    src = Path(src)
    files = unet_weight_files(src)
    rows: list[dict] = []
    if not any(safetensors_kv_keys(f) for f in files):
        raise InputError("the UNet has no cross-attention K/V weights", path=src / "unet")
    for item in src.rglob("*"):
        rel = item.relative_to(src)
        target = dst_tmp / rel
        if item.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif item in files and safetensors_kv_keys(item):
            target.parent.mkdir(parents=True, exist_ok=True)
            rows += [{**r, "file": str(rel)} for r in edit_safetensors_file(item, target, edit)]
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)
    return rows
