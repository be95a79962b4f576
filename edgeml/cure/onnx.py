"""Edit an ONNX UNet's cross-attention K/V weights without loading its weights into the graph.

The graph is read once with `load_external_data=False` (a few MB even for SD-1.5). K/V weights are the
initializers feeding MatMul/Gemm nodes whose activation input is the text embedding (`encoder_hidden_states`,
possibly through Cast/Transpose/Reshape/Identity). Walking back from the MatMul's weight input through
Cast/Identity/Transpose tells whether the initializer is stored as Wᵀ [in, out] (the exporter's MatMul layout,
also packed K|V [in, 2·out]) or W [out, in] (after an odd number of transposes, or Gemm transB=1).

External data in any layout (diffusers `weights.pb`, optimum `model.onnx_data`, one file per tensor) is copied
and only the edited byte ranges are rewritten in the copy, so the edit costs about one file copy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeml.cure._files import NUMPY_DTYPES, copy_with_patches, read_range
from edgeml.cure.apply import tensor_report
from edgeml.cure.spectral import LowRankEdit, apply_to_weights
from edgeml.errors import CheckpointError, InputError
from edgeml.io import write_bytes
from edgeml.paths import confined

TEXT_INPUTS = ("encoder_hidden_states", "text_embeds", "context")
_ACTIVATION_PASS = {"Cast", "Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten"}
_WEIGHT_PASS = {"Cast", "Identity", "Transpose"}


@dataclass(frozen=True)
class KVWeight:
    """One K/V initializer: its name, the node that uses it, and whether it is stored [in, out] (transposed)."""

    initializer: str
    node: str
    stored_transposed: bool


def _text_input(graph, name: str | None) -> str:
    names = [i.name for i in graph.input]
    if name is not None:
        if name not in names:
            raise InputError(f"the ONNX graph has no input {name!r} (inputs: {', '.join(names)})")
        return name
    for cand in TEXT_INPUTS:
        if cand in names:
            return cand
    raise InputError(f"no text-embedding input among the ONNX graph inputs ({', '.join(names)})",
                     fix="pass text_input= the name of the UNet's encoder_hidden_states input")


def find_text_kv_weights(model, text_input: str | None = None) -> list[KVWeight]:
    """K/V weight initializers fed by the text embedding, in graph order."""
    graph = model.graph
    start = _text_input(graph, text_input)
    producers = {o: n for n in graph.node for o in n.output}
    consumers = defaultdict(list)
    for n in graph.node:
        for i, name in enumerate(n.input):
            consumers[name].append((n, i))
    inits = {t.name for t in graph.initializer}
    found, seen, frontier = [], set(), [start]
    while frontier:
        tensor = frontier.pop()
        for node, slot in consumers[tensor]:
            if node.op_type in _ACTIVATION_PASS and slot == 0:
                frontier.extend(o for o in node.output if o not in seen)
                seen.update(node.output)
            elif node.op_type in ("MatMul", "Gemm") and slot == 0:
                trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
                name, flips = _trace_weight(node.input[1], producers, inits)
                found.append(KVWeight(name, node.name or node.output[0], (flips + trans_b) % 2 == 0))
    order = {n.name or n.output[0]: i for i, n in enumerate(graph.node)}
    return sorted(found, key=lambda w: order.get(w.node, 0))


def _trace_weight(tensor: str, producers: dict, inits: set) -> tuple[str, int]:
    flips = 0
    for _ in range(len(producers) + 1):  # a hostile graph can loop Identity nodes into a cycle
        if tensor in inits:
            return tensor, flips
        node = producers.get(tensor)
        if node is None or node.op_type not in _WEIGHT_PASS or not node.input:
            what = "a graph input" if node is None else f"a {node.op_type} node"
            raise InputError(f"K/V weight {tensor!r} comes from {what}, not from an initializer",
                             fix="export the UNet with its weights as initializers")
        if node.op_type == "Transpose":
            perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
            if perm and perm[0] != [1, 0]:
                raise InputError(f"K/V weight {tensor!r} is transposed with perm {perm[0]}; only 2-D is supported")
            flips += 1
        tensor = node.input[0]
    raise CheckpointError(f"K/V weight {tensor!r} is produced by a cycle of nodes", fix="re-export the model")


@dataclass(frozen=True)
class ExternalData:
    """Where one initializer's bytes live: `path` (confined to the model's folder), byte offset and length."""

    location: str
    path: Path
    offset: int
    length: int


def _external_info(t) -> dict | None:
    if t.data_location != 1:  # TensorProto.EXTERNAL
        return None
    return {e.key: e.value for e in t.external_data}


def _byte_field(info: dict, key: str, default: int, name: str, path: Path) -> int:
    text = info.get(key)
    if text is None:
        return default
    if not text.isdigit():  # ints >= 0 only: no sign, no spaces, no "1e3"
        raise CheckpointError(f"external data {key} {text!r} of initializer {name!r} is not an integer >= 0",
                              path=path)
    return int(text)


def external_data(model, folder: Path, src: Path) -> dict[str, ExternalData]:
    """{initializer: ExternalData} for every external initializer, checked before any data is read.

    Locations are confined to `folder` (no absolute path, no `..`, no symlink out, not the graph file itself),
    the files exist, and offset/length are integers >= 0 that end inside their file.
    """
    found: dict[str, ExternalData] = {}
    sizes: dict[Path, int] = {}
    for t in model.graph.initializer:
        info = _external_info(t)
        if info is None:
            continue
        loc = info.get("location", "")
        path = confined(folder, loc, what=f"external data location of initializer {t.name!r}")
        if not path.is_file():
            raise CheckpointError(f"external data file {loc!r} of initializer {t.name!r} is missing", path=folder,
                                  fix="keep the .onnx file beside its weights file(s) (weights.pb / model.onnx_data)")
        if path.resolve() == src.resolve():
            raise CheckpointError(f"external data of initializer {t.name!r} points at the graph file itself",
                                  path=src)
        size = sizes.setdefault(path, path.stat().st_size)
        offset = _byte_field(info, "offset", 0, t.name, path)
        length = _byte_field(info, "length", size - offset, t.name, path)
        if offset > size or offset + length > size:
            raise CheckpointError(f"external data for {t.name!r} ends past {loc} ({offset + length} > {size} bytes)",
                                  path=path, fix="the weights file is truncated; re-export the model")
        found[t.name] = ExternalData(str(path.relative_to(folder)), path, offset, length)
    return found


def _check_initializer(t, data: ExternalData | None) -> None:
    """An initializer to edit: float32/16/64, 2-D, and (when external) exactly as many bytes as its dims need."""
    if t.data_type not in NUMPY_DTYPES:
        raise InputError(f"initializer {t.name!r} has ONNX data type {t.data_type}; supported: float32/16/64")
    if len(t.dims) != 2 or any(d < 0 for d in t.dims):
        raise InputError(f"K/V weight {t.name!r} has dims {list(t.dims)}; expected a 2-D weight")
    nbytes = math.prod(t.dims) * np.dtype(NUMPY_DTYPES[t.data_type]).itemsize
    if data is not None and nbytes != data.length:
        raise CheckpointError(f"initializer {t.name!r} dims {list(t.dims)} need {nbytes} bytes, its external data "
                              f"has {data.length}", path=data.path)


def _read_initializer(t, data: ExternalData | None) -> np.ndarray:
    """A checked initializer's values (see `_check_initializer`) in a fresh writable array, stored layout."""
    from onnx import numpy_helper

    if data is None:
        try:
            w = np.array(numpy_helper.to_array(t), copy=True)
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"initializer {t.name!r} is corrupt ({e})") from None
        if w.shape != tuple(t.dims):
            raise CheckpointError(f"initializer {t.name!r} holds {w.size} values, not dims {list(t.dims)}")
        return w
    count = math.prod(t.dims)
    return read_range(data.path, data.offset, count, NUMPY_DTYPES[t.data_type]).reshape(tuple(t.dims))


def load_graph(src: str | Path):
    """(ONNX model without its weights, {initializer: ExternalData}) for an .onnx file, every location checked."""
    import onnx

    src = Path(src)
    if not src.is_file():
        raise InputError("ONNX model not found", path=src)
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError / ValidationError subclasses
        raise CheckpointError(f"not a readable ONNX model ({type(e).__name__})", path=src) from None
    return model, external_data(model, src.parent, src)


def plan_onnx_edit(src: str | Path, text_input: str | None = None):
    """(model, {initializer: ExternalData}, {initializer: KVWeight}): everything `edit_onnx` will read, checked
    without reading any weight."""
    model, data = load_graph(src)
    targets = find_text_kv_weights(model, text_input)
    if not targets:
        raise InputError("no MatMul/Gemm weight is fed by the text embedding: the model has no cross-attention",
                         path=src, fix="pass a text-conditioned UNet")
    inits = {t.name: t for t in model.graph.initializer}
    chosen = {kv.initializer: kv for kv in targets}            # a weight shared by two nodes is edited once
    for name in chosen:
        _check_initializer(inits[name], data.get(name))
    return model, data, chosen


def graph_metadata(src: str | Path) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (weights not loaded)."""
    model, _ = load_graph(src)
    return {p.key: p.value for p in model.metadata_props}


def edit_onnx(src: str | Path, out_dir: Path, edit: LowRankEdit, *, text_input: str | None = None,
              metadata: dict[str, str] | None = None) -> list[dict]:
    """Write `src` (an .onnx file and its external data) into the fresh folder `out_dir` with K/V weights edited
    (and `metadata` set in the graph's metadata_props).

    Returns report rows. The graph is parsed once; external data files are copied kernel-side except the K/V byte
    ranges, which are written from the edited buffers (`copy_with_patches`).
    """
    from onnx import numpy_helper

    src = Path(src)
    model, data, chosen = plan_onnx_edit(src, text_input)
    inits = {t.name: t for t in model.graph.initializer}
    rows: list[dict] = []
    patches: dict[str, list[tuple[int, np.ndarray]]] = defaultdict(list)

    def edit_all() -> None:
        """Read every K/V weight into its own buffer (stored layout), edit them in place as W [out, in] (`.T` of
        a weight stored [in, out]) by the same batched block update the in-memory path runs; -> patches, rows."""
        stored = {name: _read_initializer(inits[name], data.get(name)) for name in chosen}
        weights = {name: torch.from_numpy(stored[name]).T if kv.stored_transposed else torch.from_numpy(stored[name])
                   for name, kv in chosen.items()}
        _, stats = apply_to_weights(edit, weights, inplace=True)
        for name, kv in chosen.items():
            layout = "in,out" if kv.stored_transposed else "out,in"
            rows.append({**tensor_report(name, weights[name], stats[name], layout=layout), "node": kv.node})
            if name in data:
                patches[data[name].location].append((data[name].offset, stored[name]))
            else:
                inits[name].CopyFrom(numpy_helper.from_array(stored[name], name))

    def patches_of(loc: str):
        def make() -> list[tuple[int, np.ndarray]]:
            if not rows:
                edit_all()   # while the first data file is being copied
            return patches.get(loc, [])
        return make

    files = {d.location: d.path for d in data.values()}
    for loc, path in files.items():
        edited = [(data[n].offset, data[n].length) for n in chosen if n in data and data[n].location == loc]
        copy_with_patches(path, confined(out_dir, loc, what="external data location"), patches_of(loc), edited)
    if not rows:
        edit_all()           # every K/V weight is embedded in the graph
    props = {p.key: p.value for p in model.metadata_props}
    props.update({"edgeml.cure": f"{len(rows)} cross-attention K/V initializers edited", **(metadata or {})})
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    write_bytes(out_dir / src.name, model.SerializeToString())
    return rows


def onnx_unet_path(path: Path) -> Path:
    """The UNet .onnx inside a path: the file itself, `DIR/model.onnx`, or `DIR/unet/model.onnx` (a pipeline)."""
    for cand in (path, path / "unet" / "model.onnx", path / "model.onnx"):
        if cand.is_file() and cand.suffix == ".onnx":
            return cand
    raise InputError("no ONNX UNet here (expected a .onnx file, DIR/model.onnx or DIR/unet/model.onnx)", path=path)
