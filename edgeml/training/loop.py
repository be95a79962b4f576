"""The one training loop of edgeml: any registered model, any learner, one process or DDP under torchrun.

`train(model, data, out, ...)` opens the data set of the model's task (`edgeml.training.data`), steps a learner
over it (`make_learner`: `BackpropLearner` end to end, `LocalLearner` for the LLS modes), evaluates every epoch
(top-1, top-5, confusion, spike rates of spiking layers) and checkpoints every epoch as `out/last.safetensors`
(+ `out/best.safetensors` when validation top-1 improves) with `out/metrics.jsonl` beside them. `resume=True`
continues from `out/last.safetensors`; each epoch re-seeds its shuffle and its RNG from (seed, epoch), so a resumed
run takes exactly the steps an uninterrupted run would have taken. `on_epoch` hooks see every finished epoch with
the wall and CPU time of its training steps (benchmarks time epochs through them).
`train_from_args` is what `edgeml train` does: it builds the model the data set implies, then calls `train`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeml.errors import CheckpointError, ConfigError
from edgeml.io import load_checkpoint
from edgeml.lls.rule import check_mode
from edgeml.lls.trainer import LocalLearner
from edgeml.progress import Progress
from edgeml.registry import check_config, checkpoint_config, config_parameters, create_model, model_spec
from edgeml.training.checkpoint import (
    BEST,
    LAST,
    check_run_folder,
    learner_state,
    load_weights,
    prepare_run_folder,
    read_history,
    read_run_state,
    save_epoch,
    write_history,
)
from edgeml.training.data import (
    data_config,
    describe_data,
    epoch_indices,
    make_loader,
    open_optional_split,
    open_split,
    split_batch,
)
from edgeml.training.distributed import init_distributed, world
from edgeml.training.evaluation import evaluate
from edgeml.training.learners import BackpropLearner, Learner


@dataclass(frozen=True)
class EpochReport:
    """A finished epoch as an `on_epoch` hook sees it (after its checkpoint is written)."""

    epoch: int  # 1-based
    record: dict[str, Any]  # its metrics.jsonl record: train means, val metrics, seconds since the run started
    train_seconds: float  # wall time of the epoch's training steps (no evaluation, no checkpoint)
    train_cpu_seconds: float  # this process's CPU time over the same steps


EpochHook = Callable[[EpochReport], None]


def make_learner(model: nn.Module, mode: str | None, *, lr: float, epochs: int, steps_per_epoch: int,
                 distributed: bool, **config: Any) -> Learner:
    """`BackpropLearner` for mode None / "bp" (end to end), else the LLS `LocalLearner` of that mode."""
    if mode in (None, "bp"):
        return BackpropLearner(model, lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                               distributed=distributed, **config)
    return LocalLearner(model, mode=mode, lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        distributed=distributed, **config)


def model_name_of(model: nn.Module) -> str:
    """The registry name a model was built under (set by `create_model` / the factories)."""
    name = getattr(model, "registry_name", None) or getattr(model, "model_name", None)
    if not name:
        raise ConfigError(f"cannot tell which registered model this {type(model).__name__} is",
                          fix="build it with edgeml.registry.create_model(name, ...) or pass model_name=")
    return name


def _restores_torch_threads(fn: Callable[..., dict]) -> Callable[..., dict]:
    """Run `fn` and put torch's thread count back as it was, whatever `threads=` set meanwhile."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> dict:
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    return wrapper


@_restores_torch_threads
def train(model: nn.Module | str, data: Any, out: str | os.PathLike, *, epochs: int, batch_size: int, lr: float,
          mode: str | None = None, seed: int = 0, resume: bool = False, workers: int = 0,
          device: str | None = None, progress: bool = True, model_name: str | None = None,
          data_opts: dict | None = None, stop_after_steps: int | None = None, threads: int | None = None,
          max_minutes: float | None = None, force: bool = False, on_epoch: EpochHook | None = None,
          **config: Any) -> dict[str, Any]:
    """Train `model` on `data`, checkpointing every epoch into `out`; returns the final metrics.

    `model`: an nn.Module from `create_model` or a registered name. `data`: a clip-cache folder (video), an image
    data set name/folder (image), or a mapping {"train"|"val"|"test": Dataset}. `batch_size` is the global batch
    (split over DDP ranks). `mode`: None/"bp" end-to-end, else an LLS mode. `config` goes to the learner
    (weight_decay, warmup, label_smoothing, amp, optimizer, lr_scales, ...). `stop_after_steps` ends the run early
    (tests). `threads`: CPU threads per process (default: torch's, or cores / processes under DDP — on a shared CPU,
    1 thread avoids OpenMP threads stalling on each other). `max_minutes`: a wall-clock budget — no new epoch starts
    once it is spent (the finished epochs are checkpointed; `epochs_done` says how many ran). `on_epoch`: called on
    every rank with an `EpochReport` after each epoch's checkpoint.
    A non-empty `out` needs `resume=True` (continue) or `force=True` (start over: its checkpoints and metrics are
    replaced, nothing else is deleted); an `out` that is or holds `data` is refused either way. Temp files a killed
    checkpoint write left beside the outputs are removed. Torch's process-wide thread count is restored on return
    (a library call leaves no global state behind; under torchrun the process ends in `finish_distributed`).
    Before every evaluation and checkpoint the learner prepares the weights it evaluates (`before_eval`), so a
    checkpoint holds what was evaluated.
    Returns {"model", "epochs_done", "best_epoch", "val", "test", "seconds", "checkpoint"}.
    """
    out = Path(out)
    check_run_folder(out, data, resume=resume, force=force)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    if (threads is not None and threads < 1) or workers < 0:
        raise ConfigError(f"need threads >= 1 and workers >= 0, got threads={threads}, workers={workers}")
    if mode is not None:
        check_mode(mode)
    distributed = init_distributed()
    rank, ranks = world()
    if threads is None and distributed:
        threads = max(1, (os.cpu_count() or 1) // ranks)
    if threads:
        torch.set_num_threads(threads)
    if isinstance(model, str):
        model_name, model = model, create_model(model)
    name = model_name or model_name_of(model)
    spec = model_spec(name)
    if batch_size < ranks or epochs < 1:
        raise ConfigError(f"need epochs >= 1 and batch_size >= number of processes ({ranks})")
    dev = torch.device(device or (f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"))

    # Everything that can be wrong with the inputs is checked before the first write.
    opts = dict(data_opts or {})
    train_ds = open_split(spec.task, data, "train", **opts)
    val_ds = open_optional_split(spec.task, data, "val", **opts)
    classes = list(getattr(train_ds, "classes", []) or [])
    num_classes = int(getattr(model, "num_classes", 0) or (model.config.get("num_classes", 0)
                                                            if hasattr(model, "config") else 0) or len(classes))
    if classes and num_classes != len(classes):
        raise ConfigError(f"the model has {num_classes} classes but the data set has {len(classes)}",
                          fix=f"build the model with num_classes={len(classes)}")
    probe_inputs, _ = split_batch(torch.utils.data.default_collate([train_ds[0]]), spec.input_names)
    if hasattr(model, "check_inputs"):
        model.check_inputs(*probe_inputs)
    state = read_run_state(out, name) if resume else None
    if resume and state is None:
        raise CheckpointError(f"nothing to resume: no {LAST}", path=out, fix="run without --resume to start")
    history_before = read_history(out) if state is not None else []
    provenance = describe_data(spec.task, data, train_ds, opts)

    if rank == 0:  # inputs checked: from here on the run folder is ours
        prepare_run_folder(out, force=force)
    model.to(dev)
    per_rank = batch_size // ranks
    drop_last = len(train_ds) >= batch_size  # drop the ragged last batch: fixed batch shapes
    steps = math.ceil(len(train_ds) / ranks) // per_rank if drop_last else \
        math.ceil(math.ceil(len(train_ds) / ranks) / per_rank)
    learner = make_learner(model, mode, lr=lr, epochs=epochs, steps_per_epoch=steps, distributed=distributed,
                           input_names=spec.input_names, **config)
    start_epoch, best_top1, best_epoch, history = 0, -1.0, -1, []
    if state is not None:
        tensors, meta = state
        load_weights(model, tensors, out / LAST)
        learner.load_state_dict(learner_state(tensors))
        start_epoch, best_top1, best_epoch = meta["epoch"], meta.get("best_top1", -1.0), meta.get("best_epoch", -1)
        history = [h for h in history_before if h.get("epoch", 0) <= start_epoch]

    run_meta = {"model": name, "config": dict(getattr(model, "config", {})), "classes": classes, "mode": mode,
                "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "world_size": ranks,
                "learner_config": {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))},
                "data": provenance}
    t0 = time.perf_counter()
    bar = Progress(progress and rank == 0, quiet=rank != 0)
    steps_taken = 0
    epochs_done = start_epoch
    with bar:
        for epoch in range(start_epoch, epochs):
            if max_minutes is not None and epoch > start_epoch:
                spent = torch.tensor([float(time.perf_counter() - t0 > 60 * max_minutes)])
                if distributed:  # rank 0 decides, so every rank stops at the same epoch
                    torch.distributed.broadcast(spent, src=0)
                if spent.item():
                    bar.log(f"time budget of {max_minutes:g} min spent after {epoch} epochs: stopping")
                    break
            torch.manual_seed(seed * 1009 + epoch * 7919 + rank)
            indices = epoch_indices(len(train_ds), seed, epoch, rank, ranks)
            loader = make_loader(train_ds, indices, per_rank, workers, drop_last=drop_last)
            task = bar.add(f"epoch {epoch + 1}/{epochs}", steps)
            sums: dict[str, float] = {}
            n = 0
            wall, cpu = time.perf_counter(), time.process_time()
            for batch in loader:
                inputs, labels = split_batch(batch, spec.input_names)
                metrics = learner.train_step(inputs, labels)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                steps_taken += 1
                bar.advance(task, info=f"loss {metrics.get('loss', float('nan')):.3f}")
                if stop_after_steps is not None and steps_taken >= stop_after_steps:
                    return {"model": name, "stopped_after_steps": steps_taken}
            learner.end_epoch()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            bar.remove(task)
            record: dict[str, Any] = {"epoch": epoch + 1, "train": {k: v / max(1, n) for k, v in sums.items()},
                                      "seconds": time.perf_counter() - t0}
            learner.before_eval(make_loader(train_ds, indices, per_rank, workers, drop_last=False))
            if val_ds is not None:
                val_idx = epoch_indices(len(val_ds), seed, 0, rank, ranks, shuffle=False)
                record["val"] = evaluate(model, make_loader(val_ds, val_idx, per_rank, workers, False),
                                         spec.input_names, num_classes, dev)
            top1 = record["val"]["top1"] if "val" in record else float(epoch)
            improved = top1 > best_top1
            if improved:
                best_top1, best_epoch = top1, epoch + 1
            history.append(record)
            if rank == 0:
                meta = {**run_meta, "epoch": epoch + 1, "metrics": _brief(record), "best_top1": best_top1,
                        "best_epoch": best_epoch}
                save_epoch(out, model, learner.state_dict(), meta, history, best=improved)
                bar.log(_summary(record))
            epochs_done = epoch + 1
            if distributed:
                torch.distributed.barrier()
            if on_epoch is not None:
                on_epoch(EpochReport(epoch + 1, record, wall, cpu))

    result: dict[str, Any] = {"model": name, "epochs_done": epochs_done, "best_epoch": best_epoch,
                              "val": history[-1].get("val") if history else None,
                              "seconds": time.perf_counter() - t0, "checkpoint": str(out / BEST)}
    test_ds = open_optional_split(spec.task, data, "test", **opts)
    if test_ds is not None and (out / BEST).is_file():
        tensors, _ = load_checkpoint(out / BEST, expect_model=name)
        load_weights(model, tensors, out / BEST)
        model.to(dev)
        test_idx = epoch_indices(len(test_ds), seed, 0, rank, ranks, shuffle=False)
        result["test"] = evaluate(model, make_loader(test_ds, test_idx, per_rank, workers, False), spec.input_names,
                                  num_classes, dev)
        if rank == 0:
            write_history(out, [*history, {"event": "test", "best_epoch": best_epoch, "test": result["test"]}])
            video = result["test"]["video_top1"]
            bar.log(f"test (best epoch {best_epoch}): top-1 {result['test']['top1']:.3f}, "
                    f"top-5 {result['test']['top5']:.3f}" + ("" if video is None else f", video top-1 {video:.3f}"))
    return result


def _brief(record: dict) -> dict:
    val = record.get("val") or {}
    return {"epoch": record["epoch"], "train_loss": record["train"].get("loss"),
            **{f"val_{k}": val[k] for k in ("top1", "top5", "loss", "mean_spike_rate") if k in val}}


def _summary(record: dict) -> str:
    b = _brief(record)
    text = f"epoch {b['epoch']}: train loss {b['train_loss']:.3f}"
    if "val_top1" in b:
        text += f", val top-1 {b['val_top1']:.3f}, top-5 {b['val_top5']:.3f}"
    if b.get("val_mean_spike_rate") is not None:
        text += f", spike rate {b['val_mean_spike_rate']:.3f}"
    return text


def train_from_args(model: str, data: Any, out: str | os.PathLike, *, size: str | None = None,
                    overrides: dict | None = None, weight_decay: float | None = None, **kwargs: Any) -> dict:
    """What `edgeml train` does: build `model` for `data` (classes and clip geometry read from the data set;
    on --resume the config comes from the checkpoint) and call `train`.

    `overrides` (`--set`) are checked against the model's config keys and types before anything is read.
    Like `train`, it restores torch's thread count on return; only the CLI process keeps `threads`.
    """
    spec = model_spec(model)
    config: dict[str, Any] = dict(overrides or {})
    check_config(model, config, source="--set")
    if size is not None:
        if "size" not in config_parameters(model):
            raise ConfigError(f"model {model!r} has no sizes", fix="leave out --size")
        config["size"] = size
    out = Path(out)
    check_run_folder(out, data, resume=kwargs.get("resume", False), force=kwargs.get("force", False))
    if kwargs.get("resume") and (out / LAST).is_file():
        _, meta = read_run_state(out, model)
        config = {**checkpoint_config(model, meta, out / LAST), **config}
    elif spec.task in ("video", "image"):
        config = {**data_config(open_split(spec.task, data, "train", augment=False), spec.defaults), **config}
    seed = kwargs.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    torch.manual_seed(seed)  # the initial weights are part of what the seed reproduces
    net = create_model(model, **config)
    learner_config = {} if weight_decay is None else {"weight_decay": weight_decay}
    return train(net, data, out, model_name=model, **learner_config, **kwargs)


__all__ = ["EpochReport", "make_learner", "train", "train_from_args"]
