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
from collections.abc import Callable, Iterator
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


class _KernelChain:
    """The per-P-frame kernel work with its state (reference planes, accumulated field). Calls must come in decode
    order; run in one worker thread they overlap with decoding (both release the GIL)."""

    def __init__(self, grid: int, accumulate: bool, device: str):
        self.grid, self.accumulate, self.device = grid, accumulate, device
        self.ref = self.prev = self.acc = None
        self.seconds = 0.0

    def reset(self, planes: list[np.ndarray]) -> None:
        self.ref = self.prev = planes
        self.acc = None

    def step(self, rows: np.ndarray, cur: list[np.ndarray], out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        ref = self.ref if self.accumulate else self.prev
        f, res = mv.p_step(rows, cur, ref, self.acc, self.grid, accumulate=self.accumulate, device=self.device, out=out)
        if self.accumulate:
            self.acc = f
        self.prev = cur
        self.seconds += time.perf_counter() - t0
        return f, res


class _BlockAllocator:
    """Residual buffers handed out as slices of [n, 3, H, W] blocks: one large allocation per n frames instead of a
    fresh 3*H*W array per frame (numpy backs large blocks with huge pages: far fewer page faults)."""

    def __init__(self, n: int):
        self.n = max(1, n)
        self.block: np.ndarray | None = None
        self.used = 0

    def __call__(self, k: int, h: int, w: int) -> np.ndarray:
        if self.block is None or self.used == len(self.block) or self.block.shape[2:] != (h, w):
            self.block, self.used = np.empty((self.n, 3, h, w), np.int16), 0
        self.used += 1
        return self.block[self.used - 1]


class _GrowingResiduals:
    """Residual buffers for `iter_gops(residual_out=...)` that grow with the stream: the first [n, 3, H, W] int16
    array holds at most `first_bytes`, each next one as many frames as all before it.

    Never sized from the container's declared frame count: a header may declare 2^31 frames (and FFmpeg's AVI
    muxing declares one more than it writes). A frame of another size than the first gets a fresh array (None).
    """

    def __init__(self, first_bytes: int = 64 << 20):
        self.first_bytes = first_bytes
        self.chunks: list[np.ndarray] = []
        self.capacity = 0

    def __call__(self, k: int, h: int, w: int) -> np.ndarray | None:
        if self.chunks and self.chunks[0].shape[2:] != (h, w):
            return None
        if k >= self.capacity:
            n = max(self.capacity, self.first_bytes // (3 * h * w * 2), 1, k + 1 - self.capacity)
            self.chunks.append(np.empty((n, 3, h, w), np.int16))
            self.capacity += n
        offset = self.capacity - len(self.chunks[-1])
        return self.chunks[-1][k - offset] if k >= offset else None

    def collect(self, residuals: list[np.ndarray]) -> np.ndarray:
        """[N, 3, H, W] of the P-steps' residuals, in order: a slice of the first array when they fill it from the
        start (no copy), else one stacked copy."""
        first = self.chunks[0] if self.chunks else None
        if first is not None and len(residuals) <= len(first) and all(
                r.base is first and np.shares_memory(r, first[k]) for k, r in enumerate(residuals)):
            return first[: len(residuals)]
        return np.stack(residuals)


class _Inline:
    """Executor stand-in that runs each call at once (pipeline=False)."""

    def submit(self, fn: Any, *args: Any) -> Any:
        from concurrent.futures import Future

        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def iter_gops(path: str | os.PathLike, *, grid: int = 4, accumulate: bool = True, rgb: bool = False,
              max_steps: int | None = None, device: str = "cpu", threads: int = 1, pipeline: bool = False,
              residual_out: Callable[[int, int, int], np.ndarray | None] | None = None,
              timings: dict | None = None) -> Iterator[Gop]:
    """Decode `path` once and yield each GOP with its P-steps (see the module docstring for the policy).

    accumulate: fields chained to the I-frame and residuals against the I-frame; else per-step fields and residuals
    against the previous I/P frame. rgb: also keep each P-frame's RGB image (for `frames`). max_steps: P-steps kept
    per GOP (later P-frames are decoded but not processed). pipeline: run the kernels in a worker thread, overlapping
    decoding (off by default: slower than inline on the shared 2-core machine it was measured on).
    timings: adds seconds under "decode" (decoding and reading frames out, on this thread) and "kernels"
    (rasterise + accumulate + residual; with pipeline=True these overlap the decode time). residual_out(k, H, W):
    where the k-th P-step's residual goes (an int16 [3, H, W] view), or None for a fresh array.
    Raises VideoError when the video has no I-frame or no motion vectors at all (intra-only).
    """
    if grid not in mv.GRIDS:
        raise VideoError(f"grid must be one of {mv.GRIDS}, got {grid}")
    from concurrent.futures import ThreadPoolExecutor

    path = Path(path)
    if residual_out is None:
        residual_out = _BlockAllocator(max_steps or 12)
    chain = _KernelChain(grid, accumulate, device)
    pool: Any = ThreadPoolExecutor(1, thread_name_prefix="edgeml-mv") if pipeline else _Inline()
    gop: Gop | None = None
    pending: list[tuple[Gop, list]] = []  # GOPs whose kernel results are still being computed
    n_gops = n_p = n_rows = 0
    wait = 0.0
    t_start = time.perf_counter()

    def finish(g: Gop, futures: list) -> Gop:
        nonlocal wait
        t0 = time.perf_counter()
        for step, fut in zip(g.steps, futures, strict=True):
            step.mv, step.residual = fut.result()
        wait += time.perf_counter() - t0
        return g

    def hand_out(g: Gop, futures: list) -> Iterator[Gop]:
        """Yield a finished GOP; the caller's time while this generator is suspended is not ours."""
        nonlocal wait
        done = finish(g, futures)
        t0 = time.perf_counter()
        yield done
        wait += time.perf_counter() - t0

    try:
        futures: list = []
        for fr in codec.decode(path, mvs=True, frames=True, threads=threads):
            kind = fr.pict_type
            if kind == "I":
                if gop is not None:
                    pending.append((gop, futures))
                while pending and (len(pending) > 2 or all(f.done() for f in pending[0][1])):
                    yield from hand_out(*pending.pop(0))
                gop = Gop(index=n_gops, frame_index=fr.index, iframe=fr.frame.to_ndarray(format="rgb24"))
                futures = []
                n_gops += 1
                pool.submit(chain.reset, mv.frame_planes(fr.frame))
                continue
            if kind != "P" or gop is None or (max_steps is not None and len(gop.steps) >= max_steps):
                continue  # B/S/other frames and P-frames before the first I-frame are skipped (module policy)
            rows = mv.mv_rows(fr.mvs)
            n_rows += len(rows)
            image = fr.frame.to_ndarray(format="rgb24") if rgb else None
            planes = mv.frame_planes(fr.frame)
            out = residual_out(n_p, *planes[0].shape) if residual_out is not None else None
            futures.append(pool.submit(chain.step, rows, planes, out))
            gop.steps.append(PStep(fr.index, gop.index, None, None, image))  # type: ignore[arg-type]
            n_p += 1
        if gop is None:
            raise VideoError("no I-frame in the video", path=path, fix="re-encode it with `edgeml data prepare`")
        if n_p == 0 or n_rows == 0:
            raise VideoError("no motion vectors: the video is intra-only (no P-frames)", path=path,
                             fix="re-encode it with `edgeml data prepare` (fixed GOP with P-frames)")
        pending.append((gop, futures))
        while pending:
            yield from hand_out(*pending.pop(0))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if timings is not None:
            timings["kernels"] = timings.get("kernels", 0.0) + chain.seconds
            busy = time.perf_counter() - t_start - wait
            timings["decode"] = timings.get("decode", 0.0) + (busy - (0.0 if pipeline else chain.seconds))


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
    buffer = _GrowingResiduals()
    with tempfile.TemporaryDirectory(prefix="edgeml-extract-") as tmp:
        src = canonical_copy(video, size, tmp)
        info = codec.probe(src)
        gops = list(iter_gops(src, grid=grid, accumulate=accumulate, device=device, threads=threads,
                              residual_out=buffer, timings=timings))
    steps = [s for g in gops for s in g.steps]
    if len({g.iframe.shape for g in gops} | {s.residual.shape[1:] + (3,) for s in steps}) > 1:
        raise VideoError("the frame size changes within the stream", path=video,
                         fix="re-encode it to one size with `edgeml data prepare --size HxW`")
    h, w = gops[0].iframe.shape[:2]
    residual = buffer.collect([s.residual for s in steps]) if steps else np.zeros((0, 3, h, w), np.int16)
    tensors = {
        "iframe": np.stack([g.iframe.transpose(2, 0, 1) for g in gops]),
        "mv": np.stack([s.mv for s in steps]) if steps else np.zeros((0, 2, -(-h // grid), -(-w // grid)), np.float32),
        "residual": residual,
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
