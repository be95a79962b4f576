"""`edgeml info`: what this installation has — versions, compiled core, CUDA, power sensors."""

from __future__ import annotations

import importlib
import os
import platform
from importlib.metadata import PackageNotFoundError, version

from edgeml import __version__

NOT_INSTALLED = "not installed"

# (label, distribution names to try, module to import when no distribution metadata exists)
_PACKAGES = [
    ("torch", ("torch",), "torch"),
    ("onnx", ("onnx",), "onnx"),
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu"), "onnxruntime"),
    ("av", ("av",), "av"),
    ("tvm", ("apache-tvm", "tvm"), "tvm"),
    ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "tensorrt"),
]


def package_version(dists: tuple[str, ...], module: str) -> str:
    """Installed version of the first distribution found, else the module's __version__, else 'not installed'."""
    for dist in dists:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    try:
        return str(getattr(importlib.import_module(module), "__version__", "unknown"))
    except Exception:  # a broken install is as good as none here
        return NOT_INSTALLED


def compiled_core() -> dict:
    """Whether edgeml._C imports, and whether its CUDA part was built / sees a device."""
    try:
        from edgeml import _C
    except ImportError as e:
        return {"present": False, "error": str(e), "cuda_built": False, "cuda_devices": 0}
    return {"present": True, "cuda_built": bool(_C.cuda_built), "cuda_devices": int(_C.cuda_device_count())}


def system_info() -> dict:
    """Everything `edgeml info` reports, as a JSON-able dict."""
    from edgeml.bench.meters import available_sensors

    return {
        "edgeml": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "compiled_core": compiled_core(),
        "packages": {label: package_version(dists, module) for label, dists, module in _PACKAGES},
        "power_sensors": [s.to_dict() for s in available_sensors()],
    }
