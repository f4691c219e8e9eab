"""A small, fast BN-equipped CNN for Fashion-MNIST / CIFAR-10 on CPU (about 0.14 M parameters).

Layout: ``[ConvBlock(32) x2, maxpool] -> [ConvBlock(64) x2, maxpool] -> ConvBlock(128)``, then
global average pooling and a linear head. Works for any input size of at least 4x4 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import init_cnn_weights


class ConvBlock(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``relu(bn(conv(x)))``."""
        return self.relu(self.bn(self.conv(x)))


class SmallCNN(nn.Module):
    """Three conv stages (32, 64, 128 channels), global average pool and a linear classifier."""

    def __init__(
        self,
        *,
        widths: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64), (128,)),
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (1, 28, 28),
    ) -> None:
        super().__init__()
        in_ch = input_shape[0]
        layers: list[nn.Module] = []
        for stage_index, stage in enumerate(widths):
            for out_ch in stage:
                layers.append(ConvBlock(in_ch, out_ch))
                in_ch = out_ch
            if stage_index < len(widths) - 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_cnn_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.fc(x)


def small_cnn(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> SmallCNN:
    """The small CNN, adapted to ``input_shape[0]`` input channels and ``num_classes`` outputs."""
    return SmallCNN(num_classes=num_classes, input_shape=input_shape)
