"""Shared fixtures. Test data is generated here or comes from installed packages; nothing downloads."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


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
