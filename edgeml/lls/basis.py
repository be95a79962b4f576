"""The fixed basis of LLS: one vector per class, no trainable parameters.

Three waveforms, as the authors' code defines them (github.com/mapolinario94/LLS-DNN, models/layers/lls_layers.py):

- `sine` — `B[k, n] = sin(f_k * n)` with `f_k = linspace(50, 512, K)` and `n = 0 .. D-1`. This is the basis the
  authors call "cosine" (their `generate_frequency_matrix` returns `torch.sin(f * t)` under that name; the paper's
  Table 1 "cosine" rows run it).
- `square` — `sign(sine)` (so column n = 0 is all zeros, as in the authors' code).
- `random` — their `LLS_Random` mode: a fixed `0.1 * N(0, 1)` matrix [K, 2048] (their `hidden_dim`) averaged down
  (or repeated up) to width D by `adaptive_avg_pool1d`. Here it is drawn once from a generator seeded with
  `RANDOM_SEED` (the authors draw one per layer from the global RNG at construction), so every block of the same
  width D shares one matrix and every run draws the same. With this basis the local features are NOT
  L2-normalised (their `compute_LocalLosses` path): see `is_periodic`.

The periodic bases are computed once in float64 on the CPU — the arguments `f_k * n` reach ~1e6 rad, where
float32 `sin` differs between libraries — then rounded to the requested dtype and cached per (shape, waveform,
device, dtype). The C++ engine computes the same float64 closed form, so both sides hold bit-identical values;
it does not compute the random basis (`edgeml.lls.pack` refuses it).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

WAVEFORMS = ("sine", "square", "random")
PERIODIC_WAVEFORMS = ("sine", "square")
MIN_FREQ = 50.0
MAX_FREQ = 512.0
RANDOM_WIDTH = 2048  # the authors' hidden_dim of every LLS_layer
RANDOM_SCALE = 0.1
RANDOM_SEED = 0


def is_periodic(waveform: str) -> bool:
    """True for the sinusoid-based bases, whose local features are L2-normalised before the projection."""
    return waveform in PERIODIC_WAVEFORMS


def basis_frequencies(num_classes: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ) -> torch.Tensor:
    """`f_k = linspace(min_freq, max_freq, K)` in float64, [K]."""
    return torch.linspace(min_freq, max_freq, num_classes, dtype=torch.float64)


def _random_basis(num_classes: int, dim: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    full = RANDOM_SCALE * torch.randn(num_classes, RANDOM_WIDTH, dtype=torch.float64, generator=generator)
    return F.adaptive_avg_pool1d(full.unsqueeze(0), dim).squeeze(0)


@lru_cache(maxsize=64)
def _basis_float64(num_classes: int, dim: int, waveform: str, min_freq: float, max_freq: float) -> torch.Tensor:
    if waveform == "random":
        return _random_basis(num_classes, dim)
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
    """The fixed basis `B` [K, D] of `waveform` on `device` (cached; treat it as read-only)."""
    if waveform not in WAVEFORMS:
        raise ValueError(f"waveform must be one of {WAVEFORMS}, got {waveform!r}")
    if num_classes < 1 or dim < 1:
        raise ValueError(f"basis needs num_classes >= 1 and dim >= 1, got {num_classes} x {dim}")
    return _basis_cached(int(num_classes), int(dim), waveform, float(min_freq), float(max_freq),
                         str(torch.device(device)), dtype)
