"""rgb_baseline: an R(2+1)D-style 3-D CNN over the decoded RGB frames of a clip — the comparison for video_spiking.

Input `frames` [B, T+1, 3, H, W] (0..255, I-frame first, as `ClipDataset` yields it) -> logits [B, num_classes].
Each (2+1)D convolution factorises a 3x3x3 kernel into a spatial 1x3x3 and a temporal 3x1x1 convolution
(Tran et al., 2018); residual blocks, BatchNorm, ReLU, global average pooling, linear classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeml.errors import ConfigError
from edgeml.models.video_baselines import FramesModel
from edgeml.registry import register_model

# channels of the stem and of each stage (stage 2+ halve the spatial size); blocks per stage.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"stem": 16, "stages": (16, 32, 64), "blocks": 1},
    "small": {"stem": 32, "stages": (32, 64, 128), "blocks": 1},
    "base": {"stem": 64, "stages": (64, 128, 256, 512), "blocks": 2},
}


class Conv2Plus1D(nn.Sequential):
    """Spatial 1x3x3 conv -> BN -> ReLU -> temporal 3x1x1 conv, [B, cin, T, H, W] -> [B, cout, T/st, H/s, W/s]."""

    def __init__(self, cin: int, cout: int, stride: int = 1, t_stride: int = 1):
        # Middle width as in R(2+1)D: keeps the parameter count of the full 3x3x3 kernel.
        mid = max(8, (27 * cin * cout) // (9 * cin + 3 * cout))
        super().__init__(nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, cout, (3, 1, 1), (t_stride, 1, 1), (1, 0, 0), bias=False))


class ResBlock2Plus1D(nn.Module):
    """Two (2+1)D convolutions with a residual connection (1x1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, t_stride: int = 1):
        super().__init__()
        self.conv1 = nn.Sequential(Conv2Plus1D(cin, cout, stride, t_stride), nn.BatchNorm3d(cout), nn.ReLU(True))
        self.conv2 = nn.Sequential(Conv2Plus1D(cout, cout), nn.BatchNorm3d(cout))
        self.skip = nn.Identity() if (cin == cout and stride == 1 and t_stride == 1) else nn.Sequential(
            nn.Conv3d(cin, cout, 1, (t_stride, stride, stride), bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.skip(x))


class RGBBaseline(FramesModel):
    """R(2+1)D-style network: frames [B, T+1, 3, H, W] -> logits [B, num_classes]."""

    def __init__(self, size: str = "small", num_classes: int = 10, clip_len: int = 8, height: int = 64,
                 width: int = 64, grid: int = 4, dropout: float = 0.1):
        super().__init__()
        if size not in SIZES:
            raise ConfigError(f"unknown rgb_baseline size {size!r}", fix=f"choose one of {sorted(SIZES)}")
        self.config = dict(size=size, num_classes=num_classes, clip_len=clip_len, height=height, width=width,
                           grid=grid, dropout=dropout)
        self.model_name = "rgb_baseline"
        self.num_classes = num_classes
        s = SIZES[size]
        self.stem = nn.Sequential(Conv2Plus1D(3, s["stem"], stride=2), nn.BatchNorm3d(s["stem"]), nn.ReLU(True))
        layers, cin = [], s["stem"]
        for i, cout in enumerate(s["stages"]):
            for j in range(s["blocks"]):
                down = i > 0 and j == 0
                layers.append(ResBlock2Plus1D(cin, cout, stride=2 if down else 1, t_stride=2 if down else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T+1, 3, H, W] (0..255) -> logits [B, num_classes]."""
        x = self.normalised(frames).transpose(1, 2)  # [B, 3, T+1, H, W]
        x = self.pool(self.layers(self.stem(x))).flatten(1)
        return self.head(self.drop(x))


def _example_inputs(model: RGBBaseline, batch: int) -> tuple[torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(0)
    return (torch.rand(batch, c["clip_len"] + 1, 3, c["height"], c["width"], generator=g) * 255,)


@register_model("rgb_baseline", example_inputs=_example_inputs, task="video", input_names=("frames",),
                output_names=("logits",),
                defaults=dict(size="small", num_classes=10, clip_len=8, height=64, width=64, grid=4),
                description="R(2+1)D-style RGB 3-D CNN over the decoded frames of a clip (the baseline)")
def rgb_baseline(**config: Any) -> RGBBaseline:
    """Build `RGBBaseline` (sizes tiny | small | base)."""
    return RGBBaseline(**config)
