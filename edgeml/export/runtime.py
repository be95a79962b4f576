"""`open_runtime(artefact_dir, backend)`: one interface over every backend of an export folder.

The runtime contract (docs/architecture.md §7): a Runtime has `.input_names`, `.output_names`, `.backend`, `.device`
and `.run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]`. Backends: `torch` (the exported weights,
`model.safetensors`), `ort` (model.onnx), `ort-fp16`, `ort-int8` (model.int8.onnx), `tvm` (tvm/model.so, host
architecture only), `trt` (TensorRT plan; needs tensorrt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import InputError, MissingDependencyError

BACKENDS = ("torch", "ort", "ort-fp16", "ort-int8", "tvm", "trt")
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
               "tensor(int8)": np.int8, "tensor(bool)": np.bool_}
_ONNX_FILES = {"ort": "model.onnx", "ort-fp16": "model.fp16.onnx", "ort-int8": "model.int8.onnx"}
_ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}  # the profile's [onnxruntime] graph_optimization_level


class TorchRuntime:
    """A PyTorch module behind the Runtime interface (eager, inference mode, CPU unless `device`).

    `threads`: torch's CPU threads during each `run` only; the process-wide setting is restored after the call.
    """

    backend = "torch"

    def __init__(self, model: Any, input_names: Sequence[str], output_names: Sequence[str] = ("logits",),
                 device: str = "cpu", threads: int | None = None):
        self.model = model.eval().to(device)
        self.device, self.threads = device, threads
        self.input_names, self.output_names = list(input_names), list(output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        before = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                out = self.model(*[torch.from_numpy(np.ascontiguousarray(feeds[k])).to(self.device)
                                   for k in self.input_names])
        finally:
            if self.threads:
                torch.set_num_threads(before)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().float().cpu().numpy() for o in outs]


class OrtRuntime:
    """onnxruntime InferenceSession (CPU provider unless `providers`; the profile's graph optimization level).

    The ONNX file's external-data locations are checked to stay inside its folder before the session opens it.
    """

    def __init__(self, path: str | Path, backend: str = "ort", providers: Sequence[str] | None = None,
                 threads: int | None = None, graph_optimization_level: str = "all"):
        import onnxruntime as ort

        from edgeml.export.onnx import check_external_data

        if graph_optimization_level not in _ORT_LEVELS:
            raise InputError(f"unknown onnxruntime graph_optimization_level {graph_optimization_level!r}",
                             fix=f"use one of: {', '.join(_ORT_LEVELS)}")
        check_external_data(path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[graph_optimization_level])
        if threads:
            opts.intra_op_num_threads = threads
        avail = ort.get_available_providers()
        use = [p for p in (providers or ["CPUExecutionProvider"]) if p in avail] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=use)
        self.backend = backend
        self.device = "cuda" if use[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: _ORT_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {k: np.ascontiguousarray(feeds[k], dtype=self._dtypes[k])
                                       for k in self.input_names})


class TvmRuntime:
    """A compiled TVM Relax library (`tvm/model.so`) on the host CPU."""

    backend = "tvm"
    device = "cpu"

    def __init__(self, so_path: str | Path, input_names: Sequence[str], output_names: Sequence[str]):
        from edgeml.export.tvm import load

        self.vm, self.dev = load(so_path)
        self.fn = self.vm["main"]
        self.input_names, self.output_names = list(input_names), list(output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import tvm

        out = self.fn(*[_tvm_tensor(tvm, np.ascontiguousarray(feeds[k]), self.dev) for k in self.input_names])
        outs = list(out) if isinstance(out, (tuple, list)) or type(out).__name__ == "Array" else [out]
        return [o.numpy() for o in outs]


def _tvm_tensor(tvm: Any, a: np.ndarray, dev: Any) -> Any:
    """A TVM tensor over `a`: zero-copy (DLPack) when its buffer is 64-byte aligned as TVM's kernels assume, else a
    copy (saves ~25 us per video clip over copying every input)."""
    if a.ctypes.data % 64 == 0:
        return tvm.runtime.from_dlpack(a)
    return tvm.runtime.tensor(a, dev)


class TrtRuntime:
    """A TensorRT engine (`tensorrt/model.<precision>.plan`, built on first use if absent), buffers on CUDA via torch.

    Written against the TensorRT 10 tensor-address API; not exercised on this machine (no TensorRT, no GPU).
    """

    backend = "trt"
    device = "cuda"

    def __init__(self, art: Path, precision: str | None = None):
        try:
            import tensorrt as trt
        except ImportError:
            raise MissingDependencyError("tensorrt", purpose="the trt backend (JetPack ships it on the device)"
                                         ) from None
        import json

        import torch

        from edgeml.export.tensorrt import build_here

        cfg = json.loads((art / "tensorrt" / "build_config.json").read_text())
        precision = precision or cfg["default_precision"]
        plan = art / "tensorrt" / f"model.{precision}.plan"
        if not plan.is_file():
            build_here(art / "tensorrt", precision)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        self.input_names = [n for n, i in zip(names, is_in, strict=True) if i]
        self.output_names = [n for n, i in zip(names, is_in, strict=True) if not i]
        self.outputs = {n: torch.empty(tuple(self.engine.get_tensor_shape(n)), dtype=torch.float32, device="cuda")
                        for n in self.output_names}
        self.stream = torch.cuda.Stream()
        self.sync = self.stream.synchronize

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        ins = {k: torch.from_numpy(np.ascontiguousarray(feeds[k], dtype=np.float32)).cuda() for k in self.input_names}
        for k, v in {**ins, **self.outputs}.items():
            self.context.set_tensor_address(k, v.data_ptr())
        self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        return [self.outputs[n].cpu().numpy() for n in self.output_names]


def _manifest(art: Path) -> dict:
    from edgeml.io import read_json

    if not (art / "manifest.json").is_file():
        raise InputError("not an export artefact (no manifest.json)", path=art,
                         fix="create it with `edgeml export --model MODEL --target TARGET --out DIR`")
    return read_json(art / "manifest.json")


def open_runtime(artefact_dir: str | Path, backend: str, *, threads: int | None = None) -> Any:
    """Open `backend` of the export folder `artefact_dir`; a backend the folder lacks is an InputError.

    `threads` applies to this runtime only (an onnxruntime session option; torch threads during each `run`):
    no process-wide setting is changed.
    """
    art = Path(artefact_dir)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}", fix=f"choose one of: {', '.join(BACKENDS)}")
    manifest = _manifest(art)
    names = [i["name"] for i in manifest["inputs"]]
    outs = [o["name"] for o in manifest["outputs"]]
    if backend == "torch":
        from edgeml.registry import create_model

        return TorchRuntime(create_model(manifest["model"], checkpoint=art / "model.safetensors"), names, outs,
                            threads=threads)
    if backend in _ONNX_FILES:
        path = art / _ONNX_FILES[backend]
        if not path.is_file():
            raise InputError(f"this export has no {path.name} (backend {backend})", path=art,
                             fix="re-export for a target whose profile lists that precision")
        ort_cfg = manifest.get("profile", {}).get("onnxruntime", {})
        return OrtRuntime(path, backend, providers=ort_cfg.get("providers"), threads=threads,
                          graph_optimization_level=ort_cfg.get("graph_optimization_level", "all"))
    if backend == "tvm":
        tvm_info = manifest.get("backends", {}).get("tvm")
        if not tvm_info:
            raise InputError("this export has no TVM library", path=art, fix="export with --target x86-tvm")
        if not tvm_info.get("runnable_here"):
            raise InputError(f"the TVM library was built for {tvm_info['target']}, not this machine", path=art,
                             fix="run it on the target device, or export with --target x86-tvm here")
        return TvmRuntime(art / "tvm" / "model.so", names, outs)
    if not (art / "tensorrt" / "build_config.json").is_file():
        raise InputError("this export has no TensorRT build files", path=art, fix="export with --target jetson")
    return TrtRuntime(art)
