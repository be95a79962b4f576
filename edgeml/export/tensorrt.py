"""TensorRT artefacts: an op-support check against the profile's TensorRT version, `build_engine.sh` (trtexec
with the profile's flags) and `build_engine.py` (the tensorrt Python API), to run on the device.

TensorRT cannot be installed here (see NOTES.md), so engines are built on the target; this module validates the
ONNX for it. The op lists follow onnx-tensorrt's operators.md for each TensorRT release.
"""

from __future__ import annotations

import shutil
import stat
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
