"""Regenerate the README's results tables from `benchmarks/results/*.json` (what the benchmark scripts write).

    .venv/bin/python benchmarks/readme_tables.py            # rewrite README.md between the results markers
    .venv/bin/python benchmarks/readme_tables.py --check    # exit 1 if README.md is out of date

Only the text between `<!-- results:begin -->` and `<!-- results:end -->` is replaced, so every number there
comes from a results file, and so from the script that wrote it. A results file with an entry in `CLAIMS` becomes
one short table (claim, goal, measured, verdict, same-run baseline); any other file is shown generically, tables
wider than ten columns left to the JSON. Generic results files may be:
- a table: {"title", "columns": [...], "rows": [[...], ...], "notes"?, "script"?} (or that under "table",
  or a list of them under "tables");
- records: {"title"?, "rows": [{column: value, ...}, ...]};
- an `edgeml bench --out` file (schema "edgeml.bench"): one summary row;
- anything else: its scalar fields as a two-column table, and each list of records (or dict of records, keyed by
  name) as a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SMALL_DICT = 6  # flat dicts up to this many fields are shown as rows of their parent table


def fmt(v: Any) -> str:
    """A cell: floats to 3 significant digits (thousands separated), None/NaN as '–'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    if isinstance(v, int) and abs(v) >= 10000:
        return f"{v:,}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (list, tuple)) for x in v):
        return f"({len(v)}×{len(v[0])} matrix, see JSON)"
    if isinstance(v, (list, tuple)):
        return "×".join(fmt(x) for x in v) if all(isinstance(x, (int, float)) for x in v) else ", ".join(map(fmt, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(map(fmt, columns)) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _flatten(record: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested measurements become their own columns."""
    out = {}
    for k, v in record.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            continue  # per-epoch / per-sample logs stay in the JSON; a table cell cannot show them
        if isinstance(v, dict) and not v:
            continue  # nothing measured (e.g. no spiking layers): the other rows' flattened columns show '–'
        if isinstance(v, dict) and v and all(not isinstance(x, (dict, list)) for x in v.values()) and \
                len(v) <= 8:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _records(rows: list[dict]) -> tuple[list[str], list[list[Any]]]:
    rows = [_flatten(r) for r in rows]
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols, [[r.get(c) for c in cols] for r in rows]


def _bench_row(r: dict) -> tuple[list[str], list[list[Any]]]:
    s = r["summary"]
    cols = ["model", "backend", "target", "input", "videos/s", "clip latency median [ms]", "clip latency p99 [ms]",
            "J/video", "energy", "accuracy [%]"]
    ms = [None if s[k] is None else 1e3 * s[k] for k in ("clip_latency_median_s", "clip_latency_p99_s")]
    return cols, [[r.get("model"), r.get("backend"), r.get("target"), r.get("input"), s["videos_per_s"], *ms,
                   s["joules_per_video"], s["energy_label"],
                   None if s["accuracy"] is None else 100 * s["accuracy"]]]


def tables_of(name: str, data: Any) -> list[tuple[str, list[str], list[list[Any]], str | None]]:
    """(title, columns, rows, notes) for every table one results file holds."""
    if isinstance(data, dict) and data.get("schema") == "edgeml.bench":
        cols, rows = _bench_row(data)
        return [(f"{name}: {data.get('model')} on {data.get('backend')}", cols, rows, None)]
    if isinstance(data, dict) and isinstance(data.get("tables"), list):
        return [t for i, d in enumerate(data["tables"]) for t in tables_of(f"{name} ({i + 1})", d)]
    if isinstance(data, dict) and isinstance(data.get("table"), dict):
        return tables_of(name, {**data["table"], "notes": data["table"].get("notes", data.get("notes"))})
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        title = data.get("title", name)
        if data.get("columns"):
            return [(title, list(data["columns"]), [list(r) for r in data["rows"]], data.get("notes"))]
        if all(isinstance(r, dict) for r in data["rows"]):  # the records, then the file's other fields (ratios, goals)
            rest = {k: v for k, v in data.items() if k not in ("rows", "title", "notes")}
            return [(title, *_records(data["rows"]), data.get("notes")), *tables_of(name, rest)]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [(name, *_records(data), None)]
    if isinstance(data, dict):
        # scalars and small flat dicts (goals, machine) as quantity/value rows; big flat dicts (a model config)
        # are settings, not results, and stay in the JSON; lists of records become their own tables
        scalars = []
        for k, v in data.items():
            if k in ("title", "notes"):
                continue
            if not isinstance(v, (dict, list)):
                scalars.append([k, v])
            elif isinstance(v, dict) and 0 < len(v) <= SMALL_DICT and all(
                    not isinstance(x, (dict, list)) for x in v.values()):
                scalars += [[f"{k}.{a}", b] for a, b in v.items()]
        out = [(data.get("title", name), ["quantity", "value"], scalars, data.get("notes"))] if scalars else []
        for k, v in data.items():
            if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
                out.append((f"{name}: {k}", *_records(v), None))
            elif isinstance(v, dict) and len(v) > 1 and all(isinstance(r, dict) for r in v.values()):
                out.append((f"{name}: {k}", *_records([{k: key, **r} for key, r in v.items()]), None))
        return out
    return []


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _ms(v: float | None) -> str:
    return "–" if v is None else (f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms")


def _caveat(valid: bool) -> str | None:
    """The verdict's note for a run the benchmark judged invalid (None for a valid one)."""
    return None if valid else "invalid run: machine busy or rounds disagree"


def _verdict(ok: bool | None, caveat: str | None = None) -> str:
    text = "–" if ok is None else ("met" if ok else "missed")
    return f"{text} ({caveat})" if caveat else text


def _cure_eval(d: dict) -> list[list[Any]]:
    rows = []
    by = {(r["concept"], r["method"].split(" ")[0]): r for r in d["rows"]}
    for (concept, method), r in by.items():
        if method != "cure":
            continue
        orig, uce = by.get((concept, "none")), by.get((concept, "uce"))
        rows.append([f"CURE erases '{concept}' ({r['attribute']})", f"judge accuracy ≤ chance + 0.10 "
                     f"({r['chance'] + 0.10:.2f})", f"{r['erased']:.3f} (before: {orig['erased']:.3f})" if orig
                     else f"{r['erased']:.3f}", _verdict(r["erased_goal_met"]),
                     f"UCE {uce['erased']:.3f}" if uce else "–"])
        rows.append([f"… and keeps unrelated prompts ('{concept}')", "unrelated accuracy drop ≤ 0.05",
                     f"{r['unrelated_drop']:+.3f}", _verdict(r["unrelated_goal_met"]),
                     f"UCE {uce['unrelated_drop']:+.3f}" if uce and "unrelated_drop" in uce else "–"])
    return rows + _cure_ablation(d)


def _cure_ablation(d: dict) -> list[list[Any]]:
    """The α ablation (issue 22): judge accuracy on erased prompts per α, the paper's aggregation beside the
    recommended one, UCE and the unedited model as baselines, and where the concept lives in the token states."""
    rows, st = [], d.get("ablation_settings", {})
    by = d.get("ablation", [])
    scope = f"n={st.get('n')} images per prompt" + (", reduced" if st.get("reduced") else "") + (
        "" if d.get("ablation_complete", True) else "; run incomplete")
    for concept in dict.fromkeys(r["concept"] for r in by):
        mine = [r for r in by if r["concept"] == concept]
        base = next((r for r in mine if r["method"] == "none"), None)
        uce = next((r for r in mine if r["method"] == "uce"), None)
        chance = mine[0]["chance"]
        baseline = ", ".join([f"unedited {base['erased']:.2f}"] * bool(base) + [f"UCE {uce['erased']:.2f}"] * bool(uce))
        for setting in ("paper", "recommended"):
            cells = sorted((r for r in mine if r.get("setting") == setting), key=lambda r: r["alpha"])
            if not cells:
                continue
            rows.append([f"CURE α ablation, '{concept}', {setting} aggregation ({cells[0]['aggregation']}; {scope})",
                         f"comparison, no goal (erased accuracy; chance {chance:.2f})",
                         " / ".join(f"α={r['alpha']:g} {r['erased']:.2f}" for r in cells), "–", baseline or "–"])
        where = d.get("concept_location", {}).get(concept)
        if where:
            rows.append([f"where '{concept}' lives: share of token energy inside the forget subspace",
                         "comparison, no goal (concept token vs the other tokens)",
                         "; ".join(f"{agg} {v['concept_token']:.2f} vs {v['other_tokens']:.2f}"
                                   for agg, v in where.items()), "–", "–"])
    return rows


def _cure_speed(d: dict) -> list[list[Any]]:
    g = d.get("goals", {})
    if "valid" not in d:  # written before the benchmark interleaved its rounds
        return [["CURE edits a UNet's 32 K/V projections in memory", "≤ 0.25 s", f"{d['in_memory_edit_s']:.3g} s",
                 _verdict(g.get("in_memory_edit_s<=0.25")), f"dense edit {d['dense_edit_s']:.3g} s"],
                ["CURE edits a 3.4 GB ONNX model on disk", "≤ 1.5× a plain file copy", _x(d["onnx_edit_over_copy"]),
                 _verdict(g.get("onnx_edit<=1.5x_copy"), "not reproduced on a clean clone; being re-measured"),
                 f"copy {d['onnx_copy_s']:.3g} s"]]
    # Each part is judged on its own (its own rounds): a part's row shows its own verdict.
    part_ok = {k: v["valid"] for k, v in d.get("verdicts", {}).items()}
    part_ok.update({k: d[k]["verdict"]["valid"] for k in ("onnx", "onnx_sdxl") if k in d})

    def judged(key: str, part: str) -> str:
        ok = part_ok.get(part, d["valid"])
        return _verdict(g.get(key) if ok else None, _caveat(ok))

    def onnx_row(name: str, part: str, key: str) -> list[Any]:
        med = d[part]["verdict"]["medians"]
        ratios = {state: med[f"edit/{state}"] / med[f"copy/{state}"] for state in ("warm", "cold")}
        return [f"CURE edits {name} ONNX on disk ({d[part]['bytes'] / 1e9:.1f} GB)", "≤ 1.5× a plain file copy, "
                "warm and cold page cache", f"{_x(ratios['warm'])} warm, {_x(ratios['cold'])} cold",
                judged(key, part), f"copy {med['copy/warm']:.3g} s warm"]

    many = d["many"]
    return [["CURE edits SD-1.5's 32 K/V projections in memory", "≤ 0.25 s", f"{d['in_memory_edit_s']:.3g} s",
             judged("in_memory_edit_s<=0.25", "in_memory"), f"dense edit {d['dense_edit_s']:.3g} s"],
            ["CURE edits SDXL's 140 K/V projections in memory", "≤ 0.25 s", f"{d['sdxl']['in_memory_edit_s']:.3g} s",
             judged("sdxl_in_memory_edit_s<=0.25", "in_memory"),
             f"one read + write of the weights {d['sdxl']['read_write_floor_s']:.3g} s"],
            onnx_row("an SD-1.5-shaped", "onnx", "onnx_edit<=1.5x_copy_every_state"),
            onnx_row("an SDXL-shaped fp16", "onnx_sdxl", "sdxl_onnx_edit<=1.5x_copy_every_state"),
            [f"projector for {many['concepts']} concepts × {many['templates']} templates", "≤ 1 s (text encoding "
             "apart)", f"{many['projector_768_s']:.2f} s (768) / {many['projector_2048_s']:.2f} s (2048)",
             judged("projector_100x5_s<=1", "projector"), f"text encoding {many['text_encoding_s']:.1f} s"]]


def _export_latency(d: dict) -> list[list[Any]]:
    b, g = d["backends"], d.get("goals", {})
    ok = d.get("valid", True)  # files written before the benchmark judged its runs carry no flag
    caveat = _caveat(ok)
    tvm = "TVM from the shipped tuning records" if "tuner_ran" in d else "TVM (MetaSchedule-tuned)"
    rows = [["ONNX Runtime beats PyTorch eager (video_spiking, batch 1)", "≥ 2× eager",
             _x(b["ort"]["speedup_vs_eager"]), _verdict(g.get("ort_ge_2x_eager") if ok else None, caveat),
             f"eager {_ms(b['torch']['median_ms'])}"],
            [f"{tvm} keeps up with ORT", "≤ 1.2× ORT latency", _x(d.get("tvm_vs_ort")),
             _verdict(g.get("tvm_within_1_2x_ort") if ok else None, caveat), f"ORT {_ms(b['ort']['median_ms'])}"]]
    if "ort-int8" in b:
        ratio = b["ort-int8"]["median_ms"] / b["ort"]["median_ms"]
        rows.append(["int8 (QDQ) on x86 ONNX Runtime", "faster than fp32", _x(ratio) + " fp32 latency",
                     _verdict(ratio < 1.0 if ok else None, caveat or (None if ratio < 1.0 else "use fp32 on x86")),
                     f"fp32 {_ms(b['ort']['median_ms'])}"])
    return rows


def _lls_fashion_mnist(d: dict) -> list[list[Any]]:
    acc = {r["mode"]: r["test_accuracy"] for r in d["results"]}
    g = d["goals"]
    return [["LLS trains SmallConv on Fashion-MNIST close to backprop", "gap ≤ 1.5 points",
             f"LLS {acc['lls']:.2f} %, gap {g['accuracy_gap_points']:.2f}",
             _verdict(g["lls_within_1.5_points_of_bp"]),
             f"BP {acc['bp']:.2f} %"],
            ["LLS needs less training memory", "BP / LLS ≥ 1.5×", _x(g["memory_ratio"]),
             _verdict(g["lls_memory_ratio_at_least_1.5"]), "BP, same run"]] + _lls_table1(d)


def _lls_table1(d: dict) -> list[list[Any]]:
    """The paper's Table 1 (basis waveforms x LLS modes, Fashion-MNIST): one row per net and mode."""
    rows = []
    for net, t in d.get("table1", {}).items():
        acc = {r["key"]: r["test_accuracy"] for r in t["rows"]}
        budget = (f"{t['epochs']} epoch(s) on {t['train_images']:,} images, tested on {t['test_images']:,}; paper "
                  f"{t['paper_epochs']} epochs on 60,000")
        for mode, label in (("lls", "LLS"), ("lls_m", "LLS-M"), ("lls_mxm", "LLS-MxM")):
            waves = [w for w in t["waveforms"] if f"{mode}-{w}" in acc]
            if not waves:
                continue
            rows.append([f"Table 1: {net.removeprefix('lls_')} {label} by basis waveform ({budget})",
                         "comparison, no goal",
                         " / ".join(f"{w} {acc[f'{mode}-{w}']:.2f}" for w in waves) + " %", "–",
                         f"BP {acc['bp']:.2f} %" if "bp" in acc else "–"])
    return rows


def _lls_device(d: dict) -> list[list[Any]]:
    if "valid" not in d:  # written before the benchmark judged its own runs
        caveat = "run not judged valid: no load record; a quiet rerun contradicts it"
        return [row for r in d["cost"] for row in (
            [f"C++ engine step ({r['net']}, {r['trained']})", "≤ 1.0× PyTorch LLS step",
             _x(r["ratio_latency_cpp_vs_torch_lls"]), _verdict(None, caveat),
             f"PyTorch LLS {_ms(r['torch_lls']['step_ms_median'])}"],
            [f"C++ engine peak memory ({r['net']}, {r['trained']})", "≤ 0.15× PyTorch BP",
             _x(r["ratio_peak_cpp_vs_bp"]), _verdict(r["ratio_peak_cpp_vs_bp"] <= 0.15),
             f"PyTorch BP {r['torch_bp']['peak_rss_kb'] / 1024:.0f} MB"])]
    rows = []
    for r in d["cost"]:
        med = r["step_ms_median"]
        caveat = None if r["valid"] else "invalid run: " + "; ".join(r["reasons"])
        for key in sorted(k for k in r if k.startswith("ratio_latency_cpp_vs_torch_lls@")):
            threads = key.split("@")[1]
            rows.append([f"C++ engine step ({r['net']}, {r['trained']}, {threads} thread(s))",
                         "≤ 1.0× PyTorch LLS step", _x(r[key]), _verdict(r[key] <= 1.0 if r["valid"] else None,
                                                                         caveat),
                         f"PyTorch LLS {_ms(med[f'torch_lls@{threads}'])}"])
        rows.append([f"C++ engine peak memory ({r['net']}, {r['trained']})", "≤ 0.15× PyTorch BP",
                     _x(r["ratio_peak_cpp_vs_bp"]), _verdict(r["ratio_peak_cpp_vs_bp"] <= 0.15),
                     f"PyTorch BP {r['peak_rss_kb']['torch_bp@1'] / 1024:.0f} MB"])
        if "ratio_latency_cpp_int8_vs_cpp@1" in r:
            rows.append([f"frozen blocks in int8 (gemmlowp) vs float32 ({r['net']}, {r['trained']})",
                         "comparison, no goal (opt-in: --frozen-compute int8)",
                         " / ".join(f"{_x(r[f'ratio_latency_cpp_int8_vs_cpp@{t}'])} step @{t}" for t in (1, 2)
                                    if f"ratio_latency_cpp_int8_vs_cpp@{t}" in r)
                         + f", {_x(r['ratio_peak_cpp_int8_vs_cpp@1'])} peak", "–" if r["valid"] else caveat,
                         f"float32 engine {_ms(med['cpp_lls@1'])}"])
    return rows


def _lls_macs(d: dict) -> list[list[Any]]:
    return [[f"MACs to deliver the learning signal, LLS vs backprop ({r['net']}, {r['input']}; the whole training "
             "step is in lls_fashion_mnist)", "paper: up to 300× fewer MACs",
             f"{r['bp_over_lls_total']:,.0f}× fewer in total (per block up to {r['bp_over_lls_max_block']:,.0f}×)",
             _verdict(r["bp_over_lls_total"] >= 300), f"BP {r['total']['bp']:,} MACs/sample"] for r in d["rows"]]


def _scale_out(d: dict) -> list[list[Any]]:
    ok, g, q, med = d["valid"], d["goals"], d["ratios"], d["medians_videos_per_s"]
    caveat = _caveat(ok)
    rows = [["Ray scales the dataset build from 1 to 2 workers (2 cores)", "≥ 1.6×", _x(q["ray2_over_ray1"]),
             _verdict(g["ray2_ge_1.6x_ray1"] if ok else None, caveat),
             f"local pool {_x(q['local2_over_local1'])}"]]
    for n in (1, 2):
        rows.append([f"Ray's overhead over the local process pool, {n} worker(s)", "≤ +15 %",
                     f"{100 * (q[f'local{n}_over_ray{n}'] - 1):+.1f} %",
                     _verdict(g[f"ray_overhead_le_15pct_at_{n}"] if ok else None, caveat),
                     f"local@{n} {med[f'local@{n}']:.1f} videos/s"])
    if "first_pass_s" in d:
        first = d["first_pass_s"]["ray@1"]
        rows.append(["Ray worker start-up: a build's first pass on a fresh instance, 1 worker (once per build and "
                     "node; the rows above are warm)", "comparison, no goal",
                     f"{first - d['settings']['videos'] / med['ray@1']:+.2f} s", "–",
                     f"first pass {first:.2f} s"])
    rows.append(["`edgeml bench --engine ray` (2 workers) vs one process", "comparison, no goal",
                 _x(q["bench_ray2_over_single"]), "–", f"one process {med['bench@1']:.1f} videos/s"])
    return rows


def _video_extract(d: dict) -> list[list[Any]]:
    g = d["goal"]
    if "ratios" not in d["results"][0]:  # written before model-resolution extraction
        return [[f"full extraction of {r['video']}", f"≤ {g['full_vs_plain_max']}× plain decode",
                 _x(r["full_vs_plain"]), _verdict(r["full_vs_plain"] <= g["full_vs_plain_max"]),
                 f"plain decode {r['fps']['plain_decode']:,.0f} fps"] for r in d["results"]]
    checks = [("extract64_vs_mv_export", "model inputs at 64×64", g["extract_vs_mv_export_max"],
               "PyAV decode + MV export"),
              ("extract224_vs_mv_export", "model inputs at 224×224", g["extract_vs_mv_export_max"],
               "PyAV decode + MV export"),
              ("extract64_vs_mvextractor_frames", "model inputs at 64×64", g["extract_vs_mvextractor_frames_max"],
               "mv-extractor frames + MVs"),
              ("extract224_vs_mvextractor_frames", "model inputs at 224×224", g["extract_vs_mvextractor_frames_max"],
               "mv-extractor frames + MVs"),
              ("mv_only_vs_mvextractor_mv_only", "MV-only decoding", g["mv_only_vs_mvextractor_mv_only_max"],
               "mv-extractor MV-only")]
    rows = []
    for r in d["results"]:
        ok = r["verdict"]["valid"]
        caveat = _caveat(ok)
        for key, what, limit, peer in checks:
            rows.append([f"{what}, {r['video']}", f"≤ {limit}× {peer}", _x(r["ratios"][key]),
                         _verdict(r["ratios"][key] <= limit if ok else None, caveat), peer])
    return rows


def _video_scale(d: dict) -> list[list[Any]]:
    ok, q = d["valid"], d["ratios"]
    caveat = _caveat(ok)
    px = q["px"]
    speed = {(r["model"], r["precision"]): r["videos_per_s"] for r in d["rows"] if r["px"] == px}
    names = {"r2plus1d_18": "R(2+1)D-18", "x3d_s": "X3D-S", "mobilenet_v2_tsm": "MobileNet-V2 TSM"}
    precisions = [p for p in ("fp32", "int8") if p in d["goals"]]
    rows = []
    for base, name in names.items():
        key = f"videos_per_s_vs_{base}"
        goal = d["goals"][precisions[0]][key]["goal"]
        measured = " / ".join(f"{_x(d['goals'][p][key]['measured'])} {p}" for p in precisions)
        met = all(d["goals"][p][key]["met"] for p in precisions)
        rows.append([f"video_spiking at {px} px processes real videos end to end faster than {name} (ORT, batch 1)",
                     goal, measured, _verdict(met if ok else None, caveat),
                     f"{name} " + " / ".join(f"{speed.get((base, p), float('nan')):.2f} {p}" for p in precisions)
                     + " videos/s"])
    fp32 = q["per_precision"]["fp32"]["r2plus1d_18"]
    macs = d["goals"]["fp32"]["macs_fewer_vs_r2plus1d_18"]
    rows.append([f"… with fewer MACs than R(2+1)D-18 ({px} px)", macs["goal"], _x(macs["measured"]),
                 _verdict(macs["met"]), "–"])
    rows.append([f"paper's headline ratios (56× speed, 330× cost) vs R(2+1)D-18 here, {px} px", "comparison, no goal",
                 f"{_x(fp32['videos_per_s_x'])} speed, {_x(fp32['model_energy_lower_x'])} estimated model energy",
                 "–", "random weights, CPU, estimated energy"])
    return rows


def _video_scale_accuracy(d: dict) -> list[list[Any]]:
    (spk, a), (base, b) = list(d["models"].items())[:2]
    budget = d["budget"]
    what = (f"{budget['per_class']} videos per class at {budget['size'][0]} px, at most {budget['epochs']} epochs / "
            f"{budget['minutes_per_model']:g} min per model")

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    return [[f"{spk} (s112) test top-1 per video on the synth set ({what}; {a['epochs_done']} epochs run)",
             "comparison, no goal", f"{pct(a['test_video_top1'])} (per clip {pct(a['test_top1'])})", "–",
             f"{base} {pct(b['test_video_top1'])} (per clip {pct(b['test_top1'])}, {b['epochs_done']} epochs)"]]


def _video_train(d: dict) -> list[list[Any]]:
    spk, rgb = d["rows"][0], d["rows"][1]
    g, q = d["goals"], d["ratios"]
    base = f"{rgb['model']} ({rgb['size']})"
    return [["video_spiking accuracy per video (synth test split)", "≥ the RGB baseline",
             f"{100 * spk['test_video_top1']:.1f} %", _verdict(g["accuracy_equal_or_better_per_video"]),
             f"{base} {100 * rgb['test_video_top1']:.1f} %"],
            ["… per clip", "≥ the RGB baseline", f"{100 * spk['test_top1']:.2f} %",
             _verdict(g["accuracy_equal_or_better_per_clip"]), f"{base} {100 * rgb['test_top1']:.2f} %"],
            ["fewer MACs per clip", "≥ 10×", _x(q["macs_fewer_x"]), _verdict(g["macs_ge_10x_fewer"]),
             f"{base} {rgb['macs_per_clip'] / 1e6:.0f} M MACs"],
            ["more clips/s (PyTorch, CPU)", "≥ 5×", _x(q["clips_per_s_faster_x"]), _verdict(g["clips_per_s_ge_5x"]),
             f"{base} {rgb['clips_per_s']:.0f} clips/s"],
            ["trains within 20 min on 2 cores", "≤ 20 min", f"{spk['train_minutes']:.1f} min",
             _verdict(g["spiking_train_le_20_min"]), "–"]] + _shipped_check(d)


def _shipped_check(d: dict) -> list[list[Any]]:
    c = d.get("shipped_check")
    if not c:
        return []
    return [[f"the shipped checkpoint on a clip cache rebuilt with the current front end ({c['date']})",
             "within 0.5 points of the committed accuracy", f"{100 * c['test_top1']:.2f} % per clip, "
             f"{100 * c['test_video_top1']:.1f} % per video", _verdict(c["within_0.5_points"]),
             f"committed {100 * c['committed_top1']:.2f} % / {100 * c['committed_video_top1']:.1f} %"]]


# Per results file: the claims it supports, as rows of claim, goal, measured, verdict, same-run baseline.
CLAIMS = {"cure_eval": _cure_eval, "cure_speed": _cure_speed, "export_latency": _export_latency,
          "lls_device": _lls_device, "lls_fashion_mnist": _lls_fashion_mnist, "lls_macs": _lls_macs,
          "scale_out": _scale_out, "video_extract": _video_extract, "video_scale": _video_scale,
          "video_scale_accuracy": _video_scale_accuracy,
          "video_train": _video_train}
CLAIM_COLUMNS = ["claim", "goal", "measured", "verdict", "same-run baseline"]
MAX_COLUMNS = 10


def render(results_dir: Path) -> str:
    """The Markdown between the markers: one short claims table per results file, sorted by name."""
    files = sorted(results_dir.glob("*.json"))
    if not files:
        return "_No results yet: run the scripts in `benchmarks/`, then `python benchmarks/readme_tables.py`._"
    parts = []
    for f in files:
        data = json.loads(f.read_text())
        script = (data.get("script") if isinstance(data, dict) else None) or f"benchmarks/{f.stem}.py"
        section = [f"#### {f.stem}"]
        if f.stem in CLAIMS:
            section.append(md_table(CLAIM_COLUMNS, CLAIMS[f.stem](data)))
        else:
            for title, cols, rows, notes in tables_of(f.stem, data):
                if len(cols) > MAX_COLUMNS:
                    continue  # too wide to read: it stays in the JSON
                if title != f.stem:
                    section.append(f"**{title}**")
                section.append(md_table(cols, rows) + (f"\n\n{fmt(notes)}" if notes else ""))
        section.append(f"_Source: `{script}` → [`benchmarks/results/{f.name}`](benchmarks/results/{f.name}) "
                       "(every measurement, settings and machine)._")
        parts.append("\n\n".join(section))
    return "\n\n".join(parts)


def update(readme: Path, results_dir: Path) -> tuple[str, str]:
    """(old README text, new README text) with the results block regenerated; markers are added if missing."""
    old = readme.read_text()
    block = f"{BEGIN}\n<!-- generated by benchmarks/readme_tables.py from benchmarks/results/*.json; do not edit -->" \
            f"\n\n{render(results_dir)}\n\n{END}"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + block + tail
    else:
        new = old.rstrip("\n") + "\n\n## Results\n\nMeasured by the scripts in `benchmarks/` (each compares against " \
              "a baseline measured in the same run).\n\n" + block + "\n"
    return old, new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--check", action="store_true", help="exit 1 if the README's tables are out of date")
    args = p.parse_args(argv)
    old, new = update(args.readme, args.results)
    if args.check:
        if old != new:
            print(f"{args.readme}: results tables are out of date; run python benchmarks/readme_tables.py")
            return 1
        print(f"{args.readme}: results tables are up to date")
        return 0
    if old != new:
        from edgeml.io import write_text

        write_text(args.readme, new)
    n = len(sorted(args.results.glob("*.json")))
    print(f"{args.readme}: results section regenerated from {n} results file(s) in {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
