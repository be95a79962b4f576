"""Python front of the C++ LLS engine (edgeml._C.LLSEngine) and the PyTorch step it reproduces.

`open_engine(pack, batch)` loads a pack into the engine (one arena sized at load); `torch_lls_step` is the
PyTorch LLS fine-tuning step with the same semantics — BatchNorm in frozen-statistics (eval) mode, each
trainable block stepping its own optimizer on its local loss over its DETACHED input, the classifier on CE —
so parity tests and benchmarks compare like with like.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import CheckpointError, InputError, MissingDependencyError
from edgeml.progress import Progress


def _core() -> Any:
    try:
        from edgeml import _C
    except ImportError as e:  # pragma: no cover - the extension is part of the install
        raise MissingDependencyError("edgeml._C", purpose="the C++ LLS engine") from e
    return _C


class DeviceEngine:
    """A loaded pack: `train_step(x, labels)`, `forward(x)`, `save(path)`; x [n, C, H, W] float32 in [-1, 1].

    `threads`: kernel threads (None: one per processor this process may use). For a fixed count, runs are
    bit-identical; different counts differ only in float rounding (summation order of weight gradients).
    `int8_layers`: frozen conv/linear layers that run the int8 GEMM (a pack's precision.frozen_compute "int8").
    """

    def __init__(self, path: str | PathLike, batch: int, *, arena_bytes: int = 0, train_last: int | None = None,
                 lr: float | None = None, optimizer: str | None = None, threads: int | None = None):
        core = _core()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError("pack not found", path=self.path, fix="write one with edgeml.lls.pack.write_pack")
        if threads is not None and not 1 <= int(threads) <= 1024:
            raise InputError(f"threads must lie in [1, 1024], got {threads}", fix="pass a positive thread count "
                             "(or None: one per processor)")
        try:
            self._e = core.LLSEngine(str(self.path), int(batch), int(arena_bytes),
                                     -1 if train_last is None else int(train_last), -1.0 if lr is None else float(lr),
                                     optimizer or "", 0 if threads is None else int(threads))
        except core.LLSPackError as e:
            raise CheckpointError(str(e)) from None
        except core.LLSArenaError as e:
            raise InputError(str(e), fix="pass a larger arena_bytes (or 0 to size it from the pack)") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._e, name)

    def _check(self, x: np.ndarray) -> np.ndarray:
        shape = tuple(self._e.input_shape)
        if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != shape:
            got = getattr(x, "shape", type(x).__name__)
            raise InputError(f"data of shape {got} does not fit the pack's input [n, {', '.join(map(str, shape))}]",
                             fix="resize the images to the size the net was trained on")
        return np.ascontiguousarray(x, dtype=np.float32)

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> list[float]:
        """One step: x [n, C, H, W] float32 (normalised), labels [n] -> local loss of each trainable block."""
        x = self._check(x)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= self._e.classes:
            raise InputError(f"labels outside [0, {self._e.classes})")
        return self._e.train_step(x, labels)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits [n, K]."""
        return self._e.forward(self._check(x))

    def save(self, path: str | PathLike) -> Path:
        """Write the fine-tuned pack atomically (never over the input pack: same path, hard link or symlink)."""
        from edgeml.paths import refuse_overwrite

        path = Path(path)
        refuse_overwrite(path, [self.path])
        if path.is_dir():
            raise InputError("the output is a folder", path=path, fix="give the path of the output pack")
        path.parent.mkdir(parents=True, exist_ok=True)
        core = _core()
        try:
            self._e.save(str(path))
        except core.LLSPackError as e:
            raise CheckpointError(str(e)) from None
        return path


def open_engine(path: str | PathLike, batch: int, **kwargs: Any) -> DeviceEngine:
    """Load a pack into the C++ engine sized for batches of up to `batch`."""
    return DeviceEngine(path, batch, **kwargs)


def block_optimizers(model: Any, blocks: list[int], spec: dict[str, Any]) -> dict[int, Any]:
    """One torch optimizer per trainable block index (len(model.blocks) = the classifier), as in the pack."""
    import torch

    from edgeml.lls.pack import check_optimizer

    spec = check_optimizer(spec)  # the pack schema's defaults for absent fields, as the engine reads them
    out = {}
    for i in blocks:
        module = model.blocks[i] if i < len(model.blocks) else model.classifier
        params = list(module.parameters())
        if spec["name"] == "adamw":
            out[i] = torch.optim.AdamW(params, lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"],
                                       weight_decay=spec["weight_decay"])
        else:
            out[i] = torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"], dampening=spec["dampening"],
                                     nesterov=spec["nesterov"], weight_decay=spec["weight_decay"])
    return out


def torch_lls_step(model: Any, x: Any, labels: Any, optimizers: dict[int, Any]) -> list[float]:
    """The PyTorch LLS fine-tuning step the engine reproduces; x [n, C, H, W] already scaled to [-1, 1].

    BN in eval mode (frozen statistics); blocks before the first trainable one run without autograd; each
    trainable block steps on `LLSBlock.local_loss` (detached input), the classifier (index len(blocks)) on CE.
    """
    import torch
    import torch.nn.functional as F

    model.eval()
    last = max(optimizers)
    losses = []
    h = x
    for i in range(last + 1):
        if i == len(model.blocks):
            loss = F.cross_entropy(model.classifier(h.detach()), labels)
        elif i in optimizers:
            out, loss = model.blocks[i].local_loss(h, labels)
            h = model.transitions[i](out.detach())
        else:
            with torch.no_grad():
                h = model.transitions[i](model.blocks[i](h))
            continue
        opt = optimizers[i]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# -- standalone binary and device data --------------------------------------------------------------------------

def finetune_binary() -> Path:
    """Path of the standalone `edgeml-finetune` (installed with the package, or $EDGEML_FINETUNE)."""
    import os
    import shutil

    env = os.environ.get("EDGEML_FINETUNE")
    candidates = [Path(env)] if env else []
    candidates.append(Path(_core().__file__).parent / "bin" / "edgeml-finetune")
    found = shutil.which("edgeml-finetune")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise MissingDependencyError("edgeml-finetune", purpose="on-device fine-tuning without Python "
                                 "(reinstall edgeml so CMake builds it, or set EDGEML_FINETUNE)")


def write_idx_folder(folder: str | PathLike, images: np.ndarray, labels: np.ndarray, split: str = "train") -> Path:
    """Write uint8 images [N, H, W] or [N, H, W, C] and labels [N] as uncompressed IDX files (atomically).

    This is the data layout `edgeml-finetune --data` reads: `<split>-images-idx{3,4}-ubyte` and
    `<split>-labels-idx1-ubyte`, split "train" (fine-tuning data) or "t10k" (held-out evaluation).
    """
    import struct

    from edgeml.io import write_bytes

    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(f"images {images.shape} / labels {labels.shape}: expected [N, H, W(, C)] and [N]")
    folder = Path(folder)
    nd = images.ndim
    write_bytes(folder / f"{split}-images-idx{nd}-ubyte",
                struct.pack(f">4B{nd}I", 0, 0, 8, nd, *images.shape) + images.tobytes())
    write_bytes(folder / f"{split}-labels-idx1-ubyte", struct.pack(">4BI", 0, 0, 8, 1, len(labels)) + labels.tobytes())
    return folder


def shift_images(images: np.ndarray, brightness: float = 0.0, contrast: float = 1.0) -> np.ndarray:
    """A photometric domain shift on images in [0, 1]: clip(contrast * (x - 0.5) + 0.5 + brightness, 0, 1)."""
    return np.clip(contrast * (images - 0.5) + 0.5 + brightness, 0.0, 1.0).astype(np.float32)


def _dataset_arrays(data: str | PathLike, split: str, image_size: int, limit: int | None,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, C, H, W] in [0, 1] and labels [N] of a data set name / folder (edgeml.data)."""
    from edgeml.data import open_image_dataset

    opts: dict[str, Any] = {"augment": False}
    try:
        ds = open_image_dataset(data, split, size=image_size, **opts)
    except TypeError:  # readers without a size option (IDX, CIFAR)
        ds = open_image_dataset(data, split, **opts)
    n = len(ds)
    order = np.random.default_rng(seed).permutation(n)[: limit or n]
    items = [ds[int(i)] for i in order]
    images = np.stack([it["image"].numpy() for it in items]).astype(np.float32)
    labels = np.array([int(it["label"]) for it in items], dtype=np.int64)
    return images, labels


def finetune(pack: str | PathLike, data: str | PathLike, out: str | PathLike, *, model: str | None = None,
             blocks: str = "last:2", epochs: int = 1, batch: int = 32, lr: float | None = None,
             optimizer: str | None = None, limit: int | None = None, eval_limit: int | None = None,
             brightness: float = 0.0, contrast: float = 1.0, seed: int = 0, arena_bytes: int = 0,
             threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a pack on device data with the C++ engine; write the updated pack to `out` atomically.

    `data`: a data set name or folder edgeml.data reads (train split fine-tunes, test split evaluates);
    `brightness`/`contrast`: an optional photometric shift applied to both splits (the "device domain").
    `threads`: the engine's kernel threads (None: one per processor).
    Returns accuracy before/after on the test split, mean/median step latency, peak RSS, arena size, threads and
    how many frozen layers ran the int8 GEMM (packs written with quantize_frozen).
    """
    import resource
    import time

    from edgeml.lls.pack import parse_blocks, read_pack
    from edgeml.paths import refuse_overwrite

    refuse_overwrite(out, [pack, data])  # before anything is read, trained or written
    if Path(out).is_dir():
        raise InputError("--out is a folder", path=out, fix="give the path of the output pack")
    header = read_pack(pack).header  # validates (checksum, version, every field) before anything else
    if model is not None and header.get("model") not in (None, model):
        raise InputError(f"the pack holds model {header.get('model')!r}, not {model!r}", path=pack,
                         fix=f"pass --model {header.get('model')} or the pack of {model}")
    n_blocks = len(header["blocks"])
    chosen = parse_blocks(blocks, n_blocks)
    train_last = len(chosen)
    if train_last == 0:
        raise InputError(f"--blocks {blocks} trains no block", fix="pass --blocks last:N with N >= 1")
    if chosen != list(range(n_blocks - train_last, n_blocks)):
        raise InputError(f"--blocks {blocks}: the engine trains the last blocks of the net, not {chosen}",
                         fix="pass --blocks last:N or all")
    engine = open_engine(pack, batch, arena_bytes=arena_bytes, train_last=train_last, lr=lr, optimizer=optimizer,
                         threads=threads)
    image_size = int(engine.input_shape[1])
    x_train, y_train = _dataset_arrays(data, "train", image_size, limit, seed)
    x_test, y_test = _dataset_arrays(data, "test", image_size, eval_limit, seed + 1)
    for name, x in (("train", x_train), ("test", x_test)):
        if tuple(x.shape[1:]) != tuple(engine.input_shape):
            raise InputError(f"{name} images have shape {tuple(x.shape[1:])}, the pack expects "
                             f"{tuple(engine.input_shape)}", path=data, fix="use data of the net's input size")
    x_train = shift_images(x_train, brightness, contrast) * 2.0 - 1.0
    x_test = shift_images(x_test, brightness, contrast) * 2.0 - 1.0

    def accuracy() -> float:
        correct = 0
        for s in range(0, len(x_test), batch):
            correct += int((engine.forward(x_test[s:s + batch]).argmax(1) == y_test[s:s + batch]).sum())
        return correct / max(1, len(x_test))

    before = accuracy()
    rng = np.random.default_rng(seed)
    per_epoch = (len(x_train) + batch - 1) // batch
    times: list[float] = []
    losses: list[float] = []
    with Progress(progress) as bar:
        task = bar.add("fine-tuning", epochs * per_epoch)
        for _ in range(epochs):
            order = rng.permutation(len(x_train))
            for s in range(0, len(order), batch):
                idx = order[s:s + batch]
                xb, yb = np.ascontiguousarray(x_train[idx]), y_train[idx]
                t0 = time.perf_counter()
                step_losses = engine.train_step(xb, yb)
                times.append(time.perf_counter() - t0)
                losses.append(step_losses[-1])
                bar.advance(task, info=f"loss {step_losses[-1]:.3f}")
    after = accuracy()
    engine.save(out)
    return {
        "pack": str(pack), "out": str(out), "blocks": blocks, "trainable_blocks": list(engine.trainable_blocks),
        "steps": len(times), "batch": batch, "train_samples": len(x_train), "test_samples": len(x_test),
        "accuracy_before": before, "accuracy_after": after,
        "step_ms_mean": 1e3 * float(np.mean(times)) if times else 0.0,
        "step_ms_median": 1e3 * float(np.median(times)) if times else 0.0,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "arena_bytes": int(engine.arena_bytes), "threads": int(engine.threads),
        "int8_layers": int(engine.int8_layers),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
