"""Image nets for the LLS comparison: SmallConv, VGG-8 (the paper's) and a MobileNet-style net for VWW.

Every net is a stack of `LLSBlock`s (conv/linear + BN + LeakyReLU, each with its local rule and head), a
parameter-free transition after each block (max-pool, average-pool + flatten, identity) and a final linear
classifier. The same net trains in every mode (`bp`, `lls`, `lls_m`, `lls_mxm`, `local_learnable`); the
mode only decides which local heads exist and how `edgeml.lls.trainer.LocalLearner` steps it.
Input: `image` [B, C, H, W] float32 in [0, 1] (as edgeml.data yields it); the net maps it to [-1, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeml.lls.rule import LLSBlock, check_mode
from edgeml.registry import register_model


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (bias) + BN + LeakyReLU, [B, cin, H, W] -> [B, cout, H/stride, W/stride]."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=True), nn.BatchNorm2d(cout), nn.LeakyReLU())


def dw_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """MobileNet-V1 block: depthwise 3x3 + BN + LeakyReLU, pointwise 1x1 + BN + LeakyReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                         nn.LeakyReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU())


def linear_block(nin: int, nout: int) -> nn.Sequential:
    """Linear (bias) + BN + LeakyReLU, [B, nin] -> [B, nout]."""
    return nn.Sequential(nn.Linear(nin, nout, bias=True), nn.BatchNorm1d(nout), nn.LeakyReLU())


class LLSNet(nn.Module):
    """blocks[i] -> transitions[i] -> ... -> classifier; `image` [B, C, H, W] in [0, 1] -> logits [B, K]."""

    def __init__(self, blocks: list[LLSBlock], transitions: list[nn.Module], classifier: nn.Linear,
                 config: dict[str, Any]):
        super().__init__()
        if len(blocks) != len(transitions):
            raise ValueError("one transition per block")
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.classifier = classifier
        self.config = dict(config)
        self.mode = config["mode"]

    def set_mode(self, mode: str) -> None:
        """Train in another mode: every block gets that mode's local head (new heads are freshly initialised)."""
        for block in self.blocks:
            block.set_mode(mode)
        self.mode = self.config["mode"] = mode

    @staticmethod
    def scale_input(image: torch.Tensor) -> torch.Tensor:
        """[0, 1] -> [-1, 1] (the fixed normalisation every LLS net applies first)."""
        return image * 2.0 - 1.0

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Input of the classifier, [B, F]."""
        x = self.scale_input(image)
        for block, transition in zip(self.blocks, self.transitions, strict=True):
            x = transition(block(x))
        return x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image))


class _Builder:
    """Accumulates blocks with their pooling size p and output shape, so local heads get the right D."""

    def __init__(self, mode: str, num_classes: int, waveform: str, temperature: float, label_smoothing: float):
        self.kw = dict(mode=check_mode(mode), num_classes=num_classes, waveform=waveform, temperature=temperature,
                       label_smoothing=label_smoothing)
        self.blocks: list[LLSBlock] = []
        self.transitions: list[nn.Module] = []

    def conv(self, block: nn.Module, channels: int, pool: int, transition: nn.Module | None = None) -> None:
        self.blocks.append(LLSBlock(block, feature_dim=channels * pool * pool, pool=pool, **self.kw))
        self.transitions.append(transition or nn.Identity())

    def linear(self, block: nn.Module, features: int) -> None:
        self.blocks.append(LLSBlock(block, feature_dim=features, pool=None, **self.kw))
        self.transitions.append(nn.Identity())

    def net(self, classifier: nn.Linear, config: dict[str, Any]) -> LLSNet:
        return LLSNet(self.blocks, self.transitions, classifier, config)


def _avg_flatten(size: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d((size, size)), nn.Flatten())


def _example_inputs(model: LLSNet, batch: int) -> tuple[torch.Tensor]:
    c, s = model.config["in_channels"], model.config["image_size"]
    return (torch.rand(batch, c, s, s),)


_COMMON = dict(mode="lls", waveform="square", temperature=0.5, label_smoothing=0.0)


@register_model("lls_smallconv", example_inputs=_example_inputs, task="image", input_names=("image",),
                defaults=dict(_COMMON, in_channels=1, num_classes=10, image_size=28),
                description="SmallConv (32-pool-64-pool-128, avg-pool 2x2, FC 512) of the LLS paper; "
                            "modes bp | lls | lls_m | lls_mxm | local_learnable")
def lls_smallconv(mode: str = "lls", in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                  waveform: str = "square", temperature: float = 0.5, label_smoothing: float = 0.0) -> LLSNet:
    """SmallConv: pooling sizes p = 4 (first conv), 2 (later convs); the FC block's loss uses all 512 units."""
    config = dict(mode=mode, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                  waveform=waveform, temperature=temperature, label_smoothing=label_smoothing)
    b = _Builder(mode, num_classes, waveform, temperature, label_smoothing)
    b.conv(conv_block(in_channels, 32), 32, 4, nn.MaxPool2d(2))
    b.conv(conv_block(32, 64), 64, 2, nn.MaxPool2d(2))
    b.conv(conv_block(64, 128), 128, 2, _avg_flatten(2))
    b.linear(linear_block(128 * 4, 512), 512)
    return b.net(nn.Linear(512, num_classes), config)


@register_model("lls_vgg8", example_inputs=_example_inputs, task="image", input_names=("image",),
                defaults=dict(_COMMON, in_channels=3, num_classes=10, image_size=32),
                description="VGG-8 (128-256-pool-256-256-pool-512-pool-512, avg-pool 2x2, FC 1024) of the LLS "
                            "paper; modes bp | lls | lls_m | lls_mxm | local_learnable")
def lls_vgg8(mode: str = "lls", in_channels: int = 3, num_classes: int = 10, image_size: int = 32,
             waveform: str = "square", temperature: float = 0.5, label_smoothing: float = 0.0) -> LLSNet:
    """VGG-8 as the authors' `LLS_VGG8`: p = 4 for the first conv, 2 for every later conv (local-loss widths
    2048, 1024, 1024, 1024, 2048, 2048); the FC block's loss uses all 1024 units."""
    config = dict(mode=mode, in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                  waveform=waveform, temperature=temperature, label_smoothing=label_smoothing)
    b = _Builder(mode, num_classes, waveform, temperature, label_smoothing)
    b.conv(conv_block(in_channels, 128), 128, 4)
    b.conv(conv_block(128, 256), 256, 2, nn.MaxPool2d(2))
    b.conv(conv_block(256, 256), 256, 2)
    b.conv(conv_block(256, 256), 256, 2, nn.MaxPool2d(2))
    b.conv(conv_block(256, 512), 512, 2, nn.MaxPool2d(2))
    b.conv(conv_block(512, 512), 512, 2, _avg_flatten(2))
    b.linear(linear_block(512 * 4, 1024), 1024)
    return b.net(nn.Linear(1024, num_classes), config)


# (out channels, stride, pooling size p) of the 13 depthwise-separable blocks, after the authors' LLS_MobileNetV1.
_MOBILENET = [(64, 1, 4), (128, 2, 4), (128, 1, 4), (256, 2, 2), (256, 1, 2), (512, 2, 2), (512, 1, 2),
              (512, 1, 2), (512, 1, 2), (512, 1, 2), (512, 1, 2), (1024, 2, 1), (1024, 1, 1)]


@register_model("lls_vww", example_inputs=_example_inputs, task="image", input_names=("image",),
                defaults=dict(_COMMON, in_channels=3, num_classes=2, image_size=128, width=0.25),
                description="MobileNet-V1-style net for Visual Wake Words (person / no person), width "
                            "multiplier 0.25 by default (MLPerf Tiny); modes bp | lls | lls_m | lls_mxm | "
                            "local_learnable")
def lls_vww(mode: str = "lls", in_channels: int = 3, num_classes: int = 2, image_size: int = 128,
            width: float = 0.25, waveform: str = "square", temperature: float = 0.5,
            label_smoothing: float = 0.0) -> LLSNet:
    """MobileNet-V1: stem conv (stride 2, p = 8) + 13 depthwise-separable blocks, global average pool."""
    config = dict(mode=mode, in_channels=in_channels, num_classes=num_classes, image_size=image_size, width=width,
                  waveform=waveform, temperature=temperature, label_smoothing=label_smoothing)

    def ch(c: int) -> int:
        return max(8, int(c * width))

    b = _Builder(mode, num_classes, waveform, temperature, label_smoothing)
    cin = ch(32)
    b.conv(conv_block(in_channels, cin, stride=2), cin, 8)
    for i, (cout, stride, pool) in enumerate(_MOBILENET):
        last = i == len(_MOBILENET) - 1
        b.conv(dw_block(cin, ch(cout), stride), ch(cout), pool, _avg_flatten(1) if last else None)
        cin = ch(cout)
    return b.net(nn.Linear(cin, num_classes), config)
