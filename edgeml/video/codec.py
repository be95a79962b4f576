"""Decoding with libavcodec's motion-vector export (PyAV), and the canonical re-encode.

Every decoded frame comes out in presentation order with its picture type, pts, the exported motion vectors (the
structured `AVMotionVector` rows libavcodec hands out, unchanged) and, when asked, the decoded frame itself
(`av.VideoFrame`, whose Y/U/V plane buffers the kernels read directly: no colour conversion).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import InputError, MissingDependencyError, VideoError

# The columns of FFmpeg's doc/examples/extract_mvs.c, in its order (`edgeml data mvs`).
CSV_HEADER = "framenum,source,blockw,blockh,srcx,srcy,dstx,dsty,flags"
MV_FIELDS = ("source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale")
# struct AVMotionVector (libavutil/motion_vector.h), the dtype PyAV's MotionVectors.to_ndarray() builds on every call
MV_DTYPE = np.dtype(list(zip(MV_FIELDS, ("<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"),
                             strict=True)), align=True)
CANONICAL_CODECS = ("mpeg4", "h264")
MAX_SIDE = 8192  # MPEG-4 Part 2 codes 13-bit sizes; larger is a typo, not a video
MAX_QUALITY = {"mpeg4": 31, "h264": 8}  # mpeg4 qscale 1..31; x264 CRF = 6 * quality <= 51
MAX_GOP = 100_000


def _av() -> Any:
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a core dependency
        raise MissingDependencyError("av", purpose="video decoding") from e
    return av


@dataclass
class DecodedFrame:
    """One decoded frame. `index`: 0-based, in output (presentation) order over all frames of the stream."""

    index: int
    pict_type: str  # "I", "P", "B", "S", ... (libavcodec's picture type)
    pts: int | None
    mvs: np.ndarray | None  # structured AVMotionVector rows (fields MV_FIELDS); None when the frame exported none
    frame: Any = None  # av.VideoFrame when decode(..., frames=True)


@dataclass
class VideoInfo:
    codec: str
    profile: str | None
    width: int
    height: int
    frames: int  # as the container declares it (0 = unknown); a hint, never a size to allocate or check
    fps: float
    pix_fmt: str | None


def _fail(path: Path, problem: str, fix: str | None = None) -> VideoError:
    return VideoError(problem, path=path, fix=fix or "check the file, or re-encode it with `edgeml data prepare`")


def open_video(path: str | os.PathLike) -> tuple[Any, Any]:
    """Open `path` -> (container, its first video stream). VideoError for a missing, non-media or video-less file."""
    av = _av()
    path = Path(path)
    if path.is_dir():
        raise VideoError("is a folder, not a video file", path=path, fix="pass a video file")
    if not path.is_file():
        raise VideoError("video file not found", path=path, fix="pass an existing video file")
    if path.stat().st_size == 0:
        raise _fail(path, "the file is empty")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise _fail(path, f"not a readable media file ({e.strerror or type(e).__name__})") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        container.close()
        raise _fail(path, f"no video stream (found: {', '.join(kinds)})", "pass a file with a video track")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.name:
        container.close()
        raise _fail(path, "the video stream has no decoder in this FFmpeg build")
    return container, stream


def probe(path: str | os.PathLike) -> VideoInfo:
    """Stream facts without decoding."""
    container, stream = open_video(path)
    with container:
        return stream_info(stream)


def stream_info(stream: Any) -> VideoInfo:
    """The facts of an opened video stream, as the container and the decoder's parameters state them."""
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate or 0
    return VideoInfo(codec=cc.name, profile=cc.profile, width=cc.width, height=cc.height, frames=stream.frames,
                     fps=float(rate), pix_fmt=cc.pix_fmt)


# What libavcodec may skip when only the motion vectors are wanted: deblocking and the inverse transform change the
# pixels, never the vectors (rows proven identical in tests/video/test_video_model_size.py). MPEG-4 Part 2 has no
# in-loop filter, and its skip_idct drops only the inter residual (motion compensation and intra IDCT still run):
# -12 % CPU. Its decoder can also reconstruct at 1/8 scale (lowres=3, its max_lowres): the vectors are parsed and
# exported in full-resolution units from the bitstream either way, and the pictures it predicts from are 64x smaller
# (a further -32 % CPU on the real 720x528 clips; rows identical, tests/video/test_video_mv_only.py). Set per codec:
# decoders without lowres (H.264) warn on it.
MV_ONLY_OPTIONS = {"skip_loop_filter": "all", "skip_idct": "all"}
MV_ONLY_CODEC_OPTIONS = {"mpeg4": {"lowres": "3"}}


def decode(path: str | os.PathLike, *, mvs: bool = True, frames: bool = False, threads: int = 1,
           check_complete: bool = True, raw_mvs: bool = False, mv_only: bool = False,
           defer_mvs: bool = False, info: dict | None = None) -> Iterator[DecodedFrame]:
    """Decode every frame of the first video stream, in presentation order.

    mvs: ask libavcodec to export motion vectors (`flags2=+export_mvs`). frames: also yield the `av.VideoFrame`.
    raw_mvs: `mvs` is the MOTION_VECTORS side data itself (a buffer of AVMotionVector, what edgeml._C.extract_step
    reads without a numpy conversion) instead of a structured array. mv_only: skip what does not change the vectors
    (MV_ONLY_OPTIONS and the codec's MV_ONLY_CODEC_OPTIONS: the pixels are wrong, so frames=True is refused).
    defer_mvs (with mvs and frames): the vectors are exported but not fetched (`mvs` is None); the caller takes them
    with side_mvs(frame) for the frames it uses.
    info: a dict that receives the stream's VideoInfo under "video" once the file is open (probe() without opening
    the file a second time).
    threads > 1 turns on libavcodec's frame/slice threading; the default is 1, in MV-only mode too: with frame threads
    the vectors of a reordered (B-frame) stream are exported for a picture another thread may still be decoding — on
    a loaded machine an H.264 High clip with B-frames lost rows against FFmpeg's extract_mvs
    (tests/video/test_video_mvs_vs_ffmpeg.py). Pass threads > 1 only for streams known to have no reordering.
    Raises VideoError for undecodable data, a stream with no frames, or (check_complete) a packet the demuxer marks
    broken — a truncated file's last, partial packet. The container's declared frame count is never trusted: FFmpeg's
    own mpeg4-in-AVI muxing declares one frame more than it writes, and a hostile header can declare 2^31.
    """
    av = _av()
    path = Path(path)
    container, stream = open_video(path)
    with container:
        if info is not None:
            info["video"] = stream_info(stream)
        cc = stream.codec_context
        if mv_only and frames:
            raise ValueError("mv_only decoding skips the inverse transform: its frames are not the video's pixels")
        if mvs or mv_only:
            cc.options = {**({"flags2": "+export_mvs"} if mvs else {}),
                          **({**MV_ONLY_OPTIONS, **MV_ONLY_CODEC_OPTIONS.get(cc.name, {})} if mv_only else {})}
        if threads > 1:
            stream.thread_type = "AUTO"
            stream.thread_count = threads
        n = 0
        try:
            for packet in container.demux(stream):
                if check_complete and packet.is_corrupt:
                    raise _fail(path, f"truncated or corrupt: the demuxer found a broken packet after {n} frames",
                                "the file is incomplete; copy or download it again")
                for frame in packet.decode():
                    sd = side_mvs(frame) if mvs and not defer_mvs else None
                    kind = PICT_TYPES.get(frame.pict_type) or picture_type(frame.pict_type)
                    yield DecodedFrame(index=n, pict_type=kind,
                                       pts=frame.pts, mvs=sd if sd is None or raw_mvs else np.frombuffer(sd, MV_DTYPE),
                                       frame=frame if frames else None)
                    n += 1
        except av.FFmpegError as e:
            raise _fail(path, f"decoding failed after {n} frames ({e.strerror or type(e).__name__}): "
                              "truncated or corrupt") from e
        if n == 0:
            raise _fail(path, "the video stream has no frames (zero-frame video)")


def side_mvs(frame: Any) -> Any:
    """A decoded frame's MOTION_VECTORS side data (the raw AVMotionVector buffer), or None when it has none.

    Read through a SideDataContainer of our own, not `frame.side_data`: the frame caches that container, which points
    back at the frame, and the cycle keeps every decoded frame (and its pooled picture buffer) alive until the cyclic
    GC runs, so libavcodec allocates and faults in fresh pictures (+9 % CPU per MPEG-4 720x528 MV-only decode)."""
    return _side_data_container()(frame).get("MOTION_VECTORS")


@functools.cache
def _side_data_container() -> Any:
    _av()
    from av.sidedata.sidedata import SideDataContainer

    return SideDataContainer


PICT_TYPES: dict[int, str] = {}


def picture_type(code: int) -> str:
    """libavcodec's picture type code -> its letter ("I", "P", "B", ...), cached (an enum lookup per frame is slow)."""
    PICT_TYPES[code] = _av().video.frame.PictureType(code).name
    return PICT_TYPES[code]


def write_mvs_csv(video: str | os.PathLike, out: str | os.PathLike) -> int:
    """`edgeml data mvs`: every exported motion vector as one CSV row, exactly as FFmpeg's
    doc/examples/extract_mvs.c prints it (same header, columns, number formatting; `framenum` counts every decoded
    frame from 1, in decoder output order), decoded in MV-only mode (MV_ONLY_OPTIONS, one decoder thread). Returns the
    number of rows. A
    truncated file or one without any motion vector (intra-only) is a VideoError and writes nothing."""
    from edgeml.io import atomic_write

    rows = 0
    with atomic_write(out, "w") as f:
        f.write(CSV_HEADER + "\n")
        for fr in decode(video, mvs=True, mv_only=True):
            if fr.mvs is None or not len(fr.mvs):
                continue
            f.write(format_mv_rows(fr.index + 1, fr.mvs))
            rows += len(fr.mvs)
        if rows == 0:
            raise VideoError("no motion vectors: the video is intra-only (no P- or B-frames)", path=video,
                             fix="re-encode it with `edgeml data prepare` (fixed GOP with P-frames)")
    return rows


CSV_ROW = "%d,%2d,%2d,%2d,%4d,%4d,%4d,%4d,0x%x\n"  # extract_mvs.c's printf format (PRIx64 -> x)
CSV_COLUMNS = ("source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags")


def format_mv_rows(framenum: int, mvs: np.ndarray) -> str:
    """extract_mvs.c's printf("%d,%2d,%2d,%2d,%4d,%4d,%4d,%4d,0x%"PRIx64"\\n") for one frame's rows: one %-format
    over the frame's columns as a single int64 table (2.3x faster than a format per row; the CSV writing was 90 % of
    `edgeml data mvs`). Flags past 2^63 (AVMotionVector.flags is unused by libavcodec today) keep their uint64."""
    wide = len(mvs) > 0 and int(mvs["flags"].max()) >= 1 << 63
    table = np.empty((len(mvs), 1 + len(CSV_COLUMNS)), object if wide else np.int64)
    table[:, 0] = framenum
    for j, k in enumerate(CSV_COLUMNS, 1):
        table[:, j] = mvs[k]
    return (CSV_ROW * len(mvs)) % tuple(table.ravel().tolist())


def prepare(src: str | os.PathLike, dst: str | os.PathLike, *, codec: str = "mpeg4", gop: int = 12,
            size: tuple[int, int] | None = None, quality: int = 2, fps: float | None = None) -> Path:
    """Canonical re-encode (as CoViAR): `codec` (mpeg4 = MPEG-4 Part 2, or h264), I-frame every `gop` frames, no
    B-frames (every P-frame refers to the frame before it; H.264 also gets a single reference frame), optional
    `size` (H, W), yuv420p. quality: mpeg4 qscale (1 best) / x264 CRF = 6*quality. Writes `dst` atomically."""
    av = _av()
    if codec not in CANONICAL_CODECS:
        raise InputError(f"unsupported canonical codec {codec!r}", fix=f"use one of {', '.join(CANONICAL_CODECS)}")
    if not 1 <= gop <= MAX_GOP:
        raise InputError(f"gop must be 1..{MAX_GOP}, got {gop}")
    if not 1 <= quality <= MAX_QUALITY[codec]:
        raise InputError(f"quality for {codec} must be 1..{MAX_QUALITY[codec]}, got {quality}")
    if fps is not None and not 0 < fps <= 1000:
        raise InputError(f"fps must be in (0, 1000], got {fps}")
    src, dst = Path(src), Path(dst)
    if size:
        check_size(size)
    info = probe(src)
    h, w = size if size else (info.height, info.width)
    check_size((h, w), what=f"{src}: the video's size")
    # a header's frame rate is a hint: a corrupt or hostile one (0, NaN, 10^9) falls back to 25 fps
    rate = Fraction(fps or (info.fps if 0 < info.fps <= 1000 else 25)).limit_denominator(1001)
    from edgeml.io import atomic_write

    n = 0
    with atomic_write(dst, "wb") as f:
        out = av.open(f, "w", format=_container_format(dst))
        with out:
            try:
                st = open_encoder(out, codec, w, h, rate, gop, quality)
                for fr in decode(src, mvs=False, frames=True):
                    img = fr.frame.reformat(width=w, height=h, format="yuv420p")
                    img.pts = None
                    for pkt in st.encode(img):
                        out.mux(pkt)
                    n += 1
                for pkt in st.encode(None):
                    out.mux(pkt)
            except av.FFmpegError as e:
                raise _fail(src, f"re-encoding failed after {n} frames ({e.strerror or type(e).__name__})") from e
    if n == 0:
        raise _fail(src, "no frames to re-encode")
    return dst


def check_size(size: tuple[int, int], *, what: str = "target size") -> None:
    """InputError unless (H, W) is even, at least 16x16 and at most MAX_SIDE per side (what the encoder takes)."""
    h, w = size
    if h % 2 or w % 2 or min(h, w) < 16 or max(h, w) > MAX_SIDE:
        raise InputError(f"{what} {h}x{w} must be even, at least 16x16 and at most {MAX_SIDE}x{MAX_SIDE}",
                         fix="pass e.g. --size 128x128")


def open_encoder(out: Any, codec: str, width: int, height: int, rate: Fraction | int, gop: int, quality: int) -> Any:
    """A video stream in `out` set up for the canonical format (fixed GOP, no B-frames, one reference)."""
    if codec == "mpeg4":
        st = out.add_stream("mpeg4", rate=rate)
        st.options = {"flags": "+qscale+mv4", "global_quality": str(quality * 118), "sc_threshold": "1000000000"}
    else:
        st = out.add_stream("libx264", rate=rate)
        st.options = {"crf": str(6 * quality), "bf": "0", "refs": "1", "sc_threshold": "0", "preset": "veryfast",
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:ref=1"}
    st.width, st.height, st.pix_fmt = width, height, "yuv420p"
    st.codec_context.gop_size = gop
    st.codec_context.max_b_frames = 0
    return st


def _container_format(path: Path) -> str:
    return {".avi": "avi", ".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".m4v": "mp4"}.get(
        path.suffix.lower(), "avi")
