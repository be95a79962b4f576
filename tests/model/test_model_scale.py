"""Video models at the paper's scale: video_spiking's s112 / m224 sizes and the RGB baselines (R(2+1)D-18, X3D-S,
MobileNet-V2 + TSM) build at 112 and 224 px, export to ONNX with parity, and the baselines' parameter and MAC counts
match the published figures.

MACs are counted by `edgeml.bench.opcount.count_ops`. For the dense baselines the count depends on shapes only, so
it runs on the meta device (no arithmetic: the published full-size conditions cost nothing); a test checks that
this equals the count on real tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeml.bench.opcount import count_ops
from edgeml.errors import ConfigError
from edgeml.export import onnx as ox
from edgeml.models.video_baselines import TemporalShift
from edgeml.registry import create_model, model_spec

BASELINES = ("r2plus1d_18", "x3d_s", "mobilenet_v2_tsm")

# Published figures, each at the conditions its source states (MACs, which these sources call FLOPs):
PUBLISHED = {
    # torchvision R2Plus1D_18_Weights.KINETICS400_V1 meta: "_ops": 40.519 (GFLOPS column of the docs, counted as
    # MACs), "num_params": 31505325; 16-frame clips, 112x112 crop, 400 classes.
    "r2plus1d_18": dict(macs=40.519e9, params=31_505_325, num_classes=400, frames=16, side=112),
    # X3D-S: 1.96 GFLOPs (multiply-adds) per 13x160x160 view, PySlowFast MODEL_ZOO.md "X3D models" table (13 x 6,
    # configs/Kinetics/X3D_S.yaml: NUM_FRAMES 13, TRAIN_CROP_SIZE 160) = X3D paper (CVPR 2020) Table 4; 3.8 M
    # parameters (PyTorchVideo model zoo: 3.79 M). PyTorchVideo's "2.96" is the same net at its 182-px test crop,
    # counted by fvcore (which also counts BN and activations), so not comparable.
    "x3d_s": dict(macs=1.96e9, params=3.79e6, num_classes=400, frames=13, side=160),
    # MobileNetV2 1.0 at 224x224: 300 M multiply-adds, 3.4 M parameters (Sandler et al., CVPR 2018, Table 4);
    # torchvision MobileNet_V2_Weights.IMAGENET1K_V1: "_ops": 0.301, "num_params": 3504872 (1000 classes).
    # TSM's shift costs no multiply-adds (Lin et al., ICCV 2019), so 8 frames cost 8 x 300 M.
    "mobilenet_v2_tsm": dict(macs=8 * 300e6, params=3_504_872, num_classes=1000, frames=8, side=224),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread (conftest restores the count): on a shared, oversubscribed machine a spinning thread pool
    makes the first call of each conv shape several times slower, and nothing here depends on threads."""
    torch.set_num_threads(1)


def _frames(model: torch.nn.Module, batch: int = 1) -> torch.Tensor:
    c = model.config
    return torch.rand(batch, c["clip_len"] + 1, 3, c["height"], c["width"], generator=torch.Generator().manual_seed(0),
                      device="cpu") * 255


def _on_meta(name: str, **config) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and a batch-1 clip on the meta device: shapes and counts without arithmetic."""
    with torch.device("meta"):
        model = create_model(name, **config)
        c = model.config
        return model, torch.empty(1, c["clip_len"] + 1, 3, c["height"], c["width"])


def _onnx_parity(model: torch.nn.Module, inputs: tuple, path: Path, name: str) -> tuple[float, str]:
    """Export at opset 17 (what TensorRT 8.5 takes) and run in ONNX Runtime -> (max |ORT - torch|, exporter)."""
    spec = model_spec(name)
    notes = ox.export_onnx(model, inputs, path, input_names=spec.input_names, output_names=spec.output_names,
                           opset=17, simplify=False)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        want = model(*inputs).numpy()
    return float(np.abs(got - want).max()), notes["exporter"]


# ------------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_macs_and_parameters_match_the_published_figures(name):
    pub = PUBLISHED[name]
    model, clip = _on_meta(name, num_classes=pub["num_classes"], clip_len=pub["frames"] - 1, height=pub["side"],
                           width=pub["side"])
    macs = count_ops(model, [clip]).macs
    params = sum(p.numel() for p in model.parameters())
    assert macs == pytest.approx(pub["macs"], rel=0.05)
    assert params == pytest.approx(pub["params"], rel=0.01)


@pytest.mark.parametrize("name", BASELINES)
def test_meta_device_count_equals_the_count_on_real_tensors(name):
    config = dict(num_classes=5, clip_len=3, height=64, width=64)
    torch.manual_seed(0)
    real = create_model(name, **config)
    meta, clip = _on_meta(name, **config)
    assert count_ops(meta, [clip]).macs == count_ops(real, [_frames(real)]).macs


@pytest.mark.parametrize("side", [112, 224])
@pytest.mark.parametrize("name", BASELINES)
def test_baseline_builds_and_gives_logits_at(name, side):
    model, clip = _on_meta(name, num_classes=7, clip_len=8, height=side, width=side)
    assert model(clip.expand(2, -1, -1, -1, -1)).shape == (2, 7)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_onnx_export_matches_pytorch(tmp_path, name):
    torch.manual_seed(0)
    clip_len = 1 if name == "r2plus1d_18" else 3  # R(2+1)D-18 is 2.5 GMACs per 112-px frame: keep the test fast
    model = create_model(name, num_classes=7, clip_len=clip_len, height=112, width=112).eval()
    diff, exporter = _onnx_parity(model, (_frames(model),), tmp_path / "m.onnx", name)
    assert diff <= 1e-4
    assert exporter == "torchscript"  # no fallback to the dynamo exporter (opset 18, beyond TensorRT 8.5)


def test_temporal_shift_moves_an_eighth_of_the_channels_each_way():
    x = torch.arange(3 * 16, dtype=torch.float32).view(3, 16, 1, 1)  # 3 frames, 16 channels
    y = TemporalShift(frames=3)(x)
    assert torch.equal(y[:2, :2], x[1:, :2]) and not y[2, :2].any()  # channels 0-1 come from frame t+1
    assert torch.equal(y[1:, 2:4], x[:2, 2:4]) and not y[0, 2:4].any()  # channels 2-3 from frame t-1
    assert torch.equal(y[:, 4:], x[:, 4:])


def test_tsm_mixes_information_across_frames():
    torch.manual_seed(0)
    model = create_model("mobilenet_v2_tsm", num_classes=5, clip_len=3, height=64, width=64).eval()
    features = model.features  # per-frame trunk: frames of one clip interact only through the shifts
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        base = features(x)
        x2 = x.clone()
        x2[3] += 1.0
        moved = features(x2)
    assert (moved[2] - base[2]).abs().max() > 0  # frame 3's change reaches frame 2


# --------------------------------------------------------------------------------------- video_spiking
SPIKING = [("s112", 112), ("m224", 224)]


def _spiking(size: str, side: int, clip_len: int = 2, **kw) -> tuple[torch.nn.Module, tuple]:
    torch.manual_seed(0)
    model = create_model("video_spiking", size=size, num_classes=7, clip_len=clip_len, height=side, width=side,
                         **kw).eval()
    return model, model_spec("video_spiking").example_inputs(model, 1)


@pytest.mark.parametrize(("size", "side"), SPIKING)
def test_video_spiking_real_footage_size_streams_exactly_its_forward(size, side):
    model, (iframe, mv, residual) = _spiking(size, side, theta=0.05)  # low threshold: the P path really spikes
    with torch.no_grad():
        full = model(iframe, mv, residual)
        state = model.stream_init(1)
        tokens = []
        for t in range(mv.shape[1]):
            p, *state = model.stream_step(mv[:, t], residual[:, t], *state)
            tokens.append(p)
        streamed = model.stream_head(iframe, torch.stack(tokens, 1))
    # The same numbers up to float rounding (the convs see B*T vs B samples); a flipped spike would move the
    # logits far more than this.
    assert full.shape == (1, 7)
    torch.testing.assert_close(streamed, full, rtol=0, atol=1e-5)
    assert tokens[0].shape == (1, 16, model.dim)  # 4x4 P-tokens per step at both sizes
    assert max(count_ops(model, (iframe, mv, residual)).spike_rates.values()) > 0


@pytest.mark.parametrize(("size", "side"), SPIKING)
def test_video_spiking_real_footage_size_uses_a_mobilenet_v2_iframe_trunk(size, side):
    model, (iframe, _, _) = _spiking(size, side)
    with torch.no_grad():
        trunk = model.iframe_encoder[0]((iframe / 255.0 - 0.45) / 0.25)
    assert trunk.shape == (1, 320, -(-side // 32), -(-side // 32))


def test_video_spiking_s112_trains_with_surrogate_gradients_through_every_branch():
    torch.manual_seed(0)
    model = create_model("video_spiking", size="s112", num_classes=7, clip_len=2, height=112, width=112,
                         theta=0.05, iframe_dropout=0.0).train()
    inputs = model_spec("video_spiking").example_inputs(model, 2)
    torch.nn.functional.cross_entropy(model(*inputs), torch.tensor([1, 4])).backward()
    for branch in (model.iframe_encoder, model.motion, model.residual, model.blocks):
        grads = [p.grad for p in branch.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_video_spiking_unrolled_and_streaming_onnx_match_pytorch(tmp_path):
    model, inputs = _spiking("s112", 112, theta=0.05)
    diff, exporter = _onnx_parity(model, inputs, tmp_path / "model.onnx", "video_spiking")
    assert diff <= 1e-4 and exporter == "torchscript"
    spec = model_spec("video_spiking")
    stream = ox.export_streaming(model, inputs, tmp_path, input_names=spec.input_names,
                                 output_names=spec.output_names, opset=17, simplify=False)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs, strict=True)}
    logits, _ = ox.run_streaming_onnx(tmp_path, feeds, stream)
    with torch.no_grad():
        assert np.abs(logits - model(*inputs).numpy()).max() <= 1e-4


@pytest.mark.slow
def test_video_spiking_m224_onnx_matches_pytorch(tmp_path):
    model, inputs = _spiking("m224", 224, theta=0.05)
    diff, exporter = _onnx_parity(model, inputs, tmp_path / "model.onnx", "video_spiking")
    assert diff <= 1e-4 and exporter == "torchscript"


def test_video_spiking_m224_needs_ten_times_fewer_macs_than_r2plus1d_18():
    # Spike-driven accumulations counted as MACs too (at the measured rates), against the same 8-step clip.
    model, inputs = _spiking("m224", 224, clip_len=8, theta=0.05)
    ops = count_ops(model, inputs)
    r2p1d, clip = _on_meta("r2plus1d_18", num_classes=7, clip_len=8, height=224, width=224)
    assert (ops.macs + ops.acs) * 10 <= count_ops(r2p1d, [clip]).macs


def test_real_footage_sizes_refuse_inputs_too_small_for_their_token_grids():
    with pytest.raises(ConfigError, match="I-frame feature map"):
        create_model("video_spiking", size="s112", height=64, width=64)
