"""A tiny synth clip cache shared by the training tests (built once per session, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

CLIP_LEN, SIZE = 4, (32, 32)


@pytest.fixture(scope="session")
def tiny_clips(tmp_path_factory) -> Path:
    from edgeml.video.datasets import build_clip_cache
    from edgeml.video.synth import make_synth_dataset

    root = tmp_path_factory.mktemp("synth")
    videos = make_synth_dataset(root / "videos", per_class=3, size=SIZE, frames=26, seed=1, progress=False)
    return build_clip_cache(videos, root / "clips", clip_len=CLIP_LEN, grid=4, size=SIZE, progress=False)


def tiny_model(name: str = "video_spiking", seed: int = 0, **kw):
    import torch

    from edgeml.registry import create_model

    torch.manual_seed(seed)
    return create_model(name, size="tiny", num_classes=8, clip_len=CLIP_LEN, height=SIZE[0], width=SIZE[1], grid=4,
                        **kw)
