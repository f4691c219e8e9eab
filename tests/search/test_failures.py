"""Failing candidates never stop a search: each failure is journalled with its reason, shown in
the report, and a candidate whose worker died is retried once (faults via ALPHAC_FAULT)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import alphac
from alphac.cli import app
from alphac.errors import TrainingError
from alphac.search.journal import Journal, check

TINY = dict(target="fashion-mnist", steps=5, final_steps=6, subset=600, device="cpu", rungs=0,
            val_images=300, test_images=300)


def test_every_kind_of_failure_is_recorded_and_the_search_completes(tmp_path, monkeypatch):
    # seed = 1, children 2..: NaN loss, exception in forward, out of memory, a worker killed
    # once (retried), a synthesis timeout, a worker killed on both attempts
    monkeypatch.setenv("ALPHAC_FAULT", "nan@2,raise@3,oom@4,kill@5,synthesis@6,killtwice@7")
    result = alphac.optimize("zoo:small_cnn", out=tmp_path / "run", candidates=7,
                             executor="local", workers=1, **TINY)
    with Journal.open(result.run_dir, readonly=True) as journal:
        rows = {i.id: i for i in journal.individuals()}
    reasons = {ident: (ind.status, ind.reason, ind.attempts) for ident, ind in rows.items()}
    assert reasons[2][0] == "failed" and "NaN/Inf loss" in reasons[2][1]
    assert reasons[3][0] == "failed" and "injected failure in forward" in reasons[3][1]
    assert reasons[4][0] == "failed" and reasons[4][1].startswith("out of memory")
    assert reasons[5][0] == "done" and reasons[5][2] == 2  # the worker died once: retried
    assert reasons[6][0] == "failed" and reasons[6][1].startswith("synthesis:")
    assert reasons[7] == ("failed", "worker died twice", 2)
    children = [i for i in rows.values() if i.parent is not None
                and not (i.reason or "").startswith("synthesis:")]
    assert len(children) == 7  # the synthesis failure did not count: one more child was made
    assert check(result.run_dir) == []
    failures = {f["id"]: f["reason"] for f in result.report["failures"]}
    assert set(failures) == {2, 3, 4, 6, 7}
    shown = CliRunner().invoke(app, ["report", str(result.run_dir), "--no-plot"])
    assert shown.exit_code == 0, shown.output
    assert "failed #4: out of memory" in shown.output and "failed #7: worker died twice" in \
        shown.output
    assert json.loads(CliRunner().invoke(app, ["report", str(result.run_dir), "--json",
                                               "--no-plot"]).stdout)["failures"]


def test_a_seed_that_cannot_train_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPHAC_FAULT", "nan@1")
    with pytest.raises(TrainingError, match="the seed model could not be trained"):
        alphac.optimize("zoo:small_cnn", out=tmp_path / "run", candidates=2,
                        executor="inline", **TINY)
    with Journal.open(tmp_path / "run", readonly=True) as journal:
        assert journal.get(1).status == "failed"


def test_faults_are_off_unless_asked(monkeypatch):
    from alphac.search import faults

    monkeypatch.delenv("ALPHAC_FAULT", raising=False)
    assert not faults.injected("nan", 2)
    monkeypatch.setenv("ALPHAC_FAULT", "nan@2, oom@3")
    assert faults.injected("oom", 3) and not faults.injected("nan", 3)


def test_resume_executes_no_code_from_the_run_directory(tmp_path):
    out = tmp_path / "run"
    alphac.optimize("zoo:small_cnn", out=out, candidates=1, executor="inline", **TINY)
    marker = tmp_path / "executed"
    for code in out.glob("candidates/*/model.py"):  # a run directory someone tampered with
        code.write_text(f"open({str(marker)!r}, 'w').close()\n" + code.read_text())
    result = alphac.optimize("zoo:small_cnn", out=out, candidates=2, executor="inline",
                             resume=True, **TINY)
    assert not marker.exists()
    assert result.report["counts"]["done"] >= 3
    assert "open(" not in (result.best_dir / "model.py").read_text()
