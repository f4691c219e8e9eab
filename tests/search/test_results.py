"""RunResult is report.json: one typed value for the driver, `alphac report` and the API."""

from __future__ import annotations

import json

import pytest

from alphac.search.results import ModelRow, RunResult

ROW = {"id": 3, "parent": 1, "params": 800, "flops": 4000, "latency_ms": None,
       "values": {"params": 800.0, "flops": 4000.0}, "proxy_val_accuracy": 0.7, "rung": 0,
       "generation": 1, "search_score": 0.69, "final_init": "candidates/000003/trained.pt",
       "final_fine_tunes": 1,
       "rung_val_accuracy": 0.7, "status": "done", "reason": None, "val_accuracy": 0.8,
       "test_accuracy": 0.79, "path": "/runs/a/pareto/000003", "pt2": None,
       "pt2_error": "Unsupported: x"}


def _report() -> dict:
    seed = {**ROW, "id": 1, "parent": None, "params": 1000, "generation": 0}
    return {"seed_model": seed, "pareto": [seed, ROW], "best": ROW, "retrained": [seed, ROW],
            "objectives": {"params": {"unit": "parameters", "column": "params"}},
            "settings": {"objective": "params", "target": "fashion-mnist"},
            "timing": {"search_seconds": 3.0}, "counts": {"done": 2},
            "proxy_fidelity_kendall_tau": 1.0, "fidelity_over": 2, "failures": [],
            "from_a_newer_alphac": {"kept": True}}


def test_report_json_round_trips_with_unknown_keys_kept(tmp_path) -> None:
    data = _report()
    data["best"] = {**ROW, "a_new_column": 5}
    result = RunResult.from_json(tmp_path, json.loads(json.dumps(data)))
    assert result.to_json() == data
    assert result.best.params == 800 and result.best["a_new_column"] == 5
    assert result.seed_model.id == 1 and [r.id for r in result.pareto] == [1, 3]
    assert result.objective == "params" and result.timing == {"search_seconds": 3.0}
    assert result.best_dir == tmp_path / "best"
    assert result.best_model_path == tmp_path / "pareto" / "000003" / "model.py"
    assert "best #3" in repr(result)


def test_a_model_row_reads_as_a_mapping_and_as_attributes() -> None:
    row = ModelRow.from_json(ROW)
    assert row["params"] == row.params == 800 and row.get("missing") is None
    assert dict(row) == ROW and row.to_json() == ROW
    with pytest.raises(KeyError):
        row["missing"]


@pytest.mark.parametrize("bad, says", [
    ([], "not a JSON object"), ({"pareto": [], "best": ROW}, "no seed_model"),
    ({"seed_model": ROW, "pareto": {}, "best": ROW}, "no pareto"),
    ({"seed_model": {"params": 1}, "pareto": [], "best": ROW}, "no integer id")])
def test_a_malformed_report_says_what_is_wrong(tmp_path, bad, says) -> None:
    with pytest.raises(ValueError, match=says):
        RunResult.from_json(tmp_path, bad)
