"""Objectives are one table: a fake objective added as one entry drives a whole search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import alphac
from alphac.errors import UserError
from alphac.search.journal import Journal
from alphac.search.objectives import OBJECTIVES, Objective, get_objective, row_cost
from alphac.search.report import load_run, pareto_table, plot_pareto

TINY = dict(target="fashion-mnist", steps=4, final_steps=4, subset=600, device="cpu",
            val_images=200, test_images=200, executor="inline", workers=1)


def _nodes(measured) -> float:
    return float(len(measured.gm.graph.nodes))


def test_a_new_objective_is_one_table_entry(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(OBJECTIVES, "nodes", Objective("nodes", "graph nodes", _nodes))
    out = tmp_path / "run"
    result = alphac.optimize("zoo:small_cnn", out=out, candidates=2, objective="nodes", **TINY)
    with Journal.open(out, readonly=True) as journal:
        done = journal.individuals("done")
    assert done and all("nodes" in t.values and t.values["nodes"] > 5 for t in done)
    assert all(t.values["params"] == t.params for t in done)  # the columns read as values too
    report = json.loads((out / "report.json").read_text())
    assert report["objectives"]["nodes"] == {"unit": "graph nodes", "column": None}
    for row in report["retrained"]:
        assert row_cost(row, "nodes") == next(t.values["nodes"] for t in done
                                              if t.id == row["id"])
    assert result.best["id"] in {row["id"] for row in report["retrained"]}
    run = load_run(out)
    assert run.to_json() == report and result.to_json() == report  # one type, report.json
    rows = pareto_table(run.report, out, "nodes")
    costs = [row_cost(next(r for r in report["pareto"] if r["id"] == row.id), "nodes")
             for row in rows[1:]]
    assert costs == sorted(costs)
    assert plot_pareto(run, tmp_path / "nodes.png").stat().st_size > 1000


def test_an_unknown_objective_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="the objectives are params, flops, latency"):
        get_objective("memory")
    with pytest.raises(UserError, match="--objective must be one of params, flops, latency, got 'memory'"):
        alphac.optimize("zoo:small_cnn", out="never-made", candidates=1, objective="memory")


def test_values_fall_back_to_columns_and_show_their_unit() -> None:
    assert row_cost({"latency_ms": 2.5}, "latency") == 2.5
    assert row_cost({"values": {"flops": 10}}, "flops") == 10.0
    assert row_cost({}, "params") is None
    assert OBJECTIVES["latency"].show(1.234) == "1.23 ms"
    assert OBJECTIVES["params"].show(140458) == "140.46k"
    assert OBJECTIVES["flops"].unit == "FLOPs per image"


def test_a_run_resumes_with_another_executor_and_worker_count(tmp_path: Path) -> None:
    """Where a run runs is given per session: the resume's executor and workers are used,
    what defines the run (recipes, seeds, objective) stays the stored one."""
    out = tmp_path / "run"
    alphac.optimize("zoo:small_cnn", out=out, candidates=1, **TINY)
    moved = {**TINY, "executor": "local", "workers": 2, "steps": 99}
    alphac.optimize("zoo:small_cnn", out=out, candidates=3, resume=True, **moved)
    with Journal.open(out, readonly=True) as journal:
        trials = journal.individuals()
        stored = journal.settings
    trained = [t for t in trials if t.parent is not None
               and not (t.reason or "").startswith("synthesis:")]
    assert len(trained) == 3 and all(t.status == "done" for t in trained)
    assert trials[0].worker == "inline" and trained[0].worker == "inline"
    assert {t.worker for t in trained[1:]} == {"local"}
    assert stored["executor"] == "inline" and stored["proxy"]["steps"] == 4
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["executor"] == "local" and report["settings"]["workers"] == 2
    assert report["settings"]["proxy"]["steps"] == 4  # the run's own recipe, not the resume's
