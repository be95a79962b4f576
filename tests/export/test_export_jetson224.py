"""The Jetson export of video_spiking at 224 px (issue 25): ONNX fp16 + QDQ int8 + the TensorRT build script, the
profile's op check, and the expected engine size and activation memory in the manifest; the video preprocessing
block's resize policy."""

from __future__ import annotations

import json
from pathlib import Path

import export_tiny
import onnx
import pytest
from onnx import TensorProto, helper

from edgeml import cli
from edgeml.export import export_model
from edgeml.export.artefact import _preprocessing
from edgeml.export.tensorrt import graph_memory


def _hand_built(path: Path, batch: int | str = 1) -> Path:
    """x [N,2,4,4] -> Conv(W [3,2,1,1]) -> a -> Relu -> b -> Mul(b, k) -> c -> Shape -> s (int64 [4]) ->
    Reshape(c, s) -> y [N,3,4,4]; k is a Constant float [1]."""
    nodes = [helper.make_node("Conv", ["x", "W"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.FLOAT, [1], [2.0])),
             helper.make_node("Mul", ["b", "k"], ["c"]), helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Reshape", ["c", "s"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 4, 4])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [3, 2, 1, 1], [0.5] * 6)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graph_memory_counts_weights_sum_and_peak_of_a_hand_built_graph(tmp_path: Path):
    m = graph_memory(_hand_built(tmp_path / "g.onnx"), float_bytes=4)
    # a, b, c: 48 floats each (192 B); s: 4 int64 (32 B). Alive per node: a | a b | b | b c | c s | c s
    assert m["activations"] == {"sum_bytes": 3 * 192 + 32, "peak_live_bytes": 384, "io_bytes": 128 + 192,
                                "tensors": 4, "unshaped": 0, "symbolic": 0}
    assert m["weights_bytes"] == 6 * 4 + 1 * 4  # W and the Constant
    half = graph_memory(tmp_path / "g.onnx", float_bytes=2)  # floats at 2 bytes, the int64 shape stays 8 per element
    assert half["weights_bytes"] == 14
    assert half["activations"]["sum_bytes"] == 3 * 96 + 32 and half["activations"]["peak_live_bytes"] == 192
    assert half["activations"]["io_bytes"] == 128 + 192  # the engine's inputs and outputs stay float32


def test_graph_memory_takes_symbolic_dims_as_the_batch(tmp_path: Path):
    m = graph_memory(_hand_built(tmp_path / "g.onnx", batch="N"), float_bytes=4, batch=2)
    assert m["activations"]["sum_bytes"] == 3 * 384 + 32 and m["activations"]["peak_live_bytes"] == 768
    assert m["activations"]["symbolic"] >= 3 and m["activations"]["io_bytes"] == 2 * (128 + 192)


@pytest.fixture(scope="module")
def tiny_jetson(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(export_tiny.VIDEO, "jetson", tmp_path_factory.mktemp("j") / "art", random_init=True)


def test_manifest_states_expected_engine_size_and_activation_memory(tiny_jetson: Path):
    m = json.loads((tiny_jetson / "manifest.json").read_text())
    mem = m["backends"]["tensorrt"]["expected_memory"]
    p = mem["precisions"]
    assert set(p) == {"fp32", "fp16", "int8"} and "peak_live_bytes" in mem["method"] and mem["batch"] == 1
    assert p["int8"]["onnx"] == "model.int8.onnx" and p["fp16"]["onnx"] == "model.onnx"
    params = sum(t.numel() for t in export_tiny.TinySpiking().parameters())
    # every parameter once in fp32 (the tiny net has no BatchNorm to fold), the zero initial membrane state the
    # exporter folds into a constant [1, 8, 8, 8], and a few scalar / shape constants
    state = 8 * 8 * 8 * 4
    assert 4 * params + state <= p["fp32"]["weights_bytes"] <= 4 * params + state + 256
    assert p["fp16"]["weights_bytes"] < p["fp32"]["weights_bytes"] * 0.55
    assert p["int8"]["weights_bytes"] < p["fp16"]["weights_bytes"]  # int8 Conv/Gemm weights, 1 byte each
    for prec in ("fp32", "fp16", "int8"):
        a = p[prec]["activations"]
        assert 0 < a["peak_live_bytes"] <= a["sum_bytes"] and a["unshaped"] == 0
    assert p["fp16"]["activations"]["sum_bytes"] < p["fp32"]["activations"]["sum_bytes"]
    # the build files are still written next to it, and the estimate sits in the manifest's checksummed folder
    assert (tiny_jetson / "tensorrt" / "build_engine.sh").is_file() and m["backends"]["tensorrt"]["op_check"]


def test_video_preprocessing_states_the_resize_policy(tiny_jetson: Path):
    pre = json.loads((tiny_jetson / "manifest.json").read_text())["preprocessing"]
    assert pre["resize"] == "crop" and "edgeml.video.extract" in pre["resize_source"]  # no --data: the default

    class Cache:  # what ClipDataset exposes: the index's meta
        meta = {"clip_len": 3, "grid": 4, "size": [32, 32], "resize": "stretch"}

    pre = _preprocessing("video", {"clip_len": 3, "grid": 4, "height": 32, "width": 32}, Cache())
    assert pre["resize"] == "stretch" and "index" in pre["resize_source"]
    Cache.meta = {"clip_len": 3, "grid": 4, "size": [32, 32]}  # a cache index from before the policy was recorded
    assert _preprocessing("video", {"clip_len": 3}, Cache())["resize"] == "crop"
    assert "resize" not in _preprocessing("image", {"image_size": 16}, None)


def test_export_with_a_stretch_clip_cache_records_stretch(tmp_path: Path):
    from edgeml.video.datasets import build_clip_cache
    from edgeml.video.synth import make_synth_dataset

    videos = make_synth_dataset(tmp_path / "synth", per_class=3, size=(48, 64), seed=0, frames=16, workers=1,
                                progress=False)
    cache = build_clip_cache(videos, tmp_path / "clips", clip_len=3, grid=4, size=(32, 32), resize="stretch",
                             workers=1, progress=False)
    out = export_model(export_tiny.VIDEO, "x86-cpu", tmp_path / "art", random_init=True, data=cache,
                       calib_samples=2, parity_samples=2, random_samples=1, eval_samples=2)
    pre = json.loads((out / "manifest.json").read_text())["preprocessing"]
    assert pre["resize"] == "stretch" and pre["size"] == [32, 32] and "index" in pre["resize_source"]


@pytest.mark.slow
def test_video_spiking_m224_exports_for_jetson(tmp_path: Path, capsys: pytest.CaptureFixture):
    """The issue's command: fp16 + QDQ int8 ONNX, the TensorRT build script, op check passing, memory stated."""
    import torch

    from edgeml.registry import create_model

    out = tmp_path / "vs224"
    assert cli.main(["export", "--model", "video_spiking", "--random-init", "--set", "size=m224", "--set",
                     "height=224", "--set", "width=224", "--target", "jetson", "--out", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert {"model.onnx", "model.fp16.onnx", "model.int8.onnx", "tensorrt/build_engine.sh",
            "tensorrt/build_engine.py", "tensorrt/build_config.json"} <= set(m["checksums"])
    assert m["inputs"][0] == {"name": "iframe", "shape": [1, 3, 224, 224], "dtype": "float32"}
    assert m["backends"]["tensorrt"]["op_check"]["blocking"] == [] and m["target"] == "jetson-orin-nano"
    assert m["parity_summary"]["ort_fp32"]["pass"] and m["parity_summary"]["streaming"] is True
    assert m["preprocessing"]["resize"] == "crop" and m["preprocessing"]["size"] == [224, 224]
    p = m["backends"]["tensorrt"]["expected_memory"]["precisions"]
    net = create_model("video_spiking", size="m224", height=224, width=224)
    params = sum(t.numel() for t in net.parameters())
    bn = sum(t.numel() for mod in net.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)
             for t in mod.parameters())
    # BatchNorm folds into the convs (its scale into the weights, its shift into a new bias) and constant folding
    # precomputes a few tensors (the P-tokens' position + modality + time embeddings, [8, 16, 256]): at least the
    # parameters without BatchNorm, within a few percent of all of them (measured: 1.3 % over)
    assert 4 * (params - bn) <= p["fp32"]["weights_bytes"] <= 4 * params * 1.05
    assert p["int8"]["weights_bytes"] < 0.6 * p["fp16"]["weights_bytes"]  # most weights are Conv/Gemm/MatMul
    for prec in ("fp32", "fp16", "int8"):
        a = p[prec]["activations"]
        assert 0 < a["peak_live_bytes"] < a["sum_bytes"] and a["unshaped"] == 0 and a["symbolic"] == 0
    # the streaming graphs for frame-by-frame use on the device
    assert (out / "stream" / "stream_step.onnx").is_file()
