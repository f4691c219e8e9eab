"""`alphac.optimize` from Python: a module object, the latency objective, a time budget."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import alphac
from alphac.search.journal import Journal, check

REPO = Path(__file__).resolve().parents[2]
TINY = dict(target="fashion-mnist", steps=5, final_steps=6, subset=600, executor="inline",
            device="cpu", val_images=300, test_images=300)


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.norm(self.conv(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def test_a_module_object_searched_for_latency(tmp_path: Path) -> None:
    result = alphac.optimize(Net(), out=tmp_path / "run", candidates=2, objective="latency",
                             rungs=0, **TINY)
    assert result.report["settings"]["objective"] == "latency"
    for row in (result.seed_model, result.best, *result.pareto):
        assert row["latency_ms"] is not None and row["latency_ms"] > 0
    with open(result.run_dir / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 2 and all(float(r["latency_ms"]) > 0 for r in rows)
    assert (result.best_dir / "model.py").is_file() and check(result.run_dir) == []
    with Journal.open(result.run_dir, readonly=True) as journal:
        assert journal.seed_identity["source"].endswith("test_api.Net")
    again = alphac.optimize(Net(), out=tmp_path / "run", candidates=3, objective="latency",
                            rungs=0, resume=True, **TINY)  # the same class and structure resume
    assert again.report["counts"]["done"] + again.report["counts"]["failed"] >= 4


def test_a_time_budget_stops_the_search_and_still_reports(tmp_path: Path) -> None:
    result = alphac.optimize("zoo:small_cnn", out=tmp_path / "run", budget="20s", **TINY)
    assert result.report["settings"]["budget_s"] == 20.0
    assert result.report["settings"]["candidates"] is None
    with Journal.open(result.run_dir, readonly=True) as journal:
        assert 0 < journal.elapsed_seconds()
        finished = [i for i in journal.individuals() if i.status == "done"]
    assert finished and (result.run_dir / "report.json").is_file()
    timing = json.loads((result.run_dir / "report.json").read_text())["timing"]
    assert timing["search_seconds"] > 0 and timing["final_seconds"] > 0


def test_bad_budget_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(alphac.errors.UserError, match="not a duration"):
        alphac.optimize("zoo:small_cnn", out=tmp_path / "run", budget="tomorrow", **TINY)


def test_the_example_script_runs_a_search_from_python(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples/search_from_python.py"),
                           "--candidates", "1", "--steps", "5", "--subset", "400",
                           "--val-images", "200", "--executor", "inline", "--out", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best #" in done.stdout and "output (1, 10)" in done.stdout


def test_a_timm_model_object_is_searched_end_to_end(tmp_path: Path) -> None:
    import libmodels

    model = libmodels._timm("resnet18", in_chans=1)  # built offline from its config, no weights
    result = alphac.optimize(model, out=tmp_path / "run", candidates=2, rungs=0, **TINY)
    with Journal.open(result.run_dir, readonly=True) as journal:
        rows = journal.individuals()
    assert [i.status for i in rows] == ["done"] * 3
    assert len({i.fingerprint for i in rows}) == 3  # two real children, each a new model
    assert check(result.run_dir) == [] and (result.best_dir / "model.pt2").is_file()
    assert "timm" not in (result.best_dir / "model.py").read_text()  # torch only


def test_on_event_sees_every_step_as_a_typed_event_in_order(tmp_path: Path) -> None:
    from alphac.search.events import FinalStarted, FinalTrained, Started, Trained

    events, plain = [], []
    result = alphac.optimize(Net(), out=tmp_path / "run", candidates=2, rungs=0,
                             on_event=events.append, **TINY)
    kinds = [e.kind for e in events]
    assert isinstance(events[0], Started) and events[0].id == result.seed_model.id
    seed_done = next(e for e in events if isinstance(e, Trained))
    assert seed_done.seed and seed_done.progress.seed is not None
    children = [e for e in events if isinstance(e, Trained) and not e.seed]
    failed = [e for e in events if e.kind == "failed"]
    assert len(children) + len(failed) >= 2
    assert [e.progress.trained for e in children] == sorted(e.progress.trained for e in children)
    final_start = kinds.index("final_start")
    assert all(k == "final" for k in kinds[final_start + 1:])
    finals = [e for e in events if isinstance(e, FinalTrained)]
    assert isinstance(events[final_start], FinalStarted)
    assert events[final_start].models == len(finals) == len(result.retrained)
    assert {e.id for e in finals} == {r.id for r in result.retrained}
    # a two-argument callback, as earlier releases had it, gets (kind, plain dict)
    alphac.optimize(Net(), out=tmp_path / "run", candidates=3, rungs=0, resume=True,
                    on_event=lambda kind, info: plain.append((kind, info)), **TINY)
    assert plain and all(isinstance(k, str) and "progress" in info for k, info in plain)
    json.dumps([info for _, info in plain])
