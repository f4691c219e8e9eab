"""`alphac optimize --budget` and `alphac train --budget` read one grammar (alphac.units).

Nothing trains: the search and the training are replaced by stand-ins that record the budget
they were given, so each case takes milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from alphac.cli import app
from alphac.errors import UserError

runner = CliRunner()
TINY = """
from torch import nn


def build_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
"""
GOOD = [("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0),
        ("1.5h", 5400.0), ("2m30s", 150.0)]
BAD = ["1h30", "soon", "0s", "5d"]


class _Stopped(UserError):
    """Raised by the stand-in search once it has seen its settings."""


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.py"
    path.write_text(TINY)
    return str(path)


@pytest.fixture
def searched(monkeypatch) -> list:
    """The settings each `alphac optimize` handed to the search (which then stops at once)."""
    seen: list = []

    def search(model, *, out, settings, resume, on_event):
        seen.append(settings)
        raise _Stopped("stopped by the test before searching")

    monkeypatch.setattr("alphac.search.api.run_search", search)
    return seen


@pytest.fixture
def trained(monkeypatch) -> list:
    """The recipe each `alphac train` trained with (no data is read, nothing trains)."""
    seen: list = []

    def train(gm, spec, recipe, **_: object):
        seen.append(recipe)
        return SimpleNamespace(to_dict=lambda: {"status": "ok", "target": spec.name})

    monkeypatch.setattr("alphac.runtime.train.load_task_data", lambda *a, **k: None)
    monkeypatch.setattr("alphac.runtime.train.train_and_evaluate", train)
    return seen


@pytest.mark.parametrize(("text", "seconds"), GOOD)
def test_optimize_and_train_read_the_same_budgets(tiny, searched, trained, text, seconds):
    result = runner.invoke(app, ["optimize", tiny, "--target", "synthetic", "--budget", text,
                                 "--out", str(Path(tiny).parent / "run")])
    assert result.exit_code == _Stopped.exit_code and "stopped by the test" in result.stderr
    assert searched[-1].budget_s == seconds
    result = runner.invoke(app, ["train", tiny, "--target", "synthetic", "--budget", text,
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert trained[-1].seconds == seconds and trained[-1].steps is None
    assert json.loads(result.stdout)["recipe"]["seconds"] == seconds


@pytest.mark.parametrize("text", BAD)
def test_optimize_and_train_refuse_the_same_budgets_alike(tiny, searched, trained, text):
    messages = []
    for command in ("optimize", "train"):
        result = runner.invoke(app, [command, tiny, "--target", "synthetic", "--budget", text])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        messages.append(" ".join(result.stderr.split()))
    assert messages[0] == messages[1]
    assert f"error: --budget {text!r} is not a duration" in messages[0]
    assert "1h30m" in messages[0] and "hint:" in messages[0]
    assert searched == [] and trained == []


def test_the_search_api_and_the_driver_use_the_one_parser():
    from alphac import units
    from alphac.runtime import recipe
    from alphac.search import api, driver

    assert api.parse_duration is driver.parse_duration is recipe.parse_duration
    assert driver.parse_duration is units.parse_duration
