"""A run folder and its checkpoints: what a run writes, what resume reads, and the one way weights enter a model.

A run folder holds `last.safetensors` (model weights under `model.`, learner state under `learner.`),
`best.safetensors` (weights only) and `metrics.jsonl` (one JSON record per epoch, then the test record). Files are
read and written by `edgeml.io` (safetensors + JSON metadata, atomic writes); `load_weights` is also how
`edgeml.registry.create_model(name, checkpoint=...)` fills a model.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeml.errors import CheckpointError, InputError
from edgeml.io import load_checkpoint, remove_stale_temps, save_checkpoint, write_text
from edgeml.paths import refuse_overwrite

if TYPE_CHECKING:
    import torch
    from torch import nn

LAST, BEST, METRICS = "last.safetensors", "best.safetensors", "metrics.jsonl"
OUTPUTS = (LAST, BEST, METRICS)  # every file a run writes into its folder
MODEL, LEARNER = "model.", "learner."  # tensor-name prefixes in a checkpoint
# (key, types, smallest value, required): the run state resume reads from the metadata
RUN_STATE = (("epoch", int, 0, True), ("best_epoch", int, -1, False), ("best_top1", (int, float), -1, False))


def load_weights(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load a checkpoint's `model.*` tensors into `model` (strict); a mismatch is a CheckpointError naming `path`."""
    state = {k[len(MODEL):]: v for k, v in tensors.items() if k.startswith(MODEL)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        name = getattr(model, "registry_name", None) or type(model).__name__
        raise CheckpointError(f"weights do not fit model {name!r} ({str(e).splitlines()[0]})", path=path,
                              fix="build the model with the checkpoint's config") from None


def learner_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The learner's tensors of a checkpoint, without their `learner.` prefix."""
    return {k[len(LEARNER):]: v for k, v in tensors.items() if k.startswith(LEARNER)}


def read_run_state(out: Path, model_name: str) -> tuple[dict, dict] | None:
    """(tensors, meta) of `out/last.safetensors`, None if there is none; its run state is type-checked."""
    path = out / LAST
    if not path.is_file():
        return None
    tensors, meta = load_checkpoint(path, expect_model=model_name)
    for key, kinds, low, required in RUN_STATE:
        value = meta.get(key)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < low:
            raise CheckpointError(f"checkpoint metadata {key!r} is {value!r}, not what a run writes", path=path,
                                  fix="start over with --force")
    return tensors, meta


def save_epoch(out: Path, model: nn.Module, learner_tensors: Mapping[str, torch.Tensor], meta: dict[str, Any],
               history: list[dict], *, best: bool) -> None:
    """Checkpoint a finished epoch: metrics.jsonl, last.safetensors and, when `best`, best.safetensors."""
    tensors = {**{f"{MODEL}{k}": v for k, v in model.state_dict().items()},
               **{f"{LEARNER}{k}": v for k, v in learner_tensors.items()}}
    # metrics first: a kill between the two writes leaves an extra line, which resume drops
    write_history(out, history)
    save_checkpoint(out / LAST, tensors, meta)
    if best:
        save_checkpoint(out / BEST, {k: v for k, v in tensors.items() if k.startswith(MODEL)}, meta)


def read_history(out: Path) -> list[dict]:
    """The records of `out/metrics.jsonl` (none if it is missing); a malformed file is a CheckpointError."""
    path = out / METRICS
    if not path.is_file():
        return []
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"metrics log is corrupt ({e})", path=path, fix="start over with --force") from None
    if not all(isinstance(r, dict) and isinstance(r.get("epoch", 0), int) for r in records):
        raise CheckpointError("metrics log lines must be JSON objects with an integer 'epoch'", path=path,
                              fix="start over with --force")
    return records


def write_history(out: Path, history: list[dict]) -> None:
    """Write `out/metrics.jsonl` (one JSON record a line), atomically."""
    write_text(out / METRICS, "".join(json.dumps(h) + "\n" for h in history))


def prepare_run_folder(out: Path, *, force: bool) -> None:
    """Remove temp files a killed checkpoint write left; with `force` also an earlier run's outputs (nothing else)."""
    remove_stale_temps(out, OUTPUTS)
    if force:
        for name in OUTPUTS:
            (out / name).unlink(missing_ok=True)


def _is_own_temp(name: str) -> bool:
    """Whether `name` is a temp file `atomic_write` makes for one of the run's outputs."""
    return any(fnmatch.fnmatchcase(name, f".{glob.escape(o)}.*.tmp") for o in OUTPUTS)


def check_run_folder(out: Path, data: Any, *, resume: bool, force: bool) -> None:
    """Refuse an `out` that is a file, is not writable, holds the data, or is a run folder that is not empty
    while neither `resume` nor `force` says what to do with it. Reads only."""
    if resume and force:
        raise InputError("--resume and --force contradict each other", fix="pass one of them")
    if out.exists() and not out.is_dir():
        raise InputError("--out is not a folder", path=out, fix="pass a folder for the checkpoints")
    if not isinstance(data, Mapping) and Path(data).exists():
        refuse_overwrite(out, [data])
    existing = next((p for p in (out, *out.absolute().parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        raise InputError("--out cannot be created or written", path=existing, fix="choose a writable folder")
    if resume or force or not out.is_dir():
        return
    if any(not _is_own_temp(p.name) for p in out.iterdir()):
        raise InputError("run folder is not empty", path=out,
                         fix="pass --resume to continue its run, or --force to start over (replaces its "
                             f"{', '.join(OUTPUTS)})")
