"""The engine's int8 path for frozen blocks (packs with precision.frozen_compute "int8"): each int8 layer equals a
numpy/torch reference of the same scheme (activations per tensor to uint8 over [1, 255] with a zero point, symmetric
int8 weights per row, int32 sums) to within one quantisation step; a fine-tuning step stays close to the float32
one; steps allocate nothing beyond what was carved at load; malformed int8 packs are one-line errors at load."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeml.errors import CheckpointError
from edgeml.lls.device import finetune_binary, open_engine, write_idx_folder
from edgeml.lls.pack import read_pack, write_pack, write_pack_raw
from edgeml.registry import create_model


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output row, as write_pack stores frozen weights: w ~ q * scale[:, None]."""
    rows = w.reshape(len(w), -1)
    scale = (np.abs(rows).max(axis=1) / 127.0).astype(np.float32)
    return np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(w.shape), scale


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.float32, int]:
    """The engine's scheme in its float32 arithmetic: range [min(x, 0), max(x, 0)] over 254 steps, zero point in
    [1, 255], q = clamp(rint(x / scale) + zero, 1, 255) -> (q, scale, zero)."""
    x = x.astype(np.float32)
    lo, hi = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = np.float32((hi - lo) / np.float32(254))
    zero = 1 + int(min(np.float32(254), np.rint(-lo / scale)))
    q = np.clip(np.rint(x * (np.float32(1) / scale)) + np.float32(zero), 1, 255)
    return q, scale, zero


def frozen_pack(path, ops: list[dict], tensors: dict[str, np.ndarray], input_shape: tuple[int, ...], classes: int,
                compute: str = "int8"):
    """A pack of one frozen block (`ops`, ending in flatten) whose output is the logits."""
    header = {"format": "edgeml-lls-pack", "version": 1, "input": {"shape": list(input_shape)},
              "num_classes": classes, "basis": {"waveform": "square"}, "precision": {"frozen_compute": compute},
              "blocks": [{"name": "b0", "trainable": False, "ops": ops, "local": {"mode": "ce"}}]}
    return write_pack_raw(path, header, tensors)


def conv_tensors(rng, cout: int, cin: int, k: int, groups: int = 1) -> dict[str, np.ndarray]:
    q, scale = quantize_rows(rng.normal(0, 0.3, (cout, cin // groups, k, k)).astype(np.float32))
    return {"w": q, "w.scale": scale, "b": rng.normal(0, 0.1, cout).astype(np.float32)}


def int_conv(xq: np.ndarray, zero: int, q: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """The integer sums sum (xq - zero) q, exactly (float64 holds them)."""
    return F.conv2d(torch.from_numpy(xq.astype(np.float64) - zero), torch.from_numpy(q.astype(np.float64)),
                    stride=stride, padding=pad, groups=groups).numpy()


@pytest.mark.parametrize("cin,cout,size,k,stride,pad,groups", [
    (2, 6, 9, 3, 2, 1, 1),    # more output positions than channels: the product runs transposed
    (3, 32, 4, 3, 2, 1, 1),   # more channels than positions
    (4, 8, 5, 1, 1, 0, 1),    # pointwise: the quantised input is its own im2col matrix
    (4, 6, 6, 3, 1, 1, 2),    # grouped
])
@pytest.mark.parametrize("threads", [1, 3])
def test_int8_conv_matches_the_reference_within_one_step(tmp_path, cin, cout, size, k, stride, pad, groups, threads):
    rng = np.random.default_rng(0)
    t = conv_tensors(rng, cout, cin, k, groups)
    out = (size + 2 * pad - k) // stride + 1
    ops = [{"op": "conv2d", "weight": "w", "bias": "b", "stride": [stride] * 2, "padding": [pad] * 2,
            "groups": groups}, {"op": "flatten"}]
    engine = open_engine(frozen_pack(tmp_path / "c.pack", ops, t, (cin, size, size), cout * out * out), 5,
                         threads=threads)
    assert engine.int8_layers == 1
    x = rng.normal(0.3, 1.0, (5, cin, size, size)).astype(np.float32)
    y = engine.forward(x).reshape(5, cout, out, out)
    xq, sa, zero = quantize_activations(x)
    step = (np.float64(sa) * t["w.scale"])[None, :, None, None]  # one unit of the int32 sum, per output channel
    ref = int_conv(xq, zero, t["w"], stride, pad, groups) * step + t["b"][None, :, None, None]
    assert np.all(np.abs(y - ref) <= step), float(np.max(np.abs(y - ref) / step))
    # The reference is the int8 scheme, not float32: the float32 conv is many steps away.
    fp = F.conv2d(torch.from_numpy(x), torch.from_numpy(t["w"] * t["w.scale"][:, None, None, None]),
                  torch.from_numpy(t["b"]), stride, pad, groups=groups).numpy()
    assert np.max(np.abs(fp - ref) / step) > 4


@pytest.mark.parametrize("batch", [1, 2, 6])
def test_int8_linear_matches_the_reference_within_one_step(tmp_path, batch):
    rng = np.random.default_rng(1)
    q, scale = quantize_rows(rng.normal(0, 0.2, (7, 20)).astype(np.float32))
    t = {"fc": q, "fc.scale": scale, "fb": rng.normal(0, 0.1, 7).astype(np.float32)}
    ops = [{"op": "flatten"}, {"op": "linear", "weight": "fc", "bias": "fb"}]
    path = frozen_pack(tmp_path / "l.pack", ops, t, (1, 4, 5), 7)
    x = rng.uniform(-1, 2, (batch, 1, 4, 5)).astype(np.float32)
    xq, sa, zero = quantize_activations(x.reshape(batch, 20))
    step = np.float64(sa) * scale[None, :]
    ref = (xq.astype(np.float64) - zero) @ q.T.astype(np.float64) * step + t["fb"]
    for threads in (1, 3):  # three parts of 2, 2 and 3 outputs
        y = open_engine(path, 6, threads=threads).forward(x)
        assert np.all(np.abs(y - ref) <= step), float(np.max(np.abs(y - ref) / step))


def test_int8_frozen_block_matches_the_reference_within_one_step(tmp_path):
    """conv (int8) -> batch norm -> leaky ReLU -> max pool, as in the LLS nets: batch norm scales the conv's step by
    gamma / sqrt(var + eps); the activation and the pool do not widen it."""
    rng = np.random.default_rng(2)
    t = conv_tensors(rng, 8, 3, 3)
    t |= {"g": rng.uniform(0.5, 1.5, 8).astype(np.float32), "be": rng.normal(0, 0.1, 8).astype(np.float32),
          "mu": rng.normal(0, 0.1, 8).astype(np.float32), "var": rng.uniform(0.5, 1.5, 8).astype(np.float32)}
    ops = [{"op": "conv2d", "weight": "w", "bias": "b", "stride": [1, 1], "padding": [1, 1], "groups": 1},
           {"op": "batchnorm", "weight": "g", "bias": "be", "running_mean": "mu", "running_var": "var", "eps": 1e-5},
           {"op": "leaky_relu", "slope": 0.01}, {"op": "maxpool", "kernel": 2, "stride": 2}, {"op": "flatten"}]
    engine = open_engine(frozen_pack(tmp_path / "b.pack", ops, t, (3, 8, 8), 8 * 4 * 4), 4, threads=2)
    x = rng.normal(0, 1, (4, 3, 8, 8)).astype(np.float32)
    y = engine.forward(x).reshape(4, 8, 4, 4)
    xq, sa, zero = quantize_activations(x)
    gain = t["g"] / np.sqrt(t["var"].astype(np.float64) + 1e-5)
    conv = int_conv(xq, zero, t["w"], 1, 1, 1) * (np.float64(sa) * t["w.scale"])[None, :, None, None]
    bn = (conv + (t["b"] - t["mu"])[None, :, None, None]) * gain[None, :, None, None] + t["be"][None, :, None, None]
    ref = F.max_pool2d(F.leaky_relu(torch.from_numpy(bn), 0.01), 2).numpy()
    step = (np.float64(sa) * t["w.scale"] * gain)[None, :, None, None]
    assert np.all(np.abs(y - ref) <= step), float(np.max(np.abs(y - ref) / step))


def step_pair(tmp_path, batch: int = 16, steps: int = 1, threads: int = 2):
    """One smallconv, packed twice for fine-tuning its last 2 blocks: float32 and int8-frozen (3 frozen blocks)."""
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls").eval()
    opt = {"name": "sgd", "lr": 0.05, "momentum": 0.0}
    fp = open_engine(write_pack(tmp_path / "fp.pack", model, train_blocks="last:2", optimizer=opt), batch,
                     threads=threads)
    q8 = open_engine(write_pack(tmp_path / "q8.pack", model, train_blocks="last:2", optimizer=opt,
                                quantize_frozen=True, frozen_compute="int8"), batch, threads=threads)
    g = torch.Generator().manual_seed(3)
    x = model.scale_input(torch.rand(batch, 1, 28, 28, generator=g)).numpy()
    labels = torch.randint(0, 10, (batch,), generator=g).numpy()
    before = {name: fp.get(name) for name in fp.trainable_tensors}
    losses = [(fp.train_step(x, labels), q8.train_step(x, labels)) for _ in range(steps)]
    return fp, q8, before, losses, x


def test_int8_frozen_step_stays_close_to_the_float32_step(tmp_path):
    """Tolerance: the trainable blocks see features that passed 3 frozen conv layers, each with ~2^-8 relative error
    from 8-bit weights (per row) and 8-bit activations (per tensor, so small values lose most): ~1-2% on their
    input. Hence the local losses within 2% and the SGD update (lr * gradient) of every trainable tensor within 10%
    of its float32 size, with the same direction (cosine > 0.99); measured: 0.13% / 2.2% / 0.9998."""
    fp, q8, before, losses, _ = step_pair(tmp_path)
    assert q8.int8_layers == 3 and fp.int8_layers == 0
    (loss_fp, loss_q8), = losses
    np.testing.assert_allclose(loss_q8, loss_fp, rtol=0.02)
    assert loss_q8 != loss_fp  # the int8 path really ran
    for name, w0 in before.items():
        d_fp, d_q8 = fp.get(name) - w0, q8.get(name) - w0
        assert np.linalg.norm(d_q8 - d_fp) <= 0.1 * np.linalg.norm(d_fp), name
        assert np.dot(d_q8, d_fp) / (np.linalg.norm(d_q8) * np.linalg.norm(d_fp)) > 0.99, name


def test_int8_steps_are_deterministic_and_allocate_nothing_beyond_the_arena(tmp_path):
    _, q8, _, _, x = step_pair(tmp_path, steps=0)
    peak = q8.arena_peak
    assert peak == q8.required_bytes and q8.int8_workspace_bytes > 0
    labels = np.arange(len(x)) % 10
    weights = []
    for engine in (q8, open_engine(tmp_path / "q8.pack", len(x), threads=2)):
        for _ in range(3):
            engine.train_step(x, labels)
        weights.append({name: engine.get(name) for name in engine.trainable_tensors})
    assert q8.arena_peak == peak  # gemmlowp's workspaces: allocated at load (the C++ tests count every malloc)
    for name, value in weights[0].items():
        assert value.tobytes() == weights[1][name].tobytes(), name


def test_int8_forward_is_identical_on_any_thread_count(tmp_path):
    """Integer sums do not depend on how the work is cut: a net frozen entirely (every conv/linear in int8)."""
    torch.manual_seed(0)
    model = create_model("lls_smallconv", mode="lls").eval()
    path = write_pack(tmp_path / "all.pack", model, train_blocks=None, quantize_frozen=True,
                      frozen_compute="int8")
    x = model.scale_input(torch.rand(5, 1, 28, 28)).numpy()
    one = open_engine(path, 5, threads=1)
    assert one.int8_layers == 5  # three convs, the FC block and the classifier
    for threads in (2, 3):
        np.testing.assert_array_equal(open_engine(path, 5, threads=threads).forward(x), one.forward(x))


# -- malformed int8 packs: one line, at load (before any arithmetic) ---------------------------------------------

def linear_pack(tmp_path, edit) -> str:
    rng = np.random.default_rng(4)
    q, scale = quantize_rows(rng.normal(0, 0.2, (7, 20)).astype(np.float32))
    tensors = {"fc": q, "fc.scale": scale, "fb": np.zeros(7, np.float32)}
    ops = [{"op": "flatten"}, {"op": "linear", "weight": "fc", "bias": "fb"}]
    edit(tensors, ops)
    return str(frozen_pack(tmp_path / "bad.pack", ops, tensors, (1, 4, 5), 7))


BAD = {
    "missing scale": (lambda t, o: t.pop("fc.scale"), "no matching float32 '.scale'"),
    "scale of the wrong size": (lambda t, o: t.__setitem__("fc.scale", np.ones(6, np.float32)),
                                "no matching float32 '.scale'"),
    "int8 scale": (lambda t, o: t.__setitem__("fc.scale", np.ones(7, np.int8)), "no matching float32 '.scale'"),
    "weight of the wrong size": (lambda t, o: t.__setitem__("fc", np.ones((7, 21), np.int8)), "weight must be"),
    "-128": (lambda t, o: t["fc"].__setitem__((0, 0), -128), "holds -128"),
    "int8 bias": (lambda t, o: t.__setitem__("fb", np.zeros(7, np.int8)), "must be float32"),
}


@pytest.mark.parametrize("case", BAD)
def test_malformed_int8_pack_is_a_one_line_error_at_load(tmp_path, case):
    edit, needle = BAD[case]
    path = linear_pack(tmp_path, edit)
    with pytest.raises(CheckpointError, match=needle) as e:
        open_engine(path, 4)
    assert "\n" not in str(e.value)


def test_unknown_frozen_compute_is_refused_by_both_readers(tmp_path):
    path = linear_pack(tmp_path, lambda t, o: None)
    header = read_pack(path).header
    header["precision"]["frozen_compute"] = "int4"
    bad = write_pack_raw(tmp_path / "int4.pack", header, read_pack(path).tensors)
    with pytest.raises(CheckpointError, match="frozen_compute"):
        read_pack(bad)
    with pytest.raises(CheckpointError, match="frozen_compute"):
        open_engine(bad, 4)


def test_standalone_binary_refuses_a_malformed_int8_pack_with_exit_2(tmp_path):
    path = linear_pack(tmp_path, lambda t, o: t.pop("fc.scale"))
    write_idx_folder(tmp_path / "data", np.zeros((4, 4, 5), np.uint8), np.zeros(4, np.uint8))
    r = subprocess.run([str(finetune_binary()), "--pack", path, "--data", str(tmp_path / "data"), "--out",
                        str(tmp_path / "o.pack"), "--quiet"], capture_output=True, text=True,
                       env={"PATH": "/nonexistent"})
    assert r.returncode == 2 and "no matching float32 '.scale'" in r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "o.pack").exists()
