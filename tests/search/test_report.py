"""`alphac report` and alphac.search.report on a hand-made run directory (no training)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from alphac.cli.report_cmd import report as report_command
from alphac.errors import UserError
from alphac.search.journal import CorruptJournalError, Journal
from alphac.search.report import (
    CorruptReportError,
    NotARunDirError,
    PlotUnavailableError,
    RunNotFinishedError,
    lineage,
    load_run,
    pareto_table,
    plot_pareto,
)

SETTINGS = {"target": "fashion-mnist", "candidates": 6, "objective": "params",
            "max_accuracy_drop": 0.5, "mutator": "property", "seed": 0}
IDENTITY = {"source": "/models/my net.py", "sha256": "b" * 64, "input_shape": [1, 1, 28, 28],
            "target": "fashion-mnist"}
SEED_CODE = '''\
class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)

    def forward(self, x):
        conv = self.conv(x);  x = None
        relu = torch.relu(conv);  conv = None
        flatten = torch.flatten(relu, 1);  relu = None
        return flatten
'''
CHILD_CODE = SEED_CODE.replace("relu = torch.relu(conv)", "relu = torch.tanh(conv)")
REWRITE = {"kind": "rewrite", "mutator": "property", "seed": 11, "block": "layer1",
           "block_type": "BasicBlock", "instances": ["layer1", "layer2"],
           "subgraph": ["relu"], "chains": [["conv1x1", "tanh"]], "targets": None,
           "achieved": None, "replaced_code": "relu = torch.tanh(conv)", "attempts": 1,
           "candidates": 3, "seconds": 0.1, "params_parent": 1000, "params_child": 800,
           "flops_parent": 5000, "flops_child": 4000, "fingerprint_parent": "f1",
           "fingerprint_child": "f2"}
DELETE = {**REWRITE, "kind": "delete", "mutator": "block", "block": "layer2",
          "instances": ["layer2"], "subgraph": ["flatten"], "chains": [],
          "replaced_code": "# layer2 removed", "params_parent": 800, "params_child": 500,
          "flops_parent": 4000, "flops_child": 2500, "fingerprint_child": "f3"}
DUPLICATE = {**REWRITE, "kind": "duplicate", "mutator": "block", "chains": [],
             "params_child": 1500, "flops_child": 7000, "fingerprint_child": "f4"}
# id: (parent, mutation, params, flops, latency, proxy val accuracy, or None when it fails)
PLAN = {1: (None, None, 1000, 5000, 2.0, 0.90), 2: (1, REWRITE, 800, 4000, 1.8, 0.89),
        3: (2, DELETE, 500, 2500, 1.1, 0.895), 4: (1, DUPLICATE, 1500, 7000, 3.0, 0.91),
        5: (3, {"failed": "no program met the targets"}, 0, 0, None, None),
        6: (3, {**REWRITE, "fingerprint_child": "f6"}, 400, 2000, 1.0, 0.80)}


def _row(ident: int, params: int, flops: int, latency: float, val: float, test: float) -> dict:
    return {"id": ident, "parent": PLAN[ident][0], "params": params, "flops": flops,
            "latency_ms": latency, "proxy_val_accuracy": PLAN[ident][5], "status": "done",
            "reason": None, "val_accuracy": val, "test_accuracy": test,
            "path": f"somewhere/else/pareto/{ident:06d}"}


def _report() -> dict:
    seed = _row(1, 1000, 5000, 2.0, 0.905, 0.900)
    pareto = [_row(3, 500, 2500, 1.1, 0.902, 0.897), _row(4, 1500, 7000, 3.0, 0.915, 0.91),
              _row(6, 400, 2000, 1.0, 0.81, 0.80)]
    return {"seed_model": seed, "pareto": pareto, "best": pareto[0], "settings": SETTINGS,
            "counts": {"queued": 0, "running": 0, "done": 5, "failed": 1},
            "proxy_fidelity_kendall_tau": 1.0}


def _journal(run: Path) -> None:
    with Journal.create(run, SETTINGS, IDENTITY) as journal:
        for ident, (parent, mutation, params, flops, latency, val) in PLAN.items():
            made = journal.add(parent, mutation, ident, f"f{ident}")
            assert made == ident
            if val is None:
                journal.fail(ident, "synthesis: no program met the targets")
                continue
            ind = journal.get(ident)
            (run / ind.code_path).parent.mkdir(parents=True, exist_ok=True)
            (run / ind.code_path).write_text(SEED_CODE if ident == 1 else CHILD_CODE)
            (run / ind.weights_path).write_bytes(b"weights %d" % ident)
            journal.start(ident, "w0")
            journal.finish(ident, params=params, flops=flops, latency_ms=latency,
                           val_accuracy=val, train_seconds=1.0)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _journal(run)
    (run / "report.json").write_text(json.dumps(_report(), indent=2))
    (run / "best").mkdir()
    (run / "best" / "model.py").write_text(CHILD_CODE)
    return run


def _invoke(*args: str):
    app = typer.Typer()
    app.command()(report_command)
    return CliRunner().invoke(app, list(args))


# ---- load_run and its errors ----------------------------------------------------------------


def test_load_run_reads_the_report_and_the_journal(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert run.objective == "params"
    assert [ind.id for ind in run.individuals] == [1, 2, 3, 4, 5, 6]
    assert run.seed_model["id"] == 1 and run.best["id"] == 3
    assert run.counts["done"] == 5 and run.counts["failed"] == 1
    assert run.seed_identity["source"] == IDENTITY["source"]
    assert run.best_model_path == run_dir / "best" / "model.py"


def test_the_report_can_be_read_while_the_writer_holds_the_run(run_dir: Path) -> None:
    with Journal.open(run_dir):  # the writer's lock
        assert load_run(run_dir).best["id"] == 3


def test_a_folder_without_a_journal_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(NotARunDirError, match="is not an alphac run") as info:
        load_run(tmp_path)
    assert "alphac optimize --out" in info.value.hint
    with pytest.raises(NotARunDirError, match="does not exist"):
        load_run(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotARunDirError, match="is a file"):
        load_run(tmp_path / "file")


def test_a_run_without_report_json_has_not_finished(run_dir: Path) -> None:
    (run_dir / "report.json").unlink()
    with pytest.raises(RunNotFinishedError, match="has not finished") as info:
        load_run(run_dir)
    hint = info.value.hint
    # the stored count is the children to train: following the hint trains all of them
    assert "--resume" in hint and "'/models/my net.py'" in hint and "--candidates 6" in hint
    assert f"--out {run_dir}" in hint and "--target fashion-mnist" in hint


def test_a_running_run_says_how_many_are_still_going(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "r", SETTINGS, IDENTITY) as journal:
        journal.start(journal.add(None, None, 0, "f"), "w0")
        journal.add(1, REWRITE, 1, "g")
        with pytest.raises(RunNotFinishedError, match=r"still going \(1 running, 1 queued\)"):
            load_run(tmp_path / "r")


@pytest.mark.parametrize("text, detail", [
    ("{not json", "cannot be read as JSON"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({"seed_model": {"id": 1}, "pareto": []}), "has no best"),
    (json.dumps({"seed_model": {"id": 1}, "pareto": [{"id": "x"}], "best": {"id": 1}}),
     "no integer id"),
    (json.dumps({"seed_model": {"id": 1}, "pareto": [{"id": 42}], "best": {"id": 1}}),
     r"individuals \[42\] that the journal lacks"),
])
def test_a_corrupt_report_says_what_is_wrong(run_dir: Path, text: str, detail: str) -> None:
    (run_dir / "report.json").write_text(text)
    with pytest.raises(CorruptReportError, match=detail) as info:
        load_run(run_dir)
    assert "delete it" in info.value.hint and "--resume" in info.value.hint


def test_a_corrupt_journal_is_the_journals_error(run_dir: Path) -> None:
    (run_dir / "journal.sqlite").write_bytes(b"not a database" * 100)
    for name in ("journal.sqlite-wal", "journal.sqlite-shm"):
        (run_dir / name).unlink(missing_ok=True)
    with pytest.raises(CorruptJournalError):
        load_run(run_dir)


# ---- the table ------------------------------------------------------------------------------


def test_the_table_has_the_seed_first_then_the_front_by_cost(run_dir: Path) -> None:
    rows = load_run(run_dir).table()
    assert [r.id for r in rows] == [1, 6, 3, 4]
    seed, cheapest, best, bigger = rows
    assert seed.is_seed and not seed.on_front and seed.params_change == 0.0
    assert [r.is_best for r in rows] == [False, False, True, False]
    assert best.params_change == pytest.approx(-0.5)
    assert best.flops_change == pytest.approx(-0.5)
    assert best.latency_change == pytest.approx(1.1 / 2.0 - 1)
    assert best.val_points == pytest.approx(-0.3)
    assert best.test_points == pytest.approx(-0.3)
    assert bigger.params_change == pytest.approx(0.5) and bigger.val_points == pytest.approx(1.0)
    assert cheapest.proxy_val_accuracy == 0.80
    assert best.path == str(run_dir / "pareto" / "000003")  # not the report's stale path


def test_the_seed_on_the_front_is_listed_once_and_unknowns_stay_none() -> None:
    report = _report()
    report["pareto"].append(dict(report["seed_model"]))
    report["pareto"][0]["test_accuracy"] = None
    report["settings"] = {**SETTINGS, "objective": "latency"}
    rows = pareto_table(report)
    assert [r.id for r in rows] == [1, 6, 3, 4]  # latency order, the seed once
    assert rows[0].on_front and rows[0].is_seed
    assert rows[2].test_points is None and rows[2].test_accuracy is None
    assert rows[2].path == "somewhere/else/pareto/000003"


# ---- the lineage ----------------------------------------------------------------------------


def test_the_lineage_goes_from_the_seed_to_the_individual(run_dir: Path) -> None:
    steps = load_run(run_dir).best_lineage()
    assert [s.id for s in steps] == [1, 2, 3]
    assert [s.parent for s in steps] == [None, 1, 2]
    assert [s.kind for s in steps] == [None, "rewrite", "delete"]
    seed, rewrite, delete = steps
    assert seed.replacement is None and seed.val_accuracy == 0.90
    assert rewrite.block == "layer1" and rewrite.instances == ("layer1", "layer2")
    assert rewrite.chains == (("conv1x1", "tanh"),)
    assert rewrite.replaced == "relu = torch.relu(conv)"  # the parent's (seed's) forward line
    assert rewrite.replacement == "relu = torch.tanh(conv)"
    assert (rewrite.params_before, rewrite.params_after) == (1000, 800)
    assert (delete.flops_before, delete.flops_after) == (4000, 2500)
    assert delete.replaced == "flatten = torch.flatten(relu, 1)"
    assert delete.replacement == "# layer2 removed"


def test_lineage_without_a_run_dir_reads_no_files_and_refuses_unknown_ids(run_dir: Path) -> None:
    individuals = load_run(run_dir).individuals
    steps = lineage(individuals, 6)
    assert [s.id for s in steps] == [1, 2, 3, 6] and steps[1].replaced is None
    assert [s.id for s in lineage(individuals, 1)] == [1]
    with pytest.raises(CorruptReportError, match="individual 99"):
        lineage(individuals, 99)
    with pytest.raises(CorruptReportError, match="individual 2"):
        lineage([i for i in individuals if i.id != 2], 3)


# ---- the plot -------------------------------------------------------------------------------


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_pareto_writes_a_png(run_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert plot_pareto(run_dir) == run_dir / "pareto.png"
    assert _is_png(run_dir / "pareto.png")
    for objective in ("flops", "latency"):
        out = plot_pareto(load_run(run_dir), tmp_path / "plots" / f"{objective}.png", objective)
        assert _is_png(out)
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left behind
    with pytest.raises(UserError, match="unknown objective 'accuracy'"):
        plot_pareto(run_dir, objective="accuracy")
    (tmp_path / "a file").write_text("x")
    with pytest.raises(PlotUnavailableError, match="cannot write"):
        plot_pareto(run_dir, tmp_path / "a file" / "pareto.png")


def test_plot_pareto_without_matplotlib_says_how_to_install(run_dir: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(PlotUnavailableError, match="matplotlib is not installed") as info:
        plot_pareto(run_dir)
    assert 'pip install matplotlib' in info.value.hint
    result = _invoke(str(run_dir))
    assert result.exit_code == 0, result.output
    assert 'pip install matplotlib' in result.stderr
    assert not (run_dir / "pareto.png").exists()


# ---- the command ----------------------------------------------------------------------------


def test_report_prints_the_table_best_and_lineage(run_dir: Path) -> None:
    result = _invoke(str(run_dir), "--no-plot")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"#3\s+best\s+500 \(-50%\)\s+2\.50k", out), out
    assert re.search(r"#1\s+seed\s+1\.00k\s+5\.00k", out) and re.search(r"#6\s+front", out)
    for text in ("#4", "90.20", "(-0.30)", "best: #3, params 500 (-50%), test 89.70% (-0.30)",
                 str(run_dir / "best" / "model.py"),
                 "#2 <- #1: rewrite of layer1 (BasicBlock, also in layer2)",
                 "relu = torch.relu(conv)", "relu = torch.tanh(conv)", "chain 0: conv1x1 -> tanh",
                 "#3 <- #2: delete of layer2", "removed:", "Kendall tau 1.00"):
        assert text in out, text
    assert out.index("#2 <- #1") < out.index("#3 <- #2")
    assert "replaced:" in out and "with:" in out
    assert not (run_dir / "pareto.png").exists()


def test_report_when_the_seed_is_best(run_dir: Path) -> None:
    report = _report()
    report["best"] = report["seed_model"]
    (run_dir / "report.json").write_text(json.dumps(report))
    result = _invoke(str(run_dir), "--no-plot")
    assert result.exit_code == 0, result.output
    assert "best: the seed #1 (no cheaper model" in result.stdout
    assert "lineage of the best model #1 (0 mutations from the seed)" in result.stdout
    assert re.search(r"#1\s+seed, best", result.stdout)


def test_report_json_is_one_object_and_writes_the_plot(run_dir: Path) -> None:
    pytest.importorskip("matplotlib")
    result = _invoke(str(run_dir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("pareto", "best", "seed_model", "lineage", "table", "best_model", "plot"):
        assert key in data, key
    assert [step["id"] for step in data["lineage"]] == [1, 2, 3]
    assert data["lineage"][1]["replacement"] == "relu = torch.tanh(conv)"
    assert data["best"]["id"] == 3 and [r["id"] for r in data["table"]] == [1, 6, 3, 4]
    assert data["plot"] == str(run_dir / "pareto.png") and _is_png(run_dir / "pareto.png")


def test_report_of_a_non_run_fails_cleanly(tmp_path: Path, run_dir: Path) -> None:
    result = _invoke(str(tmp_path / "nothing"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.output
    (run_dir / "report.json").unlink()
    result = _invoke(str(run_dir), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert "has not finished" in result.stderr and "--resume" in result.stderr
