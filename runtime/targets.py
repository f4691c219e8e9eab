"""Targets: the tasks a model is optimized for (input shape, classes, normalization, recipe).

``--target`` on the command line names one of these. The data itself is read by
:mod:`alphac.runtime.data`; this module only describes each target.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphac.errors import UnknownTargetError


@dataclass(frozen=True)
class Target:
    """What a task looks like to a model."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W of one sample
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str

    def example_shape(self, batch: int = 2) -> tuple[int, ...]:
        """Batch-first shape of an example input, e.g. ``(2, 3, 32, 32)`` for CIFAR-10."""
        return (batch, *self.input_shape)


_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("cifar10", (3, 32, 32), 10, _CIFAR_MEAN, _CIFAR_STD, "CIFAR-10, 32x32 RGB"),
        Target("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
               "CIFAR-100, 32x32 RGB"),
        Target("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
               "Fashion-MNIST, 28x28 grey"),
        Target("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "MNIST, 28x28 grey"),
        Target("imagenet", (3, 224, 224), 1000, _IMAGENET_MEAN, _IMAGENET_STD,
               "ImageNet-style folder of class subfolders, 224x224 RGB"),
        Target("synthetic", (3, 32, 32), 10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0),
               "random data for tests and throughput"),
    ]
}


def get_target(name: str) -> Target:
    """The target called ``name``; a clear error listing the known ones otherwise."""
    key = name.strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in TARGETS:
        raise UnknownTargetError(
            f"unknown target {name!r}", hint="choose one of: " + ", ".join(TARGETS)
        )
    return TARGETS[key]
