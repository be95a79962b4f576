"""The CUDA twins of the engine's heavy kernels (conv forward, local-loss gradient, optimizer update) agree with
the CPU reference. Marked `cuda`: skipped with the reason where no device exists."""

from __future__ import annotations

import numpy as np
import pytest

from edgeml import _C

pytestmark = pytest.mark.cuda


def rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.mark.parametrize("groups,stride,padding,cin,cout,k", [(1, 1, 1, 3, 8, 3), (4, 2, 1, 4, 4, 3),
                                                              (1, 1, 0, 8, 16, 1)])
def test_cuda_conv_forward_matches_cpu(groups, stride, padding, cin, cout, k, rng):
    x = rng.standard_normal((2, cin, 11, 9), dtype=np.float32)
    w = rng.standard_normal((cout, cin // groups, k, k), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    args = (x, w, b, [stride, stride], [padding, padding], groups)
    assert rel_err(_C.lls_conv2d_forward(*args, cuda=True), _C.lls_conv2d_forward(*args)) <= 1e-5


@pytest.mark.parametrize("mode", ["lls", "lls_m", "lls_mxm"])
def test_cuda_local_loss_gradient_matches_cpu(mode, rng):
    a = rng.standard_normal((5, 6, 7, 7), dtype=np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    head = {"lls": None, "lls_m": rng.standard_normal(4, dtype=np.float32),
            "lls_mxm": rng.standard_normal((4, 4), dtype=np.float32)}[mode]
    cpu = _C.lls_local_loss_grad(a, labels, mode, 2, 4, 0.5, 0.1, "square", head)
    gpu = _C.lls_local_loss_grad(a, labels, mode, 2, 4, 0.5, 0.1, "square", head, cuda=True)
    assert abs(gpu[0] - cpu[0]) <= 1e-5 * abs(cpu[0])
    assert rel_err(gpu[1], cpu[1]) <= 1e-5
    if head is not None:
        assert rel_err(gpu[2], cpu[2]) <= 1e-5


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_cuda_optimizer_update_matches_cpu(name, rng):
    p = rng.standard_normal(1000, dtype=np.float32)
    g = rng.standard_normal(1000, dtype=np.float32)
    states = [np.zeros(1000, np.float32) for _ in range(4)]
    p_cpu, p_gpu = p.copy(), p.copy()
    for step in (1, 2):
        _C.lls_optimizer_update(p_cpu, g, states[0], states[1], step, name, 1e-2, weight_decay=0.01)
        _C.lls_optimizer_update(p_gpu, g, states[2], states[3], step, name, 1e-2, weight_decay=0.01, cuda=True)
    assert rel_err(p_gpu, p_cpu) <= 1e-6
