"""edgeml.training: checkpoints, metrics, resume (also after SIGKILL), DDP replicas, bad inputs, the CLI verb."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from edgeml.errors import CheckpointError, DataError, InputError
from edgeml.io import load_checkpoint
from edgeml.training.evaluation import evaluate
from edgeml.training.learners import BackpropLearner, Learner
from edgeml.training.loop import train
from edgeml.video.datasets import ClipDataset

FAST = dict(batch_size=8, lr=3e-3, progress=False, threads=1)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_backprop_learner_follows_the_learner_protocol():
    assert isinstance(BackpropLearner(tiny_model()), Learner)


def test_training_writes_checkpoints_metrics_and_spike_rates(tiny_clips, tmp_path):
    out = tmp_path / "run"
    reports = []
    result = train(tiny_model(), tiny_clips, out, epochs=2, on_epoch=reports.append, **FAST)
    assert {"last.safetensors", "best.safetensors", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    tensors, meta = load_checkpoint(out / "last.safetensors", expect_model="video_spiking")
    assert meta["epoch"] == 2 and meta["config"]["size"] == "tiny"
    assert any(k.startswith("learner.opt0.") for k in tensors)  # optimizer moments travel with the weights
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "epoch" in x] == [1, 2]
    # the epoch hook sees each epoch's record and the time of its training steps
    assert [r.epoch for r in reports] == [1, 2] and [r.record for r in reports] == lines[:2]
    assert all(0 < r.train_seconds <= r.record["seconds"] and r.train_cpu_seconds > 0 for r in reports)
    # the data's provenance is portable: name, kind, content hash and settings, no path of this machine
    index_sha256 = hashlib.sha256((tiny_clips / "index.json").read_bytes()).hexdigest()
    assert meta["data"] == {"name": tiny_clips.name, "kind": "clip cache", "sha256": index_sha256,
                            "settings": {"clip_len": 4, "grid": 4, "size": [32, 32], "accumulate": "iframe",
                                         "resize": "crop"}}
    assert str(tiny_clips.parent) not in json.dumps(meta)
    val = lines[0]["val"]
    assert set(val) >= {"top1", "top5", "confusion", "per_class_acc", "spike_rates"}
    assert len(val["confusion"]) == 8 and sum(map(sum, val["confusion"])) == val["samples"]
    # spike statistics per layer are logged during evaluation (measured rates in [0, 1])
    assert set(val["spike_rates"]) == {"motion.mod1", "motion.mod2", "residual.mod1", "residual.mod2"}
    assert all(0 <= r <= 1 for r in val["spike_rates"].values())
    # the reported test metrics are those of best.safetensors, measured again here
    best = tiny_model()
    best.load_state_dict({k[len("model."):]: v for k, v in _weights(out / "best.safetensors").items()})
    again = evaluate(best, torch.utils.data.DataLoader(ClipDataset(tiny_clips, "test"), batch_size=8),
                     ("iframe", "mv", "residual"), 8)
    assert result["test"]["confusion"] == again["confusion"] and result["test"]["top1"] == again["top1"]


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_clips, tmp_path):
    train(tiny_model(), tiny_clips, tmp_path / "full", epochs=3, **FAST)
    # interrupted one step into epoch 2 (epoch 1 is checkpointed), then resumed by a fresh model object
    stopped = train(tiny_model(), tiny_clips, tmp_path / "part", epochs=3, stop_after_steps=3, **FAST)
    assert stopped["stopped_after_steps"] == 3
    _, meta = load_checkpoint(tmp_path / "part" / "last.safetensors")
    assert meta["epoch"] == 1
    train(tiny_model(), tiny_clips, tmp_path / "part", epochs=3, resume=True, **FAST)
    _assert_same(_weights(tmp_path / "full" / "last.safetensors"), _weights(tmp_path / "part" / "last.safetensors"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeml", "train", "--no-progress", "--threads", "1", *args]


def test_sigkill_mid_training_then_resume_matches_uninterrupted(tiny_clips, tmp_path):
    common = ["--model", "video_spiking", "--size", "tiny", "--data", str(tiny_clips), "--epochs", "3",
              "--batch-size", "4", "--lr", "3e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli(*common, "--out", str(tmp_path / "full")), check=True, env=env, capture_output=True)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(out)), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "last.safetensors").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # epoch 1 is saved; epoch 2 is under way
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_checkpoint(out / "last.safetensors")
    assert 1 <= meta["epoch"] < 3  # the finished epoch survived, the run did not complete

    subprocess.run(_cli(*common, "--out", str(out), "--resume"), check=True, env=env, capture_output=True)
    _assert_same(_weights(tmp_path / "full" / "last.safetensors"), _weights(out / "last.safetensors"))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if "epoch" in x] == [1, 2, 3]


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_model
from edgeml.training.data import epoch_indices
from edgeml.training.distributed import finish_distributed
from edgeml.training.evaluation import evaluate
from edgeml.training.loop import train
from edgeml.io import save_checkpoint
model = tiny_model(seed=int(__import__("os").environ["RANK"]))  # different init per rank: the learner syncs it
train(model, {data!r}, {out!r}, epochs=1, batch_size=8, lr=3e-3, progress=False, stop_after_steps=3)
rank = torch.distributed.get_rank()
save_checkpoint({out!r} + f"/rank{{rank}}.safetensors", {{f"model.{{k}}": v for k, v in model.state_dict().items()}},
                {{"model": "video_spiking"}})
from edgeml.video.datasets import ClipDataset
test = ClipDataset({data!r}, "test")  # each rank evaluates its shard; the counts are summed over ranks
loader = torch.utils.data.DataLoader(test, batch_size=3, sampler=epoch_indices(len(test), 0, 0, rank, 2, False))
result = evaluate(model, loader, ("iframe", "mv", "residual"), 8)
if rank == 0:
    __import__("json").dump(result, open({out!r} + "/eval.json", "w"))
finish_distributed()
"""


def test_ddp_two_gloo_processes_keep_identical_replicas(tiny_clips, tmp_path):
    script = tmp_path / "ddp.py"
    out = tmp_path / "ddp"
    out.mkdir()
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), data=str(tiny_clips), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                    str(29500 + os.getpid() % 1000), str(script)], check=True, env=env, capture_output=True,
                   timeout=300)
    r0, r1 = _weights(out / "rank0.safetensors"), _weights(out / "rank1.safetensors")
    _assert_same(r0, r1)
    init = tiny_model().state_dict()
    assert not torch.equal(init["head.weight"], r0["model.head.weight"])  # they trained, not just synced
    # evaluation sharded over the 2 ranks gives what one process gives (clip and video level alike)
    model = tiny_model()
    model.load_state_dict({k[len("model."):]: v for k, v in r0.items()})
    test = ClipDataset(tiny_clips, "test")
    assert len(test) % 2 == 0  # no padding duplicates: the sums over ranks must be exact
    single = evaluate(model, torch.utils.data.DataLoader(test, batch_size=3), ("iframe", "mv", "residual"), 8)
    ddp = json.loads((out / "eval.json").read_text())
    assert ddp["confusion"] == single["confusion"] and ddp["video_top1"] == pytest.approx(single["video_top1"])
    # video top-1 by hand, from the same batches: sum each video's clip logits, argmax, compare with its label
    scores: dict[int, torch.Tensor] = {}
    truth: dict[int, int] = {}
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(test, batch_size=3):
            logits = model.eval()(batch["iframe"], batch["mv"], batch["residual"]).double()
            for vid, label, row in zip(batch["video"].tolist(), batch["label"].tolist(), logits, strict=True):
                scores[vid] = scores.get(vid, torch.zeros_like(row)) + row
                truth[vid] = label
    by_hand = sum(int(scores[v].argmax()) == truth[v] for v in scores) / len(scores)
    assert len(scores) == 8 and single["video_top1"] == pytest.approx(by_hand)


def test_video_top1_averages_each_videos_clip_logits():
    logits = torch.tensor([[2.0, 0, 0], [0, 1.0, 0],  # video 0 (class 0): one clip wrong, the sum right
                           [0, 0, 1.0], [0, 0, 1.0],  # video 1 (class 1): both clips wrong
                           [0, 0, 5.0]])  # video 2 (class 2): right
    batches = [{"x": logits[:3], "label": torch.tensor([0, 0, 1]), "video": torch.tensor([0, 0, 1])},
               {"x": logits[3:], "label": torch.tensor([1, 2]), "video": torch.tensor([1, 2])}]
    result = evaluate(torch.nn.Identity(), batches, ("x",), 3)
    assert result["top1"] == pytest.approx(2 / 5) and result["video_top1"] == pytest.approx(2 / 3)
    # a confident wrong clip outweighs two unsure right ones: logits are averaged, not votes counted
    batches = [{"x": torch.tensor([[0, 9.0, 0], [0.6, 0, 0], [0.6, 0, 0]]), "label": torch.tensor([0, 0, 0]),
                "video": torch.tensor([0, 0, 0])}]
    assert evaluate(torch.nn.Identity(), batches, ("x",), 3)["video_top1"] == 0.0
    no_ids = [{k: v for k, v in b.items() if k != "video"} for b in batches]
    assert evaluate(torch.nn.Identity(), no_ids, ("x",), 3)["video_top1"] is None


def test_empty_data_folder_is_a_clear_error_and_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        train(tiny_model(), empty, tmp_path / "out", epochs=1, **FAST)
    assert not (tmp_path / "out").exists()


def test_wrong_clip_shape_is_a_clear_error_and_writes_nothing(tiny_clips, tmp_path):
    from edgeml.registry import create_model

    model = create_model("video_spiking", size="tiny", num_classes=8, clip_len=6, height=32, width=32)
    with pytest.raises(InputError, match="clip_len=6"):
        train(model, tiny_clips, tmp_path / "out", epochs=1, **FAST)
    assert not (tmp_path / "out").exists()


def test_resume_from_another_models_checkpoint_is_refused_untouched(tiny_clips, tmp_path):
    out = tmp_path / "out"
    train(tiny_model("rgb_baseline"), tiny_clips, out, epochs=1, **FAST)
    before = (out / "last.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="rgb_baseline"):
        train(tiny_model(), tiny_clips, out, epochs=2, resume=True, **FAST)
    assert (out / "last.safetensors").read_bytes() == before


def test_corrupted_checkpoint_is_refused_untouched(tiny_clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    before = (out / "last.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="corrupt"):
        train(tiny_model(), tiny_clips, out, epochs=1, resume=True, **FAST)
    assert (out / "last.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["last.safetensors"]


def test_cli_train_verb_reads_the_clip_geometry_from_the_cache(tiny_clips, tmp_path, capsys):
    from edgeml.cli import main

    code = main(["train", "--model", "video_spiking", "--size", "tiny", "--data", str(tiny_clips), "--out",
                 str(tmp_path / "cli"), "--epochs", "1", "--batch-size", "8", "--no-progress", "--threads", "1",
                 "--json"])
    assert code == 0
    assert "top1" in capsys.readouterr().out
    _, meta = load_checkpoint(tmp_path / "cli" / "best.safetensors", expect_model="video_spiking")
    assert meta["config"]["clip_len"] == 4 and meta["config"]["height"] == 32


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from edgeml.cli import main

    (tmp_path / "empty").mkdir()
    code = main(["train", "--model", "video_spiking", "--data", str(tmp_path / "empty"), "--out",
                 str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "empty" in capsys.readouterr().err


def test_time_budget_stops_starting_new_epochs(tiny_clips, tmp_path):
    result = train(tiny_model(), tiny_clips, tmp_path / "out", epochs=5, max_minutes=0.0, **FAST)
    assert result["epochs_done"] == 1
    _, meta = load_checkpoint(tmp_path / "out" / "last.safetensors")
    assert meta["epoch"] == 1
