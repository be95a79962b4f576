"""PyTorch -> ONNX: any registered model at a chosen opset, static shapes by default (dynamic batch optional).

Every graph is checked (onnx.checker), shape-inferred and simplified (onnxsim, the `export` extra, folds constants
and removes redundant nodes; when it is missing or fails the unsimplified graph is kept and the reason recorded).
Spiking models with the streaming API (`stream_init`, `stream_step`, `stream_head`, docs/architecture.md §4) are
also exported as two graphs: `stream_step` (one P-step, membrane state as explicit inputs `state_in_i` and outputs
`state_out_i`) and `stream_head` (I-frame + stacked P-tokens -> logits), so a device can run frame by frame.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeml.errors import ExportError, InputError

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
               11: "float64"}


def export_onnx(model: Any, inputs: Sequence[Any], path: str | Path, *, input_names: Sequence[str],
                output_names: Sequence[str], opset: int, dynamic_batch: bool = False, simplify: bool = True,
                max_opset: int | None = None) -> dict[str, Any]:
    """Export `model(*inputs)` to `path`; returns notes {"exporter", "opset", "simplified", "simplify_note", "nodes"}.

    Shapes are those of `inputs` (static); with `dynamic_batch` the first axis of every input and output is
    symbolic ("batch"). The TorchScript exporter runs first (it keeps opsets below 18, which TensorRT 8.5 needs);
    where it cannot express an op (e.g. adaptive pooling to a non-divisor size) the dynamo exporter is used at
    opset max(opset, 18), if `max_opset` allows it.
    """
    import onnx

    path = Path(path)
    model = model.eval()
    dyn = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
    try:
        proto, exporter = _torchscript_export(model, inputs, input_names, output_names, opset, dyn), "torchscript"
    except Exception as e:  # the exporter's errors name the op; keep the first line
        first_error = str(e).splitlines()[0][:300]
        dyn_opset = max(opset, 18)
        if max_opset is not None and dyn_opset > max_opset:
            raise ExportError(f"torch.onnx.export failed at opset {opset}: {first_error}",
                              fix=f"the dynamo exporter would need opset {dyn_opset} > this target's max "
                              f"{max_opset}; change the model's forward or choose another target") from e
        try:
            proto, exporter = _dynamo_export(model, inputs, input_names, output_names, dyn_opset, dyn), "dynamo"
        except Exception as e2:
            raise ExportError(f"torch.onnx.export failed (torchscript at opset {opset}: {first_error}; dynamo at "
                              f"opset {dyn_opset}: {str(e2).splitlines()[0][:200]})",
                              fix="check the model's forward for operations ONNX cannot express") from e2
    proto = check_and_infer(proto)
    notes: dict[str, Any] = {"simplified": False, "simplify_note": "disabled"}
    if simplify:
        proto, notes = _simplify(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    notes["nodes"] = len(proto.graph.node)
    notes["exporter"] = exporter
    notes["opset"] = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return notes


@contextlib.contextmanager
def _quiet_fds() -> Any:
    """Silence fds 1 and 2 (the TorchScript exporter dumps whole graphs from C++ on failure)."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _torchscript_export(model: Any, inputs: Sequence[Any], input_names: Sequence[str],
                        output_names: Sequence[str], opset: int, dyn: dict | None) -> Any:
    import onnx
    import torch

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), _quiet_fds():
        warnings.simplefilter("ignore")
        # static shapes exactly as traced; autograd.Functions (surrogate-gradient spikes) are inlined
        torch.onnx.export(model, tuple(inputs), buf, input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _dynamo_export(model: Any, inputs: Sequence[Any], input_names: Sequence[str], output_names: Sequence[str],
                   opset: int, dyn: dict | None) -> Any:
    import logging

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, tuple(inputs), input_names=list(input_names),
                                 output_names=list(output_names), opset_version=opset, dynamic_axes=dyn,
                                 dynamo=True, optimize=True, verbose=False)
    return prog.model_proto


def check_and_infer(proto: Any) -> Any:
    """onnx.checker (full) + strict shape inference; an invalid graph is an ExportError."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported ONNX graph is invalid: {str(e).splitlines()[0][:300]}") from e


def _simplify(proto: Any) -> tuple[Any, dict[str, Any]]:
    try:
        import onnxsim
    except ImportError:
        return proto, {"simplified": False, "simplify_note": "onnxsim not installed"}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            simplified, ok = onnxsim.simplify(proto)
    except Exception as e:  # onnxsim aborts on some graphs; the unsimplified graph is still valid
        return proto, {"simplified": False, "simplify_note": f"onnxsim failed: {str(e).splitlines()[0][:200]}"}
    if not ok:
        return proto, {"simplified": False, "simplify_note": "onnxsim's own check failed; kept the original"}
    return check_and_infer(simplified), {"simplified": True, "simplify_note": f"onnxsim {onnxsim.__version__}"}


def check_external_data(path: str | Path) -> list[Path]:
    """The external-data files an ONNX file references, each confined to the file's folder (`edgeml.paths.confined`).

    Read before any runtime or converter opens the model: a location that is absolute, holds `..` or is a symlink
    leading out of the folder is an InputError, so a hostile model cannot make edgeml read a file elsewhere.
    """
    import onnx

    from edgeml.paths import confined

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise InputError("ONNX model not found", path=path) from None
    except Exception as e:  # protobuf DecodeError and friends
        raise InputError(f"not a readable ONNX model ({type(e).__name__})", path=path) from None
    files: dict[str, Path] = {}

    def tensors(graph: Any) -> Any:
        yield from graph.initializer
        yield from (s.values for s in graph.sparse_initializer)
        for node in graph.node:
            for a in node.attribute:
                yield from ([a.t] if a.HasField("t") else [])
                yield from a.tensors
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    yield from tensors(sub)

    for t in tensors(proto.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in t.external_data}.get("location", "")
        if location not in files:
            files[location] = confined(path.parent, location, what=f"external-data location of {t.name!r}")
    return list(files.values())


def graph_io(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """{"inputs": [{name, shape, dtype}], "outputs": [...]} of an ONNX file (symbolic dims as strings)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def desc(v: Any) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": ONNX_DTYPES.get(t.elem_type, str(t.elem_type))}

    return {"inputs": [desc(v) for v in g.input if v.name not in inits], "outputs": [desc(v) for v in g.output]}


def op_types(path: str | Path) -> list[tuple[str, str]]:
    """Sorted distinct (domain, op_type) pairs of an ONNX graph, subgraphs (If/Loop bodies) included."""
    import onnx

    seen: set[tuple[str, str]] = set()

    def walk(graph: Any) -> None:
        for n in graph.node:
            seen.add((n.domain or "ai.onnx", n.op_type))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for sub in a.graphs:
                    walk(sub)

    walk(onnx.load(str(path), load_external_data=False).graph)
    return sorted(seen)


# --------------------------------------------------------------------------------------------- streaming


def is_streaming(model: Any) -> bool:
    """True for models with the streaming API (docs/architecture.md §4: spiking video models)."""
    return all(callable(getattr(model, k, None)) for k in ("stream_init", "stream_step", "stream_head"))


def stream_step_inputs(model: Any, input_names: Sequence[str]) -> list[str]:
    """Names of the per-step (time-indexed, dim 1) inputs: `model.stream_step_inputs`, else all but the first."""
    return list(getattr(model, "stream_step_inputs", input_names[1:]))


class _Step:
    """nn.Module wrapper exposing `stream_step` as forward (built lazily so torch is imported only when needed)."""

    @staticmethod
    def make(model: Any) -> Any:
        import torch

        class StreamStep(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, *args: Any) -> Any:
                return tuple(self.m.stream_step(*args))

        class StreamHead(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, first: Any, p_tokens: Any) -> Any:
                return self.m.stream_head(first, p_tokens)

        return StreamStep().eval(), StreamHead().eval()


def export_streaming(model: Any, inputs: Sequence[Any], out_dir: str | Path, *, input_names: Sequence[str],
                     output_names: Sequence[str], opset: int, simplify: bool = True) -> dict[str, Any]:
    """Write `stream_step.onnx` and `stream_head.onnx` into `out_dir`; returns their I/O description.

    step:  (<x>_t [B, ...] for each per-step input, state_in_0..k-1) -> (p_tokens_t, state_out_0..k-1)
    head:  (<first input> [B, ...], p_tokens [B, T, ...]) -> logits
    """
    import torch

    out_dir = Path(out_dir)
    names = list(input_names)
    per_step = stream_step_inputs(model, names)
    feeds = dict(zip(names, inputs, strict=True))
    first = [n for n in names if n not in per_step]
    if len(first) != 1:
        raise ExportError(f"streaming export expects exactly one non-temporal input, got {first}")
    step_mod, head_mod = _Step.make(model)
    batch = inputs[0].shape[0]
    with torch.no_grad():
        state = tuple(model.stream_init(batch))
        step_in = [feeds[n][:, 0] for n in per_step]
        p0, *_ = step_mod(*step_in, *state)
        steps = feeds[per_step[0]].shape[1]
        p_tokens = torch.stack([p0] * steps, dim=1)
    k = len(state)
    step_names = [f"{n}_t" for n in per_step] + [f"state_in_{i}" for i in range(k)]
    step_outs = ["p_tokens_t"] + [f"state_out_{i}" for i in range(k)]
    n1 = export_onnx(step_mod, [*step_in, *state], out_dir / "stream_step.onnx", input_names=step_names,
                     output_names=step_outs, opset=opset, simplify=simplify)
    n2 = export_onnx(head_mod, [feeds[first[0]], p_tokens], out_dir / "stream_head.onnx",
                     input_names=[first[0], "p_tokens"], output_names=list(output_names), opset=opset,
                     simplify=simplify)
    return {"step": "stream_step.onnx", "head": "stream_head.onnx", "steps": int(steps), "per_step_inputs": per_step,
            "first_input": first[0], "num_states": k,
            "state_shapes": [list(s.shape) for s in state], "step_notes": n1, "head_notes": n2}


def run_streaming_onnx(art_dir: str | Path, feeds: dict[str, Any], stream: dict[str, Any],
                       providers: Sequence[str] = ("CPUExecutionProvider",)) -> tuple[Any, list[Any]]:
    """Run the streaming graphs frame by frame on `feeds` (unrolled-model inputs, numpy) -> (logits, p_tokens_t list).

    The initial membrane state is zeros of the recorded shapes (what `stream_init` returns).
    """
    import numpy as np
    import onnxruntime as ort

    art_dir = Path(art_dir)
    step = ort.InferenceSession(str(art_dir / stream["step"]), providers=list(providers))
    head = ort.InferenceSession(str(art_dir / stream["head"]), providers=list(providers))
    state = [np.zeros(s, dtype=np.float32) for s in stream["state_shapes"]]
    tokens = []
    for t in range(stream["steps"]):
        f = {f"{n}_t": np.ascontiguousarray(feeds[n][:, t]) for n in stream["per_step_inputs"]}
        f.update({f"state_in_{i}": s for i, s in enumerate(state)})
        p, *state = step.run(None, f)
        tokens.append(p)
    logits = head.run(None, {stream["first_input"]: feeds[stream["first_input"]],
                             "p_tokens": np.stack(tokens, axis=1)})[0]
    return logits, tokens
