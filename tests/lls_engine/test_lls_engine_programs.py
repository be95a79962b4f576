"""The standalone programs: edgeml-finetune runs with no Python on PATH (scrubbed environment), the engine's
C++ tests pass natively and, where the cross toolchain and qemu exist, as an aarch64 build under qemu."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeml.io import sha256_file
from edgeml.lls.device import write_idx_folder
from edgeml.lls.pack import read_pack, write_pack
from edgeml.registry import create_model

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """Build csrc/lls as its own CMake project (edgeml-finetune + edgeml-lls-tests), no Python involved."""
    build = tmp_path_factory.mktemp("lls-build")
    gen = ["-G", "Ninja"] if shutil.which("ninja", path=TOOLS["PATH"]) else []
    subprocess.run(["cmake", "-S", str(ROOT / "csrc" / "lls"), "-B", str(build), *gen], check=True,
                   capture_output=True, text=True, env=TOOLS)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, text=True, env=TOOLS)
    return build


@pytest.fixture(scope="module")
def device_folder(tmp_path_factory) -> tuple[Path, Path]:
    """A small pack and an IDX data folder (train + held-out t10k) as a device would hold them."""
    root = tmp_path_factory.mktemp("device")
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls").eval()
    pack = write_pack(root / "model.pack", model, train_blocks="last:2", optimizer={"name": "sgd", "lr": 0.01})
    rng = np.random.default_rng(0)
    write_idx_folder(root / "data", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8), np.arange(40) % 10)
    write_idx_folder(root / "data", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10, "t10k")
    return pack, root / "data"


def scrubbed_env() -> dict[str, str]:
    """No Python anywhere: PATH points at an empty folder, no PYTHON* variables, no HOME."""
    return {"PATH": "/nonexistent", "LANG": "C"}


def test_cpp_engine_tests_pass(programs):
    r = subprocess.run([str(programs / "edgeml-lls-tests")], capture_output=True, text=True, env=scrubbed_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failure(s)" in r.stdout


def test_standalone_finetune_runs_without_python(programs, device_folder, tmp_path):
    pack, data = device_folder
    digest = sha256_file(pack)
    out = tmp_path / "tuned.pack"
    r = subprocess.run([str(programs / "edgeml-finetune"), "--pack", str(pack), "--data", str(data), "--out", str(out),
                        "--blocks", "last:2", "--epochs", "2", "--batch", "8", "--quiet"],
                       capture_output=True, text=True, env=scrubbed_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["steps"] == 10 and result["held_out"] is True
    assert 0.0 <= result["accuracy_before"] <= 1.0 and result["peak_rss_kb"] > 0 and result["arena_bytes"] > 0
    assert sha256_file(pack) == digest  # input never modified
    tuned = read_pack(out)
    before = read_pack(pack)
    assert not np.array_equal(tuned.tensors["classifier.weight"], before.tensors["classifier.weight"])
    np.testing.assert_array_equal(tuned.tensors["blocks.0.block.0.weight"], before.tensors["blocks.0.block.0.weight"])


def test_standalone_finetune_bad_inputs_exit_2_with_a_reason(programs, device_folder, tmp_path):
    pack, data = device_folder
    binary = str(programs / "edgeml-finetune")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], capture_output=True, text=True, env=scrubbed_env())

    wrong = tmp_path / "wrong"
    write_idx_folder(wrong, np.zeros((4, 32, 32), np.uint8), np.zeros(4))
    r = run("--pack", str(pack), "--data", str(wrong), "--out", str(tmp_path / "o.pack"))
    assert r.returncode == 2 and "expects 28x28x1" in r.stderr
    tampered = tmp_path / "t.pack"
    raw = bytearray(pack.read_bytes())
    raw[-10] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    r = run("--pack", str(tampered), "--data", str(data), "--out", str(tmp_path / "o.pack"))
    assert r.returncode == 2 and "checksum" in r.stderr
    r = run("--pack", str(pack), "--data", str(data), "--out", str(tmp_path / "o.pack"), "--arena-bytes", "1000")
    assert r.returncode == 2 and "arena too small" in r.stderr
    r = run("--pack", str(pack), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o.pack"))
    assert r.returncode == 2 and "not found" in r.stderr
    assert not (tmp_path / "o.pack").exists()


def test_aarch64_build_passes_its_tests_under_qemu(tmp_path):
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"cross toolchain not installed: {', '.join(missing)} (Debian: g++-aarch64-linux-gnu qemu-user)")
    r = subprocess.run([str(ROOT / "csrc" / "lls" / "cross_test.sh"), str(tmp_path / "build")], capture_output=True,
                       text=True, env=TOOLS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failure(s)" in r.stdout


def test_standalone_finetune_threads_are_deterministic(programs, device_folder, tmp_path):
    pack, data = device_folder
    binary = str(programs / "edgeml-finetune")
    outs = []
    for i in range(2):
        out = tmp_path / f"tuned{i}.pack"
        r = subprocess.run([binary, "--pack", str(pack), "--data", str(data), "--out", str(out), "--blocks", "last:2",
                            "--batch", "8", "--threads", "2", "--quiet"], capture_output=True, text=True,
                           env=scrubbed_env())
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["threads"] == 2
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, env=scrubbed_env())
    assert "--threads" in r.stdout
    r = subprocess.run([binary, "--pack", str(pack), "--data", str(data), "--out", str(tmp_path / "o.pack"),
                        "--threads", "0"], capture_output=True, text=True, env=scrubbed_env())
    assert r.returncode == 2 and "--threads takes an integer" in r.stderr
