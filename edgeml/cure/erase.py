"""`erase`: the one entry point behind `edgeml cure` — prompts -> edit -> a new model file/folder + JSON report.

Before anything is written: the model's format and K/V weights are checked, the family is detected (context width,
which text encoders exist; `edgeml.cure.families`) and a text encoder whose width is not the UNet's context is
refused. The report lists this edit after the ones an already edited input records (`edits`): edits compose,
W'' = W (I − D₁)(I − D₂).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from edgeml.cure.embed import DEFAULT_TEMPLATES, TextEncoder, concept_embeddings, load_text_encoder, prompt_embeddings
from edgeml.cure.families import check_context, detect_family
from edgeml.cure.spectral import LowRankEdit, discriminative_projector
from edgeml.cure.uce import uce_edit
from edgeml.errors import InputError
from edgeml.io import atomic_dir, remove_stale_temps, write_json
from edgeml.paths import refuse_overwrite

METHODS = ("cure", "uce")
FORMATS = ("onnx", "diffusers", "safetensors")
MAX_CONCEPT_FILE_BYTES = 1 << 20
MAX_CONCEPTS = 10_000
REPORT_KEY = "edgeml.cure.edits"  # ONNX metadata_props key holding the edit history (JSON)


def read_concepts(items: list[str] | None) -> tuple[list[str], list[Path]]:
    """Concepts from `--forget` / `--retain` values: a concept, or a text file of concepts (one a line; blank lines
    and `#` comments skipped) given as `@FILE` or as an existing `*.txt` path; -> (concepts, files read)."""
    concepts: list[str] = []
    files: list[Path] = []
    for item in items or []:
        item = str(item)
        if item.startswith("@") or (item.endswith(".txt") and Path(item).is_file()):
            path = Path(item[1:] if item.startswith("@") else item)
            concepts += _concept_file(path)
            files.append(path)
        else:
            concepts.append(item)
    if len(concepts) > MAX_CONCEPTS:
        raise InputError(f"{len(concepts)} concepts; at most {MAX_CONCEPTS} per edit", fix="split the list")
    return concepts, files


def _concept_file(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("concept file not found", path=path, fix="pass @FILE with one concept per line")
    if path.stat().st_size > MAX_CONCEPT_FILE_BYTES:
        raise InputError(f"concept file is larger than {MAX_CONCEPT_FILE_BYTES >> 20} MB", path=path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("concept file is not UTF-8 text", path=path, fix="one concept per line, UTF-8") from None
    if "\x00" in text:
        raise InputError("concept file holds NUL bytes (not a text file)", path=path)
    lines = [line.strip() for line in text.splitlines()]
    concepts = [line for line in lines if line and not line.startswith("#")]
    if not concepts:
        raise InputError("concept file lists no concept", path=path, fix="one concept per line")
    return concepts


def build_edit(encoder: TextEncoder, forget: list[str], retain: list[str] | None = None, *, method: str = "cure",
               alpha: float = 2.0, templates=DEFAULT_TEMPLATES, aggregation: str | None = None, guide: str = "",
               lam: float = 0.5) -> tuple[LowRankEdit, dict]:
    """Concept prompts -> (the edit D of `W ← W (I − D)`, info for the report incl. its rank and timing)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    forget = list(forget or [])
    if not forget:
        raise InputError("no concept to erase (empty forget list)", fix='pass --forget "concept" at least once')
    retain = list(retain or [])
    aggregation = aggregation or ("mean" if method == "cure" else "last")
    t0 = time.perf_counter()
    xf = concept_embeddings(encoder, forget, templates=templates, aggregation=aggregation)
    xr = concept_embeddings(encoder, retain, templates=templates, aggregation=aggregation) if retain else None
    xg = prompt_embeddings(encoder, [guide], aggregation) if method == "uce" else None
    t_text = time.perf_counter() - t0
    t0 = time.perf_counter()
    edit = discriminative_projector(xf, xr, alpha) if method == "cure" else uce_edit(xf, xg, xr, lam=lam)
    t_proj = time.perf_counter() - t0
    info = {"method": method, "alpha": alpha if method == "cure" else None, "lambda": lam if method == "uce" else None,
            "guide": guide if method == "uce" else None, "forget": forget, "retain": retain,
            "templates": list(templates), "aggregation": aggregation, "forget_rows": int(xf.shape[0]),
            "retain_rows": 0 if xr is None else int(xr.shape[0]), "text_width": edit.width, "rank": edit.rank(),
            "prompts": {"forget": len(forget) * len(templates), "retain": len(retain) * len(templates)},
            "seconds": {"text_encoding": t_text, "projector": t_proj}}
    return edit, info


def detect_format(path: Path) -> str:
    """onnx | diffusers | safetensors from what is at `path`."""
    if path.suffix == ".onnx" or (path.is_dir() and ((path / "model.onnx").is_file()
                                                      or (path / "unet" / "model.onnx").is_file())):
        return "onnx"
    if path.is_dir() and (path / "unet").is_dir():
        return "diffusers"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise InputError("cannot tell the model format", path=path,
                     fix="pass --format onnx|diffusers|safetensors (or a .onnx / .safetensors file / pipeline folder)")


def _default_text_encoder(model: Path, fmt: str, tokenizer: str | Path | None) -> TextEncoder:
    """The text encoder(s) beside a pipeline folder or inside a single-file checkpoint, or edgeml's tiny_t2i encoder
    for a tiny_t2i checkpoint."""
    if fmt in ("diffusers", "onnx") and model.is_dir() and any((model / n).is_dir()
                                                               for n in ("text_encoder", "text_encoder_2")):
        return load_text_encoder(model, tokenizer)
    if fmt == "safetensors":
        from edgeml.cure.apply import read_safetensors_header
        from edgeml.cure.single_file import single_file_text_encoder

        _, meta, _ = read_safetensors_header(model)
        if '"tiny_t2i"' in meta.get("edgeml", ""):
            from edgeml.models.tiny_t2i import MiniLMText  # causal MiniLM: the states the UNet was trained on

            return MiniLMText()
        encoder = single_file_text_encoder(model, tokenizer)
        if encoder is not None:
            return encoder
        raise InputError("the checkpoint holds no text encoder (no cond_stage_model. / conditioner.embedders.N.)",
                         path=model, fix="pass --text-encoder PIPELINE_FOLDER (the diffusers folder of this model)")
    raise InputError("no text encoder found next to the model", path=model,
                     fix="pass --text-encoder DIR_OR_ONNX (the one the UNet was trained with)")


def model_inputs(model: Path, fmt: str, text_input: str | None = None) -> tuple[list[Path], int]:
    """(every file or folder `erase` reads for `model`, the UNet's context width), each format checked
    (safetensors headers, ONNX graph and external-data locations) before anything is written."""
    from edgeml.cure.apply import context_width

    if fmt == "safetensors":
        from edgeml.cure.apply import safetensors_kv_entries

        if not model.is_file():
            raise InputError("a safetensors model must be a file", path=model)
        kv, _ = safetensors_kv_entries(model)
        if not kv:
            raise InputError("no cross-attention K/V weights (keys ending in attn2.to_k.weight / attn2.to_v.weight)",
                             path=model, fix="pass the UNet weights of a text-conditioned diffusion model")
        return [model], context_width([e["shape"] for e in kv.values()], model)
    if fmt == "diffusers":
        from edgeml.cure.apply import safetensors_kv_entries, unet_weight_files

        files = unet_weight_files(model)
        shapes = [e["shape"] for f in files for e in safetensors_kv_entries(f)[0].values()]  # every header checked
        if not shapes:
            raise InputError("the UNet has no cross-attention K/V weights", path=model / "unet")
        return [model, *files], context_width(shapes, model / "unet")
    from edgeml.cure.onnx import onnx_unet_path, plan_onnx_edit

    unet = onnx_unet_path(model)
    graph, data, chosen = plan_onnx_edit(unet, text_input)
    inits = {t.name: t for t in graph.graph.initializer}
    shapes = [list(inits[n].dims)[::-1] if kv.stored_transposed else list(inits[n].dims) for n, kv in chosen.items()]
    return [model, unet, *sorted({d.path for d in data.values()})], context_width(shapes, unet)


def previous_edits(model: Path, fmt: str) -> list[dict]:
    """The edits an already edited input records (its report, or the ONNX graph's metadata); [] when none.

    The report is a file the user may have changed: anything but a list of objects is ignored, never trusted.
    """
    if fmt == "safetensors":
        report = model.with_name(model.stem + ".cure.json")
    elif model.is_dir():
        report = model / "cure_report.json"
    else:
        report = model.parent / "cure_report.json"
    text = None
    if report.is_file() and report.stat().st_size <= MAX_CONCEPT_FILE_BYTES * 16:
        text = report.read_text(errors="replace")
    elif fmt == "onnx":
        from edgeml.cure.onnx import graph_metadata, onnx_unet_path

        text = graph_metadata(onnx_unet_path(model)).get(REPORT_KEY)
    if not text:
        return []
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return []
    edits = data.get("edits") if isinstance(data, dict) else data
    if not isinstance(edits, list) or not all(isinstance(e, dict) for e in edits):
        return []
    return edits


def _edit_summary(info: dict, family: dict) -> dict:
    """What one edit did, as the report's `edits` list records it."""
    keys = ("method", "alpha", "lambda", "forget", "retain", "templates", "aggregation", "rank", "text_width")
    return {**{k: info[k] for k in keys}, "family": family["name"]}


def check_output(out: Path, fmt: str, inputs: list[Path], *, force: bool) -> Path:
    """Refuse an `out` (or its report) that is, holds or lies inside an input, or exists without `force`;
    -> the report path. Runs before anything is written: `--force` never deletes an input."""
    report = out.with_name(out.stem + ".cure.json") if fmt == "safetensors" else out / "cure_report.json"
    refuse_overwrite(out, inputs)
    refuse_overwrite(report, inputs, flag="--out's report")
    inside = [p for p in inputs if p.is_dir() and p.resolve() in out.resolve().parents]
    if inside:
        raise InputError(f"--out lies inside the input folder {inside[0]}", path=out,
                         fix="write the output outside the input folders")
    if out.exists():
        if not force:
            raise InputError("output already exists", path=out, fix="choose a new --out path or pass --force")
        if out.is_dir() == (fmt == "safetensors"):
            kind = "a folder" if out.is_dir() else "a file"
            raise InputError(f"--out is {kind}; the {fmt} output is {'a file' if fmt == 'safetensors' else 'a folder'}",
                             path=out, fix="choose a new --out path")
    if fmt == "safetensors" and report.exists() and not force:
        raise InputError("the edit report beside --out already exists", path=report,
                         fix="choose a new --out path or pass --force")
    return report


def erase(model: str | Path, out: str | Path, forget: list[str], retain: list[str] | None = None, *,
          method: str = "cure", alpha: float = 2.0, fmt: str | None = None, text_encoder: str | Path | None = None,
          tokenizer: str | Path | None = None, templates=DEFAULT_TEMPLATES, aggregation: str | None = None,
          guide: str = "", lam: float = 0.5, text_input: str | None = None, force: bool = False) -> dict:
    """Erase `forget` concepts from the model at `model`, writing a new model at `out`; -> the edit report.

    `out` is a folder for onnx/diffusers (the report is `out/cure_report.json`) and a file for safetensors (the
    report is written beside it as `<out stem>.cure.json`). The input is only read; outputs appear atomically.
    """
    model, out = Path(model), Path(out)
    if not model.exists():
        raise InputError("model not found", path=model)
    forget, forget_files = read_concepts(forget)
    retain, retain_files = read_concepts(retain)
    if not forget:
        raise InputError("no concept to erase (empty forget list)", fix='pass --forget "concept" at least once')
    fmt = fmt or detect_format(model)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    inputs, context = model_inputs(model, fmt, text_input)
    extra = [Path(p) for p in (text_encoder, tokenizer) if p is not None]
    for p in extra:
        if not p.exists():
            raise InputError("text encoder or tokenizer not found", path=p)
    report_path = check_output(out, fmt, inputs + extra + forget_files + retain_files, force=force)
    history = previous_edits(model, fmt)
    # Temp files/folders a killed earlier run left beside --out (and beside a safetensors output's report).
    remove_stale_temps(out.parent, [out.name] + ([report_path.name] if fmt == "safetensors" else []))
    t0 = time.perf_counter()
    encoder = (load_text_encoder(text_encoder, tokenizer) if text_encoder
               else _default_text_encoder(model, fmt, tokenizer))
    check_context(context, encoder, str(text_encoder or model))
    family = detect_family(context, encoder)
    t_load = time.perf_counter() - t0
    edit, info = build_edit(encoder, forget, retain, method=method, alpha=alpha, templates=templates,
                            aggregation=aggregation, guide=guide, lam=lam)
    edits = [*history, _edit_summary(info, family)]
    t0 = time.perf_counter()
    if fmt == "safetensors":
        from edgeml.cure.apply import edit_safetensors_file

        rows = edit_safetensors_file(model, out, edit)
    else:
        with atomic_dir(out, force=force) as tmp:
            if fmt == "diffusers":
                from edgeml.cure.apply import edit_diffusers_folder

                rows = edit_diffusers_folder(model, tmp, edit)
            else:
                rows = _edit_onnx_path(model, tmp, edit, text_input, {REPORT_KEY: json.dumps({"edits": edits})})
    info["seconds"].update({"text_encoder_load": t_load, "edit_and_write": time.perf_counter() - t0})
    report = {"input": str(model), "output": str(out), "format": fmt, "family": family, **info,
              "tensors_edited": len(rows), "edits": edits, "tensors": rows}
    write_json(report_path, report)
    return report


def _edit_onnx_path(model: Path, tmp: Path, edit: LowRankEdit, text_input: str | None,
                    metadata: dict[str, str] | None = None) -> list[dict]:
    """An .onnx file -> tmp/<name>.onnx; a pipeline folder -> the whole folder with unet/ edited."""
    import shutil

    from edgeml.cure.onnx import edit_onnx, onnx_unet_path

    unet = onnx_unet_path(model)
    if model.is_file() or unet.parent == model:
        return edit_onnx(unet, tmp, edit, text_input=text_input, metadata=metadata)
    for item in model.iterdir():
        if item.name != "unet":
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
    (tmp / "unet").mkdir()
    return edit_onnx(unet, tmp / "unet", edit, text_input=text_input, metadata=metadata)


def forget_shrink(edit: LowRankEdit, weight: np.ndarray, x: np.ndarray) -> float:
    """‖W' xᵀ‖ / ‖W xᵀ‖ for embeddings x [n, d] and W [out, d] (how much the edit silences those embeddings)."""
    w = np.asarray(weight, np.float64)
    return float(np.linalg.norm(edit.apply_weight(w) @ x.T) / np.linalg.norm(w @ x.T))
