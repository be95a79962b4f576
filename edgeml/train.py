"""The one training loop of edgeml: any registered model, any learner, one process or DDP under torchrun.

`train(model, data, out, ...)` opens the data set of the model's task (video: `ClipDataset`; image:
`edgeml.data.open_image_dataset`), steps a *learner* over it, evaluates every epoch (top-1, top-5, confusion,
spike rates of spiking layers) and checkpoints every epoch as `out/last.safetensors` (+ `out/best.safetensors`
when validation top-1 improves) with `out/metrics.jsonl` beside them. `resume=True` continues from
`out/last.safetensors`; each epoch re-seeds its shuffle and its RNG from (seed, epoch), so a resumed run takes
exactly the steps an uninterrupted run would have taken.

The learner owns optimisation (the `Learner` protocol below): `BackpropLearner` (AdamW + cosine) by default,
`edgeml.lls.trainer.LocalLearner` for the LLS modes. Under DDP the learners average gradients themselves
(all-reduce before each optimizer step) — the model is not wrapped in `DistributedDataParallel`, so per-block
optimizers of local learning stay in sync the same way end-to-end training does.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import CheckpointError, ConfigError, DataError, InputError
from edgeml.io import load_checkpoint, remove_stale_temps, save_checkpoint, write_text
from edgeml.paths import refuse_overwrite

LAST, BEST, METRICS = "last.safetensors", "best.safetensors", "metrics.jsonl"
OUTPUTS = (LAST, BEST, METRICS)  # every file a run writes into its folder


# --------------------------------------------------------------------------------------------- learners


@runtime_checkable
class Learner(Protocol):
    """How a model learns from one batch; the loop never touches optimizers itself."""

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """One batch (inputs in the model's `input_names` order, labels [B]) -> scalar metrics ("loss", ...)."""

    def end_epoch(self) -> None:
        """Called after the last step of every epoch."""

    def before_eval(self, loader: Iterable) -> None:
        """Called before each evaluation with a training loader (LLS re-estimates BN statistics here)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Optimizer / schedule state as flat tensors (stored under `learner.` in the checkpoint)."""

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of `state_dict`."""


def cosine_schedule(total_steps: int, warmup_steps: int = 0):
    """LR factor: linear warm-up over `warmup_steps`, then cosine from 1 to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, span) / span))

    return factor


def optimizer_tensors(optimizers: list[torch.optim.Optimizer], schedulers: list[Any]) -> dict[str, torch.Tensor]:
    """Optimizer moments and schedule positions as flat tensors: `opt{i}.{param}.{key}`, `sched{i}.last_epoch`."""
    out: dict[str, torch.Tensor] = {}
    for i, (opt, sched) in enumerate(zip(optimizers, schedulers, strict=True)):
        for pid, state in opt.state_dict()["state"].items():
            for key, value in state.items():
                out[f"opt{i}.{pid}.{key}"] = torch.as_tensor(value).detach().clone()
        out[f"sched{i}.last_epoch"] = torch.tensor(sched.last_epoch)
    return out


def load_optimizer_tensors(optimizers: list[torch.optim.Optimizer], schedulers: list[Any],
                           tensors: Mapping[str, torch.Tensor]) -> None:
    """Inverse of `optimizer_tensors` (same model, same parameter grouping)."""
    for i, (opt, sched) in enumerate(zip(optimizers, schedulers, strict=True)):
        full = opt.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith(f"opt{i}."):
                pid, key = name[len(f"opt{i}."):].split(".", 1)
                state.setdefault(int(pid), {})[key] = value
        full["state"] = state
        opt.load_state_dict(full)
        if f"sched{i}.last_epoch" in tensors:
            sched.last_epoch = int(tensors[f"sched{i}.last_epoch"])
            for group, base in zip(opt.param_groups, sched.base_lrs, strict=True):
                group["lr"] = base * sched.lr_lambdas[0](sched.last_epoch)


def average_gradients(params: list[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of `params` over the DDP ranks, in one flat buffer."""
    dist = torch.distributed
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()


class BackpropLearner:
    """End-to-end backprop: AdamW + warm-up/cosine schedule, gradient clipping, autocast where it pays."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, epochs: int = 1, steps_per_epoch: int = 1,
                 distributed: bool = False, weight_decay: float = 0.05, warmup: float = 0.05,
                 grad_clip: float | None = 1.0, amp: str | None = "auto", label_smoothing: float = 0.0, **_: Any):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.distributed = distributed and torch.distributed.is_available() and torch.distributed.is_initialized()
        # No weight decay on norms, biases and embeddings (1-D tensors): the usual AdamW practice.
        decay = [p for p in self.params if p.ndim > 1]
        no_decay = [p for p in self.params if p.ndim <= 1]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        total = max(1, epochs * steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_schedule(total, int(warmup * total)))
        self.grad_clip = grad_clip
        self.label_smoothing = label_smoothing
        self.device = next(model.parameters()).device
        self.amp_dtype = _amp_dtype(self.device, amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if self.distributed:
            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    torch.distributed.broadcast(t, src=0)

    def train_step(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> dict[str, float]:
        """Forward, cross-entropy, backward, (all-reduce), clip, step -> {"loss", "acc", "lr"}."""
        self.model.train()
        inputs = [x.to(self.device, non_blocking=True) for x in inputs]
        labels = labels.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.model(*inputs)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.distributed:
            average_gradients(self.params)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return {"loss": float(loss.detach()), "acc": float((logits.detach().argmax(1) == labels).float().mean()),
                "lr": lr}

    def end_epoch(self) -> None:
        """Nothing: the schedule advances per step."""

    def before_eval(self, loader: Iterable) -> None:
        """Nothing: backprop keeps BatchNorm statistics up to date while training."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return optimizer_tensors([self.optimizer], [self.scheduler])

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        load_optimizer_tensors([self.optimizer], [self.scheduler], tensors)


def _amp_dtype(device: torch.device, amp: str | None) -> torch.dtype | None:
    """bf16 (or fp16) autocast on CUDA; fp32 on CPU, where autocast gains little for these small models."""
    if amp in (None, "off", "none", "fp32") or device.type != "cuda":
        return None
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def make_learner(model: nn.Module, mode: str | None, *, lr: float, epochs: int, steps_per_epoch: int,
                 distributed: bool, **config: Any) -> Learner:
    """`BackpropLearner` for mode None/"bp", else the LLS `LocalLearner` (imported lazily)."""
    if mode in (None, "bp"):
        return BackpropLearner(model, lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                               distributed=distributed, **config)
    try:
        from edgeml.lls.trainer import LocalLearner
    except ImportError as e:
        raise ConfigError(f"mode {mode!r} needs edgeml.lls, which is not available ({e})") from None
    return LocalLearner(model, mode=mode, lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        distributed=distributed, **config)


# ------------------------------------------------------------------------------------------------- data


def open_split(task: str, data: Any, split: str, **opts: Any) -> torch.utils.data.Dataset:
    """The `split` of `data` for a model of `task`: a mapping {split: Dataset}, a clip cache or an image set."""
    if isinstance(data, Mapping):
        if split not in data:
            raise DataError(f"no {split!r} split among {sorted(data)}")
        ds = data[split]
    elif task == "video":
        from edgeml.video.datasets import ClipDataset

        path = Path(data)
        if not path.is_dir():
            raise DataError("not a clip cache folder" if path.exists() else "clip cache folder not found", path=path,
                            fix="build one with `edgeml data build VIDEOS_DIR CACHE_DIR`")
        if not any(path.iterdir()):
            raise DataError("clip cache folder is empty", path=path,
                            fix="build one with `edgeml data build VIDEOS_DIR CACHE_DIR`")
        ds = ClipDataset(path, split, augment=opts.get("augment", split == "train"))
    elif task == "image":
        from edgeml.data import open_image_dataset

        ds = open_image_dataset(data, split, **opts)
    else:
        raise ConfigError(f"edgeml train does not handle models of task {task!r}")
    if len(ds) == 0:
        raise DataError(f"the {split!r} split has no samples", path=None if isinstance(data, Mapping) else data)
    return ds


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_distributed() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); gloo on CPU, nccl on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    dist = torch.distributed
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def finish_distributed() -> None:
    """End a DDP process: barrier, destroy the process group, flush, and exit without interpreter finalisation,
    where gloo's worker threads now and then abort a rank that has finished all its work ("terminate called without
    an active exception", SIGABRT; pytorch/pytorch#179291) — torchrun would then report the run as failed.
    Without a process group it does nothing; with one it never returns. For process owners (CLI, scripts)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def epoch_indices(n: int, seed: int, epoch: int, rank: int, world: int, shuffle: bool = True) -> list[int]:
    """This rank's sample order for one epoch: a (seed, epoch) permutation, padded so every rank gets as many."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    per_rank = math.ceil(n / world)
    order += order[: per_rank * world - n]
    return order[rank::world]


def _loader(ds: Any, indices: list[int], batch_size: int, workers: int, drop_last: bool) -> Iterable:
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=indices, num_workers=workers,
                                       drop_last=drop_last, persistent_workers=False)


def _split_batch(batch: Any, input_names: tuple[str, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
    if isinstance(batch, Mapping):
        missing = [k for k in (*input_names, "label") if k not in batch]
        if missing:
            raise DataError(f"data items lack {missing} (they have {sorted(batch)})",
                            fix="use a data set made for this model's task")
        return [batch[k] for k in input_names], batch["label"]
    *inputs, labels = batch
    return list(inputs), labels


# ------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, input_names: tuple[str, ...], num_classes: int,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """Top-1, top-5, mean loss, confusion [true][pred], per-class accuracy and mean spike rate per layer.

    Items that name their video (`ClipDataset`'s `video`) also give `video_top1`: each video's class is the argmax
    of its clips' mean logits (the multi-clip protocol; `edgeml bench` judges videos the same way); otherwise
    `video_top1` is None.
    Under DDP every rank evaluates its shard and the counts are summed over ranks.
    """
    from edgeml.nn.spiking import reset_spike_stats, spike_rates

    model.eval()
    reset_spike_stats(model)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, top-5 hits, samples
    videos: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (video ids, logits, labels) per batch
    for batch in loader:
        inputs, labels = _split_batch(batch, input_names)
        logits = model(*[x.to(device) for x in inputs]).float().cpu()
        if isinstance(batch, Mapping) and "video" in batch:
            videos.append((batch["video"], logits, labels))
        sums[0] += float(F.cross_entropy(logits, labels, reduction="sum"))
        k = min(5, logits.shape[1])
        sums[1] += float((logits.topk(k, dim=1).indices == labels[:, None]).any(1).sum())
        sums[2] += len(labels)
        confusion.index_put_((labels, logits.argmax(1)), torch.ones(len(labels), dtype=torch.float64),
                             accumulate=True)
    rates = spike_rates(model)
    if _world()[1] > 1:
        rate_t = torch.tensor(list(rates.values()), dtype=torch.float64)
        for t in (confusion, sums, rate_t):
            torch.distributed.all_reduce(t)
        rates = dict(zip(rates, (rate_t / _world()[1]).tolist(), strict=True))
    n = max(1.0, float(sums[2]))
    per_class = (confusion.diag() / confusion.sum(1).clamp(min=1)).tolist()
    return {"top1": float(confusion.diag().sum()) / n, "top5": float(sums[1]) / n, "loss": float(sums[0]) / n,
            "samples": int(sums[2]), "per_class_acc": per_class, "confusion": confusion.long().tolist(),
            "video_top1": _video_top1(videos, num_classes),
            "spike_rates": rates, "mean_spike_rate": (sum(rates.values()) / len(rates)) if rates else None}


def _video_top1(videos: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_classes: int) -> float | None:
    """Video-level top-1 from per-clip (video id, logits, label) batches: argmax of the summed (so mean) logits."""
    if not videos:  # every rank reads the same kind of items, so either all ranks return here or none does
        return None
    ids, logits, labels = (torch.cat(t) for t in zip(*videos, strict=True))
    count = torch.tensor([int(ids.max()) + 1])
    ddp = _world()[1] > 1
    if ddp:
        torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
    scores = torch.zeros(int(count), num_classes, dtype=torch.float64).index_add_(0, ids, logits.double())
    truth = torch.full((int(count),), -1, dtype=torch.int64).scatter_(0, ids, labels)
    if ddp:
        torch.distributed.all_reduce(scores)
        torch.distributed.all_reduce(truth, op=torch.distributed.ReduceOp.MAX)
    seen = truth >= 0
    return float((scores.argmax(1)[seen] == truth[seen]).double().mean())


# --------------------------------------------------------------------------------------------- the loop


def model_name_of(model: nn.Module) -> str:
    """The registry name a model was built under (set by `create_model` / the factories)."""
    name = getattr(model, "registry_name", None) or getattr(model, "model_name", None)
    if not name:
        raise ConfigError(f"cannot tell which registered model this {type(model).__name__} is",
                          fix="build it with edgeml.registry.create_model(name, ...) or pass model_name=")
    return name


def _check_resume(out: Path, name: str) -> tuple[dict, dict] | None:
    """(tensors, meta) of `out/last.safetensors`, None if there is none; its run state is type-checked."""
    path = out / LAST
    if not path.is_file():
        return None
    tensors, meta = load_checkpoint(path, expect_model=name)
    # (key, types, smallest value, required): what resume reads from the metadata
    for key, kinds, low, required in (("epoch", int, 0, True), ("best_epoch", int, -1, False),
                                      ("best_top1", (int, float), -1, False)):
        value = meta.get(key)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < low:
            raise CheckpointError(f"checkpoint metadata {key!r} is {value!r}, not what a run writes", path=path,
                                  fix="start over with --force")
    return tensors, meta


def _is_own_temp(name: str) -> bool:
    """Whether `name` is a temp file `atomic_write` makes for one of the run's outputs."""
    return any(fnmatch.fnmatchcase(name, f".{glob.escape(o)}.*.tmp") for o in OUTPUTS)


def _check_run_folder(out: Path, data: Any, *, resume: bool, force: bool) -> None:
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
          max_minutes: float | None = None, force: bool = False, **config: Any) -> dict[str, Any]:
    """Train `model` on `data`, checkpointing every epoch into `out`; returns the final metrics.

    `model`: an nn.Module from `create_model` or a registered name. `data`: a clip-cache folder (video), an image
    data set name/folder (image), or a mapping {"train"|"val"|"test": Dataset}. `batch_size` is the global batch
    (split over DDP ranks). `mode`: None/"bp" end-to-end, else an LLS mode. `config` goes to the learner
    (weight_decay, warmup, label_smoothing, amp, ...). `stop_after_steps` ends the run early (tests). `threads`:
    CPU threads per process (default: torch's, or cores / processes under DDP — on a shared CPU, 1 thread avoids
    OpenMP threads stalling on each other). `max_minutes`: a wall-clock budget — no new epoch starts once it is
    spent (the finished epochs are checkpointed; `epochs_done` says how many ran).
    A non-empty `out` needs `resume=True` (continue) or `force=True` (start over: its checkpoints and metrics are
    replaced, nothing else is deleted); an `out` that is or holds `data` is refused either way. Temp files a killed
    checkpoint write left beside the outputs are removed. Torch's process-wide thread count is restored on return
    (a library call leaves no global state behind; under torchrun the process ends in `finish_distributed`).
    Returns {"model", "epochs_done", "best_epoch", "val", "test", "seconds", "checkpoint"}.
    """
    from edgeml.registry import create_model, model_spec

    out = Path(out)
    _check_run_folder(out, data, resume=resume, force=force)
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a finite number > 0, got {lr!r}")
    if (threads is not None and threads < 1) or workers < 0:
        raise ConfigError(f"need threads >= 1 and workers >= 0, got threads={threads}, workers={workers}")
    if mode not in (None, "bp"):
        from edgeml.lls.rule import check_mode

        check_mode(mode)
    distributed = _init_distributed()
    rank, world = _world()
    if threads is None and distributed:
        threads = max(1, (os.cpu_count() or 1) // world)
    if threads:
        torch.set_num_threads(threads)
    if isinstance(model, str):
        model_name, model = model, create_model(model)
    name = model_name or model_name_of(model)
    spec = model_spec(name)
    if batch_size < world or epochs < 1:
        raise ConfigError(f"need epochs >= 1 and batch_size >= number of processes ({world})")
    dev = torch.device(device or (f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"))

    # Everything that can be wrong with the inputs is checked before the first write.
    opts = dict(data_opts or {})
    train_ds = open_split(spec.task, data, "train", **opts)
    try:
        val_ds = open_split(spec.task, data, "val", **{**opts, "augment": False})
    except DataError:
        val_ds = None
    classes = list(getattr(train_ds, "classes", []) or [])
    num_classes = int(getattr(model, "num_classes", 0) or (model.config.get("num_classes", 0)
                                                            if hasattr(model, "config") else 0) or len(classes))
    if classes and num_classes != len(classes):
        raise ConfigError(f"the model has {num_classes} classes but the data set has {len(classes)}",
                          fix=f"build the model with num_classes={len(classes)}")
    probe_inputs, _ = _split_batch(torch.utils.data.default_collate([train_ds[0]]), spec.input_names)
    if hasattr(model, "check_inputs"):
        model.check_inputs(*probe_inputs)
    state = _check_resume(out, name) if resume else None
    if resume and state is None:
        raise CheckpointError(f"nothing to resume: no {LAST}", path=out, fix="run without --resume to start")
    history_before = _read_history(out) if state is not None else []

    if rank == 0:  # inputs checked: from here on the run folder is ours
        remove_stale_temps(out, OUTPUTS)
        if force:
            for name_ in OUTPUTS:
                (out / name_).unlink(missing_ok=True)
    model.to(dev)
    per_rank = batch_size // world
    steps = math.ceil(math.ceil(len(train_ds) / world) / per_rank)
    if len(train_ds) >= batch_size:
        steps = math.ceil(len(train_ds) / world) // per_rank  # drop the ragged last batch: fixed batch shapes
    learner = make_learner(model, mode, lr=lr, epochs=epochs, steps_per_epoch=steps, distributed=distributed,
                           **config)
    start_epoch, best_top1, best_epoch, history = 0, -1.0, -1, []
    if state is not None:
        tensors, meta = state
        _load_model_state(model, tensors, out / LAST)
        learner.load_state_dict({k[len("learner."):]: v for k, v in tensors.items() if k.startswith("learner.")})
        start_epoch, best_top1, best_epoch = meta["epoch"], meta.get("best_top1", -1.0), meta.get("best_epoch", -1)
        history = [h for h in history_before if h.get("epoch", 0) <= start_epoch]

    run_meta = {"model": name, "config": dict(getattr(model, "config", {})), "classes": classes, "mode": mode,
                "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "world_size": world,
                "learner_config": {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool))},
                "data": str(data) if not isinstance(data, Mapping) else "in-memory"}
    t0 = time.perf_counter()
    bar = _Progress(progress and rank == 0, verbose=rank == 0)
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
            indices = epoch_indices(len(train_ds), seed, epoch, rank, world)
            loader = _loader(train_ds, indices, per_rank, workers, drop_last=len(train_ds) >= batch_size)
            task = bar.add(f"epoch {epoch + 1}/{epochs}", steps)
            sums: dict[str, float] = {}
            n = 0
            for batch in loader:
                inputs, labels = _split_batch(batch, spec.input_names)
                metrics = learner.train_step(inputs, labels)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                steps_taken += 1
                bar.advance(task, f"loss {metrics.get('loss', float('nan')):.3f}")
                if stop_after_steps is not None and steps_taken >= stop_after_steps:
                    return {"model": name, "stopped_after_steps": steps_taken}
            learner.end_epoch()
            bar.remove(task)
            record: dict[str, Any] = {"epoch": epoch + 1, "train": {k: v / max(1, n) for k, v in sums.items()},
                                      "seconds": time.perf_counter() - t0}
            if val_ds is not None:
                learner.before_eval(_loader(train_ds, indices, per_rank, workers, drop_last=False))
                val_idx = epoch_indices(len(val_ds), seed, 0, rank, world, shuffle=False)
                record["val"] = evaluate(model, _loader(val_ds, val_idx, per_rank, workers, False),
                                         spec.input_names, num_classes, dev)
            top1 = record["val"]["top1"] if "val" in record else float(epoch)
            improved = top1 > best_top1
            if improved:
                best_top1, best_epoch = top1, epoch + 1
            history.append(record)
            if rank == 0:
                meta = {**run_meta, "epoch": epoch + 1, "metrics": _brief(record), "best_top1": best_top1,
                        "best_epoch": best_epoch}
                tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()},
                           **{f"learner.{k}": v for k, v in learner.state_dict().items()}}
                # metrics first: a kill between the two writes leaves an extra line, which resume drops
                _write_history(out, history)
                save_checkpoint(out / LAST, tensors, meta)
                if improved:
                    save_checkpoint(out / BEST, {k: v for k, v in tensors.items() if k.startswith("model.")}, meta)
                bar.log(_summary(record))
            epochs_done = epoch + 1
            if distributed:
                torch.distributed.barrier()

    result: dict[str, Any] = {"model": name, "epochs_done": epochs_done, "best_epoch": best_epoch,
                              "val": history[-1].get("val") if history else None,
                              "seconds": time.perf_counter() - t0, "checkpoint": str(out / BEST)}
    try:
        test_ds = open_split(spec.task, data, "test", **{**opts, "augment": False})
    except DataError:
        test_ds = None
    if test_ds is not None and (out / BEST).is_file():
        tensors, _ = load_checkpoint(out / BEST, expect_model=name)
        _load_model_state(model, tensors, out / BEST)
        model.to(dev)
        test_idx = epoch_indices(len(test_ds), seed, 0, rank, world, shuffle=False)
        result["test"] = evaluate(model, _loader(test_ds, test_idx, per_rank, workers, False), spec.input_names,
                                  num_classes, dev)
        if rank == 0:
            _write_history(out, [*history, {"event": "test", "best_epoch": best_epoch, "test": result["test"]}])
            video = result["test"]["video_top1"]
            bar.log(f"test (best epoch {best_epoch}): top-1 {result['test']['top1']:.3f}, "
                    f"top-5 {result['test']['top5']:.3f}" + ("" if video is None else f", video top-1 {video:.3f}"))
    return result


def _load_model_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not fit this model ({str(e).splitlines()[0]})", path=path,
                              fix="build the model with the checkpoint's config") from None


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


def _read_history(out: Path) -> list[dict]:
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


def _write_history(out: Path, history: list[dict]) -> None:
    write_text(out / METRICS, "".join(json.dumps(h) + "\n" for h in history))


class _Progress:
    """A rich progress bar on rank 0 (or nothing)."""

    def __init__(self, enabled: bool, verbose: bool = True):
        self.enabled, self.verbose = enabled, verbose
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeRemainingColumn(), TextColumn("{task.fields[info]}"))

    def __enter__(self) -> _Progress:
        if self.p:
            self.p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.p:
            self.p.__exit__(*exc)

    def add(self, name: str, total: int) -> Any:
        return self.p.add_task(name, total=total, info="") if self.p else None

    def advance(self, task: Any, info: str) -> None:
        if self.p:
            self.p.update(task, advance=1, info=info)

    def remove(self, task: Any) -> None:
        if self.p:
            self.p.remove_task(task)

    def log(self, text: str) -> None:
        if self.p:
            self.p.console.print(text)
        elif self.verbose:
            print(text, flush=True)


__all__ = ["BackpropLearner", "Learner", "evaluate", "make_learner", "train"]


def data_config(ds: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The model config a data set implies (classes; clip length, grid and size of a clip cache; channels and size
    of an image set), limited to the keys the model takes (`defaults`)."""
    meta = dict(getattr(ds, "meta", {}) or {})
    config: dict[str, Any] = {"num_classes": len(ds.classes)} if getattr(ds, "classes", None) else {}
    if "size" in meta and isinstance(meta["size"], list | tuple):  # a clip cache: [H, W]
        config["height"], config["width"] = meta["size"]
    config.update({k: meta[k] for k in ("clip_len", "grid", "in_channels", "image_size", "num_classes") if k in meta})
    return {k: v for k, v in config.items() if k in defaults}


def train_from_args(model: str, data: Any, out: str | os.PathLike, *, size: str | None = None,
                    overrides: dict | None = None, weight_decay: float | None = None, **kwargs: Any) -> dict:
    """What `edgeml train` does: build `model` for `data` (classes and clip geometry read from the data set;
    on --resume the config comes from the checkpoint) and call `train`.

    `overrides` (`--set`) are checked against the model's config keys and types before anything is read.
    Like `train`, it restores torch's thread count on return; only the CLI process keeps `threads`.
    """
    from edgeml.registry import check_config, config_parameters, create_model, model_spec

    spec = model_spec(model)
    config: dict[str, Any] = dict(overrides or {})
    check_config(model, config, source="--set")
    if size is not None:
        if "size" not in config_parameters(model):
            raise ConfigError(f"model {model!r} has no sizes", fix="leave out --size")
        config["size"] = size
    out = Path(out)
    _check_run_folder(out, data, resume=kwargs.get("resume", False), force=kwargs.get("force", False))
    if kwargs.get("resume") and (out / LAST).is_file():
        _, meta = _check_resume(out, model)
        try:
            check_config(model, meta.get("config", {}), source="checkpoint config")
        except ConfigError as e:
            raise CheckpointError(e.problem, path=out / LAST, fix=e.fix) from None
        config = {**meta.get("config", {}), **config}
    elif spec.task in ("video", "image"):
        config = {**data_config(open_split(spec.task, data, "train", augment=False), spec.defaults), **config}
    seed = kwargs.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    torch.manual_seed(seed)  # the initial weights are part of what the seed reproduces
    net = create_model(model, **config)
    learner_config = {} if weight_decay is None else {"weight_decay": weight_decay}
    return train(net, data, out, model_name=model, **learner_config, **kwargs)
