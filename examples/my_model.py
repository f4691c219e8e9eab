"""A user's model file, as alphac expects one: plain PyTorch, a build_model() that returns it.

A small residual CNN for 28x28 grayscale images (Fashion-MNIST); alphac finds its repeated
blocks (``Residual``) and mutates them. Try::

    alphac inspect examples/my_model.py --target fashion-mnist
    alphac optimize examples/my_model.py --target fashion-mnist --candidates 6 --steps 100
"""

import torch
from torch import nn


class Residual(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class SmallResNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(Residual(width), Residual(width))
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1,
                                            bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.stage2 = nn.Sequential(Residual(2 * width), Residual(2 * width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def build_model() -> nn.Module:
    return SmallResNet()
