"""One Pareto table: `optimize`'s end of run prints the table `alphac report` prints.

The search is replaced by a stand-in that returns a finished run's result made from a hand-written
report.json, so nothing trains.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from alphac.cli import app
from alphac.cli.pareto import pareto_table
from alphac.search.results import RunResult

runner = CliRunner()


def _row(ident: int, params: int, flops: int, val: float, test: float) -> dict:
    return {"id": ident, "parent": None if ident == 1 else 1, "params": params, "flops": flops,
            "latency_ms": None, "proxy_val_accuracy": val, "status": "done", "reason": None,
            "val_accuracy": val, "test_accuracy": test, "path": f"pareto/{ident:06d}"}


REPORT = {"seed_model": _row(1, 140458, 43_810_000, 0.82, 0.82),
          "pareto": [_row(3, 70229, 21_905_000, 0.818, 0.815),
                     _row(5, 210687, 65_715_000, 0.85, 0.849)],
          "settings": {"objective": "params", "target": "fashion-mnist"},
          "timing": {"search_seconds": 559.0, "final_seconds": 149.0, "overhead_fraction": 0.01}}
REPORT["best"] = REPORT["pareto"][0]


def _text(table) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def test_optimize_ends_with_the_report_table(tmp_path: Path, monkeypatch) -> None:
    run = RunResult.from_json(tmp_path / "run", REPORT)
    monkeypatch.setattr("alphac.search.api.run_search", lambda *a, **k: run)
    model = tmp_path / "model.py"
    model.write_text("from torch import nn\n\n\ndef build_model():\n    return nn.Identity()\n")
    result = runner.invoke(app, ["optimize", str(model), "--target", "fashion-mnist",
                                 "--candidates", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "the seed and the Pareto front by params, retrained with the final recipe" in out
    assert re.search(r"FLOPs per image\s+val acc %\s+test acc %", out), out
    assert re.search(r"#1\s+seed\s+140\.46k\s+43\.81M\s+82\.00\s+82\.00", out), out
    assert re.search(r"#3\s+best\s+70\.23k \(-50%\)\s+21\.91M \(-50%\)\s+81\.80 \(-0\.20\)", out)
    assert re.search(r"#5\s+front\s+210\.69k \(\+50%\)", out), out
    assert out.index("#1") < out.index("#3") < out.index("#5")  # by increasing params
    assert "search 9m19s, final retraining 2m29s" in out
    for row in _text(pareto_table(run.table(), "params")).splitlines()[2:]:
        assert row.strip() in out  # the renderer `alphac report` uses, row for row


def test_report_and_optimize_share_the_renderer() -> None:
    from alphac.cli import optimize_cmd, report_cmd

    assert optimize_cmd.pareto_table is report_cmd.pareto_table is pareto_table
