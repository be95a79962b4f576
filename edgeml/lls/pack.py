"""The LLS weight pack: what the on-device engine (csrc/lls) loads and writes back after fine-tuning.

One file: a 32-byte preamble (magic ``EDGELLS\\0``, u32 format version, u32 reserved, u64 header length,
u64 data length), a JSON header padded to 64 bytes, 64-byte-aligned little-endian tensors, and a CRC-32 of
everything before it. The header holds the graph (blocks of ops, the tap whose output feeds each local loss,
the transitions), shapes, modes, basis parameters, the optimizer and which blocks are trainable. Written from
a PyTorch LLS net (or an `edgeml train` checkpoint) by `write_pack`, read back by `read_pack` here and by
`edgeml::lls::read_pack` in C++ (same checks: truncation, checksum, newer version).

Precision: float32. With `quantize_frozen=True` the conv/linear weights of FROZEN blocks are stored as int8
(symmetric, one scale per output channel in ``<name>.scale``); trainable blocks always stay float32.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import CheckpointError, ConfigError
from edgeml.io import write_bytes

MAGIC = b"EDGELLS\0"
FORMAT = "edgeml-lls-pack"
VERSION = 1
ALIGN = 64
PREAMBLE = struct.Struct("<8sIIQQ")  # magic, version, reserved, header_len, data_len
ENGINE_MODES = ("lls", "lls_m", "lls_mxm")
DEFAULT_OPTIMIZER = {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
_FIX = "write it again with edgeml.lls.pack.write_pack"


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Pack:
    """A pack in memory: `header` (dict, with the "tensors" table) and `tensors` (name -> numpy array)."""

    header: dict[str, Any]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def float_tensor(self, name: str) -> np.ndarray:
        """A tensor as float32 (int8 tensors dequantised with their per-row `.scale`)."""
        t = self.tensors[name]
        if t.dtype == np.int8:
            scale = self.tensors[name + ".scale"]
            return (t.reshape(t.shape[0], -1).astype(np.float32) * scale[:, None]).reshape(t.shape)
        return t

    @property
    def trainable_blocks(self) -> list[int]:
        return [i for i, b in enumerate(self.header["blocks"]) if b.get("trainable")]


def parse_blocks(spec: str | int | list[int] | None, n_blocks: int) -> list[int]:
    """`"last:2"` / `2` -> the last two block indices; `"0,3"` or a list -> those; None -> []."""
    if spec is None:
        return []
    if isinstance(spec, int):
        spec = f"last:{spec}"
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.startswith("last:"):
            try:
                k = int(spec[5:])
            except ValueError:
                raise ConfigError(f"bad block spec {spec!r}", fix="use last:N, all, or a list like 0,3") from None
            if not 0 <= k <= n_blocks:
                raise ConfigError(f"cannot train the last {k} blocks of a net with {n_blocks} blocks",
                                  fix=f"use last:1 .. last:{n_blocks}")
            return list(range(n_blocks - k, n_blocks))
        if spec == "all":
            return list(range(n_blocks))
        try:
            spec = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ConfigError(f"bad block spec {spec!r}", fix="use last:N, all, or a list like 0,3") from None
    out = sorted({i % n_blocks if i < 0 else i for i in spec})
    if any(i >= n_blocks for i in out):
        raise ConfigError(f"block index out of range in {spec!r} (the net has {n_blocks} blocks)")
    return out


# -- graph from an LLSNet -------------------------------------------------------------------------------------

def _layer_ops(module: Any, prefix: str) -> list[dict[str, Any]]:
    """Engine ops of one torch layer (or Sequential), with tensor names = state_dict keys under `prefix`."""
    from torch import nn

    def name(p: str) -> str:
        return f"{prefix}{p}"

    if isinstance(module, nn.Sequential):
        ops: list[dict[str, Any]] = []
        for key, child in module.named_children():
            ops += _layer_ops(child, f"{prefix}{key}.")
        return ops
    if isinstance(module, nn.Identity):
        return []
    if isinstance(module, nn.Conv2d):
        if module.dilation != (1, 1) or module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ConfigError(f"{prefix}: only zero-padded, undilated convolutions run on the engine")
        return [{"op": "conv2d", "weight": name("weight"), "bias": name("bias") if module.bias is not None else None,
                 "stride": list(module.stride), "padding": list(module.padding), "groups": module.groups}]
    if isinstance(module, nn.Linear):
        return [{"op": "linear", "weight": name("weight"), "bias": name("bias") if module.bias is not None else None}]
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if module.running_mean is None:
            raise ConfigError(f"{prefix}: batch norm without running statistics cannot run in frozen mode")
        return [{"op": "batchnorm", "weight": name("weight") if module.affine else None,
                 "bias": name("bias") if module.affine else None, "running_mean": name("running_mean"),
                 "running_var": name("running_var"), "eps": module.eps}]
    if isinstance(module, nn.LeakyReLU):
        return [{"op": "leaky_relu", "slope": module.negative_slope}]
    if isinstance(module, nn.ReLU):
        return [{"op": "relu"}]
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        pad = module.padding if isinstance(module.padding, int) else module.padding[0]
        if pad or module.ceil_mode or getattr(module, "dilation", 1) not in (1, (1, 1)):
            raise ConfigError(f"{prefix}: padded / ceil-mode / dilated pooling is not supported by the engine")
        return [{"op": "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool", "kernel": k, "stride": s}]
    if isinstance(module, nn.AdaptiveAvgPool2d):
        size = module.output_size
        size = [size, size] if isinstance(size, int) else list(size)
        return [{"op": "adaptive_avgpool", "size": size}]
    if isinstance(module, nn.Flatten):
        return [{"op": "flatten"}]
    raise ConfigError(f"{prefix}: layer {type(module).__name__} is not supported by the LLS engine")


def model_graph(model: Any) -> dict[str, Any]:
    """The header fields describing an `LLSNet` (blocks of ops with taps and local rules + the classifier)."""
    if not hasattr(model, "blocks") or not hasattr(model, "classifier"):
        raise ConfigError("the LLS engine needs an LLS net (lls_smallconv, lls_vgg8, lls_vww)")
    mode = model.mode
    if mode not in ENGINE_MODES:
        raise ConfigError(f"the engine fine-tunes modes {ENGINE_MODES}; this net was built for {mode!r}",
                          fix="train the net with --mode lls, lls_m or lls_mxm")
    blocks = []
    waveforms = set()
    for i, (blk, transition) in enumerate(zip(model.blocks, model.transitions, strict=True)):
        ops = _layer_ops(blk.block, f"blocks.{i}.block.")
        tap = len(ops) - 1
        ops += _layer_ops(transition, f"transitions.{i}.")
        rule = blk.rule
        waveforms.add(rule.waveform)
        local = {"mode": rule.mode, "pool": rule.pool or 0, "temperature": rule.temperature,
                 "label_smoothing": rule.label_smoothing,
                 "m": f"blocks.{i}.head" if rule.mode == "lls_m" else None,
                 "M": f"blocks.{i}.head" if rule.mode == "lls_mxm" else None}
        blocks.append({"name": f"blocks.{i}", "ops": ops, "tap": tap, "local": local})
    blocks.append({"name": "classifier", "ops": _layer_ops(model.classifier, "classifier."), "tap": 0,
                   "local": {"mode": "ce", "label_smoothing": 0.0}})
    if len(waveforms) > 1:
        raise ConfigError(f"blocks use different waveforms {sorted(waveforms)}; the pack holds one basis")
    return {"blocks": blocks, "waveform": waveforms.pop() if waveforms else "square"}


def _quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row: w ≈ q * scale[:, None]."""
    rows = w.reshape(w.shape[0], -1)
    scale = np.abs(rows).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


def write_pack(path: str | PathLike, model: Any, *, train_blocks: str | int | list[int] | None = "last:2",
               optimizer: dict[str, Any] | None = None, quantize_frozen: bool = False,
               model_name: str | None = None) -> Path:
    """Write `model` (an LLSNet) as a pack at `path` (atomically) and return the path.

    `train_blocks`: which blocks the engine updates ("last:2" = the last LLS block and the classifier);
    `optimizer`: {"name": "adamw"|"sgd", "lr", "betas", "eps", "weight_decay", "momentum"} (defaults: AdamW);
    `quantize_frozen`: store frozen blocks' conv/linear weights as int8 (per-channel scales).
    """
    graph = model_graph(model)
    blocks = graph["blocks"]
    trainable = set(parse_blocks(train_blocks, len(blocks)))
    for i, b in enumerate(blocks):
        b["trainable"] = i in trainable
    config = dict(getattr(model, "config", {}))
    c, s = int(config.get("in_channels", 3)), int(config.get("image_size", 32))
    header = {
        "format": FORMAT, "version": VERSION, "model": model_name or getattr(model, "registry_name", None),
        "config": config,
        # LLSNet.scale_input maps [0, 1] to [-1, 1]: (v / 255 - 0.5) / 0.5 for uint8 pixels.
        "input": {"shape": [c, s, s], "scale": 1.0 / 255.0, "mean": [0.5] * c, "std": [0.5] * c},
        "num_classes": int(config.get("num_classes", model.classifier.out_features)),
        "basis": {"waveform": graph["waveform"], "f_min": 50.0, "f_max": 512.0, "n_offset": 0},
        "optimizer": {**DEFAULT_OPTIMIZER, **(optimizer or {})},
        "precision": {"compute": "float32", "frozen_weights": "int8" if quantize_frozen else "float32",
                      "trainable_weights": "float32"},
        "blocks": blocks,
    }
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    tensors: dict[str, np.ndarray] = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    if quantize_frozen:
        for i, b in enumerate(blocks):
            if i in trainable:
                continue
            for op in b["ops"]:
                if op["op"] in ("conv2d", "linear"):
                    q, scale = _quantize_rows(tensors[op["weight"]])
                    tensors[op["weight"]] = q
                    tensors[op["weight"] + ".scale"] = scale
    return write_pack_raw(path, header, tensors)


def write_pack_raw(path: str | PathLike, header: dict[str, Any], tensors: dict[str, np.ndarray]) -> Path:
    """Write `header` (without its "tensors" table, which is added) and float32/int8 `tensors` atomically."""
    table: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        if arr.dtype == np.float32:
            dtype = "f32"
        elif arr.dtype == np.int8:
            dtype = "i8"
        else:
            raise ConfigError(f"tensor {name!r} has dtype {arr.dtype}; packs hold float32 and int8")
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        table[name] = {"dtype": dtype, "shape": list(arr.shape), "offset": offset, "nbytes": len(raw)}
        chunks.append(raw + b"\0" * (_align(len(raw)) - len(raw)))
        offset += _align(len(raw))
    head = json.dumps({**{k: v for k, v in header.items() if k != "tensors"}, "tensors": table}).encode()
    data = b"".join(chunks)
    pre = PREAMBLE.pack(MAGIC, VERSION, 0, len(head), len(data))
    body = pre + head + b"\0" * (_align(len(pre) + len(head)) - len(pre) - len(head)) + data
    write_bytes(path, body + struct.pack("<I", zlib.crc32(body)))
    return Path(path)


def read_pack(path: str | PathLike) -> Pack:
    """Read and validate a pack (magic, version, size, CRC-32, header, tensor table); never modifies it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("pack not found", path=path, fix="create one with `edgeml finetune --checkpoint`"
                              " or edgeml.lls.pack.write_pack")
    raw = path.read_bytes()
    if len(raw) < PREAMBLE.size or raw[:8] != MAGIC:
        raise CheckpointError("not an edgeml LLS pack (bad magic or shorter than the preamble)", path=path, fix=_FIX)
    _, version, _, header_len, data_len = PREAMBLE.unpack_from(raw)
    if version > VERSION:
        raise CheckpointError(f"pack format version {version} is newer than this edgeml ({VERSION})", path=path,
                              fix="update edgeml to read it")
    data_off = _align(PREAMBLE.size + header_len)
    expected = data_off + data_len + 4
    if len(raw) < expected:
        raise CheckpointError(f"truncated pack ({len(raw)} bytes, expected {expected})", path=path, fix=_FIX)
    if len(raw) > expected:
        raise CheckpointError(f"{len(raw) - expected} unexpected bytes after the pack", path=path, fix=_FIX)
    (stored,) = struct.unpack_from("<I", raw, data_off + data_len)
    if stored != zlib.crc32(raw[: data_off + data_len]):
        raise CheckpointError("checksum mismatch (the pack was modified or corrupted)", path=path, fix=_FIX)
    try:
        header = json.loads(raw[PREAMBLE.size: PREAMBLE.size + header_len])
        table = header["tensors"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"unreadable pack header ({e})", path=path, fix=_FIX) from None
    if header.get("format") != FORMAT:
        raise CheckpointError("header 'format' is not edgeml-lls-pack", path=path, fix=_FIX)
    tensors = {}
    for name, e in table.items():
        dtype = {"f32": np.dtype("<f4"), "i8": np.dtype("i1")}.get(e.get("dtype"))
        count = int(np.prod(e["shape"], dtype=np.int64))
        if dtype is None or e["nbytes"] != count * dtype.itemsize or e["offset"] + e["nbytes"] > data_len:
            raise CheckpointError(f"tensor {name!r} has an inconsistent dtype/shape/offset", path=path, fix=_FIX)
        start = data_off + e["offset"]
        tensors[name] = np.frombuffer(raw, dtype, count, start).reshape(e["shape"]).copy()
    return Pack(header, tensors)


def load_pack_weights(model: Any, pack: Pack) -> Any:
    """Copy a pack's (dequantised) tensors into a torch model with the same state_dict names; returns it."""
    import torch

    state = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name in pack.tensors:
                value.copy_(torch.from_numpy(pack.float_tensor(name)).reshape(value.shape))
    return model


def pack_from_checkpoint(checkpoint: str | PathLike, out: str | PathLike, **kwargs: Any) -> Path:
    """`edgeml train` checkpoint -> pack (the model name and config come from its metadata)."""
    from edgeml.io import load_checkpoint
    from edgeml.registry import create_model

    _, meta = load_checkpoint(checkpoint)
    model = create_model(meta["model"], checkpoint=checkpoint)
    return write_pack(out, model.eval(), model_name=meta["model"], **kwargs)
