"""`edgeml data`: synth, prepare, mvs, extract, build."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeml.commands._args import nonneg_int, positive_int, size_hw
from edgeml.errors import InputError
from edgeml.io import remove_stale_temps
from edgeml.paths import refuse_overwrite
from edgeml.video.engines import ENGINES


def _output_file(path: str, inputs: list[str], flag: str) -> Path:
    """An output file path, refused when it is a folder or lands on an input (before anything is decoded); the temp
    files a killed earlier run left beside it are removed."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{flag} is a folder; expected a file path", path=out)
    refuse_overwrite(out, inputs, flag=flag)
    remove_stale_temps(out.parent, [out.name])
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="make, inspect and convert compressed-domain video data",
        description="Compressed-domain video data: generate the synthetic motion data set (synth), re-encode "
        "videos canonically (prepare), dump libavcodec's motion vectors as CSV in the format of FFmpeg's "
        "extract_mvs example (mvs), extract I-frames / motion fields / residuals of one video (extract), and "
        "build a resumable clip cache from a folder of videos for training (build).",
    )
    verbs = p.add_subparsers(dest="data_verb", metavar="VERB", required=True)

    s = verbs.add_parser("synth", help="generate the synthetic motion data set",
                         description="Render and encode the procedural action set: 8 classes (translate left/right/"
                         "up/down, rotate cw/ccw, zoom in/out) separable only by motion, MPEG-4 Part 2, GOP 12, no "
                         "B-frames, with train/val/test splits and classes.txt. Resumes an interrupted run.")
    s.add_argument("out_dir", help="output folder")
    s.add_argument("--per-class", type=positive_int, default=48, help="videos per class (default 48)")
    s.add_argument("--size", type=size_hw, default=(64, 64), help="frame size HxW (default 64x64)")
    s.add_argument("--frames", type=positive_int, default=50, help="frames per video (default 50 = 2 s at 25 fps)")
    s.add_argument("--seed", type=nonneg_int, default=0, help="random seed (default 0)")
    s.add_argument("--workers", type=nonneg_int, default=2, help="worker processes (default 2; 0 or 1 = in-process)")
    s.set_defaults(func=run_synth)

    s = verbs.add_parser("prepare", help="re-encode a video canonically (fixed GOP, no B-frames)",
                         description="Re-encode VIDEO to MPEG-4 Part 2 (or H.264) with a fixed GOP and no B-frames, "
                         "so every P-frame refers to the frame before it (as CoViAR does).")
    s.add_argument("video", help="input video")
    s.add_argument("--out", required=True, help="output video (.avi, .mp4, .mkv)")
    s.add_argument("--codec", choices=("mpeg4", "h264"), default="mpeg4", help="codec (default mpeg4)")
    s.add_argument("--gop", type=positive_int, default=12, help="frames per GOP (default 12)")
    s.add_argument("--size", type=size_hw, help="target size HxW (default: keep)")
    s.add_argument("--quality", type=positive_int, default=2,
                   help="mpeg4 qscale 1..31, 1 = best (h264 1..8: CRF 6x this); default 2")
    s.set_defaults(func=run_prepare)

    s = verbs.add_parser("mvs", help="dump every exported motion vector as CSV",
                         description="Write every motion vector libavcodec exports for VIDEO, one row each, with "
                         "the header, columns, order and number format of FFmpeg's doc/examples/extract_mvs.c "
                         "(framenum,source,blockw,blockh,srcx,srcy,dstx,dsty,flags).")
    s.add_argument("video", help="input video")
    s.add_argument("--csv", required=True, help="output CSV file")
    s.set_defaults(func=run_mvs)

    s = verbs.add_parser("extract", help="extract I-frames, motion fields and residuals of one video",
                         description="Decode VIDEO once and write a safetensors file with iframe [G,3,H,W] uint8 "
                         "(RGB), mv [N,2,H/g,W/g] float32, residual [N,3,H,W] int16 (YUV), frame_index [N], "
                         "gop_index [N], plus JSON metadata (codec, GOP size, grid, accumulate and warp modes, the "
                         "resize policy and window). With --size the outputs are computed at that size straight "
                         "from the native stream (no re-encode).")
    s.add_argument("video", help="input video")
    s.add_argument("--out", required=True, help="output .safetensors file")
    s.add_argument("--grid", type=int, default=4, choices=(1, 2, 4, 8, 16), help="field cell size (default 4)")
    s.add_argument("--accumulate", action="store_true",
                   help="chain fields back to the I-frame and take residuals against it (default: previous frame)")
    s.add_argument("--size", type=size_hw,
                   help="model input size HxW, computed from the native stream without re-encoding (a multiple of "
                   "the grid, at most the video's size; default: the video's own size, full resolution)")
    s.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                   help="how the video reaches --size: crop = largest centred window of its aspect ratio (short side "
                   "to the model, the action-recognition convention), stretch = the whole frame (default crop)")
    s.set_defaults(func=run_extract)

    s = verbs.add_parser("build", help="build a clip cache from a folder of videos (resumable)",
                         description="Turn a folder of videos (synth / pre-split, UCF-101 or HMDB-51 with their "
                         "split files, or plain class folders) into safetensors clip shards + index.json, in "
                         "parallel worker processes of this machine (--engine local) or as Ray tasks across a "
                         "cluster (--engine ray; CACHE on storage every node sees) — the same bytes either way. "
                         "Resumes an interrupted build; broken videos are skipped and reported.")
    s.add_argument("source", help="folder of videos")
    s.add_argument("cache", help="output cache folder")
    s.add_argument("--clip-len", type=positive_int, default=8, help="P-steps per clip (default 8)")
    s.add_argument("--grid", type=int, default=4, choices=(1, 2, 4, 8, 16), help="field cell size (default 4)")
    s.add_argument("--size", type=size_hw, default=(64, 64),
                   help="model input size HxW; videos of other sizes are read as they are (no re-encode) and "
                   "resized at model resolution (default 64x64)")
    s.add_argument("--resize", choices=("crop", "stretch"), default="crop",
                   help="crop = largest centred window of the model's aspect ratio, stretch = whole frame "
                   "(default crop)")
    s.add_argument("--workers", type=nonneg_int, default=None,
                   help="videos extracted at a time: local worker processes (default 2; 0 or 1 = in-process), or "
                   "Ray tasks in flight (default: every CPU of the cluster)")
    s.add_argument("--engine", choices=ENGINES, default="local",
                   help="local = a process pool on this machine (default); ray = Ray tasks (pip install "
                   "'edgeml[ray]'), on the cluster at --address or on a local instance started for the build")
    s.add_argument("--address", help="Ray cluster to join with --engine ray: 'auto' (the one `ray start` started on "
                   "this node) or HOST:PORT of its head (default: start a local instance)")
    s.add_argument("--no-accumulate", action="store_true", help="per-step fields/residuals instead of to I-frame")
    s.add_argument("--split", type=positive_int, default=1,
                   help="official split number for UCF-101/HMDB-51 (default 1)")
    s.set_defaults(func=run_build)


def run_synth(args: argparse.Namespace) -> int:
    from edgeml.video.synth import make_synth_dataset

    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise InputError("OUT_DIR is a file; expected a folder", path=args.out_dir)
    out = make_synth_dataset(args.out_dir, per_class=args.per_class, size=args.size, seed=args.seed,
                             frames=args.frames, workers=args.workers)
    print(f"synth data set in {out}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from edgeml.video.codec import prepare

    _output_file(args.out, [args.video], "--out")
    print(prepare(args.video, args.out, codec=args.codec, gop=args.gop, size=args.size, quality=args.quality))
    return 0


def run_mvs(args: argparse.Namespace) -> int:
    from edgeml.video.codec import write_mvs_csv

    _output_file(args.csv, [args.video], "--csv")
    n = write_mvs_csv(args.video, args.csv)
    print(f"{n} motion vectors -> {args.csv}")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    from edgeml.video.clips import write_extract

    _output_file(args.out, [args.video], "--out")
    if not str(args.out).endswith(".safetensors"):
        raise InputError("the output must be a .safetensors file", path=args.out)
    meta = write_extract(args.video, args.out, grid=args.grid, accumulate=args.accumulate, size=args.size,
                         resize=args.resize)
    print(f"{meta['p_steps']} P-steps in {meta['gops']} GOPs -> {args.out}")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from edgeml.video.datasets import build_clip_cache, cache_summary

    if Path(args.cache).exists() and not Path(args.cache).is_dir():
        raise InputError("CACHE is a file; expected a folder", path=args.cache)
    cache = build_clip_cache(args.source, args.cache, clip_len=args.clip_len, grid=args.grid, size=args.size,
                             workers=args.workers, accumulate=not args.no_accumulate, split=args.split,
                             resize=args.resize, engine=args.engine, address=args.address)
    print(cache_summary(cache))
    return 0
