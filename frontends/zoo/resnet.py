"""ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv).

The stem is chosen from the input height: CIFAR-sized inputs (H <= 64) get a 3x3 stride-1 conv
without max-pooling; larger inputs get the ImageNet stem (7x7 stride-2 conv and 3x3 stride-2
max-pool).
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import init_cnn_weights, is_small_input


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 3x3 convolution with padding 1."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 1x1 convolution."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def _downsample(in_ch: int, out_ch: int, stride: int) -> nn.Sequential | None:
    """The projection shortcut (1x1 conv + BN), or None when the shape does not change."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or projected) residual connection."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(width, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = _downsample(in_ch, out_ch, stride)
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), each with BN, plus a residual connection."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv3 = _conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = _downsample(in_ch, out_ch, stride)
        self.relu3 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the bottleneck and add the (possibly projected) input."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class ResNet(nn.Module):
    """A four-stage ResNet: ``stem -> layer1..layer4 -> global average pool -> fc``."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] = (3, 224, 224),
    ) -> None:
        super().__init__()
        in_channels = input_shape[0]
        stem_ch = 64
        if is_small_input(input_shape):
            self.stem = nn.Sequential(
                _conv3x3(in_channels, stem_ch),
                nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=False),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem_ch, kernel_size=7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem_ch),
                nn.ReLU(inplace=False),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        self._in_ch = stem_ch
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_cnn_weights(self)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], width: int, depth: int, stride: int
    ) -> nn.Sequential:
        """Build one stage of ``depth`` blocks, the first of which carries the stride."""
        blocks = []
        for i in range(depth):
            blocks.append(block(self._in_ch, width, stride if i == 0 else 1))
            self._in_ch = width * block.expansion
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> ResNet:
    """ResNet-18: BasicBlock, stages (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape)


def resnet34(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> ResNet:
    """ResNet-34: BasicBlock, stages (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape)


def resnet50(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> ResNet:
    """ResNet-50: Bottleneck (stride on the 3x3 conv), stages (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape)
