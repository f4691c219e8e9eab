"""MobileNetV2 (width 1.0) with ReLU6, last channel 1280 and dropout 0.2.

For small inputs (H <= 64) the stem convolution uses stride 1 instead of 2 so that 32x32 images keep
enough resolution; the parameter count is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import init_cnn_weights, is_small_input

#: (expand_ratio t, out_channels c, repeats n, first stride s) for each MobileNetV2 stage.
V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn_relu6(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (same padding, no bias) + BatchNorm + ReLU6."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=False),
    )


class InvertedResidual(nn.Module):
    """[1x1 expand + ReLU6] -> depthwise 3x3 + ReLU6 -> linear 1x1 project (+ skip)."""

    def __init__(self, in_ch: int, out_ch: int, *, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.use_residual = stride == 1 and in_ch == out_ch
        hidden = in_ch * expand_ratio
        self.expand = _conv_bn_relu6(in_ch, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; adds the input back when stride is 1 and channels match."""
        out = self.project(self.depthwise(self.expand(x)))
        if self.use_residual:
            out = out + x
        return out


class MobileNetV2(nn.Module):
    """MobileNetV2: stem, inverted-residual stages, 1x1 head conv, pool, dropout, classifier."""

    def __init__(
        self,
        stages: tuple[tuple[int, int, int, int], ...] = V2_STAGES,
        *,
        width_mult: float = 1.0,
        last_channel: int = 1280,
        dropout: float = 0.2,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] = (3, 224, 224),
    ) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last = make_divisible(last_channel * max(1.0, width_mult))
        stem_stride = 1 if is_small_input(input_shape) else 2
        layers: list[nn.Module] = [_conv_bn_relu6(input_shape[0], in_ch, 3, stem_stride)]
        for t, c, n, s in stages:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(
                    InvertedResidual(in_ch, out_ch, stride=s if i == 0 else 1, expand_ratio=t)
                )
                in_ch = out_ch
        layers.append(_conv_bn_relu6(in_ch, last, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(p=dropout)
        self.classifier = nn.Linear(last, num_classes)
        init_cnn_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


def mobilenet_v2(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> MobileNetV2:
    """MobileNetV2, width 1.0: standard table, ReLU6, last channel 1280, dropout 0.2."""
    return MobileNetV2(V2_STAGES, num_classes=num_classes, input_shape=input_shape)
