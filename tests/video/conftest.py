"""Video fixtures: a tiny synth set and its clip cache, generated once per session (nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY = {"per_class": 4, "size": (64, 64), "frames": 26, "seed": 1}


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    from edgeml.video.synth import make_synth_dataset

    return make_synth_dataset(tmp_path_factory.mktemp("synth") / "set", workers=1, progress=False, **TINY)


@pytest.fixture(scope="session")
def clip_cache(synth_dir, tmp_path_factory) -> Path:
    from edgeml.video.datasets import build_clip_cache

    return build_clip_cache(synth_dir, tmp_path_factory.mktemp("cache") / "c", clip_len=8, grid=4, size=(64, 64),
                            workers=1, progress=False)


@pytest.fixture(params=[1, 2], ids=["sse2", "avx2"])
def simd(request):
    """Runs a kernel test on each instruction set the motion-vector kernels have (edgeml._C._mv_simd_cap): SSE2, and
    AVX2 where the CPU has it (skipped with the reason elsewhere). The cap is restored afterwards."""
    from edgeml import _C

    previous = _C._mv_simd_cap(request.param)
    try:
        if _C._mv_simd_level() != request.param:
            pytest.skip("this CPU has no AVX2: only the SSE2 path of the kernels runs here")
        yield request.param
    finally:
        _C._mv_simd_cap(previous)
