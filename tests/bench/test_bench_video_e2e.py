"""`edgeml bench` on a real exported video_spiking (random weights) and real synth videos: ORT and TVM."""

from __future__ import annotations

import pytest

from edgeml import cli
from edgeml.bench.meters import MeterSet
from edgeml.bench.run import ESTIMATED_LABEL, bench

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory):
    """A tiny synth set (8 classes x 3 videos, 32x32) and a random-init video_spiking tiny export for x86-tvm."""
    from edgeml.export import export_model
    from edgeml.registry import create_model
    from edgeml.video.synth import make_synth_dataset

    tmp = tmp_path_factory.mktemp("e2e")
    videos = make_synth_dataset(tmp / "synth", per_class=3, size=(32, 32), seed=0, frames=26, workers=1,
                                progress=False)
    ckpt = tmp / "tiny.safetensors"
    from edgeml.io import save_checkpoint

    config = {"size": "tiny", "num_classes": 8, "clip_len": 4, "height": 32, "width": 32, "grid": 4}
    net = create_model("video_spiking", **config)
    save_checkpoint(ckpt, {f"model.{k}": v for k, v in net.state_dict().items()},
                    {"model": "video_spiking", "config": config,
                     "classes": (videos / "classes.txt").read_text().split()})
    art = export_model("video_spiking", "x86-tvm", tmp / "art", checkpoint=ckpt, parity_samples=2,
                       random_samples=1, calib_samples=4, eval_samples=4)
    return videos / "test", art


@pytest.mark.parametrize("backend", ["ort", "tvm"])
def test_bench_on_real_videos_reports_videos_per_s_energy_and_split(video_setup, backend, tmp_path, capsys):
    videos, art = video_setup
    r = bench(artefact=art, backend=backend, input="data", data=videos, videos=3, batch_sizes=(1,), repeats=3,
              warmup=1, threads=1, meters=MeterSet([], []), progress=False)
    e = r["end_to_end"]
    assert e["videos"] == 3 and e["clips"] >= 3 and e["videos_per_s"] > 0
    assert e["split_s"]["decode"] > 0 and e["split_s"]["kernels"] > 0 and e["split_s"]["model"] > 0
    assert r["energy"]["label"] == ESTIMATED_LABEL and r["energy"]["joules_per_video"] > 0
    assert r["energy"]["estimate"]["table"] == "45nm" and r["energy"]["estimate"]["macs"] > 0
    assert r["environment"]["torch_threads"] == 1 and r["accuracy"]["videos"] == 3


def test_cli_bench_prints_the_pipeline_split_and_energy_line(video_setup, tmp_path, capsys, monkeypatch):
    from edgeml.bench import run as bench_run

    monkeypatch.setattr(bench_run, "open_meters", lambda **kw: MeterSet([], []))
    videos, art = video_setup
    assert cli.main(["bench", "--artefact", str(art), "--backend", "ort", "--input", "data", "--data", str(videos),
                     "--videos", "2", "--batch-sizes", "1", "--repeats", "3", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "videos/s" in out and "pipeline split" in out and "decode" in out and "kernels" in out
    assert "estimated (no power sensor)" in out and "45nm" in out
