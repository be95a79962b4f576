"""RGB video baselines at their published shapes: R(2+1)D-18, X3D-S and MobileNet-V2 + temporal shift (TSM).

The three networks a deployment engineer would try first, written here (no torchvision) layer for layer as their
reference implementations build them, so parameter and MAC counts can be checked against the published figures
(tests/model/test_model_scale.py):
    r2plus1d_18        torchvision `r2plus1d_18` (Tran et al., CVPR 2018): (2+1)D BasicBlocks [2, 2, 2, 2]
    x3d_s              PySlowFast `X3D` with configs/Kinetics/X3D_S.yaml (Feichtenhofer, CVPR 2020)
    mobilenet_v2_tsm   MobileNetV2 1.0 (Sandler et al., CVPR 2018) with TSM's residual shift (Lin et al., ICCV 2019)

Input, as for `rgb_baseline` (so the same clip data feeds them): `frames` [B, T+1, 3, H, W], RGB 0..255, I-frame
first (T = clip_len) -> logits [B, num_classes]. `grid` is the clip geometry of the data set; these models ignore it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeml.errors import InputError
from edgeml.registry import register_model

_MEAN, _STD = 0.45, 0.25  # the normalisation every edgeml video model applies to 0..255 frames


class FramesModel(nn.Module):
    """Shared input contract: config, shape check and normalisation of `frames` [B, T+1, 3, H, W]."""

    model_name = ""

    def _setup(self, **config: Any) -> None:
        self.config = dict(config)
        self.num_classes = config["num_classes"]

    def check_inputs(self, frames: torch.Tensor) -> None:
        """InputError naming the shape of `frames` and the one this model was built for."""
        c = self.config
        want = (frames.shape[0] if frames.dim() else 0, c["clip_len"] + 1, 3, c["height"], c["width"])
        if tuple(frames.shape) != want:
            raise InputError(f"frames has shape {list(frames.shape)}, expected {list(want)} for this model",
                             fix="build the clips with the model's clip_len/size, or the model with the clips'")

    def normalised(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T+1, 3, H, W] 0..255 -> zero-centred [B, T+1, 3, H, W], after the shape check."""
        self.check_inputs(frames)
        return (frames / 255.0 - _MEAN) / _STD


def round_channels(width: float, divisor: int = 8) -> int:
    """A channel count rounded to the nearest multiple of `divisor` (at least `divisor`), never below 90 % of
    `width` — MobileNet's rule, which PySlowFast also applies to X3D's SE widths."""
    out = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * width else out


# --------------------------------------------------------------------------------------------- R(2+1)D-18
def _conv2plus1d(cin: int, cout: int, mid: int, stride: int = 1) -> nn.Sequential:
    """1x3x3 spatial conv -> BN -> ReLU -> 3x1x1 temporal conv: [B, cin, T, H, W] -> [B, cout, T/s, H/s, W/s]."""
    return nn.Sequential(nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class R2Plus1DBlock(nn.Module):
    """torchvision's BasicBlock with Conv2Plus1D: both convs use the block's one middle width (that of the full
    3x3x3 kernel cin -> cout), a strided 1x1x1 projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = (cin * cout * 27) // (cin * 9 + 3 * cout)
        self.conv1 = nn.Sequential(_conv2plus1d(cin, cout, mid, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv2plus1d(cout, cout, mid), nn.BatchNorm3d(cout))
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv2(self.conv1(x)) + skip)


class R2Plus1D18(FramesModel):
    """R(2+1)D-18: frames [B, T+1, 3, H, W] -> logits [B, num_classes]; stages of 64/128/256/512 channels, the
    last three halving T, H and W."""

    model_name = "r2plus1d_18"

    def __init__(self, num_classes: int = 10, clip_len: int = 8, height: int = 112, width: int = 112, grid: int = 4):
        super().__init__()
        self._setup(num_classes=num_classes, clip_len=clip_len, height=height, width=width, grid=grid)
        self.stem = nn.Sequential(
            nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False), nn.BatchNorm3d(45), nn.ReLU(inplace=True),
            nn.Conv3d(45, 64, (3, 1, 1), 1, (1, 0, 0), bias=False), nn.BatchNorm3d(64), nn.ReLU(inplace=True))
        layers, cin = [], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            layers += [R2Plus1DBlock(cin, cout, 1 if i == 0 else 2), R2Plus1DBlock(cout, cout)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T+1, 3, H, W] (0..255) -> logits [B, num_classes]."""
        x = self.normalised(frames).transpose(1, 2)  # [B, 3, T+1, H, W]
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


# --------------------------------------------------------------------------------------------------- X3D-S
class SqueezeExcite3d(nn.Module):
    """Channel attention: x [B, C, T, H, W] * sigmoid(fc2(relu(fc1(mean_THW x))))."""

    def __init__(self, channels: int, ratio: float = 1 / 16):
        super().__init__()
        hidden = round_channels(channels * ratio)
        self.fc1, self.fc2 = nn.Conv3d(channels, hidden, 1), nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class X3DBlock(nn.Module):
    """X3D bottleneck: 1x1x1 -> BN ReLU -> channel-wise 3x3x3 (spatial stride) -> BN [-> SE] -> swish -> 1x1x1
    -> BN, plus the (projected) input, ReLU: [B, cin, T, H, W] -> [B, cout, T, H/s, W/s]."""

    def __init__(self, cin: int, inner: int, cout: int, stride: int, se: bool):
        super().__init__()
        self.a = nn.Sequential(nn.Conv3d(cin, inner, 1, bias=False), nn.BatchNorm3d(inner), nn.ReLU(inplace=True))
        self.b = nn.Sequential(nn.Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False),
                               nn.BatchNorm3d(inner))
        self.se = SqueezeExcite3d(inner) if se else nn.Identity()
        self.c = nn.Sequential(nn.Conv3d(inner, cout, 1, bias=False), nn.BatchNorm3d(cout))
        self.skip = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(F.silu(self.se(self.b(self.a(x)))))
        return torch.relu(y + (x if self.skip is None else self.skip(x)))


# X3D-S = X2D base (stem 12, stages 12/24/48/96 channels, 1/2/5/3 blocks) expanded by width 2.0, depth 2.2
# (ceil), bottleneck 2.25; head 2048 (PySlowFast configs/Kinetics/X3D_S.yaml).
X3D_S_STAGES: tuple[tuple[int, int], ...] = ((3, 24), (5, 48), (11, 96), (7, 192))  # (blocks, channels)


class X3DS(FramesModel):
    """X3D-S: frames [B, T+1, 3, H, W] -> logits [B, num_classes]; no temporal striding, spatial stride 32."""

    model_name = "x3d_s"

    def __init__(self, num_classes: int = 10, clip_len: int = 8, height: int = 112, width: int = 112, grid: int = 4,
                 dropout: float = 0.5):
        super().__init__()
        self._setup(num_classes=num_classes, clip_len=clip_len, height=height, width=width, grid=grid,
                    dropout=dropout)
        self.stem = nn.Sequential(
            nn.Conv3d(3, 24, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False),
            nn.Conv3d(24, 24, (5, 1, 1), 1, (2, 0, 0), groups=24, bias=False), nn.BatchNorm3d(24), nn.ReLU(True))
        blocks, cin = [], 24
        for n, cout in X3D_S_STAGES:
            inner = int(2.25 * cout)
            for i in range(n):  # SE in every other block, starting with the first of each stage
                blocks.append(X3DBlock(cin, inner, cout, 2 if i == 0 else 1, se=i % 2 == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.conv5 = nn.Sequential(nn.Conv3d(cin, inner, 1, bias=False), nn.BatchNorm3d(inner), nn.ReLU(True))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.lin5 = nn.Conv3d(inner, 2048, 1, bias=False)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T+1, 3, H, W] (0..255) -> logits [B, num_classes]."""
        x = self.normalised(frames).transpose(1, 2)  # [B, 3, T+1, H, W]
        x = torch.relu(self.lin5(self.pool(self.conv5(self.blocks(self.stem(x))))))
        return self.fc(self.drop(x.flatten(1)))


# ------------------------------------------------------------------------------------ MobileNet-V2 + TSM
# (expansion t, channels c, blocks n, first stride s) of MobileNetV2 1.0, Table 2 of the paper.
MOBILENET_V2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv2d (same padding, no bias) -> BN -> ReLU6: [N, cin, H, W] -> [N, cout, H/s, W/s]."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class TemporalShift(nn.Module):
    """TSM's shift over T frames folded into the batch: [B*T, C, H, W] -> same shape, with channels [0, C/8)
    taken from frame t+1 and [C/8, C/4) from frame t-1 (zeros past the ends); zero multiply-adds."""

    def __init__(self, frames: int, fold_div: int = 8):
        super().__init__()
        self.frames, self.fold_div = frames, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n // self.frames, self.frames, c, h, w)
        f = c // self.fold_div
        back = F.pad(x[:, 1:, :f], (0, 0, 0, 0, 0, 0, 0, 1))  # frame t sees t+1
        fwd = F.pad(x[:, :-1, f:2 * f], (0, 0, 0, 0, 0, 0, 1, 0))  # frame t sees t-1
        return torch.cat([back, fwd, x[:, :, 2 * f:]], 2).view(n, c, h, w)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand ->] 3x3 depthwise (stride s) -> 1x1 linear projection, residual where the
    shape is kept: [N, cin, H, W] -> [N, cout, H/s, W/s]. With `shift_frames`, residual blocks that expand
    shift their branch input in time first (TSM's residual shift; the shortcut keeps the unshifted input)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, shift_frames: int = 0):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [conv_bn_relu6(cin, hidden, 1)]
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        shift = shift_frames > 0 and self.use_res and expand != 1
        self.shift = TemporalShift(shift_frames) if shift else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.shift(x))
        return x + y if self.use_res else y


def mobilenet_v2_trunk(width_mult: float = 1.0, shift_frames: int = 0) -> tuple[nn.Sequential, int]:
    """MobileNetV2's features up to its last inverted residual: [N, 3, H, W] -> [N, C, ⌈H/32⌉, ⌈W/32⌉]; returns
    (module, C) with C = 320 at width 1.0 (the final 1x1 conv to 1280 is the caller's)."""
    cin = round_channels(32 * width_mult)
    layers: list[nn.Module] = [conv_bn_relu6(3, cin, 3, 2)]
    for t, c, n, s in MOBILENET_V2_SETTING:
        cout = round_channels(c * width_mult)
        for i in range(n):
            layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, shift_frames))
            cin = cout
    return nn.Sequential(*layers), cin


class MobileNetV2TSM(FramesModel):
    """MobileNetV2 1.0 on every frame with temporal shifts; per-frame logits averaged (TSN consensus):
    frames [B, T+1, 3, H, W] -> logits [B, num_classes]."""

    model_name = "mobilenet_v2_tsm"

    def __init__(self, num_classes: int = 10, clip_len: int = 8, height: int = 112, width: int = 112, grid: int = 4,
                 dropout: float = 0.2):
        super().__init__()
        self._setup(num_classes=num_classes, clip_len=clip_len, height=height, width=width, grid=grid,
                    dropout=dropout)
        self.frames = clip_len + 1
        self.features, cin = mobilenet_v2_trunk(1.0, shift_frames=self.frames)
        self.head_conv = conv_bn_relu6(cin, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T+1, 3, H, W] (0..255) -> logits [B, num_classes] (mean of the T+1 per-frame logits)."""
        b = frames.shape[0]
        x = self.normalised(frames).flatten(0, 1)  # [B*(T+1), 3, H, W], frames of one clip adjacent
        x = self.pool(self.head_conv(self.features(x))).flatten(1)
        return self.fc(self.drop(x)).view(b, self.frames, -1).mean(1)


# ----------------------------------------------------------------------------------------------- registry
def _example_inputs(model: FramesModel, batch: int) -> tuple[torch.Tensor]:
    c = model.config
    g = torch.Generator().manual_seed(0)
    return (torch.rand(batch, c["clip_len"] + 1, 3, c["height"], c["width"], generator=g) * 255,)


_DEFAULTS = dict(num_classes=10, clip_len=8, height=112, width=112, grid=4)


@register_model("r2plus1d_18", example_inputs=_example_inputs, task="video", input_names=("frames",),
                output_names=("logits",), defaults=_DEFAULTS,
                description="R(2+1)D-18 RGB baseline (torchvision's r2plus1d_18 layout), frames -> logits")
def r2plus1d_18(**config: Any) -> R2Plus1D18:
    """Build `R2Plus1D18`."""
    return R2Plus1D18(**config)


@register_model("x3d_s", example_inputs=_example_inputs, task="video", input_names=("frames",),
                output_names=("logits",), defaults=_DEFAULTS,
                description="X3D-S RGB baseline (PySlowFast X3D_S layout), frames -> logits")
def x3d_s(**config: Any) -> X3DS:
    """Build `X3DS`."""
    return X3DS(**config)


@register_model("mobilenet_v2_tsm", example_inputs=_example_inputs, task="video", input_names=("frames",),
                output_names=("logits",), defaults=_DEFAULTS,
                description="MobileNetV2 1.0 + temporal shift (TSM) RGB baseline, frames -> logits")
def mobilenet_v2_tsm(**config: Any) -> MobileNetV2TSM:
    """Build `MobileNetV2TSM`."""
    return MobileNetV2TSM(**config)


__all__ = ["InvertedResidual", "MobileNetV2TSM", "R2Plus1D18", "TemporalShift", "X3DS", "conv_bn_relu6",
           "mobilenet_v2_trunk", "mobilenet_v2_tsm", "r2plus1d_18", "x3d_s"]
