"""Multi-modal mixer block and a plain pre-norm transformer block (token sequences [B, N, D])."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """Linear -> GELU -> Linear, [..., D] -> [..., D]."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MixerBlock(nn.Module):
    """MLP-Mixer block over joint tokens: token mixing (across the N tokens) then channel mixing, [B, N, D]."""

    def __init__(self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = MLP(num_tokens, token_hidden)
        self.channel_mlp = MLP(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class SelfAttention(nn.Module):
    """Global multi-head self-attention, [B, N, D] -> [B, N, D].

    `core_macs(n)` is the MAC count of the two attention matmuls (QK^T and AV) for one sample of n tokens,
    which module hooks cannot see (used by `edgeml.bench.opcount`).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        # SDPA's default scale, as a constant: left to SDPA, the ONNX graph computes it with a Sqrt node, which
        # ONNX Runtime cannot fold in an fp16 graph (it warns at every session start).
        self.scale = 1.0 / math.sqrt(dim // heads)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))

    def core_macs(self, n: int, dim: int) -> int:
        return 2 * n * n * dim


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN x); x + MLP(LN x), [B, N, D]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
