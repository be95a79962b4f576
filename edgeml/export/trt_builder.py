"""Build a TensorRT engine from ONNX with the tensorrt Python API (runs on the device; no edgeml import needed).

Copied into every TensorRT artefact as `tensorrt/build_engine.py`:
    python3 build_engine.py [--precision fp16|fp32|int8] [--config build_config.json]
`int8` builds from the QDQ model (explicit quantization: no calibrator needed). Also importable as
`edgeml.export.trt_builder.build_engine` where tensorrt imports.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def build_engine(onnx_path: str, plan_path: str, *, precision: str = "fp16", workspace_mib: int = 1024,
                 dla_core: int = -1, gpu_fallback: bool = True, timing_cache: str | None = None,
                 optimization_level: int | None = None) -> str:
    """Parse `onnx_path`, build a serialized engine with the given flags and write it to `plan_path`."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT cannot parse the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        if gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(optimization_level)
    cache = None
    if timing_cache:
        blob = Path(timing_cache).read_bytes() if os.path.exists(timing_cache) else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    tmp = plan_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(engine))
    os.replace(tmp, plan_path)
    if cache is not None:
        Path(timing_cache).write_bytes(bytes(cache.serialize()))
    return plan_path


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description="Build a TensorRT engine for this edgeml artefact.")
    ap.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None)
    ap.add_argument("--config", default=str(here / "build_config.json"))
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    precision = args.precision or cfg["default_precision"]
    onnx = here / cfg["onnx"][precision]
    plan = here / f"model.{precision}.plan"
    build_engine(str(onnx), str(plan), precision=precision, workspace_mib=cfg["workspace_mib"],
                 dla_core=cfg["dla_core"], gpu_fallback=cfg["gpu_fallback"],
                 timing_cache=str(here / cfg["timing_cache"]) if cfg.get("timing_cache") else None,
                 optimization_level=cfg.get("builder_optimization_level"))
    print(f"wrote {plan}")


if __name__ == "__main__":
    main()
