"""The search's clock: wall time over every session, measured training speed, the estimate of
the final retraining, and whether more work fits ``--budget``.

Speeds are measured, not assumed: every finished job adds its worker seconds per training image
(:meth:`Budget.observe`), and the estimates use the median, so they follow the machine's real
speed and correct themselves as jobs finish. Example::

    budget = Budget(budget_s=600, elapsed_before=0.0, proxy=proxy, final=final)
    budget.observe(seconds=12.0, images=3200, child=True)
    budget.allows(budget.mean_child_seconds(), front_size=3)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

from alphac.runtime.recipe import Recipe

__all__ = ["Budget", "as_recipe", "scaled", "work"]


def as_recipe(recipe: Recipe | Mapping[str, Any]) -> Recipe:
    """``recipe`` as a :class:`~alphac.runtime.recipe.Recipe` (a stored settings dict gives
    the fields it names, the others at their defaults)."""
    return recipe if isinstance(recipe, Recipe) else Recipe(**recipe)


def work(recipe: Recipe | Mapping[str, Any]) -> float:
    """Training samples a recipe processes (to compare schedules, e.g. final against proxy)."""
    recipe = as_recipe(recipe)
    if recipe.steps:
        return float(recipe.steps) * recipe.batch_size
    return float(recipe.epochs) * (recipe.subset or 60_000)


def scaled(recipe: Recipe | Mapping[str, Any], factor: float) -> Recipe:
    """``recipe`` with ``factor`` times its training budget."""
    recipe = as_recipe(recipe)
    if recipe.steps:
        return recipe.replace(steps=max(1, round(recipe.steps * factor)))
    return recipe.replace(epochs=float(recipe.epochs) * factor)


class Budget:
    """Wall time (this session from now, plus ``elapsed_before``) against ``budget_s``."""

    def __init__(self, budget_s: float | None, elapsed_before: float,
                 proxy: Recipe | Mapping[str, Any], final: Recipe | Mapping[str, Any]) -> None:
        self.budget_s, self.elapsed_before = budget_s, elapsed_before
        self.proxy, self.final = as_recipe(proxy), as_recipe(final)
        self.began = time.monotonic()
        self.rates: list[float] = []  # worker seconds per training image, per finished job
        self.child_seconds: list[float] = []  # worker seconds per rung-0 training of a child

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.began

    def observe(self, seconds: float, images: int, child: bool = False) -> None:
        """A job finished: ``seconds`` of worker time for ``images`` training images."""
        if images and seconds:
            self.rates.append(seconds / images)
        if child:
            self.child_seconds.append(seconds)

    def mean_child_seconds(self, fallback: list[float] = ()) -> float:
        """What a child's training takes: measured, else from the seed's speed, else the mean
        of ``fallback`` (worker seconds of finished trials)."""
        if self.rates and not self.child_seconds:  # before any child: from the seed's speed
            return work(self.proxy) * statistics.median(self.rates)
        done = self.child_seconds or list(fallback)
        return sum(done) / len(done) if done else 0.0

    def final_estimate(self, models: int) -> float:
        """Seconds the final retraining of ``models`` models will take (0 before any job)."""
        if not self.rates:
            return 0.0
        return models * work(self.final) * statistics.median(self.rates)

    def allows(self, seconds: float, models_after: int) -> bool:
        """Whether work of ``seconds`` still fits, with the final retraining of
        ``models_after`` models after it."""
        if self.budget_s is None:
            return True
        return self.elapsed() + seconds + self.final_estimate(models_after) <= self.budget_s

    def time_left(self) -> float | None:
        return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed())
