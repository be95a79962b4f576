"""`edgeml data build --engine ray` on a real local Ray instance (2 CPUs, no dashboard), started once for this module
and stopped after it: the same bytes as the local pool, bad videos reported, a killed driver or worker recovered."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional extra edgeml[ray] (`make test` installs it)")

TASK_TITLE = "ray::edgeml:_extract_job"  # the process title of a Ray worker while it runs a clip-cache task


def _session_processes(session_dir: str) -> list[psutil.Process]:
    """Processes of the Ray instance whose session folder is `session_dir` (raylet, GCS, workers)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if session_dir in " ".join(p.info["cmdline"] or []):
                out.append(p)
    return out


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module; afterwards Ray is shut down and none of its processes is left."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    session = context.address_info["session_dir"]
    try:
        yield context.address_info
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
    deadline = time.time() + 20
    while (left := _session_processes(session)) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, f"Ray processes outlived the test module: {[p.pid for p in left]}"


def _files(cache: Path) -> dict[str, bytes]:
    """Every file of a cache by relative path; index.json without its `build` record (what this run built/reused)."""
    out = {str(p.relative_to(cache)): p.read_bytes() for p in sorted(cache.rglob("*")) if p.is_file()}
    index = json.loads(out["index.json"])
    index.pop("build")
    out["index.json"] = json.dumps(index, sort_keys=True).encode()
    return out


def _build(synth: Path, cache: Path, **kw) -> Path:
    from edgeml.video.datasets import build_clip_cache

    return build_clip_cache(synth, cache, clip_len=8, grid=4, size=(64, 64), progress=False, **kw)


def test_ray_build_writes_the_same_bytes_as_the_local_build(ray_instance, synth_dir, clip_cache, tmp_path):
    cache = _build(synth_dir, tmp_path / "ray", engine="ray", workers=2)
    assert _files(cache) == _files(clip_cache)
    assert (cache / "index.json").read_bytes() == (clip_cache / "index.json").read_bytes()  # same build record too


def test_a_failing_video_is_reported_and_skipped_as_locally(ray_instance, synth_dir, tmp_path, capsys):
    src = tmp_path / "src"
    for cls in ("left", "right"):
        (src / cls).mkdir(parents=True)
        for v in sorted((synth_dir / "train" / cls).glob("*.avi")):
            shutil.copy(v, src / cls / v.name)
    (src / "left" / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not a video")
    local = _build(src, tmp_path / "local", workers=1)
    local_out = capsys.readouterr().out
    remote = _build(src, tmp_path / "ray", engine="ray", workers=2)
    assert _files(remote) == _files(local)
    (broken,) = json.loads((remote / "index.json").read_text())["broken"]
    assert broken["video"] == str(Path("left/broken.avi")) and broken["reason"]
    assert f"edgeml: broken {broken['video']}" in capsys.readouterr().out and "broken.avi" in local_out


def test_a_killed_driver_resumes_without_redoing_finished_shards(ray_instance, synth_dir, clip_cache, tmp_path):
    cache = tmp_path / "cache"
    code = ("from edgeml.video.datasets import build_clip_cache\n"
            f"build_clip_cache({str(synth_dir)!r}, {str(cache)!r}, clip_len=8, grid=4, size=(64, 64), workers=1, "
            f"progress=False, engine='ray', address={ray_instance['address']!r})\n")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.time() + 60
        while len(list((cache / "shards").glob("*.safetensors"))) < 2 and time.time() < deadline:
            assert proc.poll() is None, "the build ended before it could be killed"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, as `kill -9` or an OOM killer would
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)  # Ray stops the dead driver's tasks; let any in flight finish or die before taking stock
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (cache / "shards").glob("*.safetensors")}
    assert 2 <= len(finished) < 32, f"the kill should land mid-build, {len(finished)} of 32 shards were written"
    assert not (cache / "index.json").exists()
    _build(synth_dir, cache, engine="ray", workers=2)
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (cache / "shards").glob("*.safetensors")}
    assert {n: after[n] for n in finished} == finished  # finished shards were not rewritten
    build = json.loads((cache / "index.json").read_text())["build"]
    assert build == {"videos_built": 32 - len(finished), "videos_reused": len(finished)}
    assert _files(cache) == _files(clip_cache)
    assert not list((cache / "shards").glob(".*.tmp"))


def test_a_worker_killed_mid_video_is_retried_and_the_build_completes(ray_instance, synth_dir, clip_cache, tmp_path):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one_task_worker() -> None:
        while not stop.is_set() and not killed:
            for p in psutil.process_iter(["cmdline"]):
                with contextlib.suppress(psutil.Error):
                    if " ".join(p.info["cmdline"] or []).startswith(TASK_TITLE):
                        p.kill()
                        killed.append(p.pid)
                        return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_task_worker, daemon=True)
    killer.start()
    try:
        cache = _build(synth_dir, tmp_path / "cache", engine="ray", workers=2)
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen running a clip-cache task"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert _files(cache) == _files(clip_cache)


def test_a_task_whose_worker_keeps_dying_is_an_error_that_says_rerun_to_resume(ray_instance):
    from edgeml.errors import EdgeMLError
    from edgeml.video.engines import ray_map

    with pytest.raises(EdgeMLError, match="failed after 1 retries, 0 of 1 jobs done.*rerun to resume"):
        ray_map(os._exit, [3], 1, "exit", progress=False, max_retries=1)  # the worker process exits every time


def test_an_error_the_job_itself_raises_comes_back_as_that_error_not_retried(ray_instance):
    from edgeml.video.engines import ray_map

    with pytest.raises(ValueError, match="invalid literal"):
        ray_map(int, ["12", "not a number"], 2, "parse", progress=False)


# ------------------------------------------------------------------ edgeml bench --engine ray

IFRAME_MODEL = "ray_test_iframe_linear"


def _iframe_artefact(folder: Path, classes: list[str]) -> Path:
    """An ONNX artefact of a linear classifier over the I-frame ([B, 3, 64, 64] -> [B, 8]) and a registered torch
    twin for the driver's op-count estimate: a model the real extractor feeds, without an export run."""
    import numpy as np
    import onnx
    import torch
    from onnx import TensorProto, helper, numpy_helper

    from edgeml.registry import _MODELS, register_model

    weight = np.random.default_rng(0).normal(0, 1e-3, (3 * 64 * 64, len(classes))).astype(np.float32)

    class IframeLinear(torch.nn.Module):
        def __init__(self, **config):
            super().__init__()
            self.fc = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=False)
            self.fc.weight.data = torch.from_numpy(weight.T.copy())

        def forward(self, iframe: torch.Tensor) -> torch.Tensor:
            return self.fc(iframe.flatten(1))

    if IFRAME_MODEL not in _MODELS:
        register_model(IFRAME_MODEL, example_inputs=lambda m, b: (torch.zeros(b, 3, 64, 64),), task="video",
                       input_names=("iframe",), defaults={"clip_len": 8, "grid": 4, "height": 64, "width": 64},
                       )(IframeLinear)
    nodes = [helper.make_node("Flatten", ["iframe"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "iframe_linear",
                              [helper.make_tensor_value_info("iframe", TensorProto.FLOAT, ["B", 3, 64, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", len(classes)])],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    manifest = {"model": IFRAME_MODEL, "config": {"clip_len": 8, "grid": 4, "height": 64, "width": 64},
                "target": "x86-cpu", "classes": classes, "weights": {"source": "test", "checkpoint": None},
                "batch": "B", "dynamic_batch": True,
                "inputs": [{"name": "iframe", "shape": ["B", 3, 64, 64], "dtype": "float32"}],
                "outputs": [{"name": "logits", "shape": ["B", len(classes)], "dtype": "float32"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_bench_engine_ray_reports_aggregate_videos_per_s_beside_one_process(ray_instance, synth_dir, tmp_path,
                                                                             capsys, monkeypatch):
    from edgeml import cli
    from edgeml.bench import run as bench_run
    from edgeml.bench.meters import MeterSet
    from edgeml.video.synth import CLASSES

    monkeypatch.setattr(bench_run, "open_meters", lambda **kw: MeterSet([], []))
    art = _iframe_artefact(tmp_path / "art", list(CLASSES))
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--artefact", str(art), "--backend", "ort", "--input", "data", "--data",
                     str(synth_dir / "test"), "--videos", "6", "--batch-sizes", "1", "--repeats", "2",
                     "--threads", "1", "--engine", "ray", "--workers", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    r = json.loads(out.read_text())
    ray_part, e2e = r["ray"], r["end_to_end"]
    assert ray_part["workers"] == 2 and ray_part["threads_per_worker"] == 1 and ray_part["videos"] == 6
    assert ray_part["clips"] == e2e["clips"] and ray_part["videos_per_s"] > 0
    assert ray_part["single_process_videos_per_s"] == e2e["videos_per_s"]
    assert ray_part["speedup_vs_single_process"] == pytest.approx(ray_part["videos_per_s"] / e2e["videos_per_s"])
    assert r["summary"]["videos_per_s_ray"] == ray_part["videos_per_s"]
    assert "videos/s on Ray" in text and "2 workers" in text
