"""The training loop: lean enough that a search trains at hand-written-loop speed.

Per step it indexes a device-resident batch, augments and normalizes it with batched tensor ops,
sets the scheduled learning rate, and runs forward (bf16 autocast on CUDA), backward and an SGD
step. It synchronizes with the device only to check the loss for NaN/Inf (every step on CPU, where
that is free, every ``progress_every`` steps on CUDA) and to report progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from alphac.modes import training_mode
from alphac.runtime.evaluate import autocast_for
from alphac.runtime.pipeline import Normalizer, TaskData, train_batches
from alphac.runtime.recipe import Recipe, lr_at


@dataclass(frozen=True)
class Progress:
    """A progress report: ``fraction`` of the budget done, running train loss and accuracy."""

    step: int
    total_steps: int | None
    epoch: float
    fraction: float
    loss: float
    accuracy: float
    images_per_second: float
    elapsed: float


@dataclass(frozen=True)
class FitResult:
    """What the loop did: steps, epochs, images, seconds, last train loss/accuracy, divergence."""

    steps: int
    epochs: float
    images: int
    seconds: float
    train_loss: float
    train_accuracy: float
    diverged_at_step: int | None


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum; no weight decay on norms and biases (``ndim <= 1``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.SGD(
        [g for g in groups if g["params"]], lr=recipe.lr, momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0, foreach=True,
    )


class _Budget:
    """Progress in [0, 1] through a step, epoch or wall-time budget."""

    def __init__(self, recipe: Recipe, steps_per_epoch: int) -> None:
        self.seconds = recipe.seconds if recipe.steps is None else None
        if recipe.steps is not None:
            self.total_steps: int | None = recipe.steps
        elif self.seconds is not None:
            self.total_steps = None
        else:
            self.total_steps = max(1, math.ceil(recipe.epochs * steps_per_epoch))
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self, step: int) -> float:
        if self.total_steps is not None:
            return min(step / self.total_steps, 1.0)
        return min(self.elapsed() / self.seconds, 1.0)  # type: ignore[operator]


def _endless_batches(data: TaskData, recipe: Recipe, batch_size: int, seed: int,
                     normalize: Normalizer) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator(device=data.device).manual_seed(seed)
    augment = recipe.augment
    while True:
        yield from train_batches(
            data.train, batch_size=batch_size, target=data.target, augment=augment,
            generator=generator, normalize=normalize,
        )


def fit(
    model: nn.Module,
    data: TaskData,
    recipe: Recipe,
    *,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 20,
) -> FitResult:
    """Train ``model`` on ``data.train`` under ``recipe``'s budget; see the module docstring."""
    if len(data.train) == 0:
        from alphac.errors import TrainingError

        raise TrainingError("the training split is empty", hint="use a larger --subset")
    batch_size = min(recipe.batch_size, len(data.train))
    steps_per_epoch = len(data.train) // batch_size
    budget = _Budget(recipe, steps_per_epoch)
    optimizer = make_optimizer(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    forward = torch.compile(model) if recipe.compile else model
    normalize = Normalizer(data.target, data.device,  # channels_last on CUDA only
                           recipe.channels_last and data.device.type == "cuda")
    check_every = 1 if data.device.type == "cpu" else progress_every
    window = _Window(data.device)
    step, diverged_at = 0, None
    with training_mode(model, True):
        for images, labels in _endless_batches(data, recipe, batch_size, seed, normalize):
            fraction = budget.fraction(step)
            if fraction >= 1.0:
                break
            lr = lr_at(recipe, fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast_for(data.device):
                logits = forward(images)
            if step == 0:  # a clear OutputShapeError instead of cross_entropy's IndexError
                data.target.check_output_shape(getattr(logits, "shape", ()),
                                               model=type(model).__name__)
            loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            window.add(loss, logits, labels)
            if step % check_every == 0 and not window.finite():
                diverged_at = step
                break
            if on_progress is not None and (step % progress_every == 0):
                on_progress(window.report(step, budget, steps_per_epoch, batch_size))
    if diverged_at is None and not window.finite():
        diverged_at = step
    seconds = budget.elapsed() if data.device.type == "cpu" else _synced(budget, data.device)
    if on_progress is not None and diverged_at is None and step % progress_every:
        on_progress(window.report(step, budget, steps_per_epoch, batch_size, final=True))
    loss, accuracy = window.means()
    return FitResult(step, step / max(steps_per_epoch, 1), step * batch_size, seconds,
                     loss, accuracy, diverged_at)


def _synced(budget: _Budget, device: torch.device) -> float:
    torch.cuda.synchronize(device)
    return budget.elapsed()


class _Window:
    """Running loss/accuracy since the last report, kept on the device to avoid syncs."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0
        self.steps = 0
        self.last = (float("nan"), float("nan"))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss.detach()
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.count += labels.shape[0]
        self.steps += 1

    def finite(self) -> bool:
        return bool(torch.isfinite(self.loss))

    def means(self) -> tuple[float, float]:
        if self.steps:
            self.last = (self.loss.item() / self.steps, self.correct.item() / self.count)
        return self.last

    def report(self, step: int, budget: _Budget, steps_per_epoch: int, batch_size: int,
               final: bool = False) -> Progress:
        loss, accuracy = self.means()
        if not final:
            self.loss.zero_()
            self.correct.zero_()
            self.count = self.steps = 0
        elapsed = budget.elapsed()
        return Progress(step, budget.total_steps, step / max(steps_per_epoch, 1),
                        1.0 if final else budget.fraction(step), loss, accuracy,
                        step * batch_size / max(elapsed, 1e-9), elapsed)
