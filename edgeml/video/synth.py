"""A procedural action data set whose classes differ only in motion, encoded with a real codec (PyAV, MPEG-4 Part 2).

Each video shows one textured shape (random outline, texture, colours, size, position) over a drifting, flickering
noise background. The class is what the shape does — translate left/right/up/down, rotate cw/ccw, zoom in/out — so
appearance carries no label information: only motion (vectors and residuals) separates the classes.

Layout written: OUT/{train,val,test}/<class>/<class>_<nnn>.avi, OUT/classes.txt, OUT/mirror.json, OUT/synth.json.
`mirror.json` says which classes trade places in a mirrored video (left <-> right in a horizontal mirror, cw <-> ccw in
either); the clip cache copies it, and training uses it for mirror augmentation (`edgeml.video.datasets`).
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from edgeml.errors import DataError
from edgeml.io import read_json, write_json, write_text
from edgeml.video.codec import MAX_SIDE
from edgeml.video.datasets import parallel_map

CLASSES = ("left", "right", "up", "down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out")
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
SHAPES = ("square", "triangle", "cross", "ellipse", "star")
# What a mirror does to the labels: a horizontal mirror swaps left/right and turns cw into ccw; a vertical one
# swaps up/down and also turns cw into ccw; zooms are unchanged by both.
MIRROR_SWAPS = {"horizontal": {"left": "right", "rotate_cw": "rotate_ccw"},
                "vertical": {"up": "down", "rotate_cw": "rotate_ccw"}}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """float32 [size, size, channels] in 0..1: random values on a coarse grid, bilinearly upsampled."""
    coarse = rng.random((cells + 1, cells + 1, channels), dtype=np.float32)
    t = np.linspace(0, cells, size, endpoint=False, dtype=np.float32)
    i = t.astype(np.int32)
    f = (t - i)[:, None]
    rows = coarse[i] * (1 - f[..., None]) + coarse[i + 1] * f[..., None]  # [size, cells+1, C]
    cols = rows[:, i] * (1 - f.T[..., None]) + rows[:, i + 1] * f.T[..., None]
    return cols


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """img [S, S, C] sampled at float coords (wrapping), -> [..., C]."""
    s = img.shape[0]
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0 % s, x0 % s
    y1, x1 = (y0 + 1) % s, (x0 + 1) % s
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (unit size)."""
    if shape == "square":
        return (np.abs(u) < 0.8) & (np.abs(v) < 0.8)
    if shape == "triangle":
        return (v < 0.7) & (v > 1.7 * np.abs(u) - 0.9)
    if shape == "cross":
        return ((np.abs(u) < 0.3) & (np.abs(v) < 1)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1))
    if shape == "ellipse":
        return (u / 1.0) ** 2 + (v / 0.55) ** 2 < 1
    r, a = np.hypot(u, v), np.arctan2(v, u)
    return r < 0.55 + 0.4 * np.cos(5 * a)


def render_video(label: str, rng: np.random.Generator, size: tuple[int, int], frames: int,
                 segment: int = 12) -> np.ndarray:
    """uint8 [frames, H, W, 3] of one `label` video.

    The video is cut into segments of `segment` frames (the GOP length, so each cut falls on an I-frame); each segment
    places the same shape anew (random position, angle, speed) and moves it as the class says. Segments keep the
    motion large (2-3.5 px/frame, 6-10 deg/frame, x2-2.6 zoom per segment) without the shape leaving small frames.
    """
    h, w = size
    s = max(h, w)
    bg = _smooth_noise(rng, 4 * s, int(rng.integers(6, 14)), 3) * rng.uniform(0.4, 0.9) + rng.uniform(0, 0.2)
    tex = _smooth_noise(rng, 64, int(rng.integers(3, 8)), 3)
    stripes = np.sin(np.arange(64, dtype=np.float32) * rng.uniform(0.5, 1.5))[None, :, None]
    tex = np.clip(0.6 * tex + 0.4 * (stripes * 0.5 + 0.5) * rng.random(3, dtype=np.float32), 0, 1)
    shape = SHAPES[rng.integers(len(SHAPES))]
    radius = rng.uniform(0.2, 0.28) * s
    drift = rng.normal(0, 0.15, 2) * s / 64  # background drift, px/frame, well below the shape's motion
    bg_pos = rng.uniform(s, 2 * s, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}.get(label)
    turn = {"rotate_cw": 1, "rotate_ccw": -1}.get(label, 0)
    zoom = {"zoom_in": 1, "zoom_out": -1}.get(label, 0)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        k = t % segment
        if k == 0:  # a new segment: place the shape anew
            speed = rng.uniform(2.0, 3.5) * s / 64
            centre = np.array([h / 2, w / 2]) + rng.uniform(-0.1, 0.1, 2) * s
            if direction is not None:
                centre = centre - np.array(direction) * speed * (segment - 1) / 2
            angle0 = rng.uniform(0, 2 * math.pi)
            spin = math.radians(rng.uniform(6.0, 10.0)) * turn
            growth = math.log(rng.uniform(2.0, 2.6)) / (segment - 1) * zoom
            scale0 = 0.8 if zoom > 0 else (1.6 if zoom < 0 else 1.0)
        c = centre + (np.array(direction) * speed * k if direction else 0)
        ang, scale = angle0 + spin * k, scale0 * math.exp(growth * k)
        by, bx = bg_pos + drift * t
        img = _bilinear(bg, yy + by, xx + bx)
        img = img * (1 + rng.normal(0, 0.03)) + rng.normal(0, 0.02, (h, w, 1))  # global flicker + sensor noise
        dy, dx = (yy - c[0]) / (radius * scale), (xx - c[1]) / (radius * scale)
        ca, sa = math.cos(ang), math.sin(ang)
        u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # object coordinates: rotating with the shape
        inside = _mask(shape, u, v)
        obj = _bilinear(tex, (v + 1) * 32, (u + 1) * 32)
        img = np.where(inside[..., None], obj, img)
        out[t] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


def encode_video(path: Path, video: np.ndarray, *, fps: int = 25, gop: int = 12, codec: str = "mpeg4",
                 quality: int = 3) -> None:
    """uint8 [T, H, W, 3] -> a canonical video file (fixed GOP, no B-frames), written atomically."""
    import av

    from edgeml.io import atomic_write
    from edgeml.video.codec import _container_format, open_encoder

    h, w = video.shape[1:3]
    with atomic_write(path, "wb") as f, av.open(f, "w", format=_container_format(path)) as out:
        st = open_encoder(out, codec, w, h, Fraction(fps), gop, quality)
        for img in video:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode(None):
            out.mux(pkt)


def _make_one(job: tuple[str, str, int, int, tuple[int, int], int, int, int]) -> str:
    out, label, index, seed, size, frames, fps, gop = job
    rng = np.random.default_rng([seed, CLASSES.index(label), index])
    encode_video(Path(out), render_video(label, rng, size, frames, segment=gop), fps=fps, gop=gop)
    return out


def split_of(index: int, per_class: int) -> str:
    """Deterministic split of the index-th video of a class (first ~70% train, then ~15% val, ~15% test;
    at least one video each in val and test)."""
    n_val = max(1, round(per_class * SPLITS["val"]))
    n_train = per_class - n_val - max(1, round(per_class * SPLITS["test"]))
    return "train" if index < n_train else ("val" if index < n_train + n_val else "test")


def make_synth_dataset(out_dir: str | os.PathLike, *, per_class: int = 48, size: tuple[int, int] = (64, 64),
                       seed: int = 0, frames: int = 50, fps: int = 25, gop: int = 12, workers: int = 2,
                       progress: bool = True) -> Path:
    """Render and encode the synth set (see module docstring) into `out_dir`; returns it.

    Videos already present from an interrupted run with the same settings are kept (resumable); a finished set with
    the same settings is returned as is. Defaults: 8 classes x 48 videos of 50 frames (2 s) at 64x64, GOP 12.
    """
    out = Path(out_dir)
    settings = {"classes": list(CLASSES), "per_class": per_class, "size": list(size), "seed": seed,
                "frames": frames, "fps": fps, "gop": gop, "codec": "mpeg4"}
    if per_class < 3:
        raise DataError(f"per_class must be >= 3 (one video per split at least), got {per_class}")
    if size[0] % 2 or size[1] % 2 or min(size) < 32 or max(size) > MAX_SIDE:
        raise DataError(f"size {size} must be even, at least 32x32 and at most {MAX_SIDE}x{MAX_SIDE}")
    meta_path = out / "synth.json"
    if meta_path.is_file():
        meta = read_json(meta_path)
        if meta.get("settings") == settings:
            if not (out / "mirror.json").is_file():  # sets made before mirror.json existed
                write_json(out / "mirror.json", MIRROR_SWAPS)
            return out
        raise DataError("folder holds a synth set made with other settings", path=out,
                        fix="choose another OUT_DIR or delete this one")
    stamp = out / ".synth-settings.json"
    if stamp.is_file() and read_json(stamp) != settings:
        raise DataError("folder holds an unfinished synth set with other settings", path=out,
                        fix="choose another OUT_DIR or delete this one")
    write_json(stamp, settings)
    jobs, files = [], []
    for label in CLASSES:
        for i in range(per_class):
            path = out / split_of(i, per_class) / label / f"{label}_{i:03d}.avi"
            files.append(path)
            if not path.is_file():
                jobs.append((str(path), label, i, seed, tuple(size), frames, fps, gop))
    parallel_map(_make_one, jobs, workers, "synth videos", progress, chunksize=4)
    counts = {s: sum(1 for p in files if p.parts[-3] == s) for s in SPLITS}
    write_text(out / "classes.txt", "".join(c + "\n" for c in CLASSES))
    write_json(out / "mirror.json", MIRROR_SWAPS)
    write_json(meta_path, {"settings": settings, "classes": list(CLASSES), "videos": counts, "layout":
                           "<split>/<class>/<class>_<nnn>.avi", "description": __doc__.strip().splitlines()[0]})
    stamp.unlink(missing_ok=True)
    return out
