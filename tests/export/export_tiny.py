"""Test-only models for the export tests: a tiny spiking video model with the streaming API (docs/architecture.md
§4) and a tiny image CNN, registered under names no real model uses. Importing this module registers them."""

from __future__ import annotations

import torch
from torch import nn

from edgeml.registry import register_model

VIDEO = "test_export_spiking"
IMAGE = "test_export_cnn"
DET = "test_export_det"  # uses torch.linalg.det -> ONNX Det, which TensorRT's parser rejects


class _Spike(torch.autograd.Function):
    """Heaviside forward, fast-sigmoid surrogate backward (as spiking models train)."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return g / (1 + 10 * x.abs()) ** 2


class TinySpiking(nn.Module):
    """iframe [B,3,H,W], mv [B,T,2,H/g,W/g], residual [B,T,3,H,W] -> logits [B,C]; LIF with a dynamic threshold."""

    def __init__(self, num_classes: int = 4, clip_len: int = 3, height: int = 32, width: int = 32, grid: int = 4):
        super().__init__()
        self.clip_len, self.height, self.width, self.grid = clip_len, height, width, grid
        self.i_enc = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.mv_enc = nn.Conv2d(2, 8, 3, padding=1)
        self.res_enc = nn.Conv2d(3, 8, grid, stride=grid)
        self.head = nn.Linear(16, num_classes)
        self.tau, self.theta0, self.beta, self.decay = 0.5, 0.3, 0.2, 0.8

    def stream_init(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (batch, 8, self.height // self.grid, self.width // self.grid)
        return torch.zeros(shape), torch.zeros(shape)

    def stream_step(self, mv_t, res_t, u, a):  # noqa: ANN001, ANN201
        x = self.mv_enc(mv_t / 4.0) + self.res_enc(res_t / 64.0)
        u = self.tau * u + x
        theta = self.theta0 + self.beta * a
        s = _Spike.apply(u - theta)
        u = u - s * theta  # soft reset
        a = self.decay * a + s
        return s.mean(dim=(2, 3)), u, a

    def stream_head(self, iframe, p_tokens):  # noqa: ANN001, ANN201
        f = self.i_enc(iframe / 255.0).flatten(1)
        return self.head(torch.cat([f, p_tokens.mean(dim=1)], dim=1))

    def forward(self, iframe, mv, residual):  # noqa: ANN001, ANN201
        state = self.stream_init(iframe.shape[0])
        tokens = []
        for t in range(mv.shape[1]):
            p, *state = self.stream_step(mv[:, t], residual[:, t], *state)
            tokens.append(p)
        return self.stream_head(iframe, torch.stack(tokens, dim=1))


def _video_inputs(model: TinySpiking, batch: int) -> tuple:
    g = torch.Generator().manual_seed(1)
    h, w, t = model.height, model.width, model.clip_len
    return (torch.rand(batch, 3, h, w, generator=g) * 255,
            torch.randn(batch, t, 2, h // model.grid, w // model.grid, generator=g) * 3,
            torch.randn(batch, t, 3, h, w, generator=g) * 20)


class TinyCNN(nn.Module):
    """image [B,C,S,S] -> logits [B,classes]; `pool` > 1 keeps a pool x pool map for the head (learns faster)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 16, det: bool = False,
                 pool: int = 1):
        super().__init__()
        self.image_size, self.in_channels, self.det = image_size, in_channels, det
        self.body = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(16 * pool * pool, num_classes))

    def forward(self, image):  # noqa: ANN001, ANN201
        y = self.body(image)
        if self.det:
            m = y[:, :4].reshape(-1, 2, 2)
            y = y + torch.linalg.det(m)[:, None]
        return y


def _image_inputs(model: TinyCNN, batch: int) -> tuple:
    g = torch.Generator().manual_seed(2)
    return (torch.rand(batch, model.in_channels, model.image_size, model.image_size, generator=g),)


def _register() -> None:
    try:
        register_model(VIDEO, example_inputs=_video_inputs, task="video", description="export test spiking model",
                       defaults={"num_classes": 4, "clip_len": 3, "height": 32, "width": 32, "grid": 4},
                       input_names=("iframe", "mv", "residual"), output_names=("logits",))(TinySpiking)
        register_model(IMAGE, example_inputs=_image_inputs, task="image", description="export test CNN",
                       defaults={"num_classes": 10, "in_channels": 1, "image_size": 16},
                       input_names=("image",), output_names=("logits",))(TinyCNN)
        register_model(DET, example_inputs=_image_inputs, task="image", description="export test CNN with Det",
                       defaults={"det": True}, input_names=("image",), output_names=("logits",))(_det_factory)
    except ValueError:  # already registered by an earlier import under another module name
        pass


def _det_factory(**config) -> TinyCNN:  # noqa: ANN003
    return TinyCNN(**config)


_register()
