"""video_spiking and rgb_baseline: shapes, streaming == forward, input checks, op counts and energy."""

from __future__ import annotations

import pytest
import torch

from edgeml.bench.energy import estimate_energy
from edgeml.bench.opcount import count_ops
from edgeml.errors import CheckpointError, ConfigError, InputError
from edgeml.io import save_checkpoint
from edgeml.registry import create_model, model_spec


def _tiny(name: str = "video_spiking", **kw):
    torch.manual_seed(0)
    model = create_model(name, size="tiny", num_classes=5, clip_len=4, height=32, width=32, grid=4, **kw).eval()
    return model, model_spec(name).example_inputs(model, 3)


@pytest.mark.parametrize("size", ["tiny", "small", "base"])
def test_video_spiking_sizes_give_logits(size):
    model = create_model("video_spiking", size=size, num_classes=7, clip_len=4, height=32, width=32).eval()
    with torch.no_grad():
        logits = model(*model_spec("video_spiking").example_inputs(model, 2))
    assert logits.shape == (2, 7)


def test_streaming_steps_equal_forward_exactly():
    model, (iframe, mv, residual) = _tiny()
    with torch.no_grad():
        full = model(iframe, mv, residual)
        state = model.stream_init(iframe.shape[0])
        tokens = []
        for t in range(mv.shape[1]):
            p, *state = model.stream_step(mv[:, t], residual[:, t], *state)
            tokens.append(p)
        streamed = model.stream_head(iframe, torch.stack(tokens, 1))
    assert torch.equal(full, streamed)
    # (membrane, trace) x 2 modulators x 2 streams (motion and residual kept apart) + the previous motion field
    assert len(state) == 9


def test_membrane_state_carries_information_between_steps():
    model, (iframe, mv, residual) = _tiny(theta=0.3)
    with torch.no_grad():
        state = model.stream_init(3)
        _, *after = model.stream_step(mv[:, 0], residual[:, 0], *state)
    assert any(float(s.abs().sum()) > 0 for s in after)


def test_wrong_clip_shape_is_a_clear_input_error():
    model, (iframe, mv, residual) = _tiny()
    with pytest.raises(InputError, match=r"mv has shape \[3, 3, 2, 8, 8\], expected \[3, 4, 2, 8, 8\]"):
        model(iframe, mv[:, :3], residual)
    with pytest.raises(InputError, match="residual"):
        model(iframe, mv, residual[..., :16])


def test_rgb_baseline_gives_logits_and_checks_its_input():
    model, (frames,) = _tiny("rgb_baseline")
    assert frames.shape == (3, 5, 3, 32, 32)
    with torch.no_grad():
        assert model(frames).shape == (3, 5)
    with pytest.raises(InputError, match="frames has shape"):
        model(frames[:, :4])


def test_unknown_size_is_a_config_error():
    with pytest.raises(ConfigError, match="size"):
        create_model("video_spiking", size="huge")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    rgb, _ = _tiny("rgb_baseline")
    path = tmp_path / "rgb.safetensors"
    save_checkpoint(path, {f"model.{k}": v for k, v in rgb.state_dict().items()},
                    {"model": "rgb_baseline", "config": rgb.config})
    with pytest.raises(CheckpointError, match="rgb_baseline"):
        create_model("video_spiking", checkpoint=path)


def test_spike_fed_layers_really_receive_binary_inputs():
    model, inputs = _tiny(theta=0.3)
    seen = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append(a[0])) for m in model.modules()
             if getattr(m, "spike_input", False)]
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    assert seen and all(set(torch.unique(x).tolist()) <= {0.0, 1.0} for x in seen)


def test_accumulations_are_counted_from_measured_spike_rates():
    silent, inputs = _tiny(theta=1e6)  # no neuron can reach the threshold: no spikes, no accumulations
    busy, _ = _tiny(theta=1e-3)
    quiet = count_ops(silent, inputs)
    loud = count_ops(busy, inputs)
    assert quiet.acs == 0 and all(r == 0 for r in quiet.spike_rates.values())
    assert loud.acs > 0 and max(loud.spike_rates.values()) > 0.1
    assert quiet.macs == pytest.approx(loud.macs)  # dense layers do not depend on spikes
    # Each spike-fed layer's ACs = its dense MACs x the non-zero fraction of the input it actually got.
    for layer in loud.layers.values():
        if "input_rate" in layer:
            assert 0 < layer["input_rate"] <= 1
    assert loud.acs < loud.dense_macs


def test_spiking_model_needs_far_fewer_macs_than_the_rgb_baseline():
    spiking, inputs = _tiny()
    rgb, frames = _tiny("rgb_baseline")
    assert count_ops(spiking, inputs).macs * 10 < count_ops(rgb, frames).macs


def test_energy_estimate_uses_the_stated_table_and_is_labelled():
    model, inputs = _tiny(theta=0.05)
    ops = count_ops(model, inputs)
    est = estimate_energy(ops)
    assert est.label == "estimated" and est.table == "45nm"
    assert est.joules == pytest.approx(ops.macs * 4.6e-12 + ops.acs * 0.9e-12)
    assert estimate_energy(ops, "45nm-int8").joules < est.joules
    with pytest.raises(ConfigError, match="table"):
        estimate_energy(ops, "3nm")


def test_shipped_checkpoint_loads_and_says_how_it_was_made():
    from pathlib import Path

    from edgeml.io import load_checkpoint

    path = Path(__file__).resolve().parents[2] / "edgeml" / "assets" / "video_spiking" / "best.safetensors"
    if not path.is_file():
        pytest.skip("no shipped video_spiking checkpoint in this checkout")
    model = create_model("video_spiking", checkpoint=path)
    _, meta = load_checkpoint(path, expect_model="video_spiking")
    assert meta["config"]["size"] == "small" and "benchmarks/video_train.py" in meta["reproduce"]
    with torch.no_grad():
        assert model.eval()(*model_spec("video_spiking").example_inputs(model, 1)).shape == (1, 8)


def test_shipped_checkpoint_recognises_freshly_generated_clips(tmp_path):
    """Measured, not read back: the shipped weights classify synth videos of a seed they never saw."""
    from pathlib import Path

    from edgeml.training.evaluation import evaluate
    from edgeml.video.datasets import ClipDataset, build_clip_cache
    from edgeml.video.synth import make_synth_dataset

    path = Path(__file__).resolve().parents[2] / "edgeml" / "assets" / "video_spiking" / "best.safetensors"
    if not path.is_file():
        pytest.skip("no shipped video_spiking checkpoint in this checkout")
    model = create_model("video_spiking", checkpoint=path)
    cfg = model.config
    videos = make_synth_dataset(tmp_path / "videos", per_class=3, seed=2024, frames=26, progress=False)
    clips = build_clip_cache(videos, tmp_path / "clips", clip_len=cfg["clip_len"], grid=cfg["grid"],
                             size=(cfg["height"], cfg["width"]), progress=False)
    data = torch.utils.data.ConcatDataset([ClipDataset(clips, s, augment=False) for s in ("train", "val", "test")])
    result = evaluate(model, torch.utils.data.DataLoader(data, batch_size=16), model_spec("video_spiking").input_names,
                      8)
    assert result["samples"] == 48  # 24 fresh videos x 2 clips, every class 3 times
    assert result["top1"] >= 0.9, result["confusion"]
