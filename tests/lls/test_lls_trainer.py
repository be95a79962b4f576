"""LocalLearner (and BP through BackpropLearner with the same optimizer settings): per-block optimizers, learning on
a small separable task, BN re-estimation, schedule-free AdamW, checkpoint state."""

from __future__ import annotations

import pytest
import torch

from edgeml.errors import ConfigError
from edgeml.lls.trainer import LocalLearner
from edgeml.registry import create_model
from edgeml.training.learners import BackpropLearner
from edgeml.training.loop import make_learner


def _toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes that differ by which half of the image is bright, [n, 1, 16, 16]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    images[labels == 0, :, :, :8] += 0.7
    images[labels == 1, :, :, 8:] += 0.7
    return images, labels


def _net(mode: str):
    torch.manual_seed(0)
    return create_model("lls_smallconv", mode=mode, num_classes=2, image_size=16)


def _learner(model, mode: str, **opts):
    """The learner of `mode` with the LLS benchmark's shared settings (no weight decay, warm-up or clipping)."""
    opts = {"lr": 5e-3, "epochs": 1, "steps_per_epoch": 30, **opts}
    return make_learner(model, mode, distributed=False, weight_decay=0.0, warmup_steps=0, grad_clip=None, **opts)


def test_each_block_has_its_own_optimizer_covering_all_parameters_once():
    model = _net("lls_mxm")
    learner = LocalLearner(model, mode="lls_mxm", lr=1e-3, epochs=1, steps_per_epoch=10)
    assert len(learner.optim.optimizers) == len(model.blocks) + 1
    ids = [id(p) for g in learner.groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.blocks[0].head for p in learner.groups[0])


@pytest.mark.parametrize("mode", ["bp", "lls", "lls_m", "lls_mxm", "local_learnable"])
def test_every_mode_learns_a_separable_task(mode):
    model = _net(mode)
    images, labels = _toy()
    learner = _learner(model, mode)
    first = learner.train_step([images], labels)
    for _ in range(29):
        last = learner.train_step([images], labels)
    assert last["loss"] < first["loss"]
    learner.before_eval([{"image": images, "label": labels}])
    with torch.no_grad():
        model.eval()
        test_images, test_labels = _toy(seed=1)
        accuracy = (model(test_images).argmax(1) == test_labels).float().mean().item()
    assert accuracy > 0.9
    if mode != "bp":
        assert {f"local_loss_{i}" for i in range(len(model.blocks))} <= set(last)


def test_before_eval_re_estimates_batchnorm_statistics():
    model = _net("lls")
    learner = LocalLearner(model, mode="lls", lr=1e-3, epochs=1, steps_per_epoch=1)
    bn = model.blocks[0].block[1]
    before = bn.running_mean.clone()
    images, _ = _toy()
    learner.before_eval([{"image": images * 5.0}] * 3)
    assert not torch.allclose(before, bn.running_mean)
    assert not model.training


def test_state_dict_round_trip_restores_optimizer_and_schedule():
    images, labels = _toy()
    model = _net("lls_m")
    learner = LocalLearner(model, mode="lls_m", lr=5e-3, epochs=2, steps_per_epoch=3)
    for _ in range(3):
        learner.train_step([images], labels)
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    clone = _net("lls_m")
    clone.load_state_dict(model.state_dict())
    resumed = LocalLearner(clone, mode="lls_m", lr=5e-3, epochs=2, steps_per_epoch=3)
    resumed.load_state_dict(state)
    learner.train_step([images], labels)
    resumed.train_step([images], labels)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.optim.optimizers[0].param_groups[0]["lr"] == \
        pytest.approx(learner.optim.optimizers[0].param_groups[0]["lr"])


def test_learner_switches_a_default_built_net_to_its_mode():
    model = _net("lls")
    learner = LocalLearner(model, mode="lls_mxm")
    assert model.mode == model.config["mode"] == "lls_mxm"
    assert all(b.head.shape == (2, 2) for b in model.blocks)
    assert any(p is model.blocks[0].head for p in learner.groups[0])


def test_bp_is_end_to_end_training_by_the_backprop_learner():
    with pytest.raises(ConfigError, match="BackpropLearner"):
        LocalLearner(_net("lls"), mode="bp")
    assert isinstance(_learner(_net("bp"), "bp"), BackpropLearner)
    assert isinstance(_learner(_net("bp"), "lls"), LocalLearner)


def test_non_lls_model_is_refused():
    with pytest.raises(ConfigError, match="LLS net"):
        LocalLearner(torch.nn.Linear(3, 2), mode="lls")


@pytest.mark.parametrize("mode", ["bp", "lls"])
def test_schedule_free_learns_and_evaluates_on_the_averaged_weights(mode):
    model = _net(mode)
    images, labels = _toy()
    learner = _learner(model, mode, optimizer="adamw_schedulefree")
    for _ in range(30):
        learner.train_step([images], labels)
    trained = [p.detach().clone() for p in model.parameters()]
    bn = model.blocks[0].block[1]
    stats = bn.running_mean.clone()
    learner.before_eval([{"image": images * 5.0}] * 3)
    # eval weights = the averaged iterate x, not the training point y; BN statistics re-estimated (BP too)
    assert any(not torch.allclose(a, b) for a, b in zip(trained, model.parameters(), strict=True))
    assert not torch.allclose(stats, bn.running_mean)
    learner.before_eval([{"image": images}] * 3)
    with torch.no_grad():
        test_images, test_labels = _toy(seed=1)
        assert (model(test_images).argmax(1) == test_labels).float().mean().item() > 0.9
    learner.train_step([images], labels)  # switches back to the training point before stepping
    assert all(g["train_mode"] for opt in learner.optim.optimizers for g in opt.param_groups)


@pytest.mark.parametrize(("mode", "scales"), [("lls_m", None), ("bp", (0.25, 0.5, 1.0, 1.0, 1.0))])
def test_schedule_free_state_round_trip_after_an_evaluation(mode, scales):
    images, labels = _toy()
    model = _net(mode)
    opts = dict(steps_per_epoch=3, optimizer="adamw_schedulefree", lr_scales=scales)
    learner = _learner(model, mode, **opts)
    for _ in range(3):
        learner.train_step([images], labels)
    learner.before_eval([{"image": images}])
    state = learner.state_dict()
    clone = _net(mode)
    clone.load_state_dict(model.state_dict())
    resumed = _learner(clone, mode, **opts)
    resumed.load_state_dict(state)
    learner.train_step([images], labels)
    resumed.train_step([images], labels)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.optim.optimizers[0].param_groups[0]["k"] == learner.optim.optimizers[0].param_groups[0]["k"] == 4


def test_warmup_ramps_the_learning_rate_linearly():
    model = _net("lls")
    learner = LocalLearner(model, mode="lls", lr=1e-2, epochs=1, steps_per_epoch=100, warmup_steps=10)
    images, labels = _toy()
    assert learner.optim.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3)
    learner.train_step([images], labels)
    assert learner.optim.optimizers[0].param_groups[0]["lr"] == pytest.approx(2e-3)


def test_unknown_optimizer_is_refused():
    with pytest.raises(ConfigError, match="optimizer"):
        LocalLearner(_net("lls"), mode="lls", optimizer="sgd")


@pytest.mark.parametrize("mode", ["bp", "lls"])
def test_lr_scales_set_the_same_per_stage_learning_rates_in_every_mode(mode):
    model = _net(mode)
    scales = [0.25, 0.5, 1.0, 1.0, 2.0]
    learner = _learner(model, mode, lr=4e-3, steps_per_epoch=10, lr_scales=scales)
    lr_of = {id(p): g["lr"] for opt in learner.optim.optimizers for g in opt.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))  # every parameter in exactly one group
    for stage, factor in zip([*model.blocks, model.classifier], scales, strict=True):
        assert all(lr_of[id(p)] == pytest.approx(4e-3 * factor) for p in stage.parameters())


def test_lr_scales_of_the_wrong_length_are_refused():
    with pytest.raises(ConfigError, match="one factor per block"):
        LocalLearner(_net("lls"), mode="lls", lr_scales=[1.0, 1.0])
