"""The LLS weight pack: what the on-device engine (csrc/lls) loads and writes back after fine-tuning.

One file: a 32-byte preamble (magic ``EDGELLS\\0``, u32 format version, u32 reserved, u64 header length,
u64 data length), a JSON header padded to 64 bytes, 64-byte-aligned little-endian tensors, and a CRC-32 of
everything before it. The header holds the graph (blocks of ops, the tap whose output feeds each local loss,
the transitions), shapes, modes, basis parameters, the optimizer and which blocks are trainable. Written from
a PyTorch LLS net (or an `edgeml train` checkpoint) by `write_pack`, read back by `read_pack` here and by
`edgeml::lls::read_pack` in C++ (same checks: truncation, checksum, newer version).

Precision: float32. With `quantize_frozen=True` the conv/linear weights of FROZEN blocks are stored as int8
(symmetric in [-127, 127], one scale per output channel in ``<name>.scale``). The header's
``precision.frozen_compute`` says how the engine runs them: ``"float32"`` (the default: weights dequantised, Eigen's
float GEMM) or ``"int8"`` (gemmlowp's integer GEMM: activations quantised per tensor to uint8, int32 sums, float32
output) — on x86 the int8 path measured 1.5-2x slower than float32 (benchmarks/lls_device.py), so it is opt-in, for
devices whose integer kernels (NEON) pay off. Trainable blocks always stay float32.
"""

from __future__ import annotations

import json
import math
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
ENGINE_WAVEFORMS = ("square", "sine")  # the closed forms csrc/lls computes (edgeml.lls.basis); not "random"
# The schema's optimizer defaults: the C++ engine's OptimizerSpec holds the same values (a test keeps them equal),
# so a header that leaves a field out trains identically in both.
DEFAULT_OPTIMIZER = {"name": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                     "momentum": 0.9, "dampening": 0.0, "nesterov": False}
OPTIMIZERS = ("sgd", "adamw")
OPS = ("conv2d", "linear", "batchnorm", "leaky_relu", "relu", "maxpool", "avgpool", "adaptive_avgpool", "flatten")
LOCAL_MODES = (*ENGINE_MODES, "ce")
FROZEN_COMPUTE = ("int8", "float32")  # how the engine runs frozen int8 layers (header precision.frozen_compute)
MAX_EXTENT = 1 << 24  # one dimension, channel count, stride, padding (as csrc/lls/engine.cpp)
MAX_ELEMENTS = 1 << 28  # values of one sample's input
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
    if waveforms - set(ENGINE_WAVEFORMS):
        raise ConfigError(f"the engine computes the {' and '.join(ENGINE_WAVEFORMS)} bases, not "
                          f"{waveforms.pop()!r}", fix="train the net with --set waveform=square (or sine)")
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
               frozen_compute: str = "float32", model_name: str | None = None) -> Path:
    """Write `model` (an LLSNet) as a pack at `path` (atomically) and return the path.

    `train_blocks`: which blocks the engine updates ("last:2" = the last LLS block and the classifier);
    `optimizer`: {"name": "adamw"|"sgd", "lr", "betas", "eps", "weight_decay", "momentum"} (defaults: AdamW);
    `quantize_frozen`: store frozen blocks' conv/linear weights as int8 (per-channel scales);
    `frozen_compute`: how the engine runs those layers, "float32" (dequantised weights) or "int8" (an integer GEMM).
    """
    if frozen_compute not in FROZEN_COMPUTE:
        raise ConfigError(f"frozen_compute must be one of {FROZEN_COMPUTE}, got {frozen_compute!r}")
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
                      "frozen_compute": frozen_compute if quantize_frozen else "float32",
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    """Range checks of one pack header; every failure is a CheckpointError naming the pack and the field."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, problem: str) -> None:
        raise CheckpointError(problem, path=self.path, fix=_FIX)

    def obj(self, value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{what} must be a JSON object")
        return value

    def int(self, value: Any, lo: int, hi: int, what: str) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            self.fail(f"{what} must be an integer in [{lo}, {hi}], got {value!r}")
        return value

    def ints(self, value: Any, lo: int, hi: int, what: str, count: tuple[int, ...] = (1, 2)) -> list[int]:
        values = value if isinstance(value, list) else [value]
        if len(values) not in count:
            self.fail(f"{what} must be {' or '.join(map(str, count))} integers, got {value!r}")
        return [self.int(v, lo, hi, what) for v in values]

    def num(self, value: Any, lo: float, hi: float, what: str, *, lo_open: bool = False) -> float:
        if not _is_num(value) or not lo <= value <= hi or (lo_open and value == lo):
            self.fail(f"{what} must be a finite number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")
        return float(value)


def check_optimizer(spec: Any, path: str | PathLike = "optimizer") -> dict[str, Any]:
    """A pack's optimizer with the schema defaults filled in, every field range-checked (as the C++ engine)."""
    c = _Checker(Path(path))
    spec = {**DEFAULT_OPTIMIZER, **{k: v for k, v in c.obj(spec or {}, "'optimizer'").items() if v is not None}}
    if spec["name"] not in OPTIMIZERS:
        c.fail(f"unknown optimizer {spec['name']!r} (expected sgd or adamw)")
    c.num(spec["lr"], 0.0, 1e6, "optimizer 'lr'", lo_open=True)
    c.num(spec["momentum"], 0.0, 1.0, "optimizer 'momentum'")
    c.num(spec["dampening"], 0.0, 1.0, "optimizer 'dampening'")
    c.num(spec["weight_decay"], 0.0, 1e6, "optimizer 'weight_decay'")
    c.num(spec["eps"], 0.0, 1.0, "optimizer 'eps'", lo_open=True)
    if not isinstance(spec["nesterov"], bool):
        c.fail("optimizer 'nesterov' must be true or false")
    betas = spec["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(_is_num(b) and 0 <= b < 1 for b in betas):
        c.fail(f"optimizer 'betas' must be two numbers in [0, 1), got {betas!r}")
    if spec["nesterov"] and (spec["momentum"] == 0 or spec["dampening"] != 0):
        c.fail("optimizer: nesterov needs momentum > 0 and dampening 0")
    return spec


def _check_tensor_table(c: _Checker, table: Any, data_len: int) -> None:
    for name, e in c.obj(table, "'tensors'").items():
        e = c.obj(e, f"tensor {name!r}")
        size = {"f32": 4, "i8": 1}.get(e["dtype"]) if isinstance(e.get("dtype"), str) else None
        shape, offset, nbytes = e.get("shape"), e.get("offset"), e.get("nbytes")
        if size is None or not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and d >= 1
                                                                                    for d in shape):
            c.fail(f"tensor {name!r} has an unsupported dtype or a shape that is not a list of integers >= 1")
        # Python integers do not overflow: the product is exact before it is compared with the file.
        if not (_is_int(offset) and _is_int(nbytes) and offset >= 0 and offset % ALIGN == 0
                and nbytes == math.prod(shape) * size and offset + nbytes <= data_len):
            c.fail(f"tensor {name!r} has an inconsistent dtype/shape/offset")


def _check_graph(c: _Checker, header: dict[str, Any]) -> None:
    """Field ranges of the graph (shapes, strides, kernels, heads); shape consistency is the engine's check."""
    table = header["tensors"]
    inp = c.obj(header.get("input"), "'input'")
    shape = c.ints(inp.get("shape"), 1, MAX_EXTENT, "input 'shape'", count=(3,))
    if math.prod(shape) > MAX_ELEMENTS:
        c.fail(f"input 'shape' {shape} is too large")
    c.num(inp.get("scale", 1.0), 0.0, 1e6, "input 'scale'", lo_open=True)
    for key in ("mean", "std"):
        if key in inp and (not isinstance(inp[key], list) or len(inp[key]) < shape[0]
                           or not all(_is_num(v) for v in inp[key]) or (key == "std" and 0 in inp[key])):
            c.fail(f"input {key!r} must hold {shape[0]} finite numbers (std non-zero)")
    c.int(header.get("num_classes"), 1, 1 << 16, "'num_classes'")
    basis = c.obj(header.get("basis"), "'basis'")
    if basis.get("waveform", "square") not in ENGINE_WAVEFORMS:
        c.fail(f"basis waveform {basis.get('waveform')!r} is not square or sine")
    for key in ("f_min", "f_max"):
        if basis.get(key) is not None:
            c.num(basis[key], -1e9, 1e9, f"basis {key!r}")
    if basis.get("n_offset") is not None:
        c.int(basis["n_offset"], 0, MAX_EXTENT, "basis 'n_offset'")
    if header.get("optimizer") is not None:
        check_optimizer(header["optimizer"], c.path)
    if header.get("precision") is not None:
        precision = c.obj(header["precision"], "'precision'")
        if precision.get("frozen_compute", "float32") not in FROZEN_COMPUTE:
            c.fail(f"precision 'frozen_compute' must be one of {FROZEN_COMPUTE}, got {precision['frozen_compute']!r}")
    blocks = header.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        c.fail("'blocks' must be a non-empty list")
    for bi, block in enumerate(blocks):
        block = c.obj(block, f"block {bi}")
        ops = block.get("ops")
        if not isinstance(ops, list) or not ops:
            c.fail(f"block {bi}: 'ops' must be a non-empty list")
        for oi, op in enumerate(ops):
            op = c.obj(op, f"block {bi} op {oi}")
            where = f"block {bi} op {oi} ({op.get('op')})"
            if op.get("op") not in OPS:
                c.fail(f"{where}: unsupported op")
            for key in ("weight", "bias", "running_mean", "running_var"):
                if op.get(key) is not None and (not isinstance(op[key], str) or op[key] not in table):
                    c.fail(f"{where}: tensor {op[key]!r} is not in the pack")
            kind = op["op"]
            if kind in ("conv2d", "linear") and op.get("weight") is None:
                c.fail(f"{where}: missing weight")
            if kind == "conv2d":
                for key, lo in (("stride", 1), ("padding", 0)):
                    if op.get(key) is not None:
                        c.ints(op[key], lo, MAX_EXTENT, f"{where} {key!r}")
                c.int(op.get("groups", 1), 1, MAX_EXTENT, f"{where} 'groups'")
            elif kind in ("maxpool", "avgpool"):
                c.int(op.get("kernel"), 1, MAX_EXTENT, f"{where} 'kernel'")
                if op.get("stride") is not None:
                    c.int(op["stride"], 1, MAX_EXTENT, f"{where} 'stride'")
                if op.get("padding", 0) != 0:
                    c.fail(f"{where}: padded pooling is not supported")
            elif kind == "adaptive_avgpool":
                c.ints(op.get("size", 1), 1, MAX_EXTENT, f"{where} 'size'")
            elif kind == "batchnorm":
                if op.get("running_mean") is None or op.get("running_var") is None:
                    c.fail(f"{where}: needs running statistics")
                c.num(op.get("eps", 1e-5), 0.0, 1.0, f"{where} 'eps'", lo_open=True)
            elif kind == "leaky_relu":
                c.num(op.get("slope", 0.01), -1e6, 1e6, f"{where} 'slope'")
        c.int(block.get("tap", len(ops) - 1), 0, len(ops) - 1, f"block {bi} 'tap'")
        local = c.obj(block.get("local"), f"block {bi} 'local'")
        if local.get("mode", "lls") not in LOCAL_MODES:
            c.fail(f"block {bi}: local mode {local.get('mode')!r} is not one of {LOCAL_MODES}")
        c.int(local.get("pool") or 0, 0, MAX_EXTENT, f"block {bi} local 'pool'")
        c.num(local.get("temperature", 1.0), 0.0, 1e6, f"block {bi} local 'temperature'", lo_open=True)
        c.num(local.get("label_smoothing", 0.0), 0.0, 1.0, f"block {bi} local 'label_smoothing'")
        for key in ("m", "M"):
            if local.get(key) is not None and (not isinstance(local[key], str) or local[key] not in table):
                c.fail(f"block {bi}: local {key!r} tensor {local[key]!r} is not in the pack")
        if not isinstance(block.get("trainable", False), bool):
            c.fail(f"block {bi}: 'trainable' must be true or false")


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
    if version == 0:
        raise CheckpointError("pack format version 0 is invalid", path=path, fix=_FIX)
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
        header = json.loads(raw[PREAMBLE.size: PREAMBLE.size + header_len], parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"unreadable pack header ({' '.join(str(e).split())[:200]})", path=path,
                              fix=_FIX) from None
    c = _Checker(path)
    c.obj(header, "the pack header")
    if header.get("format") != FORMAT:
        c.fail("header 'format' is not edgeml-lls-pack")
    _check_tensor_table(c, header.get("tensors"), data_len)
    _check_graph(c, header)
    tensors = {}
    for name, e in header["tensors"].items():
        dtype = np.dtype("<f4") if e["dtype"] == "f32" else np.dtype("i1")
        start = data_off + e["offset"]
        tensors[name] = np.frombuffer(raw, dtype, math.prod(e["shape"]), start).reshape(e["shape"]).copy()
    return Pack(header, tensors)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a pack may hold")


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
