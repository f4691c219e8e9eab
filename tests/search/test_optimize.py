"""`alphac optimize` end to end on real Fashion-MNIST: every output, resume, SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from alphac.cli import app
from alphac.search.journal import Journal, check

runner = CliRunner()
TINY = ["zoo:small_cnn", "--target", "fashion-mnist", "--steps", "5", "--final-steps", "8",
        "--subset", "800", "--device", "cpu", "--val-images", "300", "--test-images", "300"]
_LOAD = """
import sys, runpy
sys.modules["alphac"] = None
import torch
model = runpy.run_path(sys.argv[1])["build_model"]().eval()
state = torch.load(sys.argv[2], weights_only=True)
print(len(state), tuple(model(torch.randn(2, 1, 28, 28)).shape))
"""


def test_a_tiny_search_writes_every_output_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["optimize", *TINY, "--candidates", "2", "--executor", "inline",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("seed_model", "pareto", "best", "settings"):
        assert key in report, key
    for row in (report["seed_model"], report["best"]):
        for key in ("params", "flops", "val_accuracy", "test_accuracy"):
            assert row[key] is not None, key
        assert 0 <= row["val_accuracy"] <= 1 and 0 <= row["test_accuracy"] <= 1
    for name in ("journal.sqlite", "history.csv", "report.json", "best/model.py",
                 "best/weights.pt", "best/model.pt2"):
        assert (out / name).is_file(), name
    done = subprocess.run([sys.executable, "-c", _LOAD, str(out / "best/model.py"),
                           str(out / "best/weights.pt")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["(2,", "10)"]
    assert check(out) == []
    assert (out / "pareto.png").stat().st_size > 10_000
    shown = runner.invoke(app, ["report", str(out), "--json", "--no-plot"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["best"]["id"] == report["best"]["id"]
    again = runner.invoke(app, ["optimize", *TINY, "--candidates", "3", "--executor", "inline",
                                "--out", str(out), "--resume", "--json"])
    assert again.exit_code == 0, again.output
    with Journal.open(out, readonly=True) as journal:
        trained = [i for i in journal.individuals()
                   if not (i.reason or "").startswith("synthesis:")]
        assert len([i for i in trained if i.status in ("done", "failed")]) == 4
        assert len({i.fingerprint for i in trained}) == len(trained)  # no duplicate candidate


def _journal_state(out: Path) -> dict | None:
    if not (out / "journal.sqlite").exists():
        return None
    try:
        with Journal.open(out, readonly=True) as journal:
            inds = journal.individuals()
    except Exception:  # noqa: BLE001 - being created right now
        return None
    return {"rows": len(inds), "done": {i.id: (i.fingerprint, i.weights_sha256) for i in inds
                                        if i.status == "done"},
            "final": (out / "pareto").is_dir()}


def _kill_when(cmd: list[str], out: Path, ready) -> bool:
    """Start ``cmd``, SIGKILL its process group once ``ready(state)``; False if it ended first."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        state = _journal_state(out)
        if state is not None and ready(state):
            break
        time.sleep(0.2)
    ended = proc.poll() is not None
    if not ended:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers
    proc.wait()
    return not ended


def test_sigkill_at_several_points_then_resume_completes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alphac", "optimize", *TINY, "--candidates", "4", "--workers",
           "1", "--out", str(out), "--json"]
    points = [("the seed queued, not trained", lambda st: st["rows"] >= 1),
              ("the seed done", lambda st: len(st["done"]) >= 1),
              ("two children done", lambda st: len(st["done"]) >= 3),
              ("during the final retraining", lambda st: st["final"])]
    finished: dict[int, tuple] = {}
    for i, (where, ready) in enumerate(points):
        killed = _kill_when(cmd + (["--resume"] if i else []), out, ready)
        assert killed, f"the run ended before the kill point: {where}"
        assert check(out) == [], where
        state = _journal_state(out)
        for ident, kept in finished.items():  # every finished candidate survives every kill
            assert state["done"].get(ident) == kept, (where, ident)
        finished = state["done"]
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert check(out) == []
    with Journal.open(out, readonly=True) as journal:
        counts = journal.counts()
        assert counts["running"] == 0 and counts["queued"] == 0
        children = [i for i in journal.individuals() if i.parent is not None and
                    not (i.reason or "").startswith("synthesis:")]
        assert len(children) == 4  # exactly the requested count, none lost, none duplicated
        assert len({i.fingerprint for i in children}) == len(children)
        assert all(journal.get(ident).weights_sha256 == kept[1]
                   for ident, kept in finished.items())
    assert json.loads(resumed.stdout)["best"]["id"] >= 1
    assert (out / "best/model.py").is_file()


def test_bad_search_options_are_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["optimize", *TINY, "--objective", "speed", "--out",
                                 str(tmp_path / "x")])
    assert result.exit_code == 2 and "--objective must be one of" in result.output
    result = runner.invoke(app, ["optimize", *TINY, "--resume", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a run" in result.output
