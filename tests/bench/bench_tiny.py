"""A tiny registered model, its ONNX twin (built with onnx.helper) and a fake export folder, for bench tests."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeml.registry import _MODELS, register_model

NAME = "bench_test_tiny"
CLASSES = ["left", "right"]


class Tiny(nn.Module):
    """[B, 3, 8, 8] image -> [B, 2] logits: mean brightness of the left half vs the right half."""

    def __init__(self, **config):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        left, right = image[..., :4].mean(dim=(1, 2, 3)), image[..., 4:].mean(dim=(1, 2, 3))
        return torch.stack([left, right], dim=1) * self.scale


if NAME not in _MODELS:
    register_model(NAME, example_inputs=lambda m, b: (torch.zeros(b, 3, 8, 8),), task="image",
                   description="bench test model", input_names=("image",), defaults={"clip_len": 1, "grid": 4,
                                                                                     "height": 8, "width": 8})(Tiny)


def onnx_model(path: Path, batch: int | str = "B") -> None:
    """The same model as ONNX (ReduceMean over halves via a fixed [192, 2] MatMul), batch dim `batch`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((3, 8, 8, 2), np.float32)
    w[..., :4, 0] = 1 / 96
    w[..., 4:, 1] = 1 / 96
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
                              [numpy_helper.from_array(w.reshape(192, 2), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def make_artefact(folder: Path, batch: int | str = "B") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx_model(folder / "model.onnx", batch)
    manifest = {"model": NAME, "config": {"clip_len": 1, "grid": 4, "height": 8, "width": 8},
                "target": "x86-cpu", "classes": CLASSES, "weights": {"source": "test", "checkpoint": None},
                "batch": 1 if batch == 1 else "B", "dynamic_batch": batch != 1,
                "inputs": [{"name": "image", "shape": [batch, 3, 8, 8], "dtype": "float32"}],
                "outputs": [{"name": "logits", "shape": [batch, 2], "dtype": "float32"}]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def make_videos(folder: Path, per_class: int = 2) -> Path:
    """Placeholder video files in class folders; the fake extractor below makes their clips."""
    for cls in CLASSES:
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / cls / f"v{i}.mp4").write_bytes(b"fake")
    return folder


def fake_extract_clips(path, *, clip_len, grid, size, timings=None, frames=True, resize="crop"):
    """Two clips per video, bright on the side its class folder names; adds decode/kernels wall and CPU timings."""
    side = Path(path).parent.name
    image = np.zeros((3, *size), np.float32)
    if side == "left":
        image[..., : size[1] // 2] = 200
    else:
        image[..., size[1] // 2:] = 200
    time.sleep(0.003)  # the time the fake claims below
    if timings is not None:
        timings["decode"] = timings.get("decode", 0.0) + 0.002
        timings["kernels"] = timings.get("kernels", 0.0) + 0.001
        timings["decode_cpu"] = timings.get("decode_cpu", 0.0) + 0.0015
        timings["kernels_cpu"] = timings.get("kernels_cpu", 0.0) + 0.0005
    return [{"image": image}, {"image": image}]


def install_fake_video_module(monkeypatch) -> None:
    """Make `edgeml.video.clips.extract_clips` the fake, whether or not the real module exists yet."""
    mod = types.ModuleType("edgeml.video.clips")
    mod.extract_clips = fake_extract_clips
    if "edgeml.video" not in sys.modules:
        try:
            import edgeml.video  # noqa: F401
        except ImportError:
            monkeypatch.setitem(sys.modules, "edgeml.video", types.ModuleType("edgeml.video"))
    monkeypatch.setitem(sys.modules, "edgeml.video.clips", mod)
