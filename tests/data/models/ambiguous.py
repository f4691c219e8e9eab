"""Two constructible nn.Module classes and no build_model(): alphac cannot choose."""

from torch import nn


class A(nn.Module):
    def forward(self, x):
        return x


class B(nn.Module):
    def forward(self, x):
        return x * 2
