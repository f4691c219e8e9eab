"""Training: real learning on Fashion-MNIST, NaN detection, determinism, exported graphs, inheritance."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from alphac.errors import TrainingError
from alphac.modes import is_training
from alphac.runtime.loop import make_optimizer
from alphac.runtime.pipeline import prepare_data
from alphac.runtime.recipe import Recipe
from alphac.runtime.targets import get_target
from alphac.runtime.train import (
    TrainingDiverged,
    inherit_weights,
    load_task_data,
    train_and_evaluate,
)

SMALL = dataclasses.replace(get_target("synthetic"), input_shape=(3, 8, 8), num_classes=4)


def tiny_cnn(in_ch: int = 3, classes: int = 4, width: int = 8, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, classes),
    )


def small_cnn_for_fashion() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def test_fashion_mnist_loss_falls_and_accuracy_rises(fashion_mnist):
    data = prepare_data(fashion_mnist, val_fraction=0.1, subset=5000, seed=0)
    recipe = get_target("fashion-mnist").recipe.replace(steps=200, batch_size=64, lr=0.05)
    reports = []
    metrics = train_and_evaluate(small_cnn_for_fashion(), "fashion-mnist", recipe, seed=0,
                                 data=data, on_progress=reports.append)
    assert metrics.status == "ok" and metrics.steps == 200
    assert reports[0].loss > reports[-1].loss + 0.5
    assert reports[-1].accuracy > 0.7
    assert metrics.val_accuracy > 0.75 and metrics.test_accuracy > 0.75  # chance is 0.10
    assert metrics.val_loss < 0.8
    assert reports[-1].fraction == 1.0


class NaNAfter(nn.Module):
    """A linear classifier whose output turns NaN from its ``bad_call``-th forward on."""

    def __init__(self, bad_call: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.calls >= self.bad_call else out


def test_nan_loss_stops_the_run_and_is_reported():
    recipe = Recipe(steps=20, batch_size=16)
    with pytest.raises(TrainingDiverged) as info:
        train_and_evaluate(NaNAfter(4), SMALL, recipe, device="cpu")
    assert isinstance(info.value, TrainingError)
    assert info.value.metrics.status == "diverged"
    assert info.value.metrics.diverged_at_step == 4 and info.value.metrics.steps == 4
    assert "NaN" in info.value.message and info.value.hint


def test_nan_can_be_recorded_instead_of_raised():
    metrics = train_and_evaluate(NaNAfter(1), SMALL, Recipe(steps=5, batch_size=16),
                                 raise_on_divergence=False)
    assert metrics.diverged and metrics.diverged_at_step == 1
    assert metrics.val_accuracy is None and metrics.train_loss is None
    json.dumps(metrics.to_dict(), allow_nan=False)


def test_training_is_deterministic_under_a_seed():
    recipe = Recipe(epochs=2, batch_size=32, lr=0.1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_cnn()
        metrics = train_and_evaluate(model, SMALL, recipe, seed=7, device="cpu")
        runs.append((metrics, model.state_dict()))
    (m1, s1), (m2, s2) = runs
    assert (m1.val_accuracy, m1.val_loss, m1.train_loss) == (m2.val_accuracy, m2.val_loss,
                                                               m2.train_loss)
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_synthetic_target_is_learnable():
    torch.manual_seed(0)
    metrics = train_and_evaluate(tiny_cnn(), SMALL, Recipe(epochs=3, batch_size=64, lr=0.2))
    assert metrics.val_accuracy > 0.6  # 4 classes: chance is 0.25


class ShapeBranching(nn.Module):
    """tiny_cnn behind a Python branch on the input shape: torch.fx fails, torch.export works."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = tiny_cnn(dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 4:
            return self.body(x)
        return self.body(x * 2)


def exported_tiny_cnn(dropout: float = 0.0) -> torch.fx.GraphModule:
    from alphac.frontends.trace import EXPORT, trace

    torch.manual_seed(0)
    gm, frontend = trace(ShapeBranching(dropout), (torch.randn(2, 3, 8, 8),))
    assert frontend == EXPORT
    return gm


def test_exported_graph_modules_train_and_evaluate():
    gm = exported_tiny_cnn(dropout=0.2)
    gm.eval()  # an exported graph switches modes like any module (alphac.modes.ModeValue)
    assert not is_training(gm)
    gm.train()
    data = load_task_data(SMALL, Recipe(), seed=0, device="cpu")
    metrics = train_and_evaluate(gm, SMALL, Recipe(epochs=3, batch_size=64, lr=0.2), data=data)
    assert metrics.status == "ok" and metrics.val_accuracy > 0.6
    assert is_training(gm)  # the caller's mode comes back
    # Evaluation runs in eval mode: with dropout off it is repeatable.
    from alphac.runtime.evaluate import evaluate
    from alphac.runtime.pipeline import Normalizer

    norm = Normalizer(SMALL, torch.device("cpu"), channels_last=True)
    assert evaluate(gm, data.val, normalize=norm) == evaluate(gm, data.val, normalize=norm)


def test_cpu_evaluation_caps_its_batch_and_counts_every_image(fashion_mnist):
    from alphac.runtime import evaluate as ev
    from alphac.runtime.pipeline import Normalizer

    assert ev.eval_batch_size(1000, torch.device("cpu")) == ev.CPU_EVAL_BATCH
    assert ev.eval_batch_size(100, torch.device("cpu")) == 100
    assert ev.eval_batch_size(1000, torch.device("cuda")) == 1000  # a GPU keeps the recipe's
    data = prepare_data(fashion_mnist, val_fraction=0.1, subset=600, seed=0, val_subset=700)
    model = small_cnn_for_fashion()
    seen = []
    model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    norm = Normalizer(get_target("fashion-mnist"), torch.device("cpu"), channels_last=False)
    capped = ev.evaluate(model, data.val, normalize=norm, batch_size=1000)
    assert seen == [128] * 5 + [60] and capped.images == 700
    whole = ev.evaluate(model, data.val, normalize=norm, batch_size=100)  # 7 batches of 100
    assert capped.accuracy == whole.accuracy and capped.loss == pytest.approx(whole.loss, rel=1e-5)


def test_shape_branching_model_file_loaded_at_batch_2_trains_at_any_batch(model_file):
    from alphac.frontends import EXPORT, load

    traced = load(model_file("shape_branch"), (2, 3, 32, 32))
    assert traced.frontend == EXPORT
    weight = traced.gm.get_parameter("conv.weight").detach().clone()
    recipe = Recipe(steps=3, batch_size=5, eval_batch_size=7, subset=40, augment=False)
    metrics = train_and_evaluate(traced.gm, "synthetic", recipe, device="cpu", test=False)
    assert metrics.status == "ok" and metrics.steps == 3 and metrics.val_accuracy is not None
    assert not torch.equal(weight, traced.gm.get_parameter("conv.weight"))
    assert is_training(traced.gm)


def test_time_budget_stops_training():
    metrics = train_and_evaluate(tiny_cnn(), SMALL, Recipe(seconds=0.5, batch_size=32))
    assert metrics.status == "ok" and metrics.steps > 0 and metrics.seconds >= 0.5


def test_no_weight_decay_on_norms_and_biases():
    model = tiny_cnn()
    optimizer = make_optimizer(model, Recipe(weight_decay=1e-3))
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_decay[1e-3] == {id(model[0].weight), id(model[6].weight)}
    assert by_decay[0.0] == {id(model[1].weight), id(model[1].bias), id(model[6].bias)}
    assert optimizer.defaults["nesterov"] is True


def test_inherit_weights_copies_only_matching_names_and_shapes():
    torch.manual_seed(0)
    parent = tiny_cnn(width=8)
    child = tiny_cnn(width=8)
    child[6] = nn.Linear(8, 5)  # the head changes shape
    child.add_module("7", nn.Linear(5, 5))  # and a new layer appears
    report = inherit_weights(child, parent.state_dict())
    assert set(report.reasons) == {"6.weight", "6.bias", "7.weight", "7.bias"}
    assert "0.weight" in report.copied and "1.running_var" in report.copied
    assert set(report.copied) | set(report.reasons) == set(child.state_dict())
    for name in report.copied:
        assert torch.equal(child.state_dict()[name], parent.state_dict()[name])
