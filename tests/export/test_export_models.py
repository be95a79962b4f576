"""The real registered models export: video_spiking (unrolled + streaming), the LLS nets, and every other model.

Default tests use small configurations; whole-size exports for every target are `slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from edgeml.export import export_model
from edgeml.io import save_checkpoint
from edgeml.registry import create_model, list_models

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _checkpoint(path: Path, name: str, **config) -> Path:
    """Random weights of `name` with a given config, saved as `edgeml train` would (the config travels along)."""
    torch.manual_seed(0)
    model = create_model(name, **config)
    save_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, {"model": name, "config": config})
    return path


def _summary(out: Path) -> dict:
    return json.loads((out / "parity.json").read_text())["summary"]


@pytest.mark.skipif("video_spiking" not in list_models(), reason="video_spiking not registered yet")
def test_video_spiking_exports_unrolled_and_streaming(tmp_path: Path):
    ck = _checkpoint(tmp_path / "vs.safetensors", "video_spiking", size="tiny", clip_len=4, height=32, width=32)
    # Unsimplified: the graph as our modules emit it (and the path an install without onnxsim takes).
    out = export_model("video_spiking", "x86-cpu", tmp_path / "vs", checkpoint=ck, simplify=False)
    s = _summary(out)
    assert s["ort_fp32"]["pass"] and s["streaming"] is True
    m = json.loads((out / "manifest.json").read_text())
    assert m["streaming"]["steps"] == 4 and m["streaming"]["num_states"] >= 2
    assert m["inputs"][1]["shape"] == [1, 4, 2, 8, 8] and m["preprocessing"]["clip_len"] == 4
    ops = {n.op_type for n in onnx.load(out / "model.onnx").graph.node}
    # The LIF time steps leave as one Split, not a Gather per step: TVM lowers Gather to `take` in its fast mode,
    # which warns at every build (and would segfault on an out-of-range index). The attention scale is a constant,
    # not a Shape -> Sqrt chain that ONNX Runtime cannot fold in an unsimplified fp16 graph (a warning at every
    # session start).
    assert "Gather" not in ops and "Sqrt" not in ops


@pytest.mark.slow  # real-image parity + int8 is also covered (on a trained net) by test_export_artefact.py
@pytest.mark.skipif(not FASHION.is_dir(), reason="Fashion-MNIST not installed")
def test_lls_smallconv_parity_on_real_images(tmp_path: Path):
    out = export_model("lls_smallconv", "x86-cpu", tmp_path / "lls", random_init=True, data="fashion-mnist",
                       calib_samples=16, eval_samples=64)
    s = _summary(out)
    assert s["ort_fp32"]["pass"] and s["ort_fp32"]["real_samples"] == 64
    assert s["ort_fp32"]["real_top1_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_for_x86_cpu(tmp_path: Path, name: str):
    out = export_model(name, "x86-cpu", tmp_path / name, random_init=True, random_samples=2)
    assert _summary(out)["ort_fp32"]["pass"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["jetson", "x86-tvm", "rpi4"])
@pytest.mark.parametrize("name", ["video_spiking", "lls_vgg8", "lls_vww"])
def test_full_size_models_export_for_every_target(tmp_path: Path, name: str, target: str):
    if name not in list_models():
        pytest.skip(f"{name} not registered")
    out = export_model(name, target, tmp_path / f"{name}-{target}", random_init=True, random_samples=2)
    s = _summary(out)
    assert s["ort_fp32"]["pass"] and ("tvm_fp32" not in s or s["tvm_fp32"]["pass"])
