"""pareto.png in every run directory: matplotlib is a dependency, and the search's last step
(alphac.search.final.plot) draws the plot for a finished run (a tiny hand-made one here)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from alphac.search.final import plot
from alphac.search.journal import Journal

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = {"target": "fashion-mnist", "candidates": 2, "objective": "params",
            "max_accuracy_drop": 0.5, "mutator": "property", "seed": 0}
IDENTITY = {"source": "zoo:small_cnn", "input_shape": [1, 1, 28, 28], "target": "fashion-mnist"}
#: id: (parent, params, flops, proxy val accuracy)
PLAN = {1: (None, 1000, 5000, 0.90), 2: (1, 600, 3000, 0.89), 3: (1, 1400, 7000, 0.91)}


def _row(ident: int) -> dict:
    parent, params, flops, val = PLAN[ident]
    return {"id": ident, "parent": parent, "params": params, "flops": flops, "latency_ms": None,
            "proxy_val_accuracy": val, "status": "done", "reason": None, "val_accuracy": val,
            "test_accuracy": val, "path": f"pareto/{ident:06d}"}


def _tiny_run(run: Path) -> Path:
    with Journal.create(run, SETTINGS, IDENTITY) as journal:
        for ident, (parent, params, flops, val) in PLAN.items():
            mutation = None if parent is None else {"kind": "rewrite", "params_child": params}
            assert journal.add(parent, mutation, ident, f"f{ident}") == ident
            ind = journal.get(ident)
            (run / ind.code_path).parent.mkdir(parents=True, exist_ok=True)
            (run / ind.code_path).write_text("# the candidate's code\n")
            (run / ind.weights_path).write_bytes(b"weights")
            journal.start(ident, "w0")
            journal.finish(ident, params=params, flops=flops, latency_ms=None, val_accuracy=val,
                           train_seconds=1.0)
    report = {"seed_model": _row(1), "pareto": [_row(2), _row(3)], "best": _row(2),
              "settings": SETTINGS}
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_matplotlib_is_a_dependency_not_an_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"matplotlib\b", r) for r in project["dependencies"])
    assert project["optional-dependencies"]["plot"] == []  # `alphac[plot]` still installs


def test_a_finished_run_gets_its_pareto_png(tmp_path: Path) -> None:
    run = _tiny_run(tmp_path / "run")
    assert not (run / "pareto.png").exists()
    plot(run)
    png = (run / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary left
