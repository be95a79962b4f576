"""video_spiking at the paper's scale against the RGB baselines, end to end on real videos (issue 25).

Videos: the repository's real clip (tests/video/data/megamind_xvid_packed.avi: XviD ASP with packed B-frames,
720x528) and re-encodes of it made here with PyAV (`edgeml.video.codec.prepare`: GOP 12, no B-frames) at 320x240
and 640x480, H.264 (libx264, bf=0) and MPEG-4 (mpeg4), written under --work. Models, each at 112 and 224 px, clip
length 8, batch 1, random weights (speed and op counts do not depend on training; spike rates do, and the JSON says
the weights are random): video_spiking (s112 / m224), r2plus1d_18, x3d_s, mobilenet_v2_tsm. Each is exported to
ONNX (`edgeml.export.onnx.export_onnx`, opset 17, parity against PyTorch checked on a real clip) and quantized to
int8 QDQ (`edgeml.export.quantize`, ONNX Runtime settings, calibrated on real clips). TVM is not run: edgeml ships
tuning records only for video_spiking's 64-px configuration, none for these sizes or the baselines.

End to end per video (`edgeml.bench.run._run_video`, one clip per GOP, one clip per call): decode + model-input
extraction + model on ONNX Runtime (--threads intra-op threads). Front ends: video_spiking reads compressed-domain
inputs (`edgeml.video.clips.extract_clips`, RGB for the I-frame only); the baselines read decoded RGB frames — the
same frames (I-frame + the first 8 P-frames of each GOP) at the same size through the same libswscale conversion
(`edgeml.video.clips.model_rgb`), without motion-vector export or the residual kernels (`rgb_clips`, checked to equal
`extract_clips`' `frames` on the first video). Every (model, size, precision) is one contender; one measurement is
one pass over all videos; contenders run interleaved over --rounds rounds (`edgeml.bench.rounds`) and the run is
judged (round agreement, foreign CPU load): an invalid run is written only with --allow-invalid, marked
`valid: false`.

Reported per contender: videos/s (videos / median pass time), per-video latency p50/p95 (over all rounds), the split
front end / model, MACs (and spike ACs) per clip from `edgeml.bench.opcount` (spike rates on the real clips; the
dense baselines' counts depend on shapes only), estimated J per video — the model's op-count estimate
(`edgeml.bench.energy`, 45 nm table matching the precision) labelled "estimated", beside the front end's measured
CPU-seconds per video, labelled as CPU time — and the peak RSS of a fresh process that runs one video end to end.
Ratios video_spiking : each baseline at 224 px stand beside the paper's headline ratios (56x faster, 330x cheaper);
the goals of issue 25 (video_spiking at 224 >= 5x R(2+1)D-18's videos/s, >= X3D-S's and MobileNet-TSM's, >= 10x
fewer MACs than R(2+1)D-18) are printed as met / missed, per precision.

--accuracy also trains video_spiking (s112) and one baseline (--accuracy-baseline; default the baseline with the
most videos/s at 112 px in this run) on the synth set rendered at 112 px, for a stated budget, with the shared
training loop (`edgeml.training.loop.train_from_args`), and reports per-video and per-clip test top-1.

    .venv/bin/python benchmarks/video_scale.py                     # the full run (<= 40 min on 2 cores)
    .venv/bin/python benchmarks/video_scale.py --quick             # smoke run: 112 px, 2 videos, 2 rounds
    .venv/bin/python benchmarks/video_scale.py --sizes 224 --rounds 2 --out /tmp/vs224.json   # one size only
    .venv/bin/python benchmarks/video_scale.py --accuracy          # ... plus the synth accuracy at 112 px
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "tests" / "video" / "data" / "megamind_xvid_packed.avi"
RESULTS = ROOT / "benchmarks" / "results" / "video_scale.json"
SPIKING = "video_spiking"
BASELINES = ("r2plus1d_18", "x3d_s", "mobilenet_v2_tsm")
SPIKING_SIZES = {112: "s112", 224: "m224"}
CLIP_LEN, GRID, OPSET = 8, 4, 17
RE_ENCODES = (((240, 320), "h264"), ((240, 320), "mpeg4"), ((480, 640), "h264"), ((480, 640), "mpeg4"))
PAPER = {"speed_x": 56.0, "cost_x": 330.0,
         "note": "the paper's headline ratios against prior compressed-video and RGB models (its own models, "
                 "trained, on an edge GPU); here: random weights, ONNX Runtime on this CPU, estimated energy"}
GOALS = {"videos_per_s_vs_r2plus1d_18": 5.0, "videos_per_s_vs_x3d_s": 1.0, "videos_per_s_vs_mobilenet_v2_tsm": 1.0,
         "macs_fewer_vs_r2plus1d_18": 10.0}
TABLES = {"fp32": "45nm", "int8": "45nm-int8"}  # the op-count energy table matching each precision's arithmetic


# ------------------------------------------------------------------------------------------------ videos


def make_videos(work: Path, quick: bool) -> list[tuple[str, Path]]:
    """(name, path) of the benchmark's videos: the real clip and its re-encodes under `work`/videos."""
    from edgeml.video.codec import prepare

    out = [("real xvid 720x528", REAL)]
    for (h, w), codec in RE_ENCODES[:1] if quick else RE_ENCODES:
        dst = work / "videos" / f"megamind_{w}x{h}_{codec}.{'mp4' if codec == 'h264' else 'avi'}"
        out.append((f"{codec} {w}x{h}", prepare(REAL, dst, codec=codec, gop=12, size=(h, w))))
    return out


def rgb_clips(path: str | os.PathLike, *, clip_len: int, grid: int, size: tuple[int, int] | None,
              frames: bool = True, timings: dict | None = None, resize: str = "crop") -> list[dict[str, np.ndarray]]:
    """The RGB baselines' front end: per GOP, its I-frame and first `clip_len` P-frames (B-frames skipped, as in
    `edgeml.video.clips`) decoded without motion-vector export and brought to `size` (by the `resize` policy) by
    `model_rgb` ->
    [{"frames": float32 [T+1, 3, H, W]}], equal to `extract_clips(...)["frames"]`. `grid` only checks the size.
    timings: wall / CPU seconds of this loop under "decode" / "decode_cpu" (decode and RGB conversion)."""
    from edgeml.video import codec
    from edgeml.video.clips import check_model_size, model_rgb, resize_plan

    if size is not None:
        check_model_size(size, grid)
    t0, c0 = time.perf_counter(), time.thread_time()
    plan, current, out = None, None, []
    for fr in codec.decode(path, mvs=False, frames=True):
        if plan is None:
            plan = resize_plan((fr.frame.height, fr.frame.width), size, resize, path=path)
        if fr.pict_type == "I":
            current = [model_rgb(fr.frame, plan)]
        elif fr.pict_type == "P" and current is not None:
            current.append(model_rgb(fr.frame, plan))
        if current is not None and len(current) == clip_len + 1:
            out.append({"frames": np.stack(current).transpose(0, 3, 1, 2).astype(np.float32)})
            current = None  # the rest of the GOP is decoded, not used
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        timings["decode_cpu"] = timings.get("decode_cpu", 0.0) + time.thread_time() - c0
    return out


def check_rgb_front_end(path: Path, px: int = 112) -> None:
    """Stop unless `rgb_clips` gives exactly the `frames` of `extract_clips` (same clips, same pixels)."""
    from edgeml.video.clips import extract_clips

    mine = rgb_clips(path, clip_len=CLIP_LEN, grid=GRID, size=(px, px))
    ref = extract_clips(path, clip_len=CLIP_LEN, grid=GRID, size=(px, px), frames=True)
    if len(mine) != len(ref) or any(not np.array_equal(a["frames"], b["frames"])
                                    for a, b in zip(mine, ref, strict=False)):
        raise SystemExit(f"rgb_clips does not reproduce extract_clips' frames on {path.name}: the baselines' front "
                         "end is wrong")


def front_end(model: str) -> Callable[..., list[dict[str, np.ndarray]]]:
    """What turns a video into the model's clips: compressed-domain extraction, or decoded RGB frames."""
    from edgeml.video.clips import extract_clips

    return extract_clips if model == SPIKING else rgb_clips


# ------------------------------------------------------------------------------------------------ models


def model_config(model: str, px: int) -> dict[str, Any]:
    cfg: dict[str, Any] = {"clip_len": CLIP_LEN, "height": px, "width": px, "grid": GRID}
    return {"size": SPIKING_SIZES[px], **cfg} if model == SPIKING else cfg


def clip_feeds(model: str, px: int, videos: list[tuple[str, Path]], names: list[str]) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds of the first clip of each video (real inputs for calibration, parity and op counts)."""
    settings = {"clip_len": CLIP_LEN, "grid": GRID, "size": (px, px)}
    out = []
    for _, path in videos:
        clips = front_end(model)(path, **settings, frames="frames" in names)
        if clips:
            out.append({k: np.ascontiguousarray(clips[0][k][None], dtype=np.float32) for k in names})
    return out


def op_counts(net: Any, model: str, feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, Any]:
    """MACs / ACs per clip: video_spiking on the real clips (spike rates measured there); a dense baseline on the
    meta device (its count depends on shapes only: no arithmetic)."""
    import torch

    from edgeml.bench.opcount import count_ops
    from edgeml.registry import create_model

    if model == SPIKING:
        inputs = tuple(torch.from_numpy(np.concatenate([f[k] for f in feeds])) for k in names)
        ops = count_ops(net, inputs)
        scope = f"{len(feeds)} real clips (first clip of each video), random weights: spike rates of an untrained net"
    else:
        with torch.device("meta"):
            meta_net = create_model(model, **net.config)
            ops = count_ops(meta_net, tuple(torch.empty(feeds[0][k].shape) for k in names))
        scope = "shapes only (dense network, meta device)"
    top = sorted(ops.layers.items(), key=lambda kv: -(kv[1]["macs"] + kv[1]["acs"]))[:8]
    return {"macs_per_clip": ops.macs, "acs_per_clip": ops.acs, "dense_macs_per_clip": ops.dense_macs,
            "acs_per_clip_if_every_input_spiked": ops.dense_macs - ops.macs,
            "mean_spike_rate": ops.as_dict()["mean_spike_rate"], "scope": scope, "_ops": ops,
            "top_layers": {k: {"macs": v["macs"], "acs": v["acs"]} for k, v in top}}


def build(model: str, px: int, videos: list[tuple[str, Path]], work: Path, calib: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    """Export `model` at `px` to ONNX fp32 + int8 QDQ under `work`; parity on a real clip; op counts."""
    import torch

    from edgeml.export import onnx as ox
    from edgeml.export import quantize
    from edgeml.export.runtime import OrtRuntime, TorchRuntime
    from edgeml.export.validate import parity
    from edgeml.registry import create_model, model_spec

    spec = model_spec(model)
    names, outs = list(spec.input_names), list(spec.output_names)
    torch.manual_seed(0)
    net = create_model(model, **model_config(model, px)).eval()
    folder = work / "models" / f"{model}-{px}"
    t0 = time.perf_counter()
    feeds = clip_feeds(model, px, videos, names)
    with torch.no_grad():
        notes = ox.export_onnx(net, tuple(spec.example_inputs(net, 1)), folder / "model.onnx", input_names=names,
                               output_names=outs, opset=OPSET)
    fp32 = OrtRuntime(folder / "model.onnx", "ort", threads=1)
    check = parity(TorchRuntime(net, names, outs).run, fp32.run, feeds[:1])
    q = quantize.to_int8_qdq(folder / "model.onnx", folder / "model.int8.onnx", feeds[:calib],
                             **quantize.int8_settings("onnxruntime"))
    ops = op_counts(net, model, feeds, names)
    log(f"[build] {model}@{px}: exported, parity max_rel {check['max_rel']:.2e}, int8 calibrated on "
        f"{q['calibration_samples']} real clips, {ops['macs_per_clip'] / 1e9:.2f} GMAC/clip "
        f"({time.perf_counter() - t0:.0f} s)")
    return {"model": model, "px": px, "config": net.config, "names": names, "folder": folder,
            "params": sum(p.numel() for p in net.parameters()), "onnx": dict(notes),
            "parity_fp32": {"max_rel": check["max_rel"], "max_abs": check["max_abs"], "clips": check["samples"]},
            "int8": q, "ops": ops}


# ----------------------------------------------------------------------------------------------- measuring


def one_pass(runtime: Any, names: list[str], front: Callable, videos: list[tuple[str, Path]],
             px: int) -> tuple[float, dict]:
    """Every video end to end once -> (seconds for the pass, per-video latencies and the front end / model split)."""
    from edgeml.bench.run import _run_video

    settings = {"clip_len": CLIP_LEN, "grid": GRID, "size": (px, px)}
    lat, model_s, cpu, clips = [], 0.0, 0.0, 0
    for _, path in videos:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        _, feeds, t_model = _run_video(runtime, names, front, path, settings, timings)
        lat.append(time.perf_counter() - t0)
        model_s += t_model
        cpu += timings.get("decode_cpu", 0.0) + timings.get("kernels_cpu", 0.0)
        clips += next(iter(feeds.values())).shape[0]
    return sum(lat), {"latencies_s": lat, "model_s": model_s, "front_end_cpu_s": cpu, "clips": clips}


def peak_memory(onnx_path: Path, model: str, names: list[str], video: Path, px: int, threads: int) -> dict:
    """Peak RSS of a fresh process (no torch) that opens the ONNX Runtime session and runs `video` end to end."""
    job = {"onnx": str(onnx_path), "model": model, "names": names, "video": str(video), "px": px,
           "threads": threads}
    proc = subprocess.run([sys.executable, __file__, "--probe-memory", json.dumps(job)], capture_output=True,
                          text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["probe failed"])[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _probe_memory(job: dict) -> None:
    """Child side of `peak_memory`: prints {"peak_rss_mib", "before_session_rss_mib", "over_baseline_mib"}."""
    from edgeml.bench.rounds import process_status_kb
    from edgeml.export.runtime import OrtRuntime

    def status_mib(key: str) -> float:  # VmHWM: this process's peak RSS; VmRSS: now
        return process_status_kb(key) / 1024

    import edgeml.bench.run  # noqa: F401 -- everything the pass imports, before the baseline is read
    import edgeml.video.clips  # noqa: F401

    before = status_mib("VmRSS")
    rt = OrtRuntime(job["onnx"], "ort", threads=job["threads"])
    one_pass(rt, job["names"], front_end(job["model"]), [("probe", Path(job["video"]))], job["px"])
    peak = status_mib("VmHWM")
    print(json.dumps({"peak_rss_mib": round(peak, 1), "before_session_rss_mib": round(before, 1),
                      "over_baseline_mib": round(peak - before, 1)}))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summarise(name: str, built: dict, precision: str, ms: list, videos: list, verdict: Any,
              memory: dict) -> dict[str, Any]:
    """One contender's row from its measurements."""
    from edgeml.bench.energy import estimate_energy
    from edgeml.bench.run import ESTIMATED_LABEL, FRONT_END_LABEL

    mine = [m for m in ms if m.contender == name]
    lat = [x for m in mine for x in m.extra["latencies_s"]]
    n = len(videos)
    median_pass = verdict.medians[name]
    clips_per_video = mine[0].extra["clips"] / n
    model_s = float(np.median([m.extra["model_s"] for m in mine])) / n
    cpu_fe = float(np.median([m.extra["front_end_cpu_s"] for m in mine])) / n
    ops = built["ops"]
    est = estimate_energy(ops["_ops"], TABLES[precision])
    acs_max = ops["acs_per_clip_if_every_input_spiked"]
    bound_j = 1e-12 * (ops["macs_per_clip"] * est.pj_per_mac + acs_max * est.pj_per_ac)
    return {
        "contender": name, "model": built["model"], "px": built["px"], "precision": precision,
        "config": built["config"], "params": built["params"], "weights": "random init (seed 0)",
        "videos_per_s": n / median_pass, "pass_s_median": median_pass, "spread": verdict.spread[name],
        "latency_s": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "samples": len(lat)},
        "split_s_per_video": {"model": model_s, "front_end_and_other": median_pass / n - model_s},
        "clips_per_video": clips_per_video,
        "macs_per_clip": ops["macs_per_clip"], "acs_per_clip": ops["acs_per_clip"],
        "macs_per_video": ops["macs_per_clip"] * clips_per_video,
        "acs_per_video": ops["acs_per_clip"] * clips_per_video,
        "acs_per_clip_if_every_input_spiked": ops["acs_per_clip_if_every_input_spiked"],
        "mean_spike_rate": ops["mean_spike_rate"], "op_count_scope": ops["scope"], "top_layers": ops["top_layers"],
        "energy": {"model_j_per_video": est.joules * clips_per_video, "model_j_per_clip": est.joules,
                   "model_j_per_video_if_every_input_spiked": clips_per_video * bound_j,
                   "bound_note": "spike-fed layers at input rate 1 (every spike fires): an untrained net's measured "
                                 "rate is near 0, a trained one's is not; the ratio against this bound is the "
                                 "conservative one",
                   "model_label": f"{ESTIMATED_LABEL}: op count x table {est.table} ({est.pj_per_mac} pJ/MAC, "
                                  f"{est.pj_per_ac} pJ/AC), model only",
                   "front_end_cpu_s_per_video": cpu_fe, "front_end_label": FRONT_END_LABEL},
        "peak_memory": memory, "parity_fp32_max_rel": built["parity_fp32"]["max_rel"],
        "int8": built["int8"] if precision == "int8" else None,
        "tvm": "not run: no shipped tuning records for this model at this size",
    }


def ratios(rows: list[dict], px: int) -> dict[str, Any]:
    """video_spiking : each baseline at `px`, per precision, beside the paper's headline ratios; and the goals."""
    out: dict[str, Any] = {"px": px, "paper": PAPER, "per_precision": {}, "goals": {}}
    for prec in ("fp32", "int8"):
        spk = next((r for r in rows if r["model"] == SPIKING and r["px"] == px and r["precision"] == prec), None)
        if spk is None:
            continue
        per: dict[str, Any] = {}
        for r in rows:
            if r["model"] == SPIKING or r["px"] != px or r["precision"] != prec:
                continue
            spk_ops = spk["macs_per_video"] + spk["acs_per_video"]
            per[r["model"]] = {
                "videos_per_s_x": spk["videos_per_s"] / r["videos_per_s"],
                "model_energy_lower_x": r["energy"]["model_j_per_video"] / spk["energy"]["model_j_per_video"],
                "model_energy_lower_x_if_every_input_spiked": r["energy"]["model_j_per_video"]
                / spk["energy"]["model_j_per_video_if_every_input_spiked"],
                "front_end_cpu_s_spiking_over_baseline": spk["energy"]["front_end_cpu_s_per_video"]
                / max(r["energy"]["front_end_cpu_s_per_video"], 1e-12),
                "macs_fewer_x": r["macs_per_video"] / max(spk["macs_per_video"], 1.0),
                "ops_fewer_x": r["macs_per_video"] / max(spk_ops, 1.0)}
        out["per_precision"][prec] = per
        goals = {}
        for key, goal in GOALS.items():
            metric, _, base = key.partition("_vs_")
            if base in per:
                value = per[base]["videos_per_s_x" if metric == "videos_per_s" else "macs_fewer_x"]
                goals[key] = {"goal": f">= {goal:g}x", "measured": value, "met": value >= goal}
        out["goals"][prec] = goals
    return out


# ----------------------------------------------------------------------------------------------- accuracy


def accuracy(args: argparse.Namespace, rows: list[dict], log: Callable[[str], None]) -> dict[str, Any]:
    """video_spiking (s112) and one baseline trained on the synth set at 112 px for the stated budget."""
    from edgeml.training.loop import train_from_args
    from edgeml.video.datasets import build_clip_cache
    from edgeml.video.synth import make_synth_dataset

    fastest = max((r for r in rows if r["model"] != SPIKING and r["px"] == 112 and r["precision"] == "fp32"),
                  key=lambda r: r["videos_per_s"], default=None)
    baseline = args.accuracy_baseline or (fastest["model"] if fastest else "mobilenet_v2_tsm")
    budget = {"per_class": args.accuracy_per_class, "epochs": args.accuracy_epochs,
              "minutes_per_model": args.accuracy_minutes, "batch_size": 16, "lr": 2e-3, "seed": 0,
              "threads": os.cpu_count() or 1, "size": [112, 112], "clip_len": CLIP_LEN}
    t0 = time.perf_counter()
    videos = make_synth_dataset(args.work / f"synth112-{args.accuracy_per_class}", per_class=args.accuracy_per_class,
                                size=(112, 112), seed=0, progress=False)
    cache = build_clip_cache(videos, args.work / f"clips112-{args.accuracy_per_class}", clip_len=CLIP_LEN, grid=GRID,
                             size=(112, 112), progress=False)
    out: dict[str, Any] = {"data": "edgeml synth set (8 motion-only classes) rendered at 112x112",
                           "budget": budget, "baseline_choice": "--accuracy-baseline" if args.accuracy_baseline
                           else "the baseline with the most videos/s at 112 px (fp32) in this run",
                           "data_minutes": (time.perf_counter() - t0) / 60, "models": {}}
    for model in (SPIKING, baseline):
        t1 = time.perf_counter()
        result = train_from_args(model, cache, args.work / f"acc-{model}", size="s112" if model == SPIKING else None,
                                 epochs=budget["epochs"], batch_size=budget["batch_size"], lr=budget["lr"], seed=0,
                                 threads=budget["threads"], max_minutes=budget["minutes_per_model"], force=True,
                                 progress=False)
        test = result.get("test") or {}
        out["models"][model] = {"test_video_top1": test.get("video_top1"), "test_top1": test.get("top1"),
                                "epochs_done": result["epochs_done"], "best_epoch": result["best_epoch"],
                                "train_minutes": (time.perf_counter() - t1) / 60}
        log(f"[accuracy] {model}: video top-1 {test.get('video_top1')}, clip top-1 {test.get('top1')}, "
            f"{result['epochs_done']} epochs")
    return out


# ----------------------------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/video_scale"), help="scratch folder (videos, ONNX files)")
    p.add_argument("--quick", action="store_true", help="smoke run: 112 px, 2 videos, 2 rounds")
    p.add_argument("--sizes", type=int, nargs="+", choices=sorted(SPIKING_SIZES),
                   help="input sizes in px (default 112 224; --quick 112)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; --quick 2)")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per session (default 1)")
    p.add_argument("--calib", type=int, default=4, help="real clips for int8 calibration (default 4)")
    p.add_argument("--max-spread", type=float, default=1.25)
    p.add_argument("--max-foreign-cores", type=float, default=0.25)
    p.add_argument("--allow-invalid", action="store_true", help="write a run judged invalid (marked valid: false)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes (one process each)")
    p.add_argument("--accuracy", action="store_true", help="also train video_spiking and a baseline at 112 px")
    p.add_argument("--accuracy-only", action="store_true",
                   help="only the accuracy part, written to benchmarks/results/video_scale_accuracy.json (the "
                        "baseline: --accuracy-baseline, else the fastest at 112 px in the speed results if present, "
                        "else mobilenet_v2_tsm)")
    p.add_argument("--accuracy-baseline", choices=BASELINES)
    p.add_argument("--accuracy-per-class", type=int, default=12, help="synth videos per class (default 12)")
    p.add_argument("--accuracy-epochs", type=int, default=10, help="at most this many epochs (default 10)")
    p.add_argument("--accuracy-minutes", type=float, default=12.0, help="training budget per model (default 12 min)")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/video_scale.json; "
                   "--quick: WORK/video_scale_quick.json)")
    p.add_argument("--probe-memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for k in ("rounds", "threads", "calib"):
        v = getattr(args, k)
        if v is not None and v < 1:
            p.error(f"--{k} must be >= 1")
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.out = args.out or (args.work / "video_scale_quick.json" if args.quick else RESULTS)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.probe_memory:
        _probe_memory(json.loads(args.probe_memory))
        return 0
    import torch
    from rich.console import Console

    from edgeml.bench.rounds import interleave, judge
    from edgeml.export.runtime import OrtRuntime
    from edgeml.io import read_json, write_json

    console = Console(width=200)
    log = console.print
    if args.accuracy_only:  # training accuracy does not depend on load: it may run apart from the timed rounds
        rows = read_json(RESULTS)["rows"] if RESULTS.is_file() else []
        acc = accuracy(args, rows, log)
        out = RESULTS.with_name("video_scale_accuracy.json")
        write_json(out, {"benchmark": "video_scale_accuracy", "script": "benchmarks/video_scale.py --accuracy-only",
                         "issue": 25, "date": time.strftime("%Y-%m-%d"), **acc,
                         "machine": {"cpu_count": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
                                     "torch": torch.__version__}})
        log(f"wrote {out}")
        return 0
    t_start = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)  # export, parity and op counts only; timing is ONNX Runtime's
    sizes = tuple(sorted(set(args.sizes))) if args.sizes else (112,) if args.quick else (112, 224)
    videos = make_videos(args.work, args.quick)
    for _, path in videos[:2]:
        check_rgb_front_end(path)
    built = {(m, px): build(m, px, videos, args.work, args.calib, log) for px in sizes for m in (SPIKING, *BASELINES)}
    build_s = time.perf_counter() - t_start

    contenders: dict[str, Callable[[], tuple[float, dict]]] = {}
    meta: dict[str, tuple[tuple[str, int], str]] = {}
    for key, b in built.items():
        for prec, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
            name = f"{key[0]}@{key[1]} {prec}"
            rt = OrtRuntime(b["folder"] / file, "ort" if prec == "fp32" else "ort-int8", threads=args.threads)
            one_pass(rt, b["names"], front_end(key[0]), videos[:1], key[1])  # warm-up (lazy init)
            contenders[name] = (lambda rt=rt, b=b, key=key: one_pass(rt, b["names"], front_end(key[0]), videos,
                                                                      key[1]))
            meta[name] = (key, prec)
    t_rounds = time.perf_counter()
    ms = interleave(contenders, args.rounds, progress=lambda line: log(f"[rounds] {line}"))
    verdict = judge(ms, max_spread=args.max_spread, max_foreign_cores=args.max_foreign_cores)
    rounds_s = time.perf_counter() - t_rounds
    probe_video = videos[-1][1]
    rows = []
    for name, (key, prec) in meta.items():
        b = built[key]
        memory = {"skipped": "--no-memory"} if args.no_memory else {
            **peak_memory(b["folder"] / ("model.onnx" if prec == "fp32" else "model.int8.onnx"), key[0], b["names"],
                          probe_video, key[1], args.threads),
            "scope": f"a fresh process (no torch): ONNX Runtime session + one video end to end ({videos[-1][0]})"}
        rows.append(summarise(name, b, prec, ms, videos, verdict, memory))
    ratio = ratios(rows, max(sizes))
    acc = accuracy(args, rows, log) if args.accuracy else None
    report(console, rows, ratio, verdict, args)

    if not verdict.valid and not args.allow_invalid:
        log("run judged invalid (see the reasons above): nothing written; rerun on a quiet machine or pass "
            "--allow-invalid")
        return 1
    import av
    import onnxruntime

    write_json(args.out, {
        "benchmark": "video_scale", "script": "benchmarks/video_scale.py", "issue": 25, "valid": verdict.valid,
        "verdict": verdict.as_dict(), "quick": args.quick, "rounds": args.rounds, "threads": args.threads,
        "weights": "random init (seed 0) for every model: speed and MACs do not depend on training; video_spiking's "
                   "ACs follow its spike rates, which are an untrained net's here",
        "clip": {"clip_len": CLIP_LEN, "grid": GRID, "batch": 1, "resize": "crop", "clips": "one per GOP"},
        "videos": [{"name": n, "file": p.name, "source": "tests/video/data" if p == REAL else "re-encode (--work)"}
                   for n, p in videos],
        "front_ends": {SPIKING: "edgeml.video.clips.extract_clips (compressed domain: I-frame RGB, MVs, residuals)",
                       "baselines": "rgb_clips: decoded RGB frames (no MV export), the same frames and conversion"},
        "tvm": "not run: edgeml ships TVM tuning records only for video_spiking's 64-px configuration "
               "(edgeml/assets/video_spiking/tvm/x86-tvm), none for these sizes or the baselines",
        "rows": rows, "ratios": ratio, "goals": ratio["goals"], "paper": PAPER, "accuracy": acc,
        "minutes": {"build": build_s / 60, "rounds": rounds_s / 60, "total": (time.perf_counter() - t_start) / 60},
        "measurements": [{k: v for k, v in m.__dict__.items() if k != "extra"} | {"clips": m.extra["clips"]}
                         for m in ms],
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "load_avg_1m_at_end": os.getloadavg()[0], "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
                    "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}})
    log(f"wrote {args.out}")
    return 0


def report(console: Any, rows: list[dict], ratio: dict, verdict: Any, args: argparse.Namespace) -> None:
    from rich.table import Table

    t = Table(title=f"end to end per video (batch 1, ONNX Runtime, {args.threads} thread(s), median of {args.rounds} "
                    "interleaved rounds; energy estimated, weights random)")
    for col in ("contender", "videos/s", "p50 s", "p95 s", "model s/video", "GMAC/clip", "GAC/clip",
                "est. model J/video", "front-end CPU s/video", "peak RSS MiB", "spread"):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for r in rows:
        mem = r["peak_memory"].get("peak_rss_mib")
        t.add_row(r["contender"], f"{r['videos_per_s']:.2f}", f"{r['latency_s']['p50']:.3f}",
                  f"{r['latency_s']['p95']:.3f}", f"{r['split_s_per_video']['model']:.3f}",
                  f"{r['macs_per_clip'] / 1e9:.2f}", f"{r['acs_per_clip'] / 1e9:.3f}",
                  f"{r['energy']['model_j_per_video']:.3g}", f"{r['energy']['front_end_cpu_s_per_video']:.3f}",
                  "-" if mem is None else f"{mem:.0f}", f"{r['spread']:.2f}x")
    console.print(t)
    g = Table(title=f"video_spiking : baselines at {ratio['px']} px (paper: {PAPER['speed_x']:g}x faster, "
                    f"{PAPER['cost_x']:g}x cheaper)")
    for col in ("precision", "baseline", "videos/s x", "est. model energy lower x",
                "... if every spike fired", "MACs fewer x"):
        g.add_column(col, justify="left" if col in ("precision", "baseline") else "right")
    for prec, per in ratio["per_precision"].items():
        for base, q in per.items():
            g.add_row(prec, base, f"{q['videos_per_s_x']:.2f}", f"{q['model_energy_lower_x']:.1f}",
                      f"{q['model_energy_lower_x_if_every_input_spiked']:.1f}", f"{q['macs_fewer_x']:.1f}")
    console.print(g)
    for prec, goals in ratio["goals"].items():
        for key, v in goals.items():
            console.print(f"goal ({prec}, {ratio['px']} px) {key} {v['goal']}: {v['measured']:.2f}x -> "
                          f"{'met' if v['met'] else 'missed'}")
    console.print(f"run {'valid' if verdict.valid else 'INVALID: ' + '; '.join(verdict.reasons)}")


if __name__ == "__main__":
    raise SystemExit(main())
