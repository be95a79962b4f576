"""`edgeml bench`."""

from __future__ import annotations

import argparse

from edgeml.commands._args import nonneg_int, positive_int
from edgeml.video.engines import ENGINES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency, throughput and energy of a model on a backend",
        description="Benchmark a model (or an export artefact folder) on torch, onnxruntime (fp32 / int8), TVM "
        "or TensorRT: model-only latency percentiles and throughput at several batch sizes, and with "
        "--input data the whole pipeline on real videos (decode + motion-vector extraction + model) with "
        "videos/s and the decode/kernels/model split. Energy per video is measured by RAPL / NVML / Jetson "
        "INA3221 where a sensor exists, else estimated from op counts (and labelled so). Writes JSON "
        "(schema-versioned) with --out. With --engine ray the same videos also run as Ray tasks over workers that "
        "each hold one session (aggregate videos/s next to the single-process figure).",
    )
    p.add_argument("--model", help="registered model name (e.g. video_spiking)")
    p.add_argument("--artefact", help="export folder from `edgeml export` (has manifest.json)")
    p.add_argument("--backend", default="ort", choices=["torch", "ort", "ort-fp16", "ort-int8", "tvm", "trt"])
    p.add_argument("--target", help="target profile (e.g. x86-cpu, jetson); exports on the fly without --artefact")
    p.add_argument("--checkpoint", help="weights for --model (what `edgeml train` wrote)")
    p.add_argument("--random-init", action="store_true", help="allow random weights (latency work only)")
    p.add_argument("--input", default="random", choices=["data", "random"],
                   help="'data': real videos end to end (needs --data); 'random': model only on random tensors")
    p.add_argument("--data", help="folder of videos (class sub-folders give labels for accuracy)")
    p.add_argument("--videos", type=positive_int, default=8, help="number of videos for --input data (default 8)")
    p.add_argument("--batch-sizes", type=_batch_sizes, default=(1, 2, 4, 8),
                   help="comma-separated model-only batch sizes, each >= 1 (default 1,2,4,8)")
    p.add_argument("--warmup", type=nonneg_int, default=3, help="untimed runs per batch size (default 3)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed runs per batch size (default 20)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for every backend (default: each library's own)")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="ray: also fan the --input data videos out over Ray workers, one session each "
                   "(pip install 'edgeml[ray]'); default local (this process only)")
    p.add_argument("--address", help="Ray cluster for --engine ray: 'auto' or HOST:PORT of its head (default: start a "
                   "local instance)")
    p.add_argument("--workers", type=positive_int,
                   help="Ray workers (sessions) for --engine ray (default: every CPU of the cluster); each uses "
                   "--threads threads (default 1)")
    p.add_argument("--out", help="write the results JSON here")
    p.add_argument("--json", action="store_true", help="print the results JSON instead of a table")
    p.set_defaults(func=run)


def _batch_sizes(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), each an integer >= 1."""
    sizes = tuple(positive_int(b.strip()) for b in text.split(",") if b.strip())
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    import json

    from edgeml.bench.report import print_summary
    from edgeml.bench.run import bench
    results = bench(model=args.model, artefact=args.artefact, backend=args.backend, target=args.target,
                    input=args.input, data=args.data, videos=args.videos, checkpoint=args.checkpoint,
                    random_init=args.random_init, batch_sizes=args.batch_sizes, warmup=args.warmup,
                    repeats=args.repeats, threads=args.threads, out=args.out, progress=not args.json,
                    engine=args.engine, address=args.address, workers=args.workers)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_summary(results)
        if args.out:
            print(f"results: {args.out}")
    return 0
