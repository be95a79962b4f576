"""CURE speed on SD-1.5- and SDXL-shaped UNets (random weights, nothing downloaded).

    nice -n 5 .venv/bin/python benchmarks/cure_speed.py [--cache /tmp/edgeml-cure-speed] [--rounds 3] [--threads 1]
                                                         [--parts projector in-memory onnx-sd15 onnx-sdxl]

(The first run exports the SD-1.5 ONNX UNet once, ~30 s idle / minutes busy, 3.4 GB, and writes the SDXL-shaped
ONNX file, 5.1 GB, into --cache; later runs reuse both. Needs ~4 GB RAM and ~20 GB free disk.)

Measures, in one run, every contender interleaved over rounds with the machine's foreign load recorded
(`edgeml.bench.rounds`; a run is judged invalid when other processes used more than 0.25 cores meanwhile):
- text encoding of the prompts with an SD-1.5-shaped CLIP text encoder (random weights, 123 M params) and the real
  CLIP BPE tokenizer, timed separately from the projector build;
- 100 forget concepts × 5 templates: batched text encoding, then the projector build (one SVD per side) at
  CLIP-L width 768 from those embeddings and at SDXL width 2048 (rows of both encoders' widths; synthetic rows
  with the same count, since the SDXL encoders — 123 M + 695 M params — would dominate the run);
- the in-memory edit of the 32 K/V weights of an SD-1.5 `UNet2DConditionModel` (baseline: the dense per-layer
  W (I − P_dis)) and of the 140 attn2 K/V weights of the SDXL base UNet (real shapes: 20 × [640, 2048] and
  120 × [1280, 2048]; only these tensors are built — the full 2.6 B-parameter UNet, 10.3 GB in fp32, does not fit
  a 24 GB / 2-core machine beside its export; baseline: one read + write of the same weights, the memory floor);
- the ONNX edit (`edgeml.cure.erase._edit_onnx_path`) of the SD-1.5 export (3.4 GB external data) and of an
  SDXL-shaped fp16 ONNX UNet (the 140 K/V initializers between filler initializers up to the full UNet's
  2,567,463,684 parameters, 5.1 GB) against copying the same files (`shutil.copy`, kernel-side sendfile).

Why the committed 0.46× did not reproduce (1.79× on a clean clone): the old loop timed copy-then-edit in a fixed
order and took min(edit) / min(copy) over separately sorted samples. Both contenders run sendfile from the page
cache into new files; once ~2 GB are dirty (vm.dirty_background_ratio of free memory here) the writer is throttled
to the disk's speed, so a 3.4 GB copy's time depends on how much is dirty and whether the source is cached when it
starts — which the fixed order left to the previous contender (a just-exported source is dirty; a copy run after
another copy evicts the source on a small machine). Now each measurement starts from the same state: os.sync()
(nothing dirty) and the source either read fully into the cache ("warm") or dropped from it with
posix_fadvise(DONTNEED) ("cold"), both untimed; every contender runs once untimed before the rounds (the first
measurement of a run was 2x slower); the order rotates each round; the ratio is median over median of the same
rounds, with every round's value in the JSON.
How the edit runs (edgeml.cure.spectral.apply_to_weights, edgeml.cure._files.copy_with_patches): each K/V weight is
edited block by block in its storage order (rows of W, or rows of Wᵀ for an ONNX MatMul weight: no transposing
copies), each ~256 KB float32 block converted by torch and multiplied by numpy's BLAS (MKL's k-column GEMMs ran 4–8×
slower on this AMD CPU); on disk everything but the K/V byte ranges is copied kernel-side in a background thread
while the K/V tensors are read, edited and written into their ranges of the copy.
--parts runs a reduced benchmark (the JSON records which parts; write it elsewhere with --out: the README table
reads the full run). Writes benchmarks/results/cure_speed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SD15 = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2,
            cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
FORGET = ["van gogh"]
RETAIN = ["claude monet", "pablo picasso", "rembrandt"]
# SDXL base UNet: (channels, attn2 modules) per block; transformer depth 2 at 640 and 10 at 1280 channels.
SDXL_ATTN2 = {"down_blocks.1": (640, 2, 2), "down_blocks.2": (1280, 2, 10), "mid_block": (1280, 1, 10),
              "up_blocks.0": (1280, 3, 10), "up_blocks.1": (640, 3, 2)}
SDXL_PARAMS = 2_567_463_684   # diffusers UNet2DConditionModel of stabilityai/stable-diffusion-xl-base-1.0
SDXL_CONTEXT = 2048
MANY = 100                    # forget concepts for the projector-build measurement (× 5 templates)


def sd15_text_encoder():
    """CLIP ViT-L/14 text tower shape (SD-1.5), random weights, plus the CLIP BPE tokenizer."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from edgeml.cure.embed import TransformersTextEncoder, clip_tokenizer

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, max_position_embeddings=77))
    return TransformersTextEncoder.from_model(model, clip_tokenizer(), max_length=77)


def export_sd15_onnx(unet, folder: Path) -> Path:
    """dynamo export with one external data file (cached: reused when present)."""
    path = folder / "unet" / "model.onnx"
    if path.is_file() and (folder / "unet" / "model.onnx.data").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs = (torch.randn(1, 4, 64, 64), torch.tensor([10]), torch.randn(1, 77, 768))

    class Out(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states).sample

    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(Out(), inputs, str(path), dynamo=True, external_data=True,
                          input_names=["sample", "timestep", "encoder_hidden_states"], output_names=["out_sample"])
    print(f"exported SD-1.5 UNet to ONNX in {time.perf_counter() - t0:.1f}s")
    return path


def sdxl_kv_shapes() -> dict[str, tuple[int, int]]:
    """{"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": (out, 2048)} for all 140 SDXL K/V weights."""
    shapes = {}
    for block, (channels, attentions, depth) in SDXL_ATTN2.items():
        for a in range(attentions):
            for t in range(depth):
                for proj in ("to_k", "to_v"):
                    shapes[f"{block}.attentions.{a}.transformer_blocks.{t}.attn2.{proj}"] = (channels, SDXL_CONTEXT)
    return shapes


class CrossAttentionKV(torch.nn.Module):
    """Only what CURE edits of a cross-attention block: to_k, to_v reading the 2048-wide context."""

    is_cross_attention = True

    def __init__(self, channels: int):
        super().__init__()
        self.to_k = torch.nn.Linear(SDXL_CONTEXT, channels, bias=False)
        self.to_v = torch.nn.Linear(SDXL_CONTEXT, channels, bias=False)


def sdxl_kv_module() -> torch.nn.Module:
    """A module holding the 70 SDXL cross-attention K/V pairs under their diffusers names (random weights)."""
    root = torch.nn.Module()
    torch.manual_seed(0)
    for name, (channels, _) in sdxl_kv_shapes().items():
        if name.endswith("to_k"):
            parent = root
            for part in name.split(".")[:-1]:
                if not hasattr(parent, part):
                    parent.add_module(part, CrossAttentionKV(channels) if part == "attn2" else torch.nn.Module())
                parent = getattr(parent, part)
    return root


def write_sdxl_onnx(folder: Path) -> Path:
    """folder/unet/model.onnx + model.onnx_data: encoder_hidden_states feeds 140 MatMuls with SDXL's K/V weights
    stored [2048, out] in fp16, between filler initializers that bring the data to the full UNet's size (cached)."""
    import onnx
    from onnx import TensorProto, helper

    path = folder / "unet" / "model.onnx"
    data = path.with_name("model.onnx_data")
    if path.is_file() and data.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = sdxl_kv_shapes()
    filler_total = (SDXL_PARAMS - sum(o * i for o, i in shapes.values())) * 2
    chunk = filler_total // (len(shapes) + 1) // 64 * 64
    rng = np.random.default_rng(0)
    block = rng.standard_normal(8 << 20).astype(np.float16).tobytes()   # 16 MB, repeated
    inits, nodes, offset = [], [], 0
    ehs = helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT16, [1, 77, SDXL_CONTEXT])
    outputs = []

    def external(name: str, dims: list[int], nbytes: int) -> None:
        nonlocal offset
        t = TensorProto(name=name, data_type=TensorProto.FLOAT16, dims=dims, data_location=TensorProto.EXTERNAL)
        for k, v in (("location", data.name), ("offset", str(offset)), ("length", str(nbytes))):
            t.external_data.add(key=k, value=v)
        inits.append(t)
        offset += nbytes

    t0 = time.perf_counter()
    with open(data, "wb") as f:
        def fill(n: int) -> None:
            while n > 0:
                f.write(block[:min(n, len(block))])
                n -= min(n, len(block))

        for i, (name, (out, inp)) in enumerate(shapes.items()):
            fill(chunk)
            external(f"rest_of_unet_{i}", [chunk // 2], chunk)
            w = (rng.standard_normal((inp, out)) * 0.02).astype(np.float16)
            f.write(w.tobytes())
            external(f"{name}.weight", [inp, out], w.nbytes)
            nodes.append(helper.make_node("MatMul", ["encoder_hidden_states", f"{name}.weight"], [name], name=name))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT16, None))
        rest = filler_total - chunk * len(shapes)
        fill(rest)
        external("rest_of_unet_last", [rest // 2], rest)
    graph = helper.make_graph(nodes, "sdxl_kv", [ehs], outputs, inits)
    path.write_bytes(helper.make_model(graph).SerializeToString())
    os.sync()
    print(f"wrote the SDXL-shaped ONNX UNet ({offset / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f}s")
    assert onnx.load(str(path), load_external_data=False).graph.node
    return path


def _set_cache(files: list[Path], state: str) -> None:
    """Untimed: source pages cached ("warm": read through) or dropped ("cold"); nothing dirty either way."""
    os.sync()
    for p in files:
        if state == "warm":
            with open(p, "rb", buffering=0) as f:
                while f.read(1 << 26):
                    pass
        else:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _dirty_kb() -> int:
    with open("/proc/meminfo") as f:
        return next((int(line.split()[1]) for line in f if line.startswith("Dirty:")), -1)


def onnx_rounds(name: str, src: Path, edit, out: Path, rounds: int, states: tuple[str, ...]) -> dict:
    """Interleaved copy vs edit of one ONNX model in each page-cache state; -> results and the rounds' verdict."""
    from edgeml.bench.rounds import goal_verdict, interleave, judge, warm_up
    from edgeml.cure.erase import _edit_onnx_path

    files = [src] + [p for p in src.parent.iterdir() if p != src and p.is_file()]

    def contender(kind: str, state: str):
        def run() -> tuple[float, dict]:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            _set_cache(files, state)
            dirty = _dirty_kb()
            t0 = time.perf_counter()
            if kind == "copy":
                for p in files:
                    shutil.copy(p, out / p.name)
                extra = {}
            else:
                extra = {"tensors": len(_edit_onnx_path(src, out, edit, None))}
            seconds = time.perf_counter() - t0
            return seconds, {**extra, "dirty_kb_at_start": dirty, "dirty_kb_at_end": _dirty_kb()}
        return run

    contenders = {f"{kind}/{state}": contender(kind, state) for state in states for kind in ("copy", "edit")}
    warm_up(contenders)  # the first write of GBs into a fresh page cache is slower
    ms = interleave(contenders, rounds, progress=lambda m: print(f"{name}: {m}", flush=True))
    shutil.rmtree(out, ignore_errors=True)
    verdict = judge(ms, max_spread=1.5)
    # Multi-GB page-cache copies on this VM vary 1.5-2x from round to round, the plain copy as much as the edit: the
    # spread disqualifies the run only where it could flip the goal (edgeml.bench.rounds.goal_verdict).
    valid, reasons, ranges = goal_verdict(ms, verdict, {f"edit/{s} <= 1.5x copy/{s}": (f"edit/{s}", f"copy/{s}", 1.5)
                                                        for s in states}, 1.5)
    res: dict = {"bytes": int(sum(p.stat().st_size for p in files)),
                 "verdict": {**verdict.as_dict(), "valid": valid, "reasons": reasons, "spread_rule_reasons":
                             verdict.reasons, "goal_ratio_range": ranges},
                 "measurements": [m.__dict__ for m in ms]}
    for state in states:
        copy, edit_s = verdict.medians[f"copy/{state}"], verdict.medians[f"edit/{state}"]
        per_round = [e.value / c.value for c, e in zip(
            [m for m in ms if m.contender == f"copy/{state}"], [m for m in ms if m.contender == f"edit/{state}"],
            strict=True)]
        res[state] = {"copy_s": copy, "edit_s": edit_s, "edit_over_copy": edit_s / copy,
                      "edit_over_copy_per_round": per_round}
    res["tensors_edited"] = next(m.extra["tensors"] for m in ms if "tensors" in m.extra)
    return res


PARTS = ("projector", "in-memory", "onnx-sd15", "onnx-sdxl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("/tmp/edgeml-cure-speed"), help="where the ONNX files live")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                    help="a reduced run: only these parts (recorded in the JSON; goals of the others are null)")
    ap.add_argument("--cache-states", nargs="+", default=["warm", "cold"], choices=["warm", "cold"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the edit is memory-bound)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cure_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:  # numpy's OpenBLAS too: at 2 threads on a loaded 2-core machine the 500-row SVD ran 10× slower
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    from edgeml.cure import build_edit
    from edgeml.io import write_json

    t_start = time.perf_counter()
    result: dict = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                "blas_threads": args.threads,
                                "load_average_at_start": os.getloadavg()}, "forget": FORGET, "retain": RETAIN,
                    "parts": args.parts, "rounds": args.rounds, "cache_states": args.cache_states}
    verdicts = {}
    enc = sd15_text_encoder()
    edit, info = build_edit(enc, FORGET, RETAIN, alpha=2.0)
    result["rank"] = info["rank"]
    xl_edit = sdxl_edit()
    if "projector" in args.parts:
        verdicts["projector"] = measure_projector(enc, args.rounds, result)
    unet = None
    if "in-memory" in args.parts or "onnx-sd15" in args.parts:
        from diffusers import UNet2DConditionModel

        t0 = time.perf_counter()
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**SD15).eval()
        result["unet_build_s"] = time.perf_counter() - t0
    if "in-memory" in args.parts:
        verdicts["in_memory"] = measure_in_memory(unet, edit, xl_edit, args.rounds, result)
    states = tuple(args.cache_states)
    if "onnx-sd15" in args.parts:
        src = export_sd15_onnx(unet, args.cache / "sd15")
        result["onnx"] = onnx_rounds("sd15", src, edit, args.cache / "bench_out", args.rounds, states)
        result.update({"onnx_bytes": result["onnx"]["bytes"], "onnx_tensors_edited": result["onnx"]["tensors_edited"],
                       "onnx_copy_s": result["onnx"][states[0]]["copy_s"],
                       "onnx_edit_s": result["onnx"][states[0]]["edit_s"],
                       "onnx_edit_over_copy": result["onnx"][states[0]]["edit_over_copy"],
                       "onnx_cache_state": states[0]})
    del unet
    if "onnx-sdxl" in args.parts:
        result["onnx_sdxl"] = onnx_rounds("sdxl", write_sdxl_onnx(args.cache / "sdxl"), xl_edit,
                                          args.cache / "bench_out", args.rounds, states)

    def worst(key: str) -> float | None:
        return max(result[key][s]["edit_over_copy"] for s in states) if key in result else None

    def at_most(value: float | None, goal: float) -> bool | None:
        return None if value is None else value <= goal

    sdxl = result.get("sdxl", {})
    many = result.get("many")
    result["goals"] = {"in_memory_edit_s<=0.25": at_most(result.get("in_memory_edit_s"), 0.25),
                       "sdxl_in_memory_edit_s<=0.25": at_most(sdxl.get("in_memory_edit_s"), 0.25),
                       "onnx_edit<=1.5x_copy": at_most(result.get("onnx_edit_over_copy"), 1.5),
                       "onnx_edit<=1.5x_copy_every_state": at_most(worst("onnx"), 1.5),
                       "sdxl_onnx_edit<=1.5x_copy_every_state": at_most(worst("onnx_sdxl"), 1.5),
                       "projector_100x5_s<=1": at_most(max(many["projector_768_s"], many["projector_2048_s"])
                                                       if many else None, 1.0)}
    result["valid"] = all(v.valid for v in verdicts.values()) and all(
        result[k]["verdict"]["valid"] for k in ("onnx", "onnx_sdxl") if k in result)
    result["verdicts"] = {k: v.as_dict() for k, v in verdicts.items()}
    result["load_average_at_end"] = os.getloadavg()
    result["seconds"] = time.perf_counter() - t_start
    write_json(args.out, result)
    print_table(result, args)


def measure_projector(enc, rounds: int, result: dict):
    """100 concepts × 5 templates: batched text encoding (timed once), then the projector at widths 768 and 2048
    (interleaved rounds); fills result["many"], -> the rounds' verdict."""
    from edgeml.bench.rounds import interleave, judge
    from edgeml.cure.embed import DEFAULT_TEMPLATES, concept_embeddings
    from edgeml.cure.spectral import discriminative_projector

    concepts = [f"artist number {i}" for i in range(MANY)]
    t0 = time.perf_counter()
    xf = concept_embeddings(enc, concepts, templates=DEFAULT_TEMPLATES)
    xr = concept_embeddings(enc, RETAIN, templates=DEFAULT_TEMPLATES)
    result["many_text_encoding_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    xf_xl = rng.standard_normal((xf.shape[0], SDXL_CONTEXT)) * np.linspace(3, 0.1, SDXL_CONTEXT)
    xr_xl = rng.standard_normal((xr.shape[0], SDXL_CONTEXT)) * np.linspace(3, 0.1, SDXL_CONTEXT)

    def projector(f, r):
        def run() -> tuple[float, dict]:
            t = time.perf_counter()
            e = discriminative_projector(f, r, 2.0)
            rank = e.rank()
            return time.perf_counter() - t, {"rank": rank}
        return run

    ms = interleave({"projector/768": projector(xf, xr), "projector/2048": projector(xf_xl, xr_xl)}, rounds)
    verdict = judge(ms, max_spread=1.5)
    result["many"] = {"concepts": MANY, "templates": len(DEFAULT_TEMPLATES), "forget_rows": int(xf.shape[0]),
                      "retain_rows": int(xr.shape[0]), "text_encoding_s": result["many_text_encoding_s"],
                      "projector_768_s": verdict.medians["projector/768"],
                      "projector_2048_s": verdict.medians["projector/2048"],
                      "rank": next(m.extra["rank"] for m in ms)}
    print(f"100 × 5 prompts: text {result['many_text_encoding_s']:.2f}s, projector {result['many']}")
    return verdict


def measure_in_memory(unet, edit, xl_edit, rounds: int, result: dict):
    """SD-1.5 UNet (dense baseline) and SDXL's 140 K/V (memory-floor baseline), interleaved; fills result, -> the
    rounds' verdict."""
    from edgeml.bench.rounds import interleave, judge
    from edgeml.cure import cross_attention_layers, edit_module

    layers = cross_attention_layers(unet)
    result["kv_layers"] = len(layers)
    result["kv_params"] = int(sum(lin.weight.numel() for lin in layers.values()))
    dense = torch.from_numpy(np.eye(768) - edit.dense())

    def dense_edit() -> tuple[float, dict]:
        t = time.perf_counter()
        with torch.no_grad():
            for lin in layers.values():
                lin.weight.copy_((lin.weight.double() @ dense).float())
        return time.perf_counter() - t, {}

    def timed_edit(module, e, report: bool):
        def run() -> tuple[float, dict]:
            t = time.perf_counter()
            edit_module(module, e, report=report)
            return time.perf_counter() - t, {}
        return run

    xl = sdxl_kv_module()
    xl_layers = cross_attention_layers(xl)

    def memory_floor() -> tuple[float, dict]:
        t = time.perf_counter()
        with torch.no_grad():
            for lin in xl_layers.values():
                lin.weight.mul_(1.0)
        return time.perf_counter() - t, {}

    def repeated(fn, min_s: float = 0.5):
        """Per-call seconds of `fn` over as many calls as fill `min_s`: a 15-ms edit alone would be judged by the
        machine's load over a 15-ms window, where one writeback blip reads as a busy machine."""
        def run() -> tuple[float, dict]:
            total, calls = 0.0, 0
            while total < min_s or calls == 0:
                total += fn()[0]
                calls += 1
            return total / calls, {"calls": calls}
        return run

    ms = interleave({k: repeated(f) for k, f in {
        "sd15/low-rank": timed_edit(unet, edit, False), "sd15/low-rank+report": timed_edit(unet, edit, True),
        "sd15/dense": dense_edit, "sdxl/low-rank": timed_edit(xl, xl_edit, False),
        "sdxl/low-rank+report": timed_edit(xl, xl_edit, True), "sdxl/read+write": memory_floor}.items()},
                    rounds + 2, progress=lambda m: print(f"in memory: {m}", flush=True))
    v = judge(ms, max_spread=1.5)
    result.update({"in_memory_edit_s": v.medians["sd15/low-rank"],
                   "in_memory_edit_with_report_s": v.medians["sd15/low-rank+report"],
                   "dense_edit_s": v.medians["sd15/dense"],
                   "sdxl": {"kv_layers": len(xl_layers),
                            "kv_params": int(sum(lin.weight.numel() for lin in xl_layers.values())),
                            "rank": xl_edit.rank(), "built": "the 140 attn2 K/V weights only (fp32)",
                            "in_memory_edit_s": v.medians["sdxl/low-rank"],
                            "in_memory_edit_with_report_s": v.medians["sdxl/low-rank+report"],
                            "read_write_floor_s": v.medians["sdxl/read+write"]},
                   "in_memory_measurements": [m.__dict__ for m in ms]})
    return v


def sdxl_edit():
    """A rank-5 edit at SDXL's width 2048 (5 forget and 15 retain rows, like 1 concept × 5 templates against 3)."""
    from edgeml.cure.spectral import discriminative_projector

    rng = np.random.default_rng(1)
    return discriminative_projector(rng.standard_normal((5, SDXL_CONTEXT)), rng.standard_normal((15, SDXL_CONTEXT)))


def print_table(result: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    load = f"load average {result['machine']['load_average_at_start'][0]:.1f} → {result['load_average_at_end'][0]:.1f}"
    table = Table(title=f"CURE speed, random weights, this CPU ({load}; valid: {result['valid']})")
    for col in ("step", "seconds", "vs baseline"):
        table.add_column(col)
    m = result.get("many")
    if m:
        table.add_row(f"text encoding, {m['forget_rows'] + m['retain_rows']} prompts (CLIP-L shape)",
                      f"{m['text_encoding_s']:.2f}", "")
        for width in (768, 2048):
            table.add_row(f"projector, {m['forget_rows']} forget rows, width {width}",
                          f"{m[f'projector_{width}_s']:.3f}", "goal ≤ 1 s")
    if "sdxl" in result:
        table.add_row(f"SD-1.5 in-memory edit, {result['kv_layers']} K/V (low-rank)",
                      f"{result['in_memory_edit_s']:.4f}",
                      f"{result['dense_edit_s'] / result['in_memory_edit_s']:.1f}× faster than dense")
        table.add_row("  dense W(I−P_dis) per layer (baseline)", f"{result['dense_edit_s']:.4f}", "1.0×")
        x = result["sdxl"]
        table.add_row(f"SDXL in-memory edit, {x['kv_layers']} K/V (low-rank)", f"{x['in_memory_edit_s']:.4f}",
                      f"{x['in_memory_edit_s'] / x['read_write_floor_s']:.2f}× one read+write of the weights")
        table.add_row("  + report norms", f"{x['in_memory_edit_with_report_s']:.4f}", "")
    for key, label in (("onnx", "SD-1.5 ONNX"), ("onnx_sdxl", "SDXL-shaped fp16 ONNX")):
        if key in result:
            o = result[key]
            for state in args.cache_states:
                r = o[state]
                table.add_row(f"{label} ({o['bytes'] / 1e9:.2f} GB, {state} cache): copy / edit",
                              f"{r['copy_s']:.2f} / {r['edit_s']:.2f}",
                              f"{r['edit_over_copy']:.2f}× copy (rounds "
                              f"{', '.join(f'{v:.2f}' for v in r['edit_over_copy_per_round'])})")
    Console().print(table)
    print("goals:", result["goals"], "valid:", result["valid"], file=sys.stderr)
    for name, v in result["verdicts"].items():
        if not v["valid"]:
            print(f"{name}: not a valid measurement: {'; '.join(v['reasons'])}", file=sys.stderr)


if __name__ == "__main__":
    main()
