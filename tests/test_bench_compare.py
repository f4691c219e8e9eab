"""bench/compare.py on synthetic pytest-benchmark results: no change passes, a 3x slowdown of a
ratio fails, a noisy absolute change within its threshold passes. No benchmark runs here."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

_PATH = Path(__file__).resolve().parents[1] / "bench" / "compare.py"
_spec = importlib.util.spec_from_file_location("bench_compare", _PATH)
compare = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = compare  # dataclasses look their module up while the file runs
_spec.loader.exec_module(compare)

RATIO = "synthesis.per_candidate_vs_inference"
ABSOLUTE = "evolution.step_s"
THROUGHPUT = "runtime.train_vs_plain_loop"


def result(ratio: float, absolute: float, throughput: float = 0.95) -> dict:
    """A pytest-benchmark JSON result with three figures in two benchmarks."""
    def fig(value, unit, better="lower", reference=None):
        return {"value": value, "unit": unit, "better": better,
                "kind": "ratio" if reference else "absolute", "reference": reference}

    return {"machine_info": {"node": "bench-host"}, "commit_info": {"id": "abc"},
            "benchmarks": [
                {"name": "test_synthesis", "extra_info": {"figures": {
                    RATIO: fig(ratio, "x", reference="one property inference"),
                    ABSOLUTE: fig(absolute, "s")}}},
                {"name": "test_runtime", "extra_info": {"figures": {
                    THROUGHPUT: fig(throughput, "x", "higher", "the plain loop")}}}]}


@pytest.fixture
def baseline() -> dict:
    # the ratio barely moves between runs; the absolute time moves by a third
    return compare.make_baseline([result(3.8, 0.42), result(3.9, 0.50), result(3.85, 0.375)])


def statuses(rows) -> dict[str, str]:
    return {r.name: r.status for r in rows}


def test_thresholds_come_from_the_repeats(baseline) -> None:
    ratio, absolute = baseline["figures"][RATIO], baseline["figures"][ABSOLUTE]
    assert ratio["value"] == 3.85 and ratio["repeats"] == [3.8, 3.9, 3.85]
    assert ratio["threshold"] == compare.FLOOR  # spread 2.6%, doubled, is under the floor
    assert absolute["spread"] == pytest.approx(0.50 / 0.375 - 1)
    assert absolute["threshold"] == pytest.approx(compare.SAFETY * (0.50 / 0.375 - 1))


def test_no_change_passes(baseline) -> None:
    rows = compare.compare(baseline, result(3.85, 0.42))
    assert statuses(rows) == {RATIO: "ok", ABSOLUTE: "ok", THROUGHPUT: "ok"}
    assert not any(r.failed for r in rows)


def test_a_3x_ratio_slowdown_fails(baseline, tmp_path) -> None:
    rows = compare.compare(baseline, result(3 * 3.85, 0.42))
    assert statuses(rows)[RATIO] == "regressed"
    assert next(r for r in rows if r.name == RATIO).change == pytest.approx(2.0)
    base, run = tmp_path / "baseline.json", tmp_path / "run.json"
    base.write_text(json.dumps(baseline))
    run.write_text(json.dumps(result(3 * 3.85, 0.42)))
    out = io.StringIO()
    code = compare.main(["check", str(run), "--baseline", str(base)],
                        Console(file=out, width=200))
    assert code == 1
    assert f"REGRESSED {RATIO}: +200.0% worse" in out.getvalue()


def test_noisy_absolute_change_within_threshold_passes(baseline) -> None:
    threshold = baseline["figures"][ABSOLUTE]["threshold"]
    slower = 0.42 * (1 + 0.8 * threshold)  # well outside the repeats, inside the threshold
    assert statuses(compare.compare(baseline, result(3.85, slower)))[ABSOLUTE] == "ok"
    beyond = 0.42 * (1 + 1.1 * threshold)
    assert statuses(compare.compare(baseline, result(3.85, beyond)))[ABSOLUTE] == "regressed"


def test_higher_is_better_and_missing_figures(baseline) -> None:
    assert statuses(compare.compare(baseline, result(3.85, 0.42, 0.95 / 2)))[THROUGHPUT] \
        == "regressed"
    assert statuses(compare.compare(baseline, result(3.85, 0.42, 0.95 * 2)))[THROUGHPUT] \
        == "improved"
    partial = result(3.85, 0.42)
    partial["benchmarks"].pop()
    rows = compare.compare(baseline, partial)
    assert statuses(rows)[THROUGHPUT] == "missing" and any(r.failed for r in rows)


def test_a_baseline_needs_three_runs() -> None:
    with pytest.raises(compare.CompareError, match="at least 3 runs"):
        compare.make_baseline([result(1, 1), result(1, 1)])
