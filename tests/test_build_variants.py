"""EDGEML_CUDA=OFF and =ON both configure and build the core here (ON needs nvcc)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# cmake and ninja come with the venv (the Makefile installs them); prefer those.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _build(tmp_path: Path, mode: str) -> str:
    import pybind11

    build = tmp_path / f"build-{mode}"
    subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", f"-DEDGEML_CUDA={mode}", "-DEDGEML_PYTHON=ON",
         f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
        check=True, capture_output=True, text=True, env=ENV)
    subprocess.run(["cmake", "--build", str(build), "--target", "_C"], check=True, capture_output=True, text=True,
                   env=ENV)
    (module,) = build.glob("_C*.so")
    probe = f"import importlib.util as u; s=u.spec_from_file_location('_C', {str(module)!r}); " \
            "m=u.module_from_spec(s); s.loader.exec_module(m); print(m.cuda_built)"
    return subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()


def test_build_without_cuda(tmp_path):
    assert _build(tmp_path, "OFF") == "False"


def test_build_with_cuda_compiles_the_cu_files(tmp_path):
    if shutil.which("nvcc", path=ENV["PATH"]) is None:
        pytest.skip("nvcc not on PATH: EDGEML_CUDA=ON cannot build here")
    assert _build(tmp_path, "ON") == "True"
