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


def _core() -> Any:
    try:
        from edgeml import _C
    except ImportError as e:  # pragma: no cover - the extension is part of the install
        raise MissingDependencyError("edgeml._C", purpose="the C++ LLS engine") from e
    return _C


class DeviceEngine:
    """A loaded pack: `train_step(x, labels)`, `forward(x)`, `save(path)`; x [n, C, H, W] float32 in [-1, 1]."""

    def __init__(self, path: str | PathLike, batch: int, *, arena_bytes: int = 0, train_last: int | None = None,
                 lr: float | None = None, optimizer: str | None = None):
        core = _core()
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError("pack not found", path=self.path, fix="write one with edgeml.lls.pack.write_pack")
        try:
            self._e = core.LLSEngine(str(self.path), int(batch), int(arena_bytes),
                                     -1 if train_last is None else int(train_last), -1.0 if lr is None else float(lr),
                                     optimizer or "")
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
        """Write the fine-tuned pack atomically (never over the input pack by accident: pass a new path)."""
        path = Path(path)
        if path.resolve() == self.path.resolve():
            raise InputError("refusing to overwrite the input pack", path=path, fix="write to another --out path")
        self._e.save(str(path))
        return path


def open_engine(path: str | PathLike, batch: int, **kwargs: Any) -> DeviceEngine:
    """Load a pack into the C++ engine sized for batches of up to `batch`."""
    return DeviceEngine(path, batch, **kwargs)


def block_optimizers(model: Any, blocks: list[int], spec: dict[str, Any]) -> dict[int, Any]:
    """One torch optimizer per trainable block index (len(model.blocks) = the classifier), as in the pack."""
    import torch

    out = {}
    for i in blocks:
        module = model.blocks[i] if i < len(model.blocks) else model.classifier
        params = list(module.parameters())
        if spec["name"] == "adamw":
            out[i] = torch.optim.AdamW(params, lr=spec["lr"], betas=tuple(spec.get("betas", (0.9, 0.999))),
                                       eps=spec.get("eps", 1e-8), weight_decay=spec.get("weight_decay", 0.0))
        else:
            out[i] = torch.optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.9),
                                     weight_decay=spec.get("weight_decay", 0.0))
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
