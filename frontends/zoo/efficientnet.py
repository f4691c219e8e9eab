"""EfficientNet-B0 with the standard stage table (no stochastic depth).

For small inputs (H <= 64) the stem convolution uses stride 1 instead of 2 so that 32x32 images keep
enough resolution; the parameter count is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import init_cnn_weights, is_small_input

#: (expand_ratio, kernel, stride, in_channels, out_channels, num_layers) for each B0 stage.
B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _conv_bn_act(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Conv (same padding, no bias) + BatchNorm, followed by SiLU when ``act``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, 1x1 reduce + SiLU, 1x1 expand + sigmoid, rescale."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, kernel_size=1)
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, kernel_size=1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``x`` by its learned gate."""
        scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * scale


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1x1 expand] -> depthwise kxk -> SE -> 1x1 project (+ skip)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        expand_ratio: int,
        kernel: int,
        stride: int,
        se_ratio: float = 0.25,
    ) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        hidden = in_ch * expand_ratio
        self.expand = _conv_bn_act(in_ch, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn_act(hidden, hidden, kernel, stride, groups=hidden)
        self.se = SqueezeExcitation(hidden, max(1, int(in_ch * se_ratio)))
        self.project = _conv_bn_act(hidden, out_ch, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; adds the input back when stride is 1 and channels match."""
        out = self.project(self.se(self.depthwise(self.expand(x))))
        if self.use_residual:
            out = out + x
        return out


class EfficientNet(nn.Module):
    """EfficientNet: stem, MBConv stages, 1x1 head conv, pool, dropout, linear classifier."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int, int, int], ...] = B0_STAGES,
        *,
        stem_channels: int = 32,
        head_channels: int = 1280,
        dropout: float = 0.2,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] = (3, 224, 224),
    ) -> None:
        super().__init__()
        stem_stride = 1 if is_small_input(input_shape) else 2
        self.stem = _conv_bn_act(input_shape[0], stem_channels, 3, stem_stride)
        blocks: list[nn.Module] = []
        for expand_ratio, kernel, stride, in_ch, out_ch, num_layers in stages:
            stage = [
                MBConv(
                    in_ch if i == 0 else out_ch,
                    out_ch,
                    expand_ratio=expand_ratio,
                    kernel=kernel,
                    stride=stride if i == 0 else 1,
                )
                for i in range(num_layers)
            ]
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn_act(stages[-1][4], head_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(head_channels, num_classes)
        init_cnn_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(self.dropout(x))


def efficientnet_b0(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> EfficientNet:
    """EfficientNet-B0: standard stage table, stem 32, head 1280, dropout 0.2."""
    return EfficientNet(B0_STAGES, num_classes=num_classes, input_shape=input_shape)
