"""A model that branches on a shape: torch.fx cannot trace it, torch.export can."""

import torch
from torch import nn


class ShapeBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x))
        if x.shape[-1] > 16:
            x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))
