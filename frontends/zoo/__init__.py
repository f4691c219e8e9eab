"""The model zoo: standard architectures written in plain, fx-traceable PyTorch.

Use :func:`names` to list the models, :func:`describe` for a one-line summary and :func:`build` to
construct one for a given number of classes and a per-sample input shape ``(C, H, W)``. The first
layer of every model adapts to ``C`` input channels; ResNet, EfficientNet and MobileNet switch to a
small-image stem when ``H <= 64``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from alphac.errors import InvalidInputShapeError, UnknownModelError

from .efficientnet import efficientnet_b0
from .mobilenet import mobilenet_v2
from .resnet import resnet18, resnet34, resnet50
from .small_cnn import small_cnn
from .vit import vit_s4, vit_s16, vit_ti4, vit_ti16

__all__ = ["build", "describe", "names"]


@dataclass(frozen=True)
class _Entry:
    """A zoo model: its constructor and a one-line description."""

    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, _Entry] = {
    "resnet18": _Entry(
        resnet18, "ResNet-18 (BasicBlock x[2,2,2,2]); 11.69M params at 1000 classes"
    ),
    "resnet34": _Entry(
        resnet34, "ResNet-34 (BasicBlock x[3,4,6,3]); 21.80M params at 1000 classes"
    ),
    "resnet50": _Entry(
        resnet50, "ResNet-50 (Bottleneck x[3,4,6,3]); 25.56M params at 1000 classes"
    ),
    "vit_ti16": _Entry(
        vit_ti16, "ViT-Ti/16 (dim 192, depth 12, 3 heads, 16px patches); 5.72M params"
    ),
    "vit_s16": _Entry(
        vit_s16, "ViT-S/16 (dim 384, depth 12, 6 heads, 16px patches); 22.05M params"
    ),
    "vit_ti4": _Entry(
        vit_ti4, "ViT-Ti/4 (dim 192, depth 12, 3 heads, 4px patches) for 32x32 inputs"
    ),
    "vit_s4": _Entry(vit_s4, "ViT-S/4 (dim 384, depth 12, 6 heads, 4px patches) for 32x32 inputs"),
    "efficientnet_b0": _Entry(
        efficientnet_b0, "EfficientNet-B0 (MBConv + SE, SiLU); 5.29M params at 1000 classes"
    ),
    "mobilenet_v2": _Entry(
        mobilenet_v2, "MobileNetV2 width 1.0 (inverted residuals, ReLU6); 3.50M params"
    ),
    "small_cnn": _Entry(
        small_cnn, "Small BN CNN (32,32|64,64|128) for Fashion-MNIST/CIFAR on CPU; ~0.14M params"
    ),
}


def names() -> list[str]:
    """Return the names of all zoo models, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    """Look up ``name``, raising :class:`UnknownModelError` listing the valid names if absent."""
    try:
        return _REGISTRY[name]
    except KeyError:
        available = ", ".join(names())
        raise UnknownModelError(
            f"unknown zoo model {name!r}; available models: {available}",
            hint="pick one of the listed names, e.g. zoo:resnet18",
        ) from None


def describe(name: str) -> str:
    """Return a one-line description of the zoo model ``name``."""
    return f"{name}: {_entry(name).description}"


def _check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate a per-sample ``(C, H, W)`` shape and return it as a tuple of ints."""
    try:
        dims = tuple(operator.index(d) for d in input_shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or min(dims) <= 0:
        raise InvalidInputShapeError(
            f"input shape {input_shape!r} is not three positive integers (C, H, W)",
            hint="give the shape of one sample without the batch dimension, e.g. 3,32,32",
        )
    return dims[0], dims[1], dims[2]


def build(
    name: str,
    *,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (3, 224, 224),
) -> nn.Module:
    """Construct the zoo model ``name`` for ``num_classes`` outputs and inputs of ``input_shape``.

    ``input_shape`` is ``(C, H, W)`` of one sample; the model's first layer takes ``C`` channels.
    Raises :class:`~alphac.errors.UnknownModelError` for a name not in :func:`names`.
    """
    entry = _entry(name)
    shape = _check_input_shape(input_shape)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return entry.builder(num_classes=num_classes, input_shape=shape)
