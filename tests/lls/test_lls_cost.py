"""Training cost accounting: counted MACs per sample and measured peak memory."""

from __future__ import annotations

import pytest

from edgeml.bench.lls_cost import layer_costs, measure_peak_memory, training_macs
from edgeml.registry import create_model


def test_smallconv_forward_macs_match_the_architecture():
    model = create_model("lls_smallconv", mode="lls")
    expected = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 32 * 9 + 7 * 7 * 128 * 64 * 9 + 512 * 512 + 512 * 10
    assert sum(c.macs for c in layer_costs(model, (1, 28, 28))) == expected


def test_local_training_skips_input_gradients_between_blocks():
    bp = training_macs(create_model("lls_smallconv", mode="bp"), "bp", (1, 28, 28))
    lls = training_macs(create_model("lls_smallconv", mode="lls"), "lls", (1, 28, 28))
    assert bp["forward"] == lls["forward"]
    # BP: weight grads + input grads of every layer but the first; LLS: weight grads + the fixed-basis heads.
    first = 28 * 28 * 32 * 9
    assert bp["backward"] == 2 * bp["forward"] - first
    assert lls["backward"] == lls["forward"] + lls["local_heads"]
    assert lls["local_heads"] == 2 * 10 * (32 * 16 + 64 * 4 + 128 * 4 + 512)


def test_depthwise_blocks_keep_their_inner_input_gradient():
    model = create_model("lls_vww", mode="lls", image_size=32)
    costs = training_macs(model, "lls", (3, 32, 32))
    inner = sum(c.macs for c in layer_costs(model, (3, 32, 32)) if c.block >= 0 and not c.first_in_block)
    assert inner > 0 and costs["backward"] == costs["forward"] + inner + costs["local_heads"]


@pytest.mark.slow
def test_measured_peak_memory_is_lower_for_lls_than_bp():
    bp = measure_peak_memory("lls_smallconv", "bp", batch_size=64, steps=2)
    lls = measure_peak_memory("lls_smallconv", "lls", batch_size=64, steps=2)
    assert lls["training_peak_bytes"] < bp["training_peak_bytes"]


@pytest.mark.slow
def test_fashion_mnist_benchmark_quick_run(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from edgeml.data import DEFAULT_ROOTS

    if not DEFAULT_ROOTS["fashion-mnist"].is_dir():
        pytest.skip("dataset-fashion-mnist not installed")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "lls_fashion_mnist.py"
    out = tmp_path / "quick.json"
    subprocess.run([sys.executable, str(script), "--subset", "256", "--epochs", "1", "--modes", "bp", "lls",
                    "--threads", "1", "--out", str(out)], check=True, capture_output=True)
    result = json.loads(out.read_text())
    assert result["complete"] and [r["mode"] for r in result["results"]] == ["bp", "lls"]
    assert result["goals"]["memory_ratio"] > 1.0


def test_learning_signal_macs_count_the_paths_each_rule_uses():
    """SmallConv on 28x28: BP's signal for a block is every layer above it; LLS's is 2·K·D on the pooled width D."""
    from edgeml.bench.lls_cost import learning_signal_macs

    model = create_model("lls_smallconv")
    costs = layer_costs(model, (1, 28, 28))
    rows = learning_signal_macs(model, (1, 28, 28))
    widths = [32 * 4 * 4, 64 * 2 * 2, 128 * 2 * 2, 512]
    assert [r["feature_dim"] for r in rows] == widths
    assert [r["lls"] for r in rows] == [2 * 10 * d for d in widths]
    assert [r["local_learnable"] for r in rows] == [3 * 10 * d for d in widths]
    assert rows[-1]["bp"] == 512 * 10  # only the classifier lies above the FC block
    assert rows[0]["bp"] == sum(c.macs for c in costs[1:])  # everything above the first conv
    assert rows[1]["lls_mxm"] - rows[1]["lls"] == 3 * 10 * 10
