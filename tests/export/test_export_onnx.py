"""ONNX export: static / dynamic shapes, checker-clean graphs, the dynamo fallback, streaming == unrolled."""

from __future__ import annotations

from pathlib import Path

import export_tiny
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeml.errors import ExportError
from edgeml.export import onnx as ox
from edgeml.export.validate import compare, streaming_parity
from edgeml.registry import create_model, model_spec


def _model(name: str) -> tuple[nn.Module, tuple, object]:
    torch.manual_seed(0)
    m = create_model(name).eval()
    spec = model_spec(name)
    return m, spec.example_inputs(m, 2), spec


def test_static_export_keeps_shapes_opset_and_matches_torch(tmp_path: Path):
    m, x, spec = _model(export_tiny.VIDEO)
    notes = ox.export_onnx(m, x, tmp_path / "m.onnx", input_names=spec.input_names,
                           output_names=spec.output_names, opset=16)
    io = ox.graph_io(tmp_path / "m.onnx")
    assert [i["shape"] for i in io["inputs"]] == [list(t.shape) for t in x]
    assert io["outputs"][0]["shape"] == [2, 4] and notes["opset"] == 16 and notes["exporter"] == "torchscript"
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, x, strict=True)}
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, feeds)
    assert compare([m(*x).detach().numpy()], out)["max_rel"] < 1e-5


def test_dynamic_batch_runs_other_batch_sizes(tmp_path: Path):
    m, x, spec = _model(export_tiny.IMAGE)
    ox.export_onnx(m, x, tmp_path / "m.onnx", input_names=spec.input_names, output_names=spec.output_names,
                   opset=17, dynamic_batch=True)
    assert ox.graph_io(tmp_path / "m.onnx")["inputs"][0]["shape"][0] == "batch"
    x5 = torch.rand(5, 1, 16, 16)
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": x5.numpy()})[0]
    assert out.shape == (5, 10) and np.allclose(out, m(x5).detach().numpy(), atol=1e-5)


class _OddPool(nn.Module):
    """Adaptive pooling 7 -> 2: the TorchScript exporter refuses it, the dynamo exporter decomposes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_dynamo_fallback_when_torchscript_cannot_export(tmp_path: Path):
    x = torch.rand(1, 3, 7, 7)
    notes = ox.export_onnx(_OddPool(), (x,), tmp_path / "m.onnx", input_names=["x"], output_names=["y"], opset=17)
    assert notes["exporter"] == "dynamo" and notes["opset"] == 18
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x.numpy()})[0]
    assert np.allclose(out, _OddPool()(x).numpy(), atol=1e-6)


def test_no_fallback_beyond_the_targets_max_opset(tmp_path: Path):
    with pytest.raises(ExportError, match="max 17"):
        ox.export_onnx(_OddPool(), (torch.rand(1, 3, 7, 7),), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y"], opset=16, max_opset=17)
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, nn.Module, object]:
    out = tmp_path_factory.mktemp("stream")
    m, x, spec = _model(export_tiny.VIDEO)
    ox.export_onnx(m, x, out / "model.onnx", input_names=spec.input_names, output_names=spec.output_names, opset=17)
    stream = ox.export_streaming(m, x, out, input_names=spec.input_names, output_names=spec.output_names, opset=17)
    return out, stream, m, spec


def test_streaming_graph_takes_and_returns_the_membrane_state(streamed):
    out, stream, m, _ = streamed
    io = ox.graph_io(out / "stream_step.onnx")
    names = [i["name"] for i in io["inputs"]]
    assert names == ["mv_t", "residual_t", "state_in_0", "state_in_1"]
    assert [o["name"] for o in io["outputs"]] == ["p_tokens_t", "state_out_0", "state_out_1"]
    assert io["inputs"][2]["shape"] == io["outputs"][1]["shape"] == [2, 8, 8, 8]  # one state per LIF layer


def test_streaming_equals_unrolled_step_by_step(streamed):
    out, stream, m, spec = streamed
    unrolled = ort.InferenceSession(str(out / "model.onnx"))
    samples = [{n: t.numpy() for n, t in zip(spec.input_names, spec.example_inputs(m, 2), strict=True)}]
    rng = np.random.default_rng(3)
    samples += [{k: (v * rng.uniform(0.5, 2.0)).astype(np.float32) for k, v in samples[0].items()} for _ in range(3)]
    rep = streaming_parity(out, stream, lambda f: unrolled.run(None, f), m, samples)
    assert rep["logits_max_abs_vs_unrolled_onnx"] <= 1e-5
    assert rep["step_tokens_max_abs_vs_torch"] <= 1e-5
    # and the comparison can fail: frames fed in the wrong order do not reproduce the unrolled logits
    flipped = [{k: (v[:, ::-1].copy() if k != "iframe" else v) for k, v in s.items()} for s in samples]
    logits, _ = ox.run_streaming_onnx(out, flipped[0], stream)
    assert np.abs(logits - unrolled.run(None, samples[0])[0]).max() > 1e-4
