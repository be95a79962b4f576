"""fp16 conversion and int8 static QDQ quantization of an exported ONNX model.

int8 uses onnxruntime.quantization in QDQ format (QuantizeLinear/DequantizeLinear pairs: the explicit-quantization
form TensorRT consumes), symmetric int8 activations and per-channel int8 weights, calibrated on real samples.
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


def to_int8_qdq(src: str | Path, dst: str | Path, calibration: Iterable[dict[str, np.ndarray]], *,
                method: str = "minmax", per_channel: bool = True,
                exclude_ops: Sequence[str] = ()) -> dict[str, Any]:
    """Static int8 QDQ quantization of `src` calibrated on `calibration` feeds; returns the settings used.

    `exclude_ops`: op types left in float (e.g. comparisons that decide spikes are not quantized anyway: only
    Conv/MatMul/Gemm and friends get QDQ pairs).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from edgeml.export.onnx import check_external_data

    check_external_data(src)
    feeds = list(calibration)
    if not feeds:
        raise ExportError("int8 quantization needs at least one calibration sample")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with tempfile.TemporaryDirectory(prefix="edgeml-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        logging.getLogger("root").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # pre-processing is an optimisation; quantize the original if it fails
                pre = Path(src)
            try:
                import onnx

                ops = {n.op_type for n in onnx.load(str(pre)).graph.node} - set(exclude_ops)
                quantize_static(str(pre), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                per_channel=per_channel, calibrate_method=methods[method],
                                op_types_to_quantize=sorted(ops),
                                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                                calibration_providers=["CPUExecutionProvider"])
            except Exception as e:
                raise ExportError(f"int8 quantization failed: {str(e).splitlines()[0][:300]}") from e
    return {"format": "QDQ", "activations": "int8 symmetric", "weights": "int8 symmetric" +
            (" per-channel" if per_channel else ""), "calibration": method, "calibration_samples": len(feeds)}
