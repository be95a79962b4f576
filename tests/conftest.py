"""Shared fixtures. Test data is generated here or comes from installed packages; nothing downloads."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _restore_process_state():
    """Every test leaves the process as it found it: torch threads, RNGs, environment, working folder.

    CLI entry points (and `bench(threads=...)`) set process-wide state on purpose; without this, a test that
    runs one in-process changes the numbers of every test after it (a 1-thread torch trains differently).
    """
    import torch

    threads = torch.get_num_threads()
    env = dict(os.environ)
    cwd = os.getcwd()
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    default_dtype = torch.get_default_dtype()
    yield
    torch.set_num_threads(threads)
    if dict(os.environ) != env:
        os.environ.clear()
        os.environ.update(env)
    os.chdir(cwd)
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.random.set_rng_state(torch_state)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_default_dtype(default_dtype)


def cuda_skip_reason() -> str | None:
    """None where the CUDA twins can run, else why they cannot."""
    from edgeml import _C

    if not _C.cuda_built:
        return "edgeml._C was built without CUDA (no nvcc at build time)"
    if _C.cuda_device_count() == 0:
        return "CUDA twins are built, but this machine has no CUDA device"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` run where a device exists; elsewhere they skip with the reason printed."""
    reason = cuda_skip_reason()
    if reason is None:
        return
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
