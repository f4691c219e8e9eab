"""A user model whose blocks use ops alphac has no exact rules for (cumsum, flip)."""

import torch
from torch import nn


class Scan(nn.Module):
    """A block with a running sum over the rows: the analyses answer conservatively for it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cumsum(self.conv(x), 2)) + x


class Plain(nn.Module):
    """A block with exact rules only."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x)) + x


class Net(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(Scan(8), Plain(8), Scan(8), Plain(8))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(torch.flip(self.stem(x), (3,)))
        return self.head(x.mean((2, 3)))


def build_model() -> nn.Module:
    return Net()
