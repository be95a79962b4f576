"""video_spiking: a spiking compressed-domain action recognizer (docs/architecture.md §4).

Sizes: tiny | small | base (the 64-px synthetic-clip models: a 3-conv I-frame CNN) and, for real footage,
s112 | m224 (built for 112x112 and 224x224 inputs: a MobileNetV2 I-frame trunk, wider spiking streams and
transformer, P/I-tokens pooled to fixed 4x4 grids by one exportable AveragePool whatever the feature-map side).
Pass the resolution with the size (`size="m224", height=224, width=224`); any height/width whose feature maps are
at least the token grids works.

Inputs, exactly as `ClipDataset` yields them (batched):
    iframe   [B, 3, H, W]        RGB 0..255
    mv       [B, T, 2, H/g, W/g] motion vectors in pixels (accumulated to the I-frame)
    residual [B, T, 3, H, W]     signed residuals in pixel units
Pipeline:
    I-frame  -> light 2-D CNN -> I-tokens [B, nI, D]
    P-step t -> motion stream:   conv -> LIF -> conv (on spikes) -> LIF      (own membrane state)
             -> residual stream: avg-pool g -> conv -> LIF -> conv (on spikes) -> LIF   (own state)
             -> 1x1 projection of the concatenated spikes (accumulations) -> pooled P-tokens [B, nP, D]
    [I-tokens + modality/time/position embeddings ; P-tokens + ...] -> unified transformer (global attention)
    -> multi-modal mixer block (token- and channel-mixing MLPs) -> mean pool -> classifier -> logits [B, K]
Streaming (frame-by-frame export): `stream_init`, `stream_step`, `stream_head`. `forward` computes the P-tokens
layer by layer (each synapse once over all steps, then its LIF neurons through time) — in eval mode the same numbers
as `stream_step` in a loop (tested), with T times fewer conv calls. In training BatchNorm sees the currents of all
B*T steps together.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeml.errors import ConfigError, InputError
from edgeml.models.video_baselines import conv_bn_relu6, mobilenet_v2_trunk
from edgeml.nn.mixer import MixerBlock, TransformerBlock
from edgeml.nn.spiking import LIF, SpikingTemporalModulator
from edgeml.registry import register_model

# stem: I-frame CNN / first spiking conv width; dim: token width; i_grid/p_grid: I- and P-token grid sides.
# encoder: "cnn3" (three stride-2 convs, the 64-px sizes) or "mobilenet_v2" (MobileNetV2 1.0 up to its 320-channel
# stage, then a 1x1 conv to dim: an I-frame trunk for natural images).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"stem": 8, "dim": 32, "depth": 1, "heads": 2, "i_grid": 2, "p_grid": 2, "encoder": "cnn3"},
    "small": {"stem": 16, "dim": 64, "depth": 2, "heads": 4, "i_grid": 4, "p_grid": 2, "encoder": "cnn3"},
    "base": {"stem": 32, "dim": 128, "depth": 4, "heads": 4, "i_grid": 4, "p_grid": 4, "encoder": "cnn3"},
    "s112": {"stem": 32, "dim": 192, "depth": 2, "heads": 4, "i_grid": 4, "p_grid": 4, "encoder": "mobilenet_v2"},
    "m224": {"stem": 48, "dim": 256, "depth": 4, "heads": 8, "i_grid": 4, "p_grid": 4, "encoder": "mobilenet_v2"},
}
MV_SCALE = 16.0  # pixels -> roughly unit range
RESIDUAL_SCALE = 32.0


def _conv_bn(cin: int, cout: int, stride: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))


def _strided(side: int, stride: int) -> int:
    """Output side of a 3x3 conv with padding 1 and `stride`."""
    return (side - 1) // stride + 1


def _grid_pool(h: int, w: int, grid: int, what: str) -> nn.AvgPool2d:
    """[N, C, h, w] -> [N, C, grid, grid] as one AveragePool (exports at any opset, unlike adaptive pooling to a
    non-divisor): kernel = stride = ceil(side / grid), zero padding left out of the means where grid does not
    divide the side (e.g. 7 -> 4: windows of 1, 2, 2, 2 rows)."""
    kernel, pad = [], []
    for side in (h, w):
        k = -(-side // grid)
        p = -(-(grid * k - side) // 2)
        if p > k // 2 or (side + 2 * p - k) // k + 1 != grid:
            raise ConfigError(f"the {what} feature map ({h}x{w}) cannot be pooled to a {grid}x{grid} token grid",
                              fix="use a larger height/width or a smaller grid")
        kernel.append(k)
        pad.append(p)
    return nn.AvgPool2d(tuple(kernel), tuple(kernel), tuple(pad), count_include_pad=False)


def _spiking_input(seq: nn.Sequential) -> nn.Sequential:
    """Mark the first layer of `seq` as fed by spikes: its multiply-accumulates are accumulations."""
    seq[0].spike_input = True
    return seq


class SpikingStream(nn.Module):
    """Two spiking temporal modulators in a row: [B, cin, h, w] per step -> spikes [B, D, h/(2s), w/(2s)]
    (s = stride of the first one)."""

    def __init__(self, cin: int, stem: int, dim: int, lif: dict[str, Any], stride: int = 2):
        super().__init__()
        self.stride = stride
        self.mod1 = SpikingTemporalModulator(_conv_bn(cin, stem, stride), LIF(**lif))
        self.mod2 = SpikingTemporalModulator(_spiking_input(_conv_bn(stem, dim)), LIF(**lif))

    def state_shapes(self, batch: int, h: int, w: int) -> list[tuple[int, ...]]:
        c1 = self.mod1.synapse[0].out_channels
        c2 = self.mod2.synapse[0].out_channels
        h1, w1 = (h - 1) // self.stride + 1, (w - 1) // self.stride + 1
        s1, s2 = (batch, c1, h1, w1), (batch, c2, (h1 + 1) // 2, (w1 + 1) // 2)
        return [s1, s1, s2, s2]  # (u, a) of mod1, (u, a) of mod2

    def step(self, x: torch.Tensor, u1: torch.Tensor, a1: torch.Tensor, u2: torch.Tensor,
             a2: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s1, u1, a1 = self.mod1.step(x, u1, a1)
        s2, u2, a2 = self.mod2.step(s1, u2, a2)
        return s2, u1, a1, u2, a2

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """[B, T, cin, h, w] -> spikes [B, T, D, h', w'] from zero state, layer by layer (== `step` in a loop)."""
        return self.mod2.spikes(self.mod1.spikes(x_seq))


class VideoSpiking(nn.Module):
    """Dual-encoder spiking recognizer over (iframe, mv, residual) -> logits [B, num_classes]."""

    def __init__(self, size: str = "small", num_classes: int = 10, clip_len: int = 8, height: int = 64,
                 width: int = 64, grid: int = 4, tau: float = 0.5, theta: float = 1.0, reset: str = "soft",
                 surrogate: str = "fast_sigmoid", slope: float = 5.0, beta: float = 0.2, trace_decay: float = 0.8,
                 dropout: float = 0.1, p_grid: int | None = None, i_grid: int | None = None,
                 motion_delta: bool = True, p_stride: int = 2, iframe_dropout: float = 0.5,
                 residual_pool: int | None = None):
        super().__init__()
        if size not in SIZES:
            raise ConfigError(f"unknown video_spiking size {size!r}", fix=f"choose one of {sorted(SIZES)}")
        if height % (4 * grid) or width % (4 * grid):
            raise ConfigError(f"height and width must be multiples of 4*grid = {4 * grid}, got {height}x{width}")
        self.config = dict(size=size, num_classes=num_classes, clip_len=clip_len, height=height, width=width,
                           grid=grid, tau=tau, theta=theta, reset=reset, surrogate=surrogate, slope=slope, beta=beta,
                           trace_decay=trace_decay, dropout=dropout, p_grid=p_grid, i_grid=i_grid,
                           motion_delta=motion_delta, p_stride=p_stride, iframe_dropout=iframe_dropout,
                           residual_pool=residual_pool)
        self.model_name = "video_spiking"
        self.num_classes = num_classes
        s = SIZES[size]
        stem, dim, self.dim = s["stem"], s["dim"], s["dim"]
        self.i_grid, self.p_grid = i_grid or s["i_grid"], p_grid or s["p_grid"]
        self.n_i, self.n_p = self.i_grid ** 2, self.p_grid ** 2
        lif = dict(tau=tau, theta=theta, reset=reset, surrogate=surrogate, slope=slope, beta=beta,
                   trace_decay=trace_decay)

        if s["encoder"] == "mobilenet_v2":
            trunk, c_trunk = mobilenet_v2_trunk(1.0)
            ih, iw = height, width
            for _ in range(5):  # the trunk's five stride-2 stages
                ih, iw = _strided(ih, 2), _strided(iw, 2)
            self.iframe_encoder = nn.Sequential(trunk, conv_bn_relu6(c_trunk, dim, 1),
                                                _grid_pool(ih, iw, self.i_grid, "I-frame"))
        else:
            self.iframe_encoder = nn.Sequential(
                _conv_bn(3, stem), nn.ReLU(), _conv_bn(stem, 2 * stem), nn.ReLU(), _conv_bn(2 * stem, dim),
                nn.ReLU(), nn.AdaptiveAvgPool2d(self.i_grid))
        # Accumulated vectors (to the I-frame) say where a block has come from; their step-to-step change says how
        # it moves now. With motion_delta the previous field is part of the streaming state.
        self.motion_delta = motion_delta
        self.motion = SpikingStream(4 if motion_delta else 2, stem, dim, lif, p_stride)
        # Residuals are pooled (default: to the motion grid) so the P path never runs at full resolution.
        self.residual_scale = residual_pool or grid
        self.residual_pool = nn.AvgPool2d(self.residual_scale)
        self.residual = SpikingStream(3, stem, dim, lif, p_stride)
        self.p_proj_motion = nn.Conv2d(dim, dim, 1)  # 1x1 projections of spikes: accumulations only
        self.p_proj_residual = nn.Conv2d(dim, dim, 1, bias=False)
        self.p_proj_motion.spike_input = self.p_proj_residual.spike_input = True
        if s["encoder"] == "mobilenet_v2":
            def p_side(side: int) -> int:
                return _strided(_strided(side, p_stride), 2)

            self.p_pool = _grid_pool(p_side(height // grid), p_side(width // grid), self.p_grid, "motion")
            rh, rw = height // self.residual_scale, width // self.residual_scale
            self.p_pool_residual = _grid_pool(p_side(rh), p_side(rw), self.p_grid, "residual")
        else:
            self.p_pool = nn.AdaptiveAvgPool2d(self.p_grid)
            self.p_pool_residual = nn.AdaptiveAvgPool2d(self.p_grid)

        self.modality = nn.Parameter(torch.zeros(2, dim))
        self.time = nn.Parameter(torch.zeros(clip_len + 1, dim))  # I-frame at time 0, P-step t at t + 1
        self.pos_i = nn.Parameter(torch.zeros(self.n_i, dim))
        self.pos_p = nn.Parameter(torch.zeros(self.n_p, dim))
        for p in (self.modality, self.time, self.pos_i, self.pos_p):
            nn.init.trunc_normal_(p, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, s["heads"]) for _ in range(s["depth"]))
        n_tokens = self.n_i + clip_len * self.n_p
        self.mixer = MixerBlock(n_tokens, dim, token_hidden=n_tokens, channel_hidden=2 * dim)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.iframe_dropout = iframe_dropout

    # -- input checks ----------------------------------------------------------------------------------
    def expected_shapes(self, batch: int | str = "B") -> dict[str, tuple]:
        c = self.config
        h, w, g, t = c["height"], c["width"], c["grid"], c["clip_len"]
        return {"iframe": (batch, 3, h, w), "mv": (batch, t, 2, h // g, w // g), "residual": (batch, t, 3, h, w)}

    def check_inputs(self, iframe: torch.Tensor, mv: torch.Tensor, residual: torch.Tensor) -> None:
        """InputError naming the tensor, its shape and the expected one when a clip does not fit the model."""
        batch = iframe.shape[0] if iframe.dim() else 0
        for name, x in (("iframe", iframe), ("mv", mv), ("residual", residual)):
            want = self.expected_shapes(batch)[name]
            if tuple(x.shape) != want:
                raise InputError(f"{name} has shape {list(x.shape)}, expected {list(want)} for this model "
                                 f"(clip_len={self.config['clip_len']}, size={self.config['height']}x"
                                 f"{self.config['width']}, grid={self.config['grid']})",
                                 fix="build the clips with the model's clip_len/size/grid, or the model with "
                                     "the clips' (edgeml train reads them from the clip cache)")

    # -- streaming API -------------------------------------------------------------------------------------
    def stream_init(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Zero membrane states and spike traces: 4 (motion) + 4 (residual) tensors [B, C, h', w']."""
        c = self.config
        h, w = c["height"] // c["grid"], c["width"] // c["grid"]
        ref = self.p_proj_motion.weight
        rh, rw = c["height"] // self.residual_scale, c["width"] // self.residual_scale
        shapes = self.motion.state_shapes(batch, h, w) + self.residual.state_shapes(batch, rh, rw)
        if self.motion_delta:
            shapes.append((batch, 2, h, w))  # the previous step's (scaled) motion field
        return tuple(ref.new_zeros(s) for s in shapes)

    def stream_step(self, mv_t: torch.Tensor, residual_t: torch.Tensor,
                    *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One P-step: mv_t [B, 2, H/g, W/g], residual_t [B, 3, H, W], state (8 tensors, + the previous field
        [B, 2, H/g, W/g] with motion_delta) -> (p_tokens_t [B, nP, D], *new_state)."""
        mv = mv_t / MV_SCALE
        extra: tuple[torch.Tensor, ...] = ()
        if self.motion_delta:
            extra = (mv,)
            mv = torch.cat([mv, mv - state[8]], 1)
        m_spk, *m_state = self.motion.step(mv, *state[:4])
        r_spk, *r_state = self.residual.step(self.residual_pool(residual_t / RESIDUAL_SCALE), *state[4:8])
        p = (self.p_pool(self.p_proj_motion(m_spk))
             + self.p_pool_residual(self.p_proj_residual(r_spk)))  # [B, D, p, p]
        return (p.flatten(2).transpose(1, 2), *m_state, *r_state, *extra)

    def stream_head(self, iframe: torch.Tensor, p_tokens: torch.Tensor) -> torch.Tensor:
        """I-frame [B, 3, H, W] + P-tokens [B, T, nP, D] -> logits [B, num_classes]."""
        b, t = p_tokens.shape[:2]
        x = (iframe / 255.0 - 0.45) / 0.25
        i_tok = self.iframe_encoder(x).flatten(2).transpose(1, 2)  # [B, nI, D]
        if self.training and self.iframe_dropout > 0:
            # Modality dropout: the clips of one video share their look, so the I-frame alone lets the net
            # memorise training videos; hiding it for part of each batch makes the motion path carry the label.
            keep = (torch.rand(b, 1, 1, device=i_tok.device) >= self.iframe_dropout).to(i_tok.dtype)
            i_tok = i_tok * keep
        i_tok = i_tok + self.pos_i + self.modality[0] + self.time[0]
        p_tok = p_tokens + self.pos_p + self.modality[1] + self.time[1:t + 1, None, :]
        tokens = torch.cat([i_tok, p_tok.reshape(b, t * self.n_p, self.dim)], 1)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.mixer(tokens)
        return self.head(self.drop(self.norm(tokens).mean(1)))

    def p_tokens(self, mv: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """mv [B, T, 2, H/g, W/g], residual [B, T, 3, H, W] -> P-tokens [B, T, nP, D]: `stream_step` over the T
        steps, computed layer by layer (each synapse once over all B*T steps, then its neurons through time) — the
        same numbers in eval mode, T times fewer conv calls."""
        b, t = mv.shape[:2]
        mv = mv / MV_SCALE
        if self.motion_delta:
            mv = torch.cat([mv, mv - torch.cat([torch.zeros_like(mv[:, :1]), mv[:, :-1]], 1)], 2)
        m_spk = self.motion(mv).flatten(0, 1)
        r_in = self.residual_pool(residual.flatten(0, 1) / RESIDUAL_SCALE).unflatten(0, (b, t))
        r_spk = self.residual(r_in).flatten(0, 1)
        p = (self.p_pool(self.p_proj_motion(m_spk))
             + self.p_pool_residual(self.p_proj_residual(r_spk)))  # [B*T, D, p, p]
        return p.flatten(2).transpose(1, 2).unflatten(0, (b, t))

    def forward(self, iframe: torch.Tensor, mv: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """iframe [B, 3, H, W], mv [B, T, 2, H/g, W/g], residual [B, T, 3, H, W] -> logits [B, num_classes]."""
        self.check_inputs(iframe, mv, residual)
        return self.stream_head(iframe, self.p_tokens(mv, residual))


def _example_inputs(model: VideoSpiking, batch: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    shapes = model.expected_shapes(batch)
    return (torch.rand(shapes["iframe"], generator=g) * 255, torch.randn(shapes["mv"], generator=g) * 2,
            torch.randn(shapes["residual"], generator=g) * 10)


@register_model("video_spiking", example_inputs=_example_inputs, task="video",
                input_names=("iframe", "mv", "residual"), output_names=("logits",),
                defaults=dict(size="small", num_classes=10, clip_len=8, height=64, width=64, grid=4),
                description="Spiking compressed-domain action recognizer: I-frame CNN + spiking motion/residual "
                            "modulators (LIF, dynamic threshold), unified transformer, mixer block")
def video_spiking(**config: Any) -> VideoSpiking:
    """Build `VideoSpiking` (sizes tiny | small | base at 64 px; s112 | m224 for real footage at 112 / 224 px)."""
    return VideoSpiking(**config)


__all__ = ["SIZES", "VideoSpiking", "video_spiking"]
