"""A small CIFAR-style ResNet for 1x28x28 images (Fashion-MNIST): about 0.17 M parameters.

Layout (He et al. 2016, section 4.2, with n=2): a 3x3 stem conv to 16 channels, three stages of
two basic blocks (widths 16, 32, 64; the first block of stages 2 and 3 halves the resolution and
has a 1x1 conv + BN projection shortcut), global average pooling and a linear classifier. Used by
``bench/vs_pruning.py`` as the residual model; `alphac inspect bench/models/small_resnet.py`
traces it through ``build_model()``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """Stem, three stages of ``blocks`` basic blocks each, global average pool, linear head."""

    def __init__(self, *, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 2,
                 in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for index, width in enumerate(widths):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(in_ch, width, stride=2 if index > 0 and b == 0 else 1))
                in_ch = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(num_classes: int = 10) -> SmallResNet:
    """The 16/32/64 ResNet with two blocks per stage for 1-channel 28x28 inputs."""
    return SmallResNet(num_classes=num_classes)
