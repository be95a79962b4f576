"""The fixed periodic basis of LLS: one sinusoid (or square wave) per class, no trainable parameters.

`B[k, n] = sin(f_k * n)` with `f_k = linspace(50, 512, K)` and `n = 0 .. D-1`; the square waveform is
`sign(B)` (so column n = 0 is all zeros, as in the authors' code). The basis is computed once in float64 on
the CPU — the arguments `f_k * n` reach ~1e6 rad, where float32 `sin` differs between libraries — then
rounded to the requested dtype and cached per (shape, waveform, device, dtype). The C++ engine computes the
same float64 closed form, so both sides hold bit-identical basis values.
"""

from __future__ import annotations

from functools import lru_cache

import torch

WAVEFORMS = ("sine", "square")
MIN_FREQ = 50.0
MAX_FREQ = 512.0


def basis_frequencies(num_classes: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ) -> torch.Tensor:
    """`f_k = linspace(min_freq, max_freq, K)` in float64, [K]."""
    return torch.linspace(min_freq, max_freq, num_classes, dtype=torch.float64)


@lru_cache(maxsize=64)
def _basis_float64(num_classes: int, dim: int, waveform: str, min_freq: float, max_freq: float) -> torch.Tensor:
    freqs = basis_frequencies(num_classes, min_freq, max_freq).unsqueeze(1)  # [K, 1]
    n = torch.arange(dim, dtype=torch.float64).unsqueeze(0)  # [1, D]
    basis = torch.sin(freqs * n)
    if waveform == "square":
        basis = torch.sign(basis)
    return basis


@lru_cache(maxsize=128)
def _basis_cached(num_classes: int, dim: int, waveform: str, min_freq: float, max_freq: float,
                  device: str, dtype: torch.dtype) -> torch.Tensor:
    return _basis_float64(num_classes, dim, waveform, min_freq, max_freq).to(device=device, dtype=dtype)


def periodic_basis(num_classes: int, dim: int, waveform: str = "square", *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, min_freq: float = MIN_FREQ,
                   max_freq: float = MAX_FREQ) -> torch.Tensor:
    """The fixed basis `B` [K, D] on `device` (cached; treat it as read-only)."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    if num_classes < 1 or dim < 1:
        raise ValueError(f"basis needs num_classes >= 1 and dim >= 1, got {num_classes} x {dim}")
    return _basis_cached(int(num_classes), int(dim), waveform, float(min_freq), float(max_freq),
                         str(torch.device(device)), dtype)
