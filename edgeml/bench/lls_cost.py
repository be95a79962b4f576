"""Training cost of an LLS net per sample: MACs (counted) for BP vs each local mode, peak memory (measured).

MACs: every Conv2d / Linear layer is counted by a forward hook (`out elements x in-channels/groups x
kernel`). A training step costs forward + weight gradients (1x forward per layer) + input gradients
(1x forward per layer, only where the gradient must travel on): BP sends gradients through every layer
but the first; a local mode only inside a block (the block's input is detached) plus its local head
(`z B^T` and `ds B`, the modulation m / M, or the learnable classifier). Element-wise work (BN, activation,
pooling, normalisation) is not counted, as is usual for MAC counts.

Memory: `measure_peak_memory` runs training steps in a FRESH Python process and reports the growth of the
resident set size over the process's footprint just before the first full-size step (model, optimizer and
batch built, one 2-sample warm-up step done), read from the kernel's peak-RSS counter (VmHWM, reset
just before the steps). glibc is told to serve tensors from mmap so freed activations really leave the RSS.
This is a measurement, not a model of memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCost:
    block: int  # index of the LLS block, -1 for the final classifier
    first_in_block: bool
    macs: int  # forward MACs per sample


def layer_costs(model: nn.Module, image_shape: tuple[int, int, int]) -> list[LayerCost]:
    """Forward MACs per sample of every Conv2d / Linear of an LLSNet, in execution order."""
    costs: list[LayerCost] = []
    hooks = []

    def hook_for(block: int, first: bool):
        def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
            per_sample = out[0].numel()
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            else:
                k = mod.in_features
            costs.append(LayerCost(block, first, per_sample * k))

        return hook

    for i, block in enumerate(model.blocks):
        layers = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        hooks += [m.register_forward_hook(hook_for(i, j == 0)) for j, m in enumerate(layers)]
    hooks.append(model.classifier.register_forward_hook(hook_for(-1, True)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *image_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return costs


def _head_macs(mode: str, num_classes: int, dim: int) -> int:
    k, d = num_classes, dim
    if mode == "local_learnable":
        return 3 * k * d  # forward u W^T, du = g W, dW = g^T u
    macs = 2 * k * d  # forward z B^T, backward ds B
    if mode == "lls_m":
        macs += 3 * k
    if mode == "lls_mxm":
        macs += 3 * k * k
    return macs


def training_macs(model: nn.Module, mode: str, image_shape: tuple[int, int, int]) -> dict[str, int]:
    """Training MACs per sample of `model` in `mode`: forward, backward, local heads and total."""
    costs = layer_costs(model, image_shape)
    forward = sum(c.macs for c in costs)
    weight_grads = forward
    if mode == "bp":
        input_grads = sum(c.macs for n, c in enumerate(costs) if n > 0)
        heads = 0
    else:
        input_grads = sum(c.macs for c in costs if c.block >= 0 and not c.first_in_block)
        heads = sum(_head_macs(mode, b.rule.num_classes, b.feature_dim) for b in model.blocks)
    backward = weight_grads + input_grads + heads
    return {"forward": forward, "backward": backward, "local_heads": heads, "total": forward + backward}


def learning_signal_macs(model: nn.Module, image_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Per block, MACs per sample spent on delivering its learning signal, as the LLS paper counts it.

    bp: the error travels from the loss back through every layer above the block's output (their input gradients);
    local_learnable: a learnable local classifier on the pooled block output (forward, input and weight gradients,
    3·K·D); lls: the fixed basis projection and its gradient (2·K·D); lls_m / lls_mxm add the modulation (3·K /
    3·K²). The block's own weight gradient is the same in every method and not counted.
    """
    costs = layer_costs(model, image_shape)
    rows = []
    for i, block in enumerate(model.blocks):
        k, d = block.rule.num_classes, block.feature_dim
        last = max(n for n, c in enumerate(costs) if c.block == i)
        rows.append({"block": i, "feature_dim": d, "bp": sum(c.macs for c in costs[last + 1:]),
                     **{mode: _head_macs(mode, k, d) for mode in ("local_learnable", "lls", "lls_m", "lls_mxm")}})
    return rows


_PROBE = r"""
import json, sys
import psutil, torch
args = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(args["threads"])
from edgeml.bench.rounds import process_status_kb
from edgeml.registry import create_model
from edgeml.training.loop import make_learner

def hwm():
    kb = process_status_kb("VmHWM")
    if kb is None:
        raise RuntimeError("no VmHWM in /proc/self/status")
    return kb * 1024

model = create_model(args["model"], mode=args["mode"], **args["config"])
c, s = model.config["in_channels"], model.config["image_size"]
learner = make_learner(model, args["mode"], lr=1e-3, epochs=1, steps_per_epoch=args["steps"], distributed=False)
# Warm up on a 2-sample batch first: code pages and kernel caches loaded by the first step are not training memory.
learner.train_step([torch.rand(2, c, s, s)], torch.randint(0, model.config["num_classes"], (2,)))
image = torch.rand(args["batch_size"], c, s, s)
labels = torch.randint(0, model.config["num_classes"], (args["batch_size"],))
reset = True
try:  # writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    reset = False
base = psutil.Process().memory_info().rss
peak_before = hwm()
for _ in range(args["steps"]):
    learner.train_step([image], labels)
peak = hwm()
print(json.dumps({"baseline_rss": base, "peak_rss": peak, "peak_before_training": peak_before,
                  "hwm_reset": reset, "training_peak_bytes": peak - base}))
"""


def measure_peak_memory(model_name: str, mode: str, *, batch_size: int = 128, steps: int = 5, threads: int = 1,
                        **config: Any) -> dict[str, int]:
    """Peak training memory (bytes of RSS growth) of `steps` training steps, in a fresh process."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536",
               OMP_NUM_THREADS=str(threads))
    args = json.dumps({"model": model_name, "mode": mode, "batch_size": batch_size, "steps": steps,
                       "threads": threads, "config": config})
    done = subprocess.run([sys.executable, "-c", _PROBE, args], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed for {model_name}/{mode}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
