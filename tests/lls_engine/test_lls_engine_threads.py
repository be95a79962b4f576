"""The engine's threads: one per processor by default, a fixed count gives bit-identical weights run after run
(in the binding and in edgeml-finetune --threads), and counts differ only by float rounding."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from edgeml.errors import InputError
from edgeml.lls.device import open_engine
from edgeml.lls.pack import write_pack
from edgeml.registry import create_model


@pytest.fixture(scope="module", params=["lls_smallconv", "lls_vww"])
def trained(request, tmp_path_factory):
    """A pack training every block (conv, depthwise, pointwise, linear), and one batch of data."""
    torch.manual_seed(0)
    config = {"mode": "lls"} if request.param == "lls_smallconv" else {"mode": "lls", "image_size": 32}
    model = create_model(request.param, **config).eval()
    pack = write_pack(tmp_path_factory.mktemp("threads") / "in.pack", model, train_blocks="all",
                      optimizer={"name": "adamw", "lr": 1e-3})
    c, s = model.config["in_channels"], model.config["image_size"]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (12, c, s, s)).astype(np.float32)
    labels = rng.integers(0, model.config["num_classes"], 12)
    return pack, x, labels


def weights_after_steps(pack, x, labels, threads: int | None, steps: int = 3) -> dict[str, np.ndarray]:
    engine = open_engine(pack, len(x), threads=threads)
    for _ in range(steps):
        engine.train_step(x, labels)
    return {name: engine.get(name) for name in engine.trainable_tensors}


def test_default_thread_count_is_the_processors_this_process_may_use(trained):
    assert open_engine(trained[0], 4).threads == len(os.sched_getaffinity(0))
    assert open_engine(trained[0], 4, threads=3).threads == 3


def test_two_runs_with_two_threads_give_bit_identical_weights(trained):
    first = weights_after_steps(*trained, threads=2)
    second = weights_after_steps(*trained, threads=2)
    for name, value in first.items():
        assert value.tobytes() == second[name].tobytes(), name


def test_thread_counts_differ_only_by_float_rounding(trained):
    one = weights_after_steps(*trained, threads=1)
    for threads in (2, 3):
        other = weights_after_steps(*trained, threads=threads)
        for name, value in one.items():
            scale = max(float(np.abs(value).max()), 1e-6)
            assert float(np.abs(other[name] - value).max()) / scale < 1e-4, (threads, name)


def test_bad_thread_counts_are_refused(trained):
    for bad in (0, -1, 5000):
        with pytest.raises(InputError, match="threads"):
            open_engine(trained[0], 4, threads=bad)
