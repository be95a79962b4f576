"""`bench(threads=...)` and `open_runtime(threads=...)` are library calls: they leave torch threads and
TVM_NUM_THREADS as they found them (only the CLI entry point may set them for the process)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from bench_tiny import make_artefact

from edgeml.bench.meters import MeterSet
from edgeml.bench.run import bench, cpu_threads
from edgeml.errors import InputError
from edgeml.export.runtime import TorchRuntime

NO_METERS = MeterSet([], [])


@pytest.fixture
def known_threads(monkeypatch: pytest.MonkeyPatch) -> int:
    """A thread count and TVM_NUM_THREADS different from what the calls below ask for."""
    torch.set_num_threads(2)
    monkeypatch.setenv("TVM_NUM_THREADS", "7")
    return 2


def test_bench_restores_torch_threads_and_tvm_env(tmp_path, known_threads: int):
    r = bench(artefact=make_artefact(tmp_path / "a"), backend="ort", batch_sizes=(1,), repeats=2, warmup=0,
              threads=1, meters=NO_METERS, progress=False)
    assert r["environment"]["threads_requested"] == 1
    assert torch.get_num_threads() == known_threads and os.environ["TVM_NUM_THREADS"] == "7"


def test_bench_restores_them_when_it_fails(tmp_path, known_threads: int):
    with pytest.raises(InputError):
        bench(artefact=tmp_path / "missing", backend="ort", threads=1, meters=NO_METERS, progress=False)
    assert torch.get_num_threads() == known_threads and os.environ["TVM_NUM_THREADS"] == "7"


def test_cpu_threads_sets_inside_and_unsets_an_absent_env(monkeypatch: pytest.MonkeyPatch, known_threads: int):
    monkeypatch.delenv("TVM_NUM_THREADS")
    with cpu_threads(1):
        assert torch.get_num_threads() == 1 and os.environ["TVM_NUM_THREADS"] == "1"
    assert torch.get_num_threads() == known_threads and "TVM_NUM_THREADS" not in os.environ


def test_torch_runtime_uses_its_threads_per_call_only(known_threads: int):
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x * 2

    rt = TorchRuntime(Probe(), ["x"], threads=1)
    np.testing.assert_array_equal(rt.run({"x": np.ones(3, np.float32)})[0], np.full(3, 2.0))
    assert seen == [1] and torch.get_num_threads() == known_threads
