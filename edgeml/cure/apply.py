"""Apply an input-side edit `W ← W (I − D)` to every cross-attention K/V projection of a diffusion UNet.

Targets: a `UNet2DConditionModel` (or any module holding diffusers cross-attention) in memory, a safetensors
state dict file (diffusers or original SD key names, edgeml checkpoints), and a diffusers pipeline folder.
Cross-attention K/V are the projections whose input is the text embedding: `Attention.is_cross_attention`
modules in memory, keys ending in `attn2.to_k.weight` / `attn2.to_v.weight` on disk.
"""

from __future__ import annotations

import json
import math
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
# The UNet's prefix in single-file checkpoints of the original LDM layout (A1111 / ComfyUI files); when present, only
# K/V weights under it are edited (text encoders and VAE in the same file are not cross-attention).
LDM_UNET_PREFIX = "model.diffusion_model."


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
    """Edit every cross-attention K/V weight of `module` in place (`apply_to_weights`); -> report rows."""
    layers = cross_attention_layers(module)
    weights = {n: lin.weight for n, lin in layers.items()}
    _, stats = apply_to_weights(edit, weights, inplace=True, stats=report)
    return [tensor_report(n, weights[n], stats[n]) for n in layers] if report else []


# safetensors' own loader refuses headers over 100 MB; a header length past that is hostile or corrupt.
MAX_HEADER_BYTES = 100 << 20
# Bits per element of every safetensors dtype (the sub-byte float formats included).
ITEM_BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U64": 64,
             "U32": 32, "U16": 16, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F6_E2M3": 6,
             "F6_E3M2": 6, "F4": 4, "C64": 64}
EDITABLE_DTYPES = ("F32", "F16", "F64", "BF16")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_safetensors_header(path: Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, `__metadata__`, data start) of a safetensors file, every field checked before use.

    Checked: the length field against the file, UTF-8 JSON object, metadata str -> str, each entry's dtype,
    shape (ints >= 0) and data_offsets (inside the data, non-overlapping, as long as dtype × shape says).
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError("not a safetensors file (shorter than its header)", path=path)
        n = struct.unpack("<Q", raw)[0]
        if n < 2 or n > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"not a safetensors file (header length {n} does not fit the file)", path=path)
        head = f.read(n)
    try:
        header = json.loads(head)
    except (ValueError, RecursionError):
        raise CheckpointError("not a safetensors file (header is not UTF-8 JSON)", path=path) from None
    if not isinstance(header, dict):
        raise CheckpointError("not a safetensors file (header is not a JSON object)", path=path)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError("safetensors __metadata__ must map strings to strings", path=path)
    data_size = size - 8 - n
    spans = []
    for key, info in header.items():
        bad = _entry_problem(info, data_size)
        if bad:
            raise CheckpointError(f"tensor {key!r}: {bad}", path=path, fix="the file is corrupt; re-save it")
        spans.append((*info["data_offsets"], key))
    end = 0
    for start, stop, key in sorted(spans):
        if start < end and stop > start:
            raise CheckpointError(f"tensor {key!r} overlaps another tensor's bytes", path=path)
        end = max(end, stop)
    return header, meta, 8 + n


def _entry_problem(info, data_size: int) -> str | None:
    """Why a header entry is unusable, or None."""
    if not isinstance(info, dict):
        return "entry is not a JSON object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEM_BITS:
        return f"unknown dtype {dtype!r}"
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a list of integers >= 0"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        return f"data_offsets {offsets!r} are not inside the {data_size} data bytes"
    if 8 * (offsets[1] - offsets[0]) != math.prod(shape) * ITEM_BITS[dtype]:
        return f"{offsets[1] - offsets[0]} data bytes do not hold a {dtype} tensor of shape {shape}"
    return None


def safetensors_kv_entries(path: Path) -> tuple[dict[str, dict], int]:
    """({key: header entry}, data start) of the cross-attention K/V weights, each checked to be an editable 2-D
    float tensor (header only: nothing else is read)."""
    header, _, base = read_safetensors_header(path)
    kv = {k: info for k, info in header.items() if CROSS_KV_KEY.search(k)}
    if any(k.startswith(LDM_UNET_PREFIX) for k in header):
        kv = {k: info for k, info in kv.items() if k.startswith(LDM_UNET_PREFIX)}
    for k, info in kv.items():
        if info["dtype"] not in EDITABLE_DTYPES:
            raise InputError(f"{k}: dtype {info['dtype']} is not supported (F32, F16, F64, BF16)", path=path)
        if len(info["shape"]) != 2:
            raise CheckpointError(f"{k}: shape {info['shape']} is not a 2-D weight", path=path)
    return kv, base


def read_tensor(path: Path, info: dict, base: int) -> torch.Tensor:
    """One float tensor of a safetensors file from its checked header entry (`read_safetensors_header`)."""
    if info["dtype"] not in EDITABLE_DTYPES:
        raise InputError(f"dtype {info['dtype']} is not supported here (F32, F16, F64, BF16)", path=path)
    start, count = info["data_offsets"][0], math.prod(info["shape"])
    if info["dtype"] == "BF16":
        raw = read_range(path, base + start, count, np.uint16)
        t = torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(read_range(path, base + start, count, NUMPY_DTYPES[info["dtype"]]))
    return t.reshape(info["shape"])


def context_width(shapes: list[list[int]] | list[tuple[int, ...]], where: str | Path = "") -> int:
    """The one input width of all cross-attention K/V weights ([out, in] shapes); mixed widths are an error."""
    widths = sorted({int(s[1]) for s in shapes})
    if len(widths) != 1:
        raise CheckpointError(f"cross-attention K/V weights read contexts of different widths {widths}",
                              path=where or None, fix="pass the UNet of one model")
    return widths[0]


def safetensors_kv_keys(path: Path) -> list[str]:
    """Cross-attention K/V weight keys in a safetensors file (header only)."""
    return list(safetensors_kv_entries(path)[0])


def edit_safetensors_file(src: str | Path, dst: str | Path, edit: LowRankEdit) -> list[dict]:
    """Copy `src` to `dst` with its cross-attention K/V weights edited in place in the byte stream; -> report rows.

    Only those tensors' bytes are read and rewritten; dtype, key order and metadata stay as they were.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise InputError("safetensors file not found", path=src)
    kv, base = safetensors_kv_entries(src)
    keys = list(kv)
    if not keys:
        raise InputError("no cross-attention K/V weights (keys ending in attn2.to_k.weight / attn2.to_v.weight)",
                         path=src, fix="pass the UNet weights of a text-conditioned diffusion model")
    rows: list[dict] = []

    def edit_all() -> list[tuple[int, np.ndarray]]:
        """Read the K/V tensors into fresh buffers and edit them there (runs while the file is being copied)."""
        weights = {k: read_tensor(src, info, base) for k, info in kv.items()}
        _, stats = apply_to_weights(edit, weights, inplace=True)
        rows.extend(tensor_report(k, weights[k], stats[k]) for k in keys)
        return [(base + kv[k]["data_offsets"][0], _tensor_bytes(weights[k])) for k in keys]

    copy_with_patches(src, dst, edit_all, [(base + kv[k]["data_offsets"][0],
                                            kv[k]["data_offsets"][1] - kv[k]["data_offsets"][0]) for k in keys])
    return rows


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous tensor (any dtype, bfloat16 included) as a uint8 view of the same memory."""
    return t.view(torch.uint8).numpy()


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
