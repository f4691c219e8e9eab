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
        "--subset", "800", "--device", "cpu"]
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


def test_sigkill_then_resume_completes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alphac", "optimize", *TINY, "--candidates", "3", "--workers",
           "1", "--out", str(out), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        if (out / "journal.sqlite").exists():
            with Journal.open(out, readonly=True) as journal:
                if journal.counts().get("done", 0) >= 2:
                    break
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-run
    proc.wait()
    assert check(out) == []
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    with Journal.open(out, readonly=True) as journal:
        counts = journal.counts()
        assert counts.get("running", 0) == 0 and counts.get("queued", 0) == 0
        assert counts.get("done", 0) >= 3
    assert check(out) == []
    assert (out / "report.json").is_file()


def test_bad_search_options_are_usage_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["optimize", *TINY, "--objective", "speed", "--out",
                                 str(tmp_path / "x")])
    assert result.exit_code == 2 and "--objective must be one of" in result.output
    result = runner.invoke(app, ["optimize", *TINY, "--resume", "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "not a run" in result.output
