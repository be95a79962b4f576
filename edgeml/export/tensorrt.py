"""TensorRT artefacts: an op-support check against the profile's TensorRT version, `build_engine.sh` (trtexec
with the profile's flags) and `build_engine.py` (the tensorrt Python API), to run on the device, and the expected
engine size and activation memory per precision (`expected_memory`, from the ONNX graphs; see MEMORY_METHOD).

TensorRT cannot be installed here (see NOTES.md), so engines are built on the target; this module validates the
ONNX for it. The op lists follow onnx-tensorrt's operators.md for each TensorRT release.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeml.errors import ExportError
from edgeml.export.targets import TargetProfile, TensorRTSettings
from edgeml.paths import confined

# ONNX ops (default domain) the TensorRT 8.5 ONNX parser accepts.
_TRT_85 = frozenset(
    """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip Concat
Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu
Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsInf IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()  # noqa: SIM905 (one op per word reads like the upstream table)
)
# Added in 8.6 (INormalizationLayer etc.) and in 10.x.
_TRT_86 = _TRT_85 | {"LayerNormalization", "GroupNormalization", "BlackmanWindow", "HammingWindow", "HannWindow"}
_TRT_10 = _TRT_86 | {"Gelu", "AffineGrid", "Mish", "Bernoulli", "IsNaN", "ReduceLogSum", "Col2Im"}
OP_SUPPORT = {(8, 5): _TRT_85, (8, 6): _TRT_86, (10, 0): _TRT_10}


def supported_ops(version: str) -> frozenset[str]:
    """Default-domain ONNX ops the TensorRT `version` ("8.5", "10.3") parser takes."""
    v = tuple(int(x) for x in str(version).split(".")[:2])
    known = [k for k in sorted(OP_SUPPORT) if k <= v]
    if not known:
        raise ExportError(f"TensorRT {version} is older than the oldest version edgeml knows (8.5)",
                          fix="use a profile for TensorRT >= 8.5")
    return OP_SUPPORT[known[-1]]


def _settings(profile: TargetProfile) -> TensorRTSettings:
    if profile.tensorrt is None:
        raise ExportError(f"target {profile.name} has no [tensorrt] table", path=profile.path)
    return profile.tensorrt


def check_ops(onnx_path: str | Path, profile: TargetProfile) -> dict[str, Any]:
    """Raise ExportError naming every op (and one node using it) that the profile's TensorRT cannot take."""
    import onnx

    trt = _settings(profile)
    version = trt.version
    ok = supported_ops(version)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    blocking: dict[str, str] = {}
    for node in proto.graph.node:
        domain = node.domain or "ai.onnx"
        key = node.op_type if domain == "ai.onnx" else f"{domain}.{node.op_type}"
        if (domain != "ai.onnx" or node.op_type not in ok) and key not in blocking:
            blocking[key] = node.name or "(unnamed)"
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    max_opset = trt.max_opset if trt.max_opset is not None else 99
    if opset is not None and opset > max_opset:
        raise ExportError(f"opset {opset} exceeds TensorRT {version}'s max opset {max_opset} ({profile.name})",
                          fix=f"export with --opset {max_opset} or lower")
    if blocking:
        ops = ", ".join(f"{op} (node {name!r})" for op, name in blocking.items())
        raise ExportError(f"TensorRT {version} ({profile.name}) cannot take the ONNX op(s) {ops}",
                          fix="replace that operation in the model's forward, or export for a non-TensorRT target")
    return {"tensorrt_version": version, "ops_checked": len({n.op_type for n in proto.graph.node}),
            "opset": opset, "max_opset": max_opset, "blocking": []}


def _shape_flag(io: dict[str, Any]) -> str:
    return ",".join(f"{i['name']}:{'x'.join(str(d if isinstance(d, int) else 1) for d in i['shape'])}"
                    for i in io["inputs"])


def write_build_files(out_dir: str | Path, profile: TargetProfile, io: dict[str, Any],
                      onnx_files: dict[str, str], dynamic_batch: bool = False) -> dict[str, Any]:
    """Write `build_engine.sh`, `build_engine.py` and `build_config.json` into `out_dir` (the tensorrt/ folder).

    `onnx_files`: precision -> ONNX path relative to `out_dir` (fp32/fp16 build from the fp32 model with
    `--fp16`, as TensorRT prefers; int8 from the QDQ model).
    """
    from edgeml.io import write_json, write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trt = _settings(profile)
    version = tuple(int(x) for x in trt.version.split(".")[:2])
    common = [f"--memPoolSize=workspace:{trt.workspace_mib}"]
    if dynamic_batch:
        shapes = _shape_flag(io)
        common += [f"--minShapes={shapes}", f"--optShapes={shapes}", f"--maxShapes={shapes}"]
    if trt.dla_core >= 0:
        common.append(f"--useDLACore={trt.dla_core}")
        if trt.gpu_fallback:
            common.append("--allowGPUFallback")
    if trt.timing_cache:
        confined(out_dir, trt.timing_cache, what="[tensorrt] timing_cache")
        common.append(f"--timingCacheFile={trt.timing_cache}")
    if version >= (8, 6) and trt.builder_optimization_level is not None:
        common.append(f"--builderOptimizationLevel={trt.builder_optimization_level}")
    default = "fp16" if "fp16" in onnx_files else "int8" if "int8" in onnx_files else "fp32"
    cases = []
    for prec, flags in (("fp32", ""), ("fp16", "--fp16"), ("int8", "--int8 --fp16")):
        if prec in onnx_files:
            cases.append(f'  {prec}) ONNX="{onnx_files[prec]}"; FLAGS="{flags}" ;;')
    script = f"""#!/bin/sh
# Build the TensorRT engine for profile {profile.name} (TensorRT {trt.version}{
    ', JetPack ' + trt.jetpack if trt.jetpack else ''}) on the device.
# Usage: ./build_engine.sh [{'|'.join(onnx_files)}]   (default {default}); TRTEXEC=/path/to/trtexec to override.
# int8 uses the QDQ model (explicit quantization: no calibration cache needed).
set -eu
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
PRECISION="${{1:-{default}}}"
case "$PRECISION" in
{chr(10).join(cases)}
  *) echo "unknown precision $PRECISION (choose {'|'.join(onnx_files)})" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
"$TRTEXEC" --onnx="$ONNX" --saveEngine="model.$PRECISION.plan" {' '.join(common)} $FLAGS
"""
    write_text(out_dir / "build_engine.sh", script)
    (out_dir / "build_engine.sh").chmod(0o755 | stat.S_IRUSR)
    shutil.copyfile(Path(__file__).with_name("trt_builder.py"), out_dir / "build_engine.py")
    config = {"profile": profile.name, "tensorrt_version": trt.version, "onnx": onnx_files,
              "default_precision": default, "workspace_mib": trt.workspace_mib, "dla_core": trt.dla_core,
              "gpu_fallback": trt.gpu_fallback, "timing_cache": trt.timing_cache,
              "builder_optimization_level": trt.builder_optimization_level, "trtexec_flags": common}
    write_json(out_dir / "build_config.json", config)
    return {"files": ["build_engine.sh", "build_engine.py", "build_config.json"], "default_precision": default,
            "trtexec_flags": common}


def build_here(out_dir: str | Path, precision: str | None = None) -> Path | None:
    """Build the engine now when the tensorrt Python API imports (on a device); None where it does not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return None
    import json

    from edgeml.export.trt_builder import build_engine

    out_dir = Path(out_dir)
    cfg = json.loads((out_dir / "build_config.json").read_text())
    precision = precision or cfg["default_precision"]
    plan = out_dir / f"model.{precision}.plan"
    build_engine(str(out_dir / cfg["onnx"][precision]), str(plan), precision=precision,
                 workspace_mib=cfg["workspace_mib"], dla_core=cfg["dla_core"], gpu_fallback=cfg["gpu_fallback"],
                 timing_cache=str(confined(out_dir, cfg["timing_cache"], what="timing_cache"))
                 if cfg.get("timing_cache") else None,
                 optimization_level=cfg.get("builder_optimization_level"))
    return plan


# ------------------------------------------------------------------------------------ expected engine memory

_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
# precision -> (ONNX file of the artefact whose graph TensorRT builds, bytes of a float element in that engine)
_ENGINE_GRAPHS = {"fp32": ("model.onnx", 4), "fp16": ("model.onnx", 2), "int8": ("model.int8.onnx", 2)}
MEMORY_METHOD = (
    "From the ONNX graph TensorRT builds each engine from (fp32/fp16: model.onnx, built with --fp16 for fp16; int8: "
    "the QDQ model.int8.onnx, built with --int8 --fp16), with float elements at the engine's precision (4 bytes for "
    "fp32, 2 for fp16 and for the layers an int8 engine leaves unquantized) and integer elements at their own size. "
    "weights_bytes: every initializer and Constant once (the engine file adds TensorRT's kernels and metadata, "
    "typically a few MB, on top). activations: the graph's intermediate tensors from ONNX shape inference, before "
    "TensorRT's layer fusion: sum_bytes = all of them at once (no memory reuse: an upper bound), peak_live_bytes = "
    "the largest set alive together when the nodes run in graph order (each tensor from its producer to its last "
    "consumer: what an allocator that reuses memory needs for this order). io_bytes: the graph's inputs and outputs "
    "(the caller's buffers, float32 at every precision as build_engine.sh keeps them). Measure the real figures "
    "on the device (trtexec reports the engine's device memory).")


def _elem_bytes(elem_type: int, float_bytes: int) -> int:
    from onnx import helper

    if elem_type in _FLOAT_TYPES:
        return float_bytes
    return int(helper.tensor_dtype_to_np_dtype(elem_type).itemsize)


def _numel(dims: Any, batch: int) -> tuple[int, bool]:
    """Elements of a shape (symbolic dims taken as `batch`) and whether any dim was symbolic or unknown."""
    n, symbolic = 1, False
    for d in dims:
        if d.HasField("dim_value"):
            n *= int(d.dim_value)
        else:
            n *= batch
            symbolic = True
    return n, symbolic


def _shaped_graph(onnx_path: str | Path) -> Any:
    """The ONNX model at `onnx_path` (weights' external data not loaded) with inferred intermediate shapes."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    with contextlib.suppress(Exception):  # where inference fails, the value_info the exporter stored stays
        proto = onnx.shape_inference.infer_shapes(proto)
    return proto


def graph_memory(model: str | Path | Any, float_bytes: int = 4, batch: int = 1) -> dict[str, Any]:
    """Weights and activation bytes of one ONNX graph (a path, or a model from `_shaped_graph`; top level, see
    MEMORY_METHOD) with float elements of `float_bytes` bytes and symbolic dims taken as `batch`: {weights_bytes,
    activations: {sum_bytes, peak_live_bytes, io_bytes, tensors, unshaped, symbolic}}."""
    proto = _shaped_graph(model) if isinstance(model, (str, Path)) else model
    g = proto.graph
    weights = sum(_elem_bytes(t.data_type, float_bytes) * math.prod(t.dims) for t in g.initializer)
    constants: set[str] = set()
    for node in g.node:
        if node.op_type == "Constant" and (node.domain or "ai.onnx") == "ai.onnx":
            constants.update(node.output)
            for a in node.attribute:
                if a.name == "value":
                    weights += _elem_bytes(a.t.data_type, float_bytes) * math.prod(a.t.dims)
    types = {v.name: v.type.tensor_type for v in [*g.value_info, *g.input, *g.output] if v.type.HasField("tensor_type")}
    io_names = {v.name for v in g.input} | {v.name for v in g.output}
    io_names -= {t.name for t in g.initializer}
    unshaped = symbolic = 0

    def size(name: str, elem_bytes: int = float_bytes) -> int:
        nonlocal unshaped, symbolic
        t = types.get(name)
        if t is None or not t.HasField("shape"):
            unshaped += 1
            return 0
        n, sym = _numel(t.shape.dim, batch)
        symbolic += int(sym)
        return n * _elem_bytes(t.elem_type, elem_bytes)

    io_bytes = sum(size(n, 4) for n in io_names)  # the build script keeps the engine's I/O float32
    born: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(g.node):
        for name in node.input:
            if name in born:
                last[name] = i
        if node.op_type != "Constant":
            for name in node.output:
                if name and name not in io_names:
                    born[name] = last[name] = i
    sizes = {name: size(name) for name in born}
    delta = [0] * (len(g.node) + 1)
    for name, b in born.items():
        delta[b] += sizes[name]
        delta[last[name] + 1] -= sizes[name]
    live = peak = 0
    for d in delta:
        live += d
        peak = max(peak, live)
    return {"weights_bytes": int(weights),
            "activations": {"sum_bytes": int(sum(sizes.values())), "peak_live_bytes": int(peak),
                            "io_bytes": int(io_bytes), "tensors": len(born), "unshaped": unshaped,
                            "symbolic": symbolic}}


def expected_memory(art: str | Path, precisions: Sequence[str], batch: int = 1) -> dict[str, Any]:
    """Expected engine size (bytes of weights) and activation memory per precision of the artefact folder `art`
    (see MEMORY_METHOD); a precision whose ONNX file the folder lacks is left out."""
    art = Path(art)
    out: dict[str, Any] = {"method": MEMORY_METHOD, "batch": batch, "precisions": {}}
    graphs: dict[str, Any] = {}  # fp32 and fp16 read the same model.onnx: loaded and shape-inferred once
    for prec in precisions:
        file, float_bytes = _ENGINE_GRAPHS[prec]
        if (art / file).is_file():
            if file not in graphs:
                graphs[file] = _shaped_graph(art / file)
            out["precisions"][prec] = {"onnx": file, "float_bytes": float_bytes,
                                       **graph_memory(graphs[file], float_bytes, batch)}
    return out
