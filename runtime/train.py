"""Training and evaluation of one candidate: the runtime's entry point for the CLI and the search.

:func:`train_and_evaluate` is a plain function of (model, target, recipe, seed) returning frozen
:class:`Metrics`, so it runs the same in the CLI, in a worker process or in a Ray task. It trains
on the training split, reports validation accuracy (what a search optimizes) and test accuracy
(for final reports). A NaN or Inf loss stops the run: the metrics record it, and by default
:class:`TrainingDiverged` (a TrainingError) is raised carrying those metrics.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from alphac.codegen import InheritReport, inherit_weights
from alphac.errors import TrainingError
from alphac.ir import count_params
from alphac.runtime.datasets import load_dataset
from alphac.runtime.device import resolve_device
from alphac.runtime.evaluate import Evaluation, channels_last, evaluate
from alphac.runtime.loop import FitResult, Progress, fit
from alphac.runtime.pipeline import Normalizer, TaskData, prepare_data
from alphac.runtime.recipe import Recipe
from alphac.runtime.targets import Target, get_target

__all__ = [
    "InheritReport",
    "Metrics",
    "Progress",
    "TrainingDiverged",
    "inherit_weights",
    "load_task_data",
    "train_and_evaluate",
    "worker_task_data",
]


@dataclass(frozen=True)
class Metrics:
    """The outcome of one training run. Accuracies are fractions in [0, 1]; None if not measured.

    ``status`` is ``"ok"`` or ``"diverged"`` (a NaN/Inf loss at ``diverged_at_step``).
    ``seconds`` is the training wall time, ``images_per_second`` the training throughput.
    """

    status: str
    target: str
    device: str
    seed: int
    steps: int
    epochs: float
    seconds: float
    images_per_second: float
    train_loss: float | None
    train_accuracy: float | None
    val_accuracy: float | None
    val_loss: float | None
    test_accuracy: float | None
    test_loss: float | None
    eval_seconds: float
    params: int
    diverged_at_step: int | None = None

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (NaN never appears: unmeasured values are None)."""
        return asdict(self)


class TrainingDiverged(TrainingError):
    """The loss became NaN or Inf; ``metrics`` records the run up to that step."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(
            f"training diverged: the loss became NaN or Inf at step {metrics.diverged_at_step}",
            hint="lower the learning rate (--lr), check the model for unstable operations, "
            "or train with a smaller batch",
        )
        self.metrics = metrics


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_task_data(
    target: str | Target,
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
) -> TaskData:
    """Read, split and move a target's data once; pass it to :func:`train_and_evaluate` as
    ``data=`` to train many candidates without reloading."""
    spec = target if isinstance(target, Target) else get_target(target)
    recipe = recipe or spec.recipe
    dataset = load_dataset(spec, data_dir, seed=seed)
    return prepare_data(
        dataset, val_fraction=recipe.val_fraction, subset=recipe.subset, seed=seed,
        device=resolve_device(device), test_subset=recipe.test_subset,
        val_subset=recipe.val_subset,
    )


#: The data a worker process (a local pool's or Ray's) loaded, by what :func:`load_task_data`
#: reads; one entry, so a worker that serves two searches does not keep both datasets.
_WORKER_DATA: dict[tuple, TaskData] = {}


def worker_task_data(target: str, recipe: Mapping[str, Any], seed: int = 0,
                     data_dir: str | None = None, device: str = "auto") -> TaskData | None:
    """A worker's data: loaded on the first call, the same object again on later calls with the
    same target, splits, seed, folder and device; a call with other ones replaces it.

    ``recipe`` is a :class:`Recipe` as a dict (as a task carries it). None where loading fails:
    the candidate then loads the data itself, and its result says why that failed.
    """
    try:
        settings = Recipe(**recipe)
        key = (target, settings.subset, settings.val_fraction, settings.val_subset,
               settings.test_subset, seed, data_dir, str(device))
        if key not in _WORKER_DATA:
            data = load_task_data(target, settings, seed=seed, data_dir=data_dir, device=device)
            _WORKER_DATA.clear()
            _WORKER_DATA[key] = data
    except Exception:  # noqa: BLE001 - evaluate_candidate loads again and reports the reason
        return None
    return _WORKER_DATA[key]


def train_and_evaluate(
    model: nn.Module,
    target: str | Target,
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    data: TaskData | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    test: bool = True,
    raise_on_divergence: bool = True,
) -> Metrics:
    """Train ``model`` (in place, moved to the device) on ``target`` and evaluate it.

    ``recipe`` defaults to the target's; ``data`` (from :func:`load_task_data`) skips loading.
    ``on_progress`` is called every few steps with a :class:`Progress`. Works for nn.Modules and
    torch.fx / torch.export GraphModules.
    """
    spec = target if isinstance(target, Target) else get_target(target)
    recipe = recipe or spec.recipe
    dev = data.device if data is not None else resolve_device(device)
    seed_everything(seed)
    if data is None:
        data = load_task_data(spec, recipe, seed=seed, data_dir=data_dir, device=dev)
    model.to(dev)
    last = recipe.channels_last and channels_last(model, dev, tuple(spec.input_shape))
    result = fit(model, data, recipe, seed=seed, on_progress=on_progress)
    if result.diverged_at_step is not None:
        metrics = _metrics(spec, dev, seed, model, result, None, None, 0.0)
        if raise_on_divergence:
            raise TrainingDiverged(metrics)
        return metrics
    start = _now(dev)
    normalize = Normalizer(spec, dev, last)
    val = evaluate(model, data.val, normalize=normalize, batch_size=recipe.eval_batch_size)
    tested = (
        evaluate(model, data.test, normalize=normalize, batch_size=recipe.eval_batch_size)
        if test else None
    )
    return _metrics(spec, dev, seed, model, result, val, tested, _now(dev) - start)


def _now(device: torch.device) -> float:
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _metrics(
    spec: Target,
    device: torch.device,
    seed: int,
    model: nn.Module,
    result: FitResult,
    val: Evaluation | None,
    test: Evaluation | None,
    eval_seconds: float,
) -> Metrics:
    return Metrics(
        status="ok" if result.diverged_at_step is None else "diverged",
        target=spec.name,
        device=str(device),
        seed=seed,
        steps=result.steps,
        epochs=round(result.epochs, 4),
        seconds=round(result.seconds, 4),
        images_per_second=round(result.images / max(result.seconds, 1e-9), 2),
        train_loss=_finite_or_none(result.train_loss),
        train_accuracy=_finite_or_none(result.train_accuracy),
        val_accuracy=_finite_or_none(val.accuracy) if val else None,
        val_loss=_finite_or_none(val.loss) if val else None,
        test_accuracy=_finite_or_none(test.accuracy) if test else None,
        test_loss=_finite_or_none(test.loss) if test else None,
        eval_seconds=round(eval_seconds, 4),
        params=count_params(model),
        diverged_at_step=result.diverged_at_step,
    )
