"""A model that branches on a tensor value: no frontend can capture it as one graph."""

import torch
from torch import nn


class ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.sum() > 0:
            x = x * 2
        return self.fc(x)
