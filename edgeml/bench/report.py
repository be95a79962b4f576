"""`edgeml report`: bench results side by side as Markdown and one self-contained HTML page.

The HTML carries its plots inline (matplotlib SVG), its CSS inline and no script, so it opens from disk or an
e-mail attachment. The Markdown links the same plots, written as SVG files beside it.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeml.bench.run import ESTIMATED_LABEL, load_results
from edgeml.io import write_text

SPLIT_KEYS = ("decode", "kernels", "model", "other")


# ----------------------------------------------------------------------------------------------- figures


def _fmt(x: Any, unit: str = "", digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        x = f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return f"{x}{unit}"


def _ms(seconds: float | None) -> str:
    if seconds is not None and 0 < seconds < 1e-4:
        return _fmt(seconds * 1e6, " µs")
    return _fmt(None if seconds is None else seconds * 1e3, " ms")


def run_names(runs: Sequence[dict]) -> list[str]:
    """Short unique names: 'model · backend · target' (+ ' #n' where two runs share one)."""
    base = [" · ".join(str(x) for x in (r.get("model"), r.get("backend"), r.get("target")) if x) for r in runs]
    out = []
    for i, b in enumerate(base):
        dup = base.count(b) > 1
        out.append(f"{b} #{base[:i + 1].count(b)}" if dup else b)
    return out


def summary_rows(runs: Sequence[dict], names: Sequence[str]) -> list[dict[str, str]]:
    """One row of headline figures per run (strings, ready for Markdown/HTML), speed-ups vs the first run."""
    rows = []
    base = runs[0]["summary"] if runs else {}
    for name, r in zip(names, runs, strict=True):
        s = r["summary"]
        speed = (s["clip_latency_median_s"] and base.get("clip_latency_median_s")
                 and base["clip_latency_median_s"] / s["clip_latency_median_s"])
        rows.append({
            "run": name, "input": r["input"],
            "videos/s (end-to-end)": _fmt(s["videos_per_s"]),
            "video latency (median)": _ms(s["video_latency_median_s"]),
            "clip latency median": _ms(s["clip_latency_median_s"]),
            "clip latency p99": _ms(s["clip_latency_p99_s"]),
            "clips/s (best batch)": _fmt(s["clips_per_s_best"]),
            f"speed-up vs {names[0]}": _fmt(speed, "×") if speed else "–",
            "videos/s on Ray": _ray_rate(r),
            "J/video": _fmt(s["joules_per_video"]),
            "energy": s["energy_label"],
            "front end / video": _front_end(r),
            "accuracy": _fmt(None if s["accuracy"] is None else 100 * s["accuracy"], " %"),
        })
    return rows


def _ray_rate(r: dict) -> str:
    """Aggregate videos/s of the Ray fan-out and its ratio to the single process, or '–'."""
    ray = r.get("ray")
    if not ray:
        return "–"
    return (f"{_fmt(ray['videos_per_s'])} ({ray['workers']} workers, {_fmt(ray['speedup_vs_single_process'])}× "
            "one process)")


def _front_end(r: dict) -> str:
    """The front end's share of the energy column: inside a measured J/video, or its own measured CPU-seconds."""
    e, fe = r["energy"], r["energy"].get("front_end")
    if e["method"] == "measured" and "end-to-end" in str(e.get("scope", "")):
        return "in J/video (the sensor spans decode + extraction + model)"
    if fe and fe.get("cpu_s_per_video") is not None:
        return f"{_fmt(fe['cpu_s_per_video'])} CPU-s — {fe['label']}"
    return "–"


def front_end_split(e: dict) -> tuple[float, float]:
    """(seconds per video, fraction of the wall time) of the front end: decode + extraction kernels."""
    n = max(e["videos"], 1)
    seconds = e["split_s"]["decode"] + e["split_s"]["kernels"]
    return seconds / n, e["split_fraction"]["decode"] + e["split_fraction"]["kernels"]


def split_rows(runs: Sequence[dict], names: Sequence[str]) -> list[dict[str, str]]:
    """Pipeline split per video for runs with an end-to-end part: the front end (decode + extraction) against the
    model, then each part (decode, kernels, model, other)."""
    rows = []
    for name, r in zip(names, runs, strict=True):
        e = r.get("end_to_end")
        if not e:
            continue
        n = max(e["videos"], 1)
        front, share = front_end_split(e)
        rows.append({"run": name, "videos": str(e["videos"]), "clips": str(e["clips"]),
                     "decode + extraction / video": f"{_ms(front)} ({100 * share:.0f} %)",
                     **{f"{k} / video": f"{_ms(e['split_s'][k] / n)} ({100 * e['split_fraction'][k]:.0f} %)"
                        for k in SPLIT_KEYS}})
    return rows


def batch_rows(runs: Sequence[dict], names: Sequence[str]) -> list[dict[str, str]]:
    """Model-only latency and throughput at every batch size of every run."""
    rows = []
    for name, r in zip(names, runs, strict=True):
        for b in r["model_only"]["batches"]:
            if "error" in b:
                rows.append({"run": name, "batch": str(b["batch"]), "median": "–", "p90": "–", "p99": "–",
                             "clips/s": "–", "note": b["error"]})
            else:
                rows.append({"run": name, "batch": str(b["batch"]), "median": _ms(b["median_s"]),
                             "p90": _ms(b["p90_s"]), "p99": _ms(b["p99_s"]), "clips/s": _fmt(b["items_per_s"]),
                             "note": f"{b['repeats']} runs after {b['warmup']} warm-up"})
    return rows


def energy_notes(runs: Sequence[dict], names: Sequence[str]) -> list[str]:
    """How each energy figure was obtained (sensor and scope, or the estimate's table)."""
    notes = []
    for name, r in zip(names, runs, strict=True):
        e = r["energy"]
        if e["method"] == "estimated":
            est = e.get("estimate", {})
            table = est.get("table")
            what = (f"{ESTIMATED_LABEL}: {_fmt(est.get('macs'))} MACs + {_fmt(est.get('acs'))} ACs per clip, "
                    f"energy table {table} ({est.get('pj_per_mac')} pJ/MAC, {est.get('pj_per_ac')} pJ/AC), "
                    f"weights: {est.get('weights')}" if est.get("joules") is not None
                    else est.get("error", "no estimate"))
        else:
            what = f"{e['label']}, {e.get('scope', '')}"
        if e.get("front_end"):
            what += (f"; beside it, the front end (decode + extraction): {_fmt(e['front_end']['cpu_s_per_video'])} "
                     f"CPU-s per video, {e['front_end']['label']}")
        if e.get("problems"):
            what += f" (sensors found but unusable: {'; '.join(e['problems'])})"
        notes.append(f"{name}: {what}")
    return notes


def _plots(runs: Sequence[dict], names: Sequence[str]) -> dict[str, str]:
    """{plot id: SVG text}: latency distributions, throughput vs batch, energy per video, accuracy vs cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    colors = [f"C{i % 10}" for i in range(len(runs))]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    lat = [[x * 1e3 for x in _first_ok(r)["samples_s"]] if _first_ok(r) else [math.nan] for r in runs]
    axes[0].boxplot(lat, orientation="horizontal", tick_labels=names, showfliers=True)
    axes[0].set_xscale("log")  # backends differ by orders of magnitude
    axes[0].set_xlabel("model-only latency per call at the smallest batch [ms]")
    e2e = [(n, [x * 1e3 for x in r["end_to_end"]["latency"]["samples_s"]]) for n, r in zip(names, runs, strict=True)
           if r.get("end_to_end")]
    if e2e:
        axes[1].boxplot([v for _, v in e2e], orientation="horizontal", tick_labels=[n for n, _ in e2e])
        axes[1].set_xscale("log")
        axes[1].set_xlabel("end-to-end latency per video [ms]")
    else:
        _empty(axes[1], "no end-to-end runs (random inputs)")
    figs["latency"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, r, c in zip(names, runs, colors, strict=True):
        ok = [b for b in r["model_only"]["batches"] if "items_per_s" in b]
        ax.plot([b["batch"] for b in ok], [b["items_per_s"] for b in ok], "o-", color=c, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("clips/s (model only)")
    ax.legend(fontsize=7)
    figs["throughput"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.6))
    vals = [1e3 * (r["energy"]["joules_per_video"] or 0.0) for r in runs]
    bars = ax.barh(names, vals, color=colors)
    ax.set_xlim(0, 2.0 * max(vals + [1e-9]))  # room for the labels
    for bar, r in zip(bars, runs, strict=True):
        if r["energy"]["method"] == "estimated":
            bar.set_hatch("//")
            bar.set_alpha(0.6)
        ax.annotate(r["energy"]["label"], (bar.get_width(), bar.get_y() + bar.get_height() / 2), fontsize=7,
                    xytext=(3, 0), textcoords="offset points", va="center")
    ax.set_xlabel("energy per video [mJ]  (hatched: estimated)")
    figs["energy"] = fig

    fig, ax = plt.subplots(figsize=(6, 3.6))
    pts = [(n, r["summary"]["accuracy"], r["summary"]["joules_per_video"], r["summary"]["clip_latency_median_s"])
           for n, r in zip(names, runs, strict=True) if r["summary"]["accuracy"] is not None]
    if pts:
        use_energy = all(p[2] for p in pts)
        for (n, acc, j, lat_s), c in zip(pts, colors, strict=False):
            x = 1e3 * j if use_energy else lat_s * 1e3
            ax.scatter([x], [100 * acc], color=c)
            ax.annotate(n, (x, 100 * acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("energy per video [mJ]" if use_energy else "clip latency [ms]")
        ax.set_ylabel("top-1 accuracy [%]")
    else:
        _empty(ax, "no accuracy: no run used labelled videos (--input data)")
    figs["accuracy"] = fig

    split = [(n, r["end_to_end"]) for n, r in zip(names, runs, strict=True) if r.get("end_to_end")]
    if split:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        left = [0.0] * len(split)
        for k in SPLIT_KEYS:
            v = [e["split_s"][k] / max(e["videos"], 1) * 1e3 for _, e in split]
            ax.barh([n for n, _ in split], v, left=left, label=k)
            left = [a + b for a, b in zip(left, v, strict=True)]
        ax.set_xlabel("time per video [ms]")
        ax.legend(fontsize=7)
        figs["split"] = fig

    out = {}
    for i, (key, f) in enumerate(figs.items()):
        f.tight_layout()
        with matplotlib.rc_context({"svg.hashsalt": f"edgeml-{key}-{i}", "svg.fonttype": "path"}):
            buf = io.StringIO()
            f.savefig(buf, format="svg")
        plt.close(f)
        text = buf.getvalue()
        out[key] = text[text.index("<svg"):]  # drop the XML prolog/doctype: the SVG is inlined in HTML
    return out


def _first_ok(r: dict) -> dict | None:
    return next((b for b in r["model_only"]["batches"] if b.get("samples_s")), None)


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_axis_off()


PLOT_TITLES = {"latency": "Latency distributions", "throughput": "Throughput vs batch size",
               "energy": "Energy per video per backend", "accuracy": "Accuracy vs cost",
               "split": "Pipeline split (end-to-end)"}


# ----------------------------------------------------------------------------------------------- writers


def _md_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _html_table(rows: list[dict[str, str]], table_id: str) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _environment_rows(runs: Sequence[dict], names: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for name, r in zip(names, runs, strict=True):
        env = r.get("environment", {})
        rows.append({"run": name, "created": str(r.get("created", "")), "machine": str(env.get("machine", "")),
                     "CPUs": str(env.get("cpu_count", "")),
                     "threads": str(env.get("torch_threads", "")),
                     "pinned": "yes" if env.get("pinned") else "no",
                     "load (1 min)": _fmt(env.get("load_avg_1m")), "weights": str(r.get("weights", ""))})
    return rows


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}figure{margin:1.5em 0}figure svg{max-width:100%;height:auto}.note{color:#555;font-size:13px}"""


def write_report(results: Sequence[str | Path], out: str | Path) -> dict[str, Path]:
    """Read bench results (schema-checked) and write `out/report.md`, `out/index.html` and `out/plots/*.svg`."""
    from edgeml.errors import InputError
    from edgeml.paths import refuse_overwrite

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("--out is a file; the report is a folder", path=out, fix="pass a folder path")
    refuse_overwrite(out / "report.md", results)
    refuse_overwrite(out / "index.html", results)
    runs = [load_results(p) for p in results]
    if not runs:
        raise InputError("no results files given", fix="pass one or more JSON files from `edgeml bench --out`")
    names = run_names(runs)
    plots = _plots(runs, names)
    for key, svg in plots.items():
        write_text(out / "plots" / f"{key}.svg", svg)
    sections = [("Summary", "summary", summary_rows(runs, names)),
                ("Pipeline split", "split", split_rows(runs, names)),
                ("Model-only latency by batch size", "batches", batch_rows(runs, names)),
                ("Environment", "environment", _environment_rows(runs, names))]
    notes = energy_notes(runs, names)
    sources = [str(p) for p in results]

    md = ["# edgeml benchmark report", "", f"Runs: {len(runs)} ({', '.join(sources)})", ""]
    for title, _, rows in sections:
        md += [f"## {title}", "", _md_table(rows)]
    md += ["## Energy", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Plots", ""] + [f"![{PLOT_TITLES[k]}](plots/{k}.svg)" for k in plots] + [""]
    write_text(out / "report.md", "\n".join(md))

    body = [f"<h1>edgeml benchmark report</h1><p class='note'>Runs: {len(runs)} — "
            f"{html.escape(', '.join(sources))}</p>"]
    for title, tid, rows in sections:
        body.append(f"<h2>{html.escape(title)}</h2>{_html_table(rows, tid)}")
    body.append("<h2>Energy</h2><ul id='energy-notes'>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                + "</ul>")
    body.append("<h2>Plots</h2>")
    for key, svg in plots.items():
        body.append(f'<figure id="plot-{key}" class="plot"><figcaption>{PLOT_TITLES[key]}</figcaption>{svg}</figure>')
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>edgeml benchmark report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
    write_text(out / "index.html", page)
    return {"markdown": out / "report.md", "html": out / "index.html"}


def print_summary(r: dict) -> None:
    """A rich table of one bench run: throughput, latency percentiles, energy (with its label), split."""
    from rich.console import Console
    from rich.table import Table

    s = r["summary"]
    t = Table(title=f"edgeml bench — {' · '.join(str(x) for x in (r['model'], r['backend'], r['target']) if x)}",
              show_header=False)
    if r.get("end_to_end"):
        e = r["end_to_end"]
        t.add_row("videos/s (end-to-end)", f"{_fmt(s['videos_per_s'])}  ({e['videos']} videos, {e['clips']} clips)")
        lat = e["latency"]
        t.add_row("latency / video", f"median {_ms(lat['median_s'])}, p90 {_ms(lat['p90_s'])}, "
                  f"p99 {_ms(lat['p99_s'])}")
        n = max(e["videos"], 1)
        front, share = front_end_split(e)
        t.add_row("decode + extraction / video", f"{_ms(front)} ({100 * share:.0f} %) vs model "
                  f"{_ms(e['split_s']['model'] / n)} ({100 * e['split_fraction']['model']:.0f} %)")
        t.add_row("pipeline split / video", ", ".join(f"{k} {_ms(e['split_s'][k] / n)} "
                                                      f"({100 * e['split_fraction'][k]:.0f} %)" for k in SPLIT_KEYS))
    if r.get("ray"):
        ray = r["ray"]
        t.add_row("videos/s on Ray", f"{_fmt(ray['videos_per_s'])} with {ray['workers']} workers x "
                  f"{ray['threads_per_worker']} thread(s) = {_fmt(ray['speedup_vs_single_process'])}× the single "
                  f"process ({_fmt(ray['single_process_videos_per_s'])} videos/s)")
    for b in r["model_only"]["batches"]:
        if "error" in b:
            t.add_row(f"model-only batch {b['batch']}", f"not run: {b['error']}")
        else:
            t.add_row(f"model-only batch {b['batch']}", f"median {_ms(b['median_s'])}, p90 {_ms(b['p90_s'])}, "
                      f"p99 {_ms(b['p99_s'])}, {_fmt(b['items_per_s'])} clips/s")
    scope = str(r["energy"].get("scope", "")).split(";")[0].split(", ")[0]  # e.g. "model only (op count x ...)"
    t.add_row("energy / video", f"{_fmt(s['joules_per_video'])} J — {s['energy_label']}" + (f", {scope}" if scope
                                                                                             else ""))
    if r["energy"].get("front_end"):
        fe = r["energy"]["front_end"]
        t.add_row("front end / video", f"{_fmt(fe['cpu_s_per_video'])} CPU-s — {fe['label']}")
    est = r["energy"].get("estimate", {})
    if r["energy"]["method"] == "estimated" and est.get("table") is not None:
        t.add_row("energy table", f"{est['table']}: {est['pj_per_mac']} pJ/MAC, {est['pj_per_ac']} pJ/AC "
                  f"({_fmt(est['macs'])} MACs + {_fmt(est['acs'])} ACs per clip)")
    if s["accuracy"] is not None:
        t.add_row("accuracy", f"{100 * s['accuracy']:.1f} % of {r['accuracy']['videos']} videos")
    env = r["environment"]
    t.add_row("threads / pinning", f"torch {env.get('torch_threads')}, affinity {env.get('affinity')}")
    Console().print(t)
