"""Compressed-domain tensors of one video: I-frames, motion fields, residuals, and clips of them.

Policy for frames other than I and P: B-frames (and any frame whose MV rows point to a later frame) are skipped —
they are never output and never used as a reference, so they cannot corrupt anything; a P-frame's field uses only
its rows with `source < 0`. The P-frame's reference is taken to be the previous I/P frame in presentation order, which
is exactly what the decoder used for canonical input (`edgeml data prepare`: no B-frames, one reference frame); for
other input the residuals are still exact by construction but the vectors may refer to another reference.

Colour: residuals are computed on the decoded Y, U, V planes (chroma repeated 2x2 to full size), straight from the
decoder's buffers — an RGB conversion per frame would halve throughput. I-frames and `frames` are RGB.

Model resolution (no re-encode): a video of any size becomes inputs of the model's size (H, W) through a stated
resize policy (`resize_plan`: "crop" = largest centred window of the model's aspect, or "stretch"). The motion field
is rasterised and accumulated at native resolution, then area-averaged to the model grid with its vectors scaled;
the residual is warped, subtracted and area-averaged in one fused pass (edgeml._C.extract_step, one call per
P-frame, GIL released, planes and side data read from the decoder's buffers); I-frames (and `frames`) go through
libswscale. At the video's own size every output is bit-identical to the full-resolution extraction.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import InputError, VideoError
from edgeml.video import codec, mv

ACCUMULATE_MODES = {True: "iframe", False: "previous"}


@dataclass
class PStep:
    """One P-frame: field float32 [2, H/g, W/g], residual int16 [3, H, W] (YUV) at the model's size, its frame
    index and GOP number."""

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
    plan: Resize | None = None  # how the native frames became these outputs


RESIZE_POLICIES = ("crop", "stretch")


@dataclass(frozen=True)
class Resize:
    """How native frames become model inputs: `window` (y0, x0, hs, ws) of the native (H0, W0) frame, area-averaged
    to `size` (H, W). Identity when the window is the whole frame at its own size."""

    policy: str
    native: tuple[int, int]
    size: tuple[int, int]
    window: tuple[int, int, int, int]

    @property
    def identity(self) -> bool:
        return self.window == (0, 0, *self.native) and self.size == self.native

    def cells(self, grid: int) -> tuple[int, int]:
        """The model grid's (rows, columns): ceil at the video's own size, H/g x W/g otherwise."""
        return (-(-self.size[0] // grid), -(-self.size[1] // grid))

    def meta(self) -> dict:
        """The preprocessing record kept with every output (clip metadata, cache index, export manifest)."""
        return {"policy": self.policy, "native_size": list(self.native), "size": list(self.size),
                "window": list(self.window), "identity": self.identity,
                "iframe": "libswscale area (PyAV reformat) of the window", "frames": "as iframe",
                "residual": "area mean of the full-resolution YUV residual over the window (exact integer "
                            "weights, rounded half away from zero), fused in one pass",
                "mv": "native field accumulated at native resolution, area mean over the window, vectors scaled by "
                      "(W/ws, H/hs)"}


def check_model_size(size: tuple[int, int], grid: int) -> tuple[int, int]:
    """InputError unless (H, W) are positive multiples of `grid` and at most MAX_SIDE."""
    h, w = (int(v) for v in size)
    if min(h, w) < 1 or max(h, w) > codec.MAX_SIDE or h % grid or w % grid:
        raise InputError(f"size {h}x{w} must be a multiple of the grid ({grid}) per side, at most "
                         f"{codec.MAX_SIDE}x{codec.MAX_SIDE}", fix=f"pass e.g. --size {16 * grid}x{16 * grid}")
    return h, w


def resize_plan(native: tuple[int, int], size: tuple[int, int] | None, policy: str = "crop", *,
                path: str | os.PathLike | None = None) -> Resize:
    """The window of a native (H0, W0) frame that becomes a model input of `size` (H, W) under `policy`:

    - "crop" (the action-recognition convention: short side to the model, centre crop): the largest centred window
      of the model's aspect ratio; when it is not the whole frame its sides and offsets are rounded down to even
      (whole 4:2:0 chroma samples);
    - "stretch": the whole frame, aspect ratio not kept.
    size None (or the native size under either policy) is the identity: outputs equal the full-resolution ones bit
    for bit. VideoError when the window is smaller than `size` (outputs are area means, never upsampled).
    """
    if policy not in RESIZE_POLICIES:
        raise InputError(f"unknown resize policy {policy!r}", fix=f"use one of {', '.join(RESIZE_POLICIES)}")
    h0, w0 = native
    if size is None or tuple(size) == (h0, w0):
        return Resize(policy, (h0, w0), (h0, w0), (0, 0, h0, w0))
    h, w = size
    if policy == "stretch" or w0 * h == h0 * w:
        hs, ws = h0, w0
    elif w0 * h > h0 * w:  # wider than the model: full height, centred columns
        hs, ws = h0 - h0 % 2, min(w0, round(h0 * w / h)) // 2 * 2
    else:
        hs, ws = min(h0, round(w0 * h / w)) // 2 * 2, w0 - w0 % 2
    y0, x0 = (h0 - hs) // 2 // 2 * 2, (w0 - ws) // 2 // 2 * 2
    if hs < h or ws < w:
        raise VideoError(f"the model size {h}x{w} is larger than the video ({h0}x{w0}, {policy} window {hs}x{ws}): "
                         "outputs are area means, never upsampled", path=path,
                         fix="pass a smaller --size, or upscale the video explicitly with `edgeml data prepare --size`")
    return Resize(policy, (h0, w0), (h, w), (y0, x0, hs, ws))


_LOCAL = threading.local()


def thread_reformatter() -> Any:
    """This thread's av.video.reformatter.VideoReformatter, kept for the thread's life: its libswscale context is
    built once and only rebuilt when a frame's size, format or colour tags differ from the last one's (libswscale
    compares them on every call), so reusing it across frames and videos changes no output (tested)."""
    ref = getattr(_LOCAL, "reformatter", None)
    if ref is None:
        from av.video.reformatter import VideoReformatter

        ref = _LOCAL.reformatter = VideoReformatter()
    return ref


def model_rgb(frame: Any, plan: Resize, reformatter: Any = None) -> np.ndarray:
    """A decoded frame -> RGB uint8 [H, W, 3] at the plan's size, by libswscale (area) over the plan's window; at the
    video's own size the plain conversion (bit-identical to the full-resolution output). reformatter: an
    av.video.reformatter.VideoReformatter to reuse (it keeps its libswscale context from frame to frame; one per
    thread), else this thread's (thread_reformatter). libswscale runs in the calling thread (threads=1: its own slice
    threads cost more to start than a model-size frame takes, and would compete with the decoder)."""
    if reformatter is None:
        reformatter = thread_reformatter()
    if plan.identity:
        return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
    h, w = plan.size
    y0, x0, hs, ws = plan.window
    if (hs, ws) != plan.native:
        frame = _crop(frame, plan.window)
    return reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA",
                                threads=1).to_ndarray()


def _crop(frame: Any, window: tuple[int, int, int, int]) -> Any:
    """The window (even offsets and sides) of a frame as a new yuv420p frame: one copy of the window's samples, straight
    into the new frame's planes."""
    import av

    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    y0, x0, hs, ws = window
    out = av.VideoFrame(ws, hs, "yuv420p")
    for k, (src, dst) in enumerate(zip(frame.planes, out.planes, strict=True)):
        s = 0 if k == 0 else 1
        part = np.frombuffer(src, np.uint8).reshape(-1, src.line_size)[y0 >> s:(y0 + hs) >> s, x0 >> s:(x0 + ws) >> s]
        np.frombuffer(dst, np.uint8).reshape(-1, dst.line_size)[:hs >> s, :ws >> s] = part
    out.color_range = frame.color_range
    out.colorspace = frame.colorspace
    return out


_IDLE_EXTRACTORS: list[tuple[tuple, Any]] = []  # (configuration, edgeml._C.Extractor) no chain is using
_IDLE_LOCK = threading.Lock()
KEEP_EXTRACTORS = 2  # idle ones kept for the next video (each holds a widened reference frame: ~1.6 MB at 720x528)


def _take_extractor(key: tuple) -> Any:
    """An edgeml._C.Extractor for `key` (its constructor's arguments): an idle one of the same configuration when
    there is one (its buffers already allocated and touched: a fresh one costs ~0.5 ms of page faults at 720x528 per
    video), else a new one. Its state is irrelevant: every chain starts with reset() (an I-frame)."""
    with _IDLE_LOCK:
        for k, (have, native) in enumerate(_IDLE_EXTRACTORS):
            if have == key:
                del _IDLE_EXTRACTORS[k]
                return native
    return mv._C.Extractor(*key)


def _give_back_extractor(key: tuple, native: Any) -> None:
    """Keep a finished chain's Extractor for the next video (at most KEEP_EXTRACTORS, the newest)."""
    with _IDLE_LOCK:
        _IDLE_EXTRACTORS.append((key, native))
        del _IDLE_EXTRACTORS[:-KEEP_EXTRACTORS]


class _KernelChain:
    """The per-frame work beside the decoder with its state (reference planes, accumulated native field): each
    I-frame's RGB conversion and reference, each P-frame's fused kernel call. Calls must come in decode order; run in
    one worker thread they overlap with decoding (all of them release the GIL). On the CPU the state lives in C++
    (edgeml._C.Extractor: the I-frame's planes copied and widened once per GOP, the field never leaves C++); the CUDA
    twin goes through extract_step with the state kept here. `seconds` / `cpu_seconds`: the time spent in these
    calls."""

    def __init__(self, grid: int, accumulate: bool, device: str, plan: Resize, channels: int = 3):
        self.grid, self.accumulate, self.plan = grid, accumulate, plan
        self.native: Any = None
        if device == "cpu":
            self.key = (*plan.native, grid, accumulate, plan.window, plan.size, channels)
            self.native = _take_extractor(self.key)
        else:
            self.step_fn = mv._pick("extract_step", device)
        self.ref = self.prev = self.acc = None
        self.seconds = self.cpu_seconds = 0.0

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args)
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.thread_time() - c0

    def iframe(self, frame: Any) -> np.ndarray:
        """An I-frame's RGB image at the model's size (model_rgb), and its planes as the new reference."""
        image = self._timed(model_rgb, frame, self.plan)
        self.reset(_planes(frame))
        return image

    def reset(self, planes: Any) -> None:
        if self.native is not None:
            self._timed(self.native.reset, planes)
            return
        self.ref = self.prev = planes
        self.acc = None

    def step(self, mvs: Any, cur: Any, residual: np.ndarray, field: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.native is not None:
            self._timed(self.native.step, mvs, cur, residual, field)
            return field, residual
        ref = self.ref if self.accumulate else self.prev
        acc = self._timed(self.step_fn, mvs, cur, ref, self.acc, self.grid, self.accumulate, self.plan.window,
                          self.plan.size, residual, field)
        if self.accumulate:
            self.acc = acc
        self.prev = cur
        return field, residual


class _BlockAllocator:
    """Residual buffers handed out as slices of [n, C, H, W] blocks: one large allocation per n frames instead of a
    fresh array per frame (numpy backs large blocks with huge pages: far fewer page faults)."""

    def __init__(self, n: int):
        self.n = max(1, n)
        self.block: np.ndarray | None = None
        self.used = 0

    def __call__(self, k: int, c: int, h: int, w: int) -> np.ndarray:
        if self.block is None or self.used == len(self.block) or self.block.shape[1:] != (c, h, w):
            self.block, self.used = np.empty((self.n, c, h, w), np.int16), 0
        self.used += 1
        return self.block[self.used - 1]


class _GrowingResiduals:
    """Residual buffers for `iter_gops(residual_out=...)` that grow with the stream: the first [n, C, H, W] int16
    array holds at most `first_bytes`, each next one as many frames as all before it.

    Never sized from the container's declared frame count alone: a header may declare 2^31 frames (and FFmpeg's AVI
    muxing declares one more than it writes). `opened` (iter_gops' info dict) only caps the first array at the frames
    the stream declares, when it declares any: no more memory than the video needs (a right-sized block is reused by
    the allocator from video to video instead of fresh pages zeroed by the kernel each time); a stream with more
    frames than it declares just grows into a next array.
    """

    def __init__(self, first_bytes: int = 64 << 20, opened: dict | None = None):
        self.first_bytes = first_bytes
        self.opened = opened
        self.chunks: list[np.ndarray] = []
        self.capacity = 0

    def __call__(self, k: int, c: int, h: int, w: int) -> np.ndarray:
        if k >= self.capacity:
            first = self.first_bytes // (c * h * w * 2)
            video = (self.opened or {}).get("video")
            if not self.chunks and video is not None and video.frames > 0:
                first = min(first, video.frames)
            n = max(self.capacity, first, 1, k + 1 - self.capacity)
            self.chunks.append(np.empty((n, c, h, w), np.int16))
            self.capacity += n
        offset = self.capacity - len(self.chunks[-1])
        return self.chunks[-1][k - offset]

    def collect(self, residuals: list[np.ndarray]) -> np.ndarray:
        """[N, C, H, W] of the P-steps' residuals, in order: a slice of the first array when they fill it from the
        start (no copy), else one concatenated copy."""
        first = self.chunks[0] if self.chunks else None
        if first is not None and len(residuals) <= len(first) and all(
                r.base is first and np.shares_memory(r, first[k]) for k, r in enumerate(residuals)):
            return first[: len(residuals)]
        return np.stack(residuals)


class _Done:
    """A call's result, already there (the part of a Future that iter_gops reads; no lock to build per call)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value

    def done(self) -> bool:
        return True


class _Inline:
    """Executor stand-in that runs each call at once (pipeline=False)."""

    def submit(self, fn: Any, *args: Any) -> _Done:
        return _Done(fn(*args))

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


# Niceness of iter_gops' kernel thread (pipeline=True) over the decoding thread's, on Linux (where it is per thread).
# The decoder must not wait for CPU behind the kernels: libavcodec's slice threads (H.264) meet at every frame, and a
# kernel call holding the core one of them wakes on stalls the whole decoder (measured: about 1.45 of 2 cores busy).
# A lower priority lets them run at once and the kernels fill the gaps. H.264 High 720x528 on 2 idle cores at nice
# 0 / 5 / 10: 224x224 extraction 55 / 51.5 / 50.5 ms, 64x64 49.5 / 47 / 45.3 ms; no change where decoding is one
# thread. Not idle: on a machine that other work saturates, the kernel thread still gets about a tenth of a contended
# core (weight 110 / 1024), and the decoder waits for it once three GOPs are pending (iter_gops): it never runs away.
KERNEL_NICE = 10


def _yield_to_decoder() -> None:
    """Lower this (kernel) thread's priority by KERNEL_NICE (Linux: per thread; elsewhere nothing, since the call
    would renice the whole process). Best effort: a refusal changes nothing but the scheduling."""
    if sys.platform != "linux" or KERNEL_NICE <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + KERNEL_NICE))
    except OSError:
        pass


PLANAR_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray")


def _planes(frame: Any) -> Any:
    """The frame's planes as the kernels read them (av.VideoPlane buffers, no copy); 8-bit planar formats as they
    are, anything else converted to yuv420p first."""
    if frame.format.name not in PLANAR_FORMATS:
        frame = frame.reformat(format="yuv420p")
    return frame.planes


def iter_gops(path: str | os.PathLike, *, grid: int = 4, accumulate: bool = True, rgb: bool = False,
              max_steps: int | None = None, device: str = "cpu", threads: int = 1, pipeline: bool = False,
              size: tuple[int, int] | None = None, resize: str = "crop",
              residual_out: Callable[[int, int, int, int], np.ndarray] | None = None,
              timings: dict | None = None, info: dict | None = None) -> Iterator[Gop]:
    """Decode `path` once and yield each GOP with its P-steps at the model's `size` (see the module docstring).

    size: (H, W) of the outputs, reached by the `resize` policy (`resize_plan`); None = the video's own size.
    accumulate: fields chained to the I-frame and residuals against the I-frame; else per-step fields and residuals
    against the previous I/P frame. rgb: also keep each P-frame's RGB image (for `frames`). max_steps: P-steps kept
    per GOP (later P-frames are decoded but not processed). pipeline: run the kernels in a worker thread, overlapping
    decoding (at a lower priority than the decoder: KERNEL_NICE). timings: adds wall seconds under "decode"
    (decoding, the P-frames' RGB conversion when `rgb`, the Python loop; this thread) and "kernels" (the I-frames' RGB
    conversion and reference copies, the fused per-P-frame calls; with pipeline=True they overlap the decode time), and
    CPU seconds under "decode_cpu" / "kernels_cpu" (libavcodec's own threads excluded when threads > 1).
    residual_out(k, C, H, W): where the k-th P-step's residual goes (an int16 [C, H, W] view). info: receives the
    stream's codec.VideoInfo under "video" (see codec.decode).
    Raises VideoError when the video has no I-frame, no motion vectors at all (intra-only), changes its frame size,
    or is smaller than `size`.
    """
    if grid not in mv.GRIDS:
        raise VideoError(f"grid must be one of {mv.GRIDS}, got {grid}")
    if size is not None:
        check_model_size(size, grid)
    from concurrent.futures import ThreadPoolExecutor

    path = Path(path)
    if residual_out is None:
        residual_out = _BlockAllocator(max_steps or 12)
    chain: _KernelChain | None = None
    plan: Resize | None = None
    pool: Any = (ThreadPoolExecutor(1, thread_name_prefix="edgeml-mv", initializer=_yield_to_decoder) if pipeline
                 else _Inline())
    gop: Gop | None = None
    pending: list[tuple[Gop, list]] = []  # GOPs whose kernel results are still being computed
    n_gops = n_p = 0
    has_rows = False
    wait = wait_cpu = 0.0
    t_start, c_start = time.perf_counter(), time.thread_time()

    def finish(g: Gop, futures: list) -> Gop:
        nonlocal wait
        t0 = time.perf_counter()
        g.iframe = futures[0].result()
        for step, fut in zip(g.steps, futures[1:], strict=True):
            step.mv, step.residual = fut.result()
        wait += time.perf_counter() - t0
        return g

    def hand_out(g: Gop, futures: list) -> Iterator[Gop]:
        """Yield a finished GOP; the caller's time while this generator is suspended is not ours."""
        nonlocal wait, wait_cpu
        done = finish(g, futures)
        t0, c0 = time.perf_counter(), time.thread_time()
        yield done
        wait += time.perf_counter() - t0
        wait_cpu += time.thread_time() - c0

    try:
        futures: list = []
        for fr in codec.decode(path, mvs=True, frames=True, threads=threads, raw_mvs=True, defer_mvs=True,
                               info=info):
            frame = fr.frame
            if plan is None:
                plan = resize_plan((frame.height, frame.width), size, resize, path=path)
                chain = _KernelChain(grid, accumulate, device, plan, channels=len(_planes(frame)))
            elif (frame.height, frame.width) != plan.native:
                raise VideoError(f"the frame size changes within the stream ({plan.native[0]}x{plan.native[1]} -> "
                                 f"{frame.height}x{frame.width})", path=path,
                                 fix="re-encode it to one size with `edgeml data prepare --size HxW`")
            kind = fr.pict_type
            if kind == "I":
                if gop is not None:
                    pending.append((gop, futures))
                while pending and (len(pending) > 2 or all(f.done() for f in pending[0][1])):
                    yield from hand_out(*pending.pop(0))
                gop = Gop(index=n_gops, frame_index=fr.index, iframe=None, plan=plan)  # type: ignore[arg-type]
                futures = [pool.submit(chain.iframe, frame)]  # its RGB image and reference, beside the decoder
                n_gops += 1
                continue
            if kind != "P" or gop is None or (max_steps is not None and len(gop.steps) >= max_steps):
                continue  # B/S/other frames and P-frames before the first I-frame are skipped (module policy)
            rows = codec.side_mvs(frame)  # fetched only for the P-frames kept
            has_rows = has_rows or (rows is not None and len(rows) > 0)
            image = model_rgb(frame, plan) if rgb else None
            planes = _planes(frame)
            out = residual_out(n_p, len(planes), *plan.size)
            field = np.empty((2, *plan.cells(grid)), np.float32)
            futures.append(pool.submit(chain.step, rows, planes, out, field))
            gop.steps.append(PStep(fr.index, gop.index, None, None, image))  # type: ignore[arg-type]
            n_p += 1
        if gop is None:
            raise VideoError("no I-frame in the video", path=path, fix="re-encode it with `edgeml data prepare`")
        if n_p == 0 or not has_rows:
            raise VideoError("no motion vectors: the video is intra-only (no P-frames)", path=path,
                             fix="re-encode it with `edgeml data prepare` (fixed GOP with P-frames)")
        pending.append((gop, futures))
        while pending:
            yield from hand_out(*pending.pop(0))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if chain is not None and chain.native is not None:
            _give_back_extractor(chain.key, chain.native)
        if timings is not None:
            k_wall = chain.seconds if chain else 0.0
            k_cpu = chain.cpu_seconds if chain else 0.0
            busy = time.perf_counter() - t_start - wait
            busy_cpu = time.thread_time() - c_start - wait_cpu
            for key, value in (("kernels", k_wall), ("kernels_cpu", k_cpu),
                               ("decode", busy - (0.0 if pipeline else k_wall)),
                               ("decode_cpu", busy_cpu - (0.0 if pipeline else k_cpu))):
                timings[key] = timings.get(key, 0.0) + value


def extract(video: str | os.PathLike, *, size: tuple[int, int] | None = None, grid: int = 4, accumulate: bool = True,
            resize: str = "crop", device: str = "cpu", threads: int = 1, pipeline: bool | None = None,
            timings: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Every P-step of a video at the model's size, straight from the native stream -> (tensors, metadata).

    tensors: iframe uint8 [G, 3, H, W] (RGB), mv float32 [N, 2, H/g, W/g] (model pixels), residual int16
    [N, C, H, W] (YUV, C = 3), frame_index int64 [N], gop_index int64 [N]. size (H, W): the model's input size,
    reached by the `resize` policy ("crop": the largest centred window of the model's aspect, "stretch": the
    whole frame; see resize_plan) with no re-encode; None keeps the video's size (full resolution). metadata:
    codec, sizes, GOPs, grid, modes and the resize block (policy, window, how each tensor was resized).
    timings: per-stage wall and CPU seconds (see iter_gops). pipeline: run the kernels in a worker thread beside the
    decoder (iter_gops); None = wherever there are at least two cores. Raises VideoError for bad input (truncated,
    intra-only, smaller than `size`) and InputError for a size the grid does not divide.
    """
    video = Path(video)
    if pipeline is None:
        pipeline = (os.cpu_count() or 1) >= 2
    opened: dict = {}  # the stream's facts, read when iter_gops opens the file (no second open to probe it)
    buffer = _GrowingResiduals(opened=opened)
    gops = list(iter_gops(video, grid=grid, accumulate=accumulate, size=size, resize=resize, device=device,
                          threads=threads, pipeline=pipeline, residual_out=buffer, timings=timings, info=opened))
    info: codec.VideoInfo = opened["video"]
    plan = gops[0].plan
    steps = [s for g in gops for s in g.steps]
    h, w = gops[0].iframe.shape[:2]
    c = steps[0].residual.shape[0] if steps else 3
    cells = steps[0].mv.shape[1:] if steps else (-(-h // grid), -(-w // grid))
    tensors = {
        "iframe": np.stack([g.iframe.transpose(2, 0, 1) for g in gops]),
        "mv": np.stack([s.mv for s in steps]) if steps else np.zeros((0, 2, *cells), np.float32),
        "residual": buffer.collect([s.residual for s in steps]) if steps else np.zeros((0, c, h, w), np.int16),
        "frame_index": np.array([s.frame_index for s in steps], np.int64),
        "gop_index": np.array([s.gop_index for s in steps], np.int64),
    }
    gop_lengths = [1 + len(g.steps) for g in gops]
    meta = {"source": str(video), "codec": info.codec, "profile": info.profile, "width": w, "height": h,
            "native_width": plan.native[1], "native_height": plan.native[0], "fps": info.fps, "gops": len(gops),
            "gop_size": max(gop_lengths), "grid": grid, "accumulate": ACCUMULATE_MODES[accumulate], "warp": mv.WARP,
            "residual_space": "yuv (chroma repeated)", "iframe_space": "rgb", "b_frames": "skipped",
            "p_steps": len(steps), "resize": plan.meta()}
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
                frames: bool = True, size: tuple[int, int] | None = None, resize: str = "crop", device: str = "cpu",
                timings: dict | None = None) -> list[dict[str, np.ndarray]]:
    """Clips of a video at the model's `size` (see extract) in compact dtypes: per GOP with at least `clip_len`
    P-frames, one clip of its I-frame and first `clip_len` P-steps: iframe uint8 [3,H,W], mv [T,2,H/g,W/g] (int16
    at the video's own size, where vectors are whole pixels; float32 when pooled), residual int16 [T,3,H,W], frames
    uint8 [T+1,3,H,W] (RGB, I-frame first; only when frames=True: P-frames are converted to RGB only then)."""
    return _clips(path, clip_len=clip_len, grid=grid, accumulate=accumulate, frames=frames, size=size,
                  resize=resize, device=device, timings=timings, as_float=False)


def to_float(item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Compact clip arrays -> the float32 item the models take (same keys)."""
    return {k: v.astype(np.float32) for k, v in item.items()}


def _steps_block(arrays: list[np.ndarray]) -> np.ndarray:
    """[T, ...] of consecutive per-step arrays: the slice of the block they were handed out from (_BlockAllocator)
    when they are its consecutive rows, else one stacked copy."""
    base = arrays[0].base
    if base is not None and base.ndim == arrays[0].ndim + 1 and base.flags.c_contiguous and len(base):
        origin, row = base.ctypes.data, base[0].nbytes
        start = (arrays[0].ctypes.data - origin) // row
        if start + len(arrays) <= len(base) and all(
                a.base is base and a.shape == base.shape[1:] and a.ctypes.data == origin + (start + k) * row
                for k, a in enumerate(arrays)):
            return base[start:start + len(arrays)]
    return np.stack(arrays)


def _clips(path: str | os.PathLike, *, clip_len: int, grid: int, accumulate: bool, frames: bool,
           size: tuple[int, int] | None, resize: str, device: str, timings: dict | None,
           as_float: bool) -> list[dict[str, np.ndarray]]:
    """video_clips' clips, in its compact dtypes or (as_float) straight in float32, C-contiguous (one conversion
    pass per array; the same values as to_float of the compact ones)."""
    if clip_len < 1:
        raise VideoError(f"clip_len must be >= 1, got {clip_len}")
    out = []
    for g in iter_gops(path, grid=grid, accumulate=accumulate, rgb=frames, max_steps=clip_len, device=device,
                       size=size, resize=resize, timings=timings):
        if len(g.steps) < clip_len:
            continue
        field = _steps_block([s.mv for s in g.steps])
        residual = _steps_block([s.residual for s in g.steps])
        if as_float:  # the fields are float32 already (their int16 form holds the same whole values)
            item = {"iframe": g.iframe.transpose(2, 0, 1).astype(np.float32, order="C"),
                    "mv": field, "residual": residual.astype(np.float32)}
        else:
            whole = (size is None or tuple(size) == g.iframe.shape[:2]) and np.array_equal(field, np.round(field))
            item = {"iframe": np.ascontiguousarray(g.iframe.transpose(2, 0, 1)),
                    "mv": field.astype(np.int16) if whole else field, "residual": residual}
        if frames:
            rgb = np.stack([g.iframe] + [s.rgb for s in g.steps]).transpose(0, 3, 1, 2)
            item["frames"] = rgb.astype(np.float32, order="C") if as_float else rgb.copy()
        out.append(item)
    return out


def extract_clips(video_path: str | os.PathLike, *, clip_len: int, grid: int, size: tuple[int, int] | None = None,
                  timings: dict | None = None, accumulate: bool = True, frames: bool = True, device: str = "cpu",
                  resize: str = "crop") -> list[dict[str, np.ndarray]]:
    """Clip items (no label) straight from a video file, as ClipDataset yields them: iframe float32 [3,H,W] (RGB
    0..255), mv float32 [T,2,H/g,W/g] (pixels), residual float32 [T,3,H,W] (signed), frames float32 [T+1,3,H,W]
    (only when frames=True: pass False for models that do not read RGB frames). A `size` (H, W) other than the
    video's is reached by the `resize` policy at model resolution, never by a re-encode. timings: see iter_gops."""
    return _clips(video_path, clip_len=clip_len, grid=grid, accumulate=accumulate, frames=frames, size=size,
                  resize=resize, device=device, timings=timings, as_float=True)
