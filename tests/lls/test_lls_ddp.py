"""DDP for LLS nets: 2 gloo processes keep every per-block optimizer (weights and moments) in sync."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _flat(learner) -> dict[str, torch.Tensor]:
    model = learner.model
    params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    moments = torch.cat([v.reshape(-1).float() for k, v in sorted(learner.state_dict().items())
                         if k.endswith("exp_avg") or k.endswith("exp_avg_sq")])
    return {"params": params, "moments": moments}


def _spread(t: torch.Tensor) -> float:
    """Largest difference between the two ranks' copies of `t`."""
    copies = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(copies, t)
    return float((copies[0] - copies[1]).abs().max())


def _worker(rank: int, init_file: str, out_dir: str, mode: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    from edgeml.lls.trainer import LocalLearner
    from edgeml.registry import create_model

    result = {}
    for synced in (True, False):
        torch.manual_seed(rank if synced else 0)  # synced: different inits that the learner must broadcast
        model = create_model("lls_smallconv", mode=mode, num_classes=4, image_size=16)
        learner = LocalLearner(model, mode=mode, lr=1e-2, epochs=1, steps_per_epoch=3, distributed=synced)
        g = torch.Generator().manual_seed(100 + rank)  # each rank sees its own shard
        for _ in range(3):
            learner.train_step([torch.rand(8, 1, 16, 16, generator=g)], torch.randint(0, 4, (8,), generator=g))
        flat = _flat(learner)
        result["synced" if synced else "unsynced"] = {k: _spread(v) for k, v in flat.items()}
        result["optimizers"] = len(learner.optim.optimizers)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    from edgeml.training.distributed import finish_distributed

    finish_distributed()  # barrier, destroy, exit without finalisation (gloo can abort a finished rank there)


def _run(tmp_path: Path, mode: str) -> dict:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), mode), nprocs=2, join=True)
    return json.loads((tmp_path / "rank0.json").read_text())


def test_ddp_keeps_per_block_optimizers_in_sync(tmp_path):
    result = _run(tmp_path, "lls_mxm")
    assert result["optimizers"] == 5
    assert result["synced"]["params"] == 0.0
    assert result["synced"]["moments"] == 0.0
    # Control: without the all-reduce, the same shards drive the ranks apart.
    assert result["unsynced"]["params"] > 1e-4
