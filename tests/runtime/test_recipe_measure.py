"""Recipes, budgets, devices, cost and speed measurement, and the GPU benchmark's CPU smoke run."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from alphac.errors import InvalidDurationError, UserError
from alphac.modes import is_training
from alphac.runtime.device import resolve_device
from alphac.runtime.measure import measure_speed
from alphac.runtime.recipe import InvalidRecipeError, Recipe, lr_at, parse_duration
from alphac.runtime.targets import TARGETS, get_target

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("2.5m", 150),
                                          ("45", 45), (" 10 min ", 600), ("1h30m", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "0s", "-5m", "5d", "m"])
def test_bad_durations_are_user_errors(text):
    with pytest.raises(InvalidDurationError, match=f"--budget {re.escape(repr(text))}") as info:
        parse_duration(text)
    assert "90s" in info.value.hint and "1h30m" in info.value.hint


def test_recipe_rejects_bad_values_and_conflicting_budgets():
    with pytest.raises(InvalidRecipeError, match="subset"):
        Recipe(subset=0)
    with pytest.raises(InvalidRecipeError, match="batch size"):
        Recipe().replace(batch_size=-1)
    with pytest.raises(InvalidRecipeError, match="one budget"):
        Recipe().with_budget(steps=10, seconds=5.0)
    assert Recipe().with_budget(seconds=5.0).seconds == 5.0
    for zero in ({"epochs": 0}, {"steps": 0}):
        with pytest.raises(InvalidRecipeError, match="must be (a )?positive"):
            Recipe().with_budget(**zero)
    assert Recipe().replace(lr=None, batch_size=7).batch_size == 7


def test_schedule_warms_up_peaks_and_decays():
    recipe = Recipe(lr=1.0, warmup=0.2)
    assert lr_at(recipe, 0.0) == pytest.approx(0.1)
    assert lr_at(recipe, 0.2) == pytest.approx(1.0)
    assert lr_at(recipe, 0.6) == pytest.approx(0.5)
    assert lr_at(recipe, 1.0) == pytest.approx(0.0)
    cosine = Recipe(lr=1.0, warmup=0.2, schedule="cosine")
    assert lr_at(cosine, 0.6) == pytest.approx(0.5) and lr_at(cosine, 0.4) > lr_at(recipe, 0.4)


def test_every_target_has_a_consistent_description():
    for name, target in TARGETS.items():
        assert get_target(name) is target
        assert len(target.mean) == len(target.std) == target.input_shape[0]
        assert target.example_shape(4) == (4, *target.input_shape)
    assert get_target("Fashion_MNIST").name == "fashion-mnist"
    assert get_target("cifar10").flip and not get_target("mnist").flip


def test_devices(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU machines
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_measure_speed_reports_positive_numbers_and_restores_the_mode():
    model = _net().train()
    timing = measure_speed(model, (3, 8, 8), device="cpu", batch_size=16, warmup=1, repeats=3)
    assert timing.latency_ms > 0 and timing.throughput > 0 and timing.batch_size == 16
    assert is_training(model)
    json.dumps(timing.to_dict())


def test_gpu_benchmark_script_runs_a_cpu_smoke_test(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_train", BENCH / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--device", "cpu", "--steps", "3", "--models", "resnet18", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["model"] == "resnet18" and row["images_per_second"] > 0
    assert row["forward_gflops_per_image"] > 0.5  # ResNet-18 at 32x32: about 1.1 GFLOPs
    expected = 3 * row["forward_gflops_per_image"] * 1e9 * row["images_per_second"] / 989e12
    assert row["fraction_of_peak"] == pytest.approx(expected, rel=0.01)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU machines
    assert module.main(["--steps", "1"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_with_bf16_and_channels_last():
    from alphac.runtime.train import train_and_evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    metrics = train_and_evaluate(model, "synthetic", Recipe(epochs=3, batch_size=64, lr=0.2),
                                 device="cuda")
    assert metrics.device.startswith("cuda") and metrics.status == "ok"
    assert metrics.val_accuracy > 0.5
    timing = measure_speed(model, (3, 32, 32), device="cuda", repeats=3)
    assert timing.device.startswith("cuda") and timing.throughput > 0
