"""Test videos encoded here with PyAV (nothing committed, nothing downloaded); shared by tests/video and
tests/robustness."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def encode_frames(path: Path, codec: str, frames: int, pix_fmt: str = "yuv420p", **options: str) -> Path:
    """`frames` random 64x64 frames (seed 0) encoded with `codec` and its `options` (0 frames: a header and no video
    data)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream(codec, rate=25)
        st.width, st.height, st.pix_fmt = 64, 64, pix_fmt
        st.options = options
        out.start_encoding()
        for _ in range(frames):
            img = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
            for pkt in st.encode(img.reformat(format=pix_fmt)):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)
    return path
