"""Training recipes: the optimizer, schedule, budget and data settings of one training run.

A :class:`Recipe` is a frozen value, so a search can hash, log and compare it. Every target carries
a default recipe (:attr:`alphac.runtime.targets.Target.recipe`); callers override fields with
:meth:`Recipe.replace`. Exactly one budget is in force: ``steps``, else ``seconds``, else ``epochs``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from alphac.errors import UserError
from alphac.units import parse_duration as parse_duration  # one grammar: alphac.units

SCHEDULES = ("onecycle", "cosine")


class InvalidRecipeError(UserError):
    """A training setting (budget, batch size, learning rate...) that cannot be used."""


@dataclass(frozen=True)
class Recipe:
    """How to train: SGD with Nesterov momentum, warm-up then a one-cycle or cosine decay.

    ``lr`` is the peak learning rate; ``warmup`` the fraction of the budget spent ramping up to it.
    Norm and bias parameters (``ndim <= 1``) get no weight decay. ``subset`` keeps at most that
    many training images, for quick runs; ``val_fraction`` of the whole training set is held out,
    seeded and outside the subset, as the validation split the search optimizes
    (:func:`~alphac.runtime.pipeline.prepare_data`). The test split is the whole test set unless
    ``test_subset`` limits it; ``val_subset`` limits the validation split (quick runs).
    """

    epochs: float = 10.0
    steps: int | None = None
    seconds: float | None = None
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    warmup: float = 0.15
    schedule: str = "onecycle"
    augment: bool = True
    val_fraction: float = 0.1
    subset: int | None = None
    test_subset: int | None = None
    val_subset: int | None = None
    eval_batch_size: int = 1000
    compile: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs > 0, "epochs must be positive"),
            (self.steps is None or self.steps > 0, "steps must be a positive integer"),
            (self.seconds is None or self.seconds > 0, "the time budget must be positive"),
            (self.batch_size > 0, "batch size must be a positive integer"),
            (self.eval_batch_size > 0, "eval batch size must be a positive integer"),
            (self.lr > 0 and math.isfinite(self.lr), "learning rate must be a positive number"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight decay must not be negative"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (0 <= self.warmup < 1, "warm-up must be a fraction in [0, 1)"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (0 <= self.val_fraction < 1, "validation fraction must be in [0, 1)"),
            (self.subset is None or self.subset > 0, "subset must be a positive number of images"),
            (self.test_subset is None or self.test_subset > 0,
             "test subset must be a positive number of images"),
            (self.val_subset is None or self.val_subset > 0,
             "validation subset must be a positive number of images"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRecipeError(message, hint="fix the training option and run again")

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_budget(
        self, *, epochs: float | None = None, steps: int | None = None, seconds: float | None = None
    ) -> Recipe:
        """A copy whose only budget is the one given (at most one of the three)."""
        budgets = (("epochs", epochs), ("steps", steps), ("seconds", seconds))
        given = [k for k, v in budgets if v is not None]
        if len(given) > 1:
            raise InvalidRecipeError(
                f"give one budget, not {' and '.join(given)}",
                hint="use one of --epochs, --steps or --budget",
            )
        if not given:
            return self
        return replace(self, epochs=self.epochs if epochs is None else epochs, steps=steps,
                       seconds=seconds)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def lr_at(recipe: Recipe, progress: float) -> float:
    """The learning rate at ``progress`` in [0, 1] of the budget: linear warm-up, then decay.

    One-cycle decays linearly to zero, cosine along a half cosine. Warm-up starts at a tenth of the
    peak so the first step already moves the weights.
    """
    p = min(max(progress, 0.0), 1.0)
    if p < recipe.warmup:
        return recipe.lr * (0.1 + 0.9 * p / recipe.warmup)
    rest = (p - recipe.warmup) / (1.0 - recipe.warmup)
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * rest))
    return recipe.lr * (1.0 - rest)
