"""fp16 conversion, int8 static QDQ quantization of an exported ONNX model, and the profile's precision advice.

int8 uses onnxruntime.quantization in QDQ format (QuantizeLinear/DequantizeLinear pairs: the explicit-quantization
form TensorRT consumes) with per-channel int8 weights, calibrated on real samples. Only the ops with integer kernels
get QDQ pairs (`QUANTIZED_OPS`): around video_spiking's ~500 elementwise LIF ops (Mul/Add/Sub/compare, no int8
kernel in ONNX Runtime) every pair stays a standalone Quantize/Dequantize call (1,069 of them after ORT's fusions),
which made the int8 graph 2.3-2.5x slower than fp32 on x86. Activations are uint8 (asymmetric) for ONNX Runtime on
CPU -- its x86 int8 kernels multiply u8 x s8 (the VNNI instruction's operand types); s8 activations measured 1.11x
slower here -- and int8 symmetric for TensorRT, which requires zero points of 0.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import ExportError


def to_fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Convert weights and compute to float16, keeping float32 inputs/outputs (so the same feeds work)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgeml.export.onnx import check_external_data

    check_external_data(src)
    proto = onnx.load(str(src))
    try:
        half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    except Exception as e:
        raise ExportError(f"fp16 conversion failed: {str(e).splitlines()[0][:300]}") from e
    onnx.save(half, str(dst))
    return {"method": "onnxruntime.transformers.float16, io kept float32"}


class _Reader:
    """CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # not used by MinMax calibration
        pass


QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")  # the ops with int8 kernels worth a QDQ pair on every backend


def int8_settings(backend: str) -> dict[str, Any]:
    """`to_int8_qdq` keyword arguments for a profile's backend: uint8 activations for ONNX Runtime / TVM on CPU,
    symmetric int8 for TensorRT."""
    return {"activations": "int8" if backend == "tensorrt" else "uint8"}


def to_int8_qdq(src: str | Path, dst: str | Path, calibration: Iterable[dict[str, np.ndarray]], *,
                method: str = "minmax", per_channel: bool = True, activations: str = "int8",
                op_types: Sequence[str] = QUANTIZED_OPS) -> dict[str, Any]:
    """Static int8 QDQ quantization of `src` calibrated on `calibration` feeds; returns the settings used.

    `activations`: "int8" (symmetric, zero point 0) or "uint8" (asymmetric); `op_types`: the ops given QDQ pairs,
    every other op stays float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from edgeml.export.onnx import check_external_data

    check_external_data(src)
    feeds = list(calibration)
    if not feeds:
        raise ExportError("int8 quantization needs at least one calibration sample")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if activations not in ("int8", "uint8"):
        raise ExportError(f"int8 activations must be 'int8' or 'uint8', got {activations!r}")
    act_type, symmetric = (QuantType.QInt8, True) if activations == "int8" else (QuantType.QUInt8, False)
    with tempfile.TemporaryDirectory(prefix="edgeml-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # pre-processing is an optimisation; quantize the original if it fails
                pre = Path(src)
            try:
                quantize_static(str(pre), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                                activation_type=act_type, weight_type=QuantType.QInt8,
                                per_channel=per_channel, calibrate_method=methods[method],
                                op_types_to_quantize=list(op_types),
                                extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
                                calibration_providers=["CPUExecutionProvider"])
            except Exception as e:
                raise ExportError(f"int8 quantization failed: {str(e).splitlines()[0][:300]}") from e
    return {"format": "QDQ", "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
            "weights": "int8 symmetric" + (" per-channel" if per_channel else ""), "ops": list(op_types),
            "calibration": method, "calibration_samples": len(feeds)}


def recommend_precision(profile: Any, art: str | Path, *, rounds: int = 3, repeats: int = 30) -> dict[str, Any]:
    """Which precision the profile recommends and why, plus, where the export runs on this CPU (an ONNX Runtime CPU
    profile with an int8 variant), fp32 vs int8 measured here in interleaved rounds (one thread each)."""
    out: dict[str, Any] = {"recommended": profile.precision.recommended if profile.precision else None,
                           "why": profile.precision.why if profile.precision else
                           "the profile recommends none: measure on the device (edgeml bench)"}
    art = Path(art)
    on_cpu = list(profile.onnxruntime.providers)[:1] == ["CPUExecutionProvider"] and profile.backend != "tensorrt"
    if on_cpu and (art / "model.int8.onnx").is_file():
        out["measured_here"] = _fp32_vs_int8(art, rounds, repeats)
    return out


def _fp32_vs_int8(art: Path, rounds: int, repeats: int) -> dict[str, Any]:
    """Median per-call latency of model.onnx and model.int8.onnx on ONNX Runtime (1 thread), interleaved rounds."""
    from edgeml.bench.rounds import interleave, judge
    from edgeml.bench.timing import time_call
    from edgeml.export.runtime import OrtRuntime

    runtimes = {"fp32": OrtRuntime(art / "model.onnx", "ort", threads=1),
                "int8": OrtRuntime(art / "model.int8.onnx", "ort-int8", threads=1)}
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.random([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in runtimes["fp32"].session.get_inputs()}

    def timed(rt: Any) -> Any:
        return lambda: (time_call(lambda: rt.run(feeds), warmup=3, repeats=repeats).median * 1e3, {})

    verdict = judge(interleave({k: timed(rt) for k, rt in runtimes.items()}, rounds))
    fp32, int8 = verdict.medians["fp32"], verdict.medians["int8"]
    return {"fp32_ms": round(fp32, 4), "int8_ms": round(int8, 4), "int8_vs_fp32": round(int8 / fp32, 3),
            "faster": "int8" if int8 < fp32 else "fp32", "threads": 1, "rounds": rounds,
            "valid": verdict.valid, "reasons": verdict.reasons}
