"""Targets: the tasks a model is optimized for (input shape, classes, normalization, recipe).

``--target`` on the command line names one of these. The data itself is read by
:mod:`alphac.runtime.datasets`; this module only describes each target: input shape, classes,
normalization, augmentation (random crop with ``pad`` pixels of zero padding, horizontal ``flip``)
and the default training :class:`~alphac.runtime.recipe.Recipe`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from alphac.errors import OutputShapeError, UnknownTargetError
from alphac.runtime.recipe import Recipe


@dataclass(frozen=True)
class Target:
    """What a task looks like to a model, and how the runtime trains for it.

    ``pad``: random-crop padding in pixels (0: no crop); ``flip``: random horizontal flips;
    ``recipe``: the default training recipe, overridden field by field by the caller.
    """

    name: str
    input_shape: tuple[int, int, int]  # C, H, W of one sample
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    pad: int = 0
    flip: bool = False
    recipe: Recipe = field(default_factory=Recipe)

    def example_shape(self, batch: int = 2) -> tuple[int, ...]:
        """Batch-first shape of an example input, e.g. ``(2, 3, 32, 32)`` for CIFAR-10."""
        return (batch, *self.input_shape)

    def check_output_shape(self, shape: Sequence[int], *, model: str = "the model") -> None:
        """OutputShapeError unless ``shape`` is ``(batch, num_classes)``: one logit per class.

        ``model`` names the model in the message (its file or zoo name).
        """
        problem = self.output_mismatch(shape, model=model)
        if problem is not None:
            raise problem

    def output_mismatch(self, shape: Sequence[int], *,
                        model: str = "the model") -> OutputShapeError | None:
        """None where ``shape`` is ``(batch, num_classes)``; else the OutputShapeError saying so.

        What ``optimize`` and ``train`` raise and ``inspect`` prints as a warning. Example: a
        ``2x16`` output for cifar10 gives "... needs (batch, 10): 16 scores per image for 10
        classes", hinting at ``nn.Linear(..., 10)`` or a target with 16 classes.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) == 2 and shape[1] == self.num_classes:
            return None
        seen = f"a tensor of shape {'x'.join(map(str, shape))}" if shape else "a scalar"
        what = "one score per class for each image"
        if len(shape) == 2:
            what = f"{shape[1]} scores per image for {self.num_classes} classes"
            fits = [t.name for t in TARGETS.values() if t.num_classes == shape[1]]
            fix = (f"make its last layer produce {self.num_classes} outputs (e.g. "
                   f"nn.Linear(..., {self.num_classes}), or num_classes={self.num_classes} "
                   "where the model takes one)"
                   + (f", or use --target {' or '.join(fits)}" if fits else ""))
        else:
            fix = ("end the model with pooling, a flatten and a linear layer to "
                   f"{self.num_classes} outputs (e.g. nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
                   f"nn.Linear(C, {self.num_classes}))")
        return OutputShapeError(
            f"{model} outputs {seen}, but target {self.name} needs "
            f"(batch, {self.num_classes}): {what}",
            hint=fix,
        )


_CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
_CIFAR_STD = (0.2470, 0.2435, 0.2616)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CIFAR_RECIPE = Recipe(epochs=30, batch_size=512, lr=0.4, weight_decay=5e-4)
# Tuned for zoo:small_cnn on 2 CPU cores: >= 91% test accuracy on Fashion-MNIST in under 10 min.
_FMNIST_RECIPE = Recipe(epochs=10, batch_size=128, lr=0.1, weight_decay=5e-4)
_MNIST_RECIPE = Recipe(epochs=5, batch_size=128, lr=0.1, weight_decay=5e-4)
_IMAGENET_RECIPE = Recipe(epochs=30, batch_size=256, lr=0.2, weight_decay=5e-5, eval_batch_size=250)
_SYNTHETIC_RECIPE = Recipe(epochs=1, batch_size=128, lr=0.05, augment=False)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("cifar10", (3, 32, 32), 10, _CIFAR_MEAN, _CIFAR_STD, "CIFAR-10, 32x32 RGB",
               pad=4, flip=True, recipe=_CIFAR_RECIPE),
        Target("cifar100", (3, 32, 32), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
               "CIFAR-100, 32x32 RGB", pad=4, flip=True, recipe=_CIFAR_RECIPE),
        Target("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,),
               "Fashion-MNIST, 28x28 grey", pad=2, flip=True, recipe=_FMNIST_RECIPE),
        Target("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), "MNIST, 28x28 grey",
               pad=2, flip=False, recipe=_MNIST_RECIPE),
        Target("imagenet", (3, 224, 224), 1000, _IMAGENET_MEAN, _IMAGENET_STD,
               "ImageNet-style folder of class subfolders, 224x224 RGB",
               pad=16, flip=True, recipe=_IMAGENET_RECIPE),
        Target("synthetic", (3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
               "random data for tests and throughput", recipe=_SYNTHETIC_RECIPE),
    ]
}


def get_target(name: str) -> Target:
    """The target called ``name``; a clear error listing the known ones otherwise."""
    key = name.strip().lower().replace("_", "-")
    if key == "fashionmnist":
        key = "fashion-mnist"
    if key not in TARGETS:
        close = difflib.get_close_matches(key, TARGETS, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        raise UnknownTargetError(
            f"unknown target {name!r}{guess}", hint="pass --target with one of: "
            + ", ".join(TARGETS)
        )
    return TARGETS[key]
