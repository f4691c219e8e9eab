"""Helpers shared by the zoo families: weight initialisation and small-input detection."""

from __future__ import annotations

import math

from torch import nn

#: Inputs whose height is at most this use the "small image" variants (CIFAR / MNIST stems).
SMALL_INPUT_MAX_HEIGHT = 64


def is_small_input(input_shape: tuple[int, int, int]) -> bool:
    """Return True when ``input_shape`` (C, H, W) calls for a small-image (CIFAR-style) stem."""
    return input_shape[1] <= SMALL_INPUT_MAX_HEIGHT


def init_cnn_weights(module: nn.Module) -> None:
    """Initialise a CNN in place: Kaiming-normal convs, unit/zero norms, uniform-scaled linears.

    Convolutions use ``kaiming_normal_`` (fan-out, ReLU gain) with zero bias; BatchNorm/LayerNorm/
    GroupNorm get weight 1 and bias 0; Linear layers get ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    weights (PyTorch's classic default) and zero bias.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm | nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
