"""Compressed-domain video: decoding with motion-vector export (codec), kernels (mv), clips, synth set, datasets.

Public entry point (stable): `extract(path, size=(H, W), grid=g, accumulate=True, resize="crop")` -> (tensors,
metadata): iframe uint8 [G, 3, H, W], mv float32 [N, 2, H/g, W/g], residual int16 [N, 3, H, W], frame_index and
gop_index int64 [N], computed at the model's size straight from the native stream (see edgeml.video.clips).
"""

from __future__ import annotations

from typing import Any

__all__ = ["extract"]


def __getattr__(name: str) -> Any:
    if name == "extract":  # imported on first use: `import edgeml.video.codec` stays light
        from edgeml.video.clips import extract

        return extract
    raise AttributeError(f"module 'edgeml.video' has no attribute {name!r}")
