"""The parity checker itself: it must report a wrong model or runtime as failing, and a right one as passing."""

from __future__ import annotations

import copy
from pathlib import Path

import export_tiny
import numpy as np
import pytest
import torch

from edgeml.export import validate
from edgeml.export.artefact import PARITY_REL_TOL, _parity_report
from edgeml.export.onnx import export_onnx
from edgeml.export.runtime import OrtRuntime, TorchRuntime
from edgeml.export.targets import load_profile


def _cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return export_tiny.TinyCNN().eval()


def _samples(n: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [{"image": rng.random((2, 1, 16, 16), dtype=np.float32)} for _ in range(n)]


def _perturbed(model: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """The same network with every weight nudged: close, but far outside the fp32 parity tolerance."""
    wrong = copy.deepcopy(model)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in wrong.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return wrong


def test_compare_reports_the_worst_absolute_and_scale_relative_error():
    ref = [np.array([[1.0, -4.0, 2.0]]), np.array([10.0, 0.0])]
    out = [np.array([[1.0, -2.0, 2.0]]), np.array([10.0, 0.5])]
    c = validate.compare(ref, out)
    assert c["max_abs"] == pytest.approx(2.0)
    assert c["max_rel"] == pytest.approx(0.5)  # 2 / max|ref| of the first output (4)
    assert validate.compare(ref, ref) == {"max_abs": 0.0, "max_rel": 0.0}


def test_compare_refuses_a_missing_output():
    with pytest.raises(ValueError):
        validate.compare([np.zeros(2), np.zeros(2)], [np.zeros(2)])


def test_parity_of_a_model_with_perturbed_weights_fails_the_tolerance():
    net = _cnn()
    rep = validate.parity(TorchRuntime(net, ["image"]).run, TorchRuntime(_perturbed(net), ["image"]).run, _samples())
    assert rep["max_rel"] > 100 * PARITY_REL_TOL and rep["max_abs"] > 0
    assert rep["samples"] == 6 and rep["compared"] == 12


def test_parity_of_a_swapped_output_loses_top1_agreement():
    net = _cnn()
    ref = TorchRuntime(net, ["image"]).run

    def swapped(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref(feeds)[0][:, ::-1].copy()]  # classes in reverse order: same values, wrong labels

    rep = validate.parity(ref, swapped, _samples())
    assert rep["top1_agreement"] < 0.5 and rep["max_rel"] > 0.01


def test_parity_of_the_exported_onnx_passes(tmp_path: Path):
    net = _cnn()
    example = (torch.rand(2, 1, 16, 16),)
    export_onnx(net, example, tmp_path / "m.onnx", input_names=["image"], output_names=["logits"], opset=17)
    rep = validate.parity(TorchRuntime(net, ["image"]).run, OrtRuntime(tmp_path / "m.onnx").run, _samples())
    assert rep["max_rel"] <= PARITY_REL_TOL and rep["top1_agreement"] == 1.0


@pytest.mark.parametrize("wrong_onnx, passes", [(False, True), (True, False)])
def test_export_parity_report_fails_an_onnx_graph_of_other_weights(tmp_path: Path, wrong_onnx: bool, passes: bool):
    """What parity.json says: the ONNX graph is exported from perturbed weights -> ort_fp32 does not pass."""
    net = _cnn()
    example = (torch.rand(1, 1, 16, 16),)
    exported = _perturbed(net) if wrong_onnx else net
    export_onnx(exported, example, tmp_path / "model.onnx", input_names=["image"], output_names=["logits"], opset=17)
    feeds0 = {"image": example[0].numpy()}
    report = _parity_report(net, tmp_path, ["image"], ["logits"], feeds0, {}, None, {}, load_profile("x86-cpu"),
                            parity_samples=0, n_random=4, eval_samples=None)
    ort = report["summary"]["ort_fp32"]
    assert ort["pass"] is passes
    assert (ort["max_rel"] <= PARITY_REL_TOL) is passes
