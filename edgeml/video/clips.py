"""Compressed-domain tensors of one video: I-frames, motion fields, residuals, and clips of them.

Policy for frames other than I and P: B-frames (and any frame whose MV rows point to a later frame) are skipped —
they are never output and never used as a reference, so they cannot corrupt anything; a P-frame's field uses only
its rows with `source < 0`. The P-frame's reference is taken to be the previous I/P frame in presentation order, which
is exactly what the decoder used for canonical input (`edgeml data prepare`: no B-frames, one reference frame); for
other input the residuals are still exact by construction but the vectors may refer to another reference.

Colour: residuals are computed on the decoded Y, U, V planes (chroma repeated 2x2 to full size), straight from the
decoder's buffers — an RGB conversion per frame would halve throughput. I-frames and `frames` are RGB.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import VideoError
from edgeml.video import codec, mv

ACCUMULATE_MODES = {True: "iframe", False: "previous"}


@dataclass
class PStep:
    """One P-frame: field [2, h, w] float32, residual [3, H, W] int16 (YUV), its frame index and GOP number."""

    frame_index: int
    gop_index: int
    mv: np.ndarray
    residual: np.ndarray
    rgb: np.ndarray | None = None  # [H, W, 3] uint8 when asked


@dataclass
class Gop:
    """An I-frame (RGB [H, W, 3] uint8) and the P-steps that follow it."""

    index: int
    frame_index: int
    iframe: np.ndarray
    steps: list[PStep] = field(default_factory=list)


def _timer(timings: dict | None, key: str, t0: float) -> float:
    t1 = time.perf_counter()
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + (t1 - t0)
    return t1


def iter_gops(path: str | os.PathLike, *, grid: int = 4, accumulate: bool = True, rgb: bool = False,
              max_steps: int | None = None, device: str = "cpu", threads: int = 1,
              timings: dict | None = None) -> Iterator[Gop]:
    """Decode `path` once and yield each GOP with its P-steps (see the module docstring for the policy).

    accumulate: fields chained to the I-frame and residuals against the I-frame; else per-step fields and residuals
    against the previous I/P frame. rgb: also keep each P-frame's RGB image (for `frames`). max_steps: P-steps kept
    per GOP (later P-frames are decoded but not processed). timings: adds seconds under "decode" and "kernels".
    Raises VideoError when the video has no I-frame or no motion vectors at all (intra-only).
    """
    if grid not in mv.GRIDS:
        raise VideoError(f"grid must be one of {mv.GRIDS}, got {grid}")
    path = Path(path)
    gop: Gop | None = None
    n_gops = n_p = n_rows = 0
    ref = prev = acc = None
    t = time.perf_counter()
    for fr in codec.decode(path, mvs=True, frames=True, threads=threads):
        kind = fr.pict_type
        if kind == "I":
            if gop is not None:
                yield gop
                t = time.perf_counter()
            img = fr.frame.to_ndarray(format="rgb24")
            gop = Gop(index=n_gops, frame_index=fr.index, iframe=img)
            n_gops += 1
            ref = prev = mv.frame_planes(fr.frame)
            acc = None
            t = _timer(timings, "decode", t)
            continue
        if kind != "P" or gop is None or (max_steps is not None and len(gop.steps) >= max_steps):
            continue  # B/S/other frames and P-frames before the first I-frame are skipped (module policy)
        cur = mv.frame_planes(fr.frame)
        h, w = cur[0].shape
        rows = mv.mv_rows(fr.mvs)
        n_rows += len(rows)
        image = fr.frame.to_ndarray(format="rgb24") if rgb else None
        t = _timer(timings, "decode", t)
        f = mv.rasterise(rows, h, w, grid, device=device)
        if accumulate:
            acc = f = mv.accumulate(f, acc, h, w, grid, device=device)
        res = mv.residual(cur, ref if accumulate else prev, f, grid, device=device)
        t = _timer(timings, "kernels", t)
        gop.steps.append(PStep(fr.index, gop.index, f, res, image))
        n_p += 1
        prev = cur
    if gop is None:
        raise VideoError("no I-frame in the video", path=path, fix="re-encode it with `edgeml data prepare`")
    if n_p == 0 or n_rows == 0:
        raise VideoError("no motion vectors: the video is intra-only (no P-frames)", path=path,
                         fix="re-encode it with `edgeml data prepare` (fixed GOP with P-frames)")
    yield gop


def canonical_copy(path: Path, size: tuple[int, int] | None, tmpdir: str) -> Path:
    """`path` itself when it already has the requested size, else a canonical re-encode in `tmpdir`."""
    if size is None:
        return path
    info = codec.probe(path)
    if (info.height, info.width) == tuple(size):
        return path
    return codec.prepare(path, Path(tmpdir) / "canonical.avi", size=tuple(size))


def extract(video: str | os.PathLike, *, grid: int = 4, accumulate: bool = False, size: tuple[int, int] | None = None,
            device: str = "cpu", threads: int = 1, timings: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every P-step of a video -> (tensors, metadata) as `edgeml data extract` writes them.

    tensors: iframe uint8 [G, 3, H, W] (RGB), mv float32 [N, 2, H/g, W/g], residual int16 [N, 3, H, W] (YUV),
    frame_index int64 [N], gop_index int64 [N]. A size other than the video's re-encodes it canonically first.
    """
    video = Path(video)
    with tempfile.TemporaryDirectory(prefix="edgeml-extract-") as tmp:
        src = canonical_copy(video, size, tmp)
        info = codec.probe(src)
        gops = list(iter_gops(src, grid=grid, accumulate=accumulate, device=device, threads=threads, timings=timings))
    steps = [s for g in gops for s in g.steps]
    h, w = info.height, info.width
    tensors = {
        "iframe": np.stack([g.iframe.transpose(2, 0, 1) for g in gops]),
        "mv": np.stack([s.mv for s in steps]) if steps else np.zeros((0, 2, -(-h // grid), -(-w // grid)), np.float32),
        "residual": np.stack([s.residual for s in steps]) if steps else np.zeros((0, 3, h, w), np.int16),
        "frame_index": np.array([s.frame_index for s in steps], np.int64),
        "gop_index": np.array([s.gop_index for s in steps], np.int64),
    }
    gop_lengths = [1 + len(g.steps) for g in gops]
    meta = {"source": str(video), "codec": info.codec, "profile": info.profile, "width": w, "height": h,
            "fps": info.fps, "gops": len(gops), "gop_size": max(gop_lengths), "grid": grid,
            "accumulate": ACCUMULATE_MODES[accumulate], "warp": mv.WARP, "residual_space": "yuv (chroma repeated)",
            "iframe_space": "rgb", "b_frames": "skipped", "p_steps": len(steps)}
    return tensors, meta


def write_extract(video: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> dict:
    """`edgeml data extract`: extract() written as one safetensors file (metadata as JSON in its header)."""
    import json

    from safetensors.numpy import save

    from edgeml.io import write_bytes

    tensors, meta = extract(video, **kwargs)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    write_bytes(out, save(arrays, metadata={"edgeml": json.dumps(meta)}))
    return meta


def video_clips(path: str | os.PathLike, *, clip_len: int, grid: int = 4, accumulate: bool = True,
                frames: bool = True, device: str = "cpu", timings: dict | None = None) -> list[dict[str, np.ndarray]]:
    """Clips of a video in compact dtypes: per GOP with at least `clip_len` P-frames, one clip of its I-frame and
    first `clip_len` P-steps: iframe uint8 [3,H,W], mv int16 [T,2,h,w], residual int16 [T,3,H,W],
    frames uint8 [T+1,3,H,W] (RGB, I-frame first; only when frames=True)."""
    if clip_len < 1:
        raise VideoError(f"clip_len must be >= 1, got {clip_len}")
    out = []
    for g in iter_gops(path, grid=grid, accumulate=accumulate, rgb=frames, max_steps=clip_len, device=device,
                       timings=timings):
        if len(g.steps) < clip_len:
            continue
        item = {"iframe": np.ascontiguousarray(g.iframe.transpose(2, 0, 1)),
                "mv": np.stack([s.mv for s in g.steps]).astype(np.int16),
                "residual": np.stack([s.residual for s in g.steps])}
        if frames:
            item["frames"] = np.stack([g.iframe] + [s.rgb for s in g.steps]).transpose(0, 3, 1, 2).copy()
        out.append(item)
    return out


def to_float(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compact clip arrays -> the float32 item the models take (same keys)."""
    return {k: v.astype(np.float32) for k, v in item.items()}


def extract_clips(video_path: str | os.PathLike, *, clip_len: int, grid: int, size: tuple[int, int] | None = None,
                  timings: dict | None = None, accumulate: bool = True, frames: bool = True,
                  device: str = "cpu") -> list[dict[str, np.ndarray]]:
    """Clip items (no label) straight from a video file, as ClipDataset yields them: iframe float32 [3,H,W] (RGB
    0..255), mv float32 [T,2,H/g,W/g] (pixels), residual float32 [T,3,H,W] (signed), frames float32 [T+1,3,H,W].
    A `size` (H, W) other than the video's re-encodes it canonically first (counted under timings["decode"])."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeml-clips-") as tmp:
        src = canonical_copy(Path(video_path), size, tmp)
        _timer(timings, "decode", t0)
        clips = video_clips(src, clip_len=clip_len, grid=grid, accumulate=accumulate, frames=frames, device=device,
                            timings=timings)
    return [to_float(c) for c in clips]
