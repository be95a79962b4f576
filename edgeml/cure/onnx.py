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

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgeml.cure._files import NUMPY_DTYPES, copy_with_patches, read_range
from edgeml.cure.apply import tensor_report
from edgeml.cure.spectral import LowRankEdit, apply_to_weights
from edgeml.errors import CheckpointError, InputError

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
    while tensor not in inits:
        node = producers.get(tensor)
        if node is None or node.op_type not in _WEIGHT_PASS:
            what = "a graph input" if node is None else f"a {node.op_type} node"
            raise InputError(f"K/V weight {tensor!r} comes from {what}, not from an initializer",
                             fix="export the UNet with its weights as initializers")
        if node.op_type == "Transpose":
            perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
            if perm and perm[0] != [1, 0]:
                raise InputError(f"K/V weight {tensor!r} is transposed with perm {perm[0]}; only 2-D is supported")
            flips += 1
        tensor = node.input[0]
    return tensor, flips


def _external_info(t) -> dict | None:
    if t.data_location != 1:  # TensorProto.EXTERNAL
        return None
    return {e.key: e.value for e in t.external_data}


def check_external_data(model, folder: Path) -> dict[str, int]:
    """Every external-data file the graph references exists and is long enough -> {location: size}."""
    sizes: dict[str, int] = {}
    for t in model.graph.initializer:
        info = _external_info(t)
        if info is None:
            continue
        loc = info.get("location", "")
        path = folder / loc
        if not loc or not path.is_file():
            raise CheckpointError(f"external data file {loc!r} of initializer {t.name!r} is missing", path=folder,
                                  fix="keep the .onnx file beside its weights file(s) (weights.pb / model.onnx_data)")
        size = sizes.setdefault(loc, path.stat().st_size)
        offset, length = int(info.get("offset", 0)), int(info.get("length", size))
        if offset + length > size:
            raise CheckpointError(f"external data for {t.name!r} ends past {loc} ({offset + length} > {size} bytes)",
                                  path=folder / loc, fix="the weights file is truncated; re-export the model")
    return sizes


def _read_initializer(t, folder: Path) -> np.ndarray:
    from onnx import numpy_helper

    info = _external_info(t)
    if info is None:
        return numpy_helper.to_array(t)
    if t.data_type not in NUMPY_DTYPES:
        raise InputError(f"initializer {t.name!r} has ONNX data type {t.data_type}; supported: float32/16/64")
    count = int(np.prod(t.dims))
    return read_range(folder / info["location"], int(info.get("offset", 0)), count,
                      NUMPY_DTYPES[t.data_type]).reshape(tuple(t.dims))


def edit_onnx(src: str | Path, out_dir: Path, edit: LowRankEdit, *, text_input: str | None = None) -> list[dict]:
    """Write `src` (an .onnx file and its external data) into the fresh folder `out_dir` with K/V weights edited.

    Returns report rows. The graph is parsed once; external data files are copied and byte-patched.
    """
    import onnx

    src = Path(src)
    if not src.is_file():
        raise InputError("ONNX model not found", path=src)
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError / ValidationError subclasses
        raise CheckpointError(f"not a readable ONNX model ({type(e).__name__})", path=src) from None
    folder = src.parent
    sizes = check_external_data(model, folder)
    targets = find_text_kv_weights(model, text_input)
    if not targets:
        raise InputError("no MatMul/Gemm weight is fed by the text embedding: the model has no cross-attention",
                         path=src, fix="pass a text-conditioned UNet")
    inits = {t.name: t for t in model.graph.initializer}
    chosen = {kv.initializer: kv for kv in targets}            # a weight shared by two nodes is edited once
    # Every weight in W [out, in] orientation, edited in one batch exactly as the in-memory path does.
    weights = {}
    for name, kv in chosen.items():
        w = _read_initializer(inits[name], folder)
        if w.ndim != 2:
            raise InputError(f"K/V weight {name!r} has shape {w.shape}; expected 2-D", path=src)
        w = torch.from_numpy(np.array(w, copy=True))
        weights[name] = (w.T if kv.stored_transposed else w).contiguous()   # same memory layout as in a module
    edited, stats = apply_to_weights(edit, weights)
    patches: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    rows = []
    for name, kv in chosen.items():
        t = inits[name]
        after = edited[name].T if kv.stored_transposed else edited[name]
        layout = "in,out" if kv.stored_transposed else "out,in"
        rows.append({**tensor_report(name, weights[name], stats[name], layout=layout), "node": kv.node})
        new = np.ascontiguousarray(after.numpy())
        info = _external_info(t)
        if info is None:
            from onnx import numpy_helper

            t.CopyFrom(numpy_helper.from_array(new, name))
        else:
            patches[info["location"]].append((int(info.get("offset", 0)), new.tobytes()))
    for loc in sizes:
        copy_with_patches(folder / loc, out_dir / loc, patches.get(loc, []))
    entry = model.metadata_props.add()
    entry.key, entry.value = "edgeml.cure", f"{len(rows)} cross-attention K/V initializers edited"
    (out_dir / src.name).write_bytes(model.SerializeToString())
    return rows


def onnx_unet_path(path: Path) -> Path:
    """The UNet .onnx inside a path: the file itself, `DIR/model.onnx`, or `DIR/unet/model.onnx` (a pipeline)."""
    for cand in (path, path / "unet" / "model.onnx", path / "model.onnx"):
        if cand.is_file() and cand.suffix == ".onnx":
            return cand
    raise InputError("no ONNX UNet here (expected a .onnx file, DIR/model.onnx or DIR/unet/model.onnx)", path=path)
