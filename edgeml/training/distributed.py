"""DDP under torchrun: join and leave the process group, rank and world size, gradient averaging, weight sync.

The learners average gradients themselves (all-reduce before each optimizer step) instead of wrapping the model in
`DistributedDataParallel`, so the per-block optimizers of local learning stay in sync the same way end-to-end
training does.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn


def is_distributed() -> bool:
    """Whether this process is part of an initialised process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if is_distributed():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> bool:
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
    if not is_distributed():
        return
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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


@torch.no_grad()
def broadcast_from_rank0(model: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (replicas start identical)."""
    for t in [*model.parameters(), *model.buffers()]:
        torch.distributed.broadcast(t, src=0)
