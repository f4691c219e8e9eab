"""Search overhead per candidate: a tiny ``alphac.search.driver.optimize`` run, inline.

Three children of ``zoo:small_cnn`` on Fashion-MNIST, trained in this process for a few steps, so
the driver's own work (selection, mutation, inheritance, code and weights files, journal) is a
visible share of each candidate. The figures come from ``report.json``'s ``timing`` entry
(``overhead_seconds_per_candidate``, ``overhead_fraction``) where the driver writes it, else from
the journal's timestamps: a child's overhead is from the last finish before it was queued to its
start (the inline executor starts it right after it is written), a candidate's time from its
start to its finish. That fallback suits a driver without successive halving only: with rungs,
promoted individuals train in those gaps too and it over-counts (the driver that writes the
``timing`` entry has rungs).

Tracked figures (``bench/compare.py``): the median over rounds of the overhead per candidate
(absolute) and of the overhead fraction, overhead / (overhead + candidate time): a ratio to the
candidates' own training measured in the same run.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from figures import record

from alphac.search.driver import SearchSettings, optimize
from alphac.search.journal import Journal

ROUNDS = 3
RECIPE = {"steps": 5, "batch_size": 32, "lr": 0.05, "subset": 500}
SETTINGS = {"executor": "inline", "candidates": 3, "proxy": RECIPE, "final": RECIPE,
            "device": "cpu", "target": "fashion-mnist"}


def timing_from_journal(run_dir: Path) -> dict[str, Any]:
    """The overhead per child and fraction from the journal's timestamps (see the docstring)."""
    with Journal.open(run_dir, readonly=True) as journal:
        done = [i for i in journal.individuals() if i.status == "done"]
    finishes = sorted(i.finished_at for i in done)
    overheads, candidate_seconds = [], []
    for ind in done:
        candidate_seconds.append(ind.finished_at - ind.started_at)
        before = [f for f in finishes if f <= ind.queued_at]
        if ind.parent is not None and before:
            overheads.append(ind.started_at - before[-1])
    per_child = statistics.mean(overheads)
    median = statistics.median(candidate_seconds)
    return {"overhead_seconds_per_candidate": per_child,
            "overhead_fraction": per_child / (per_child + median),
            "overhead_measured_over": len(overheads), "source": "journal"}


def search_timing(run_dir: Path) -> dict[str, Any]:
    """``report.json``'s timing where it has the overhead, else :func:`timing_from_journal`."""
    report = json.loads((run_dir / "report.json").read_text())
    timing = report.get("timing") or {}
    keys = ("overhead_seconds_per_candidate", "overhead_fraction")
    if all(isinstance(timing.get(k), int | float) and timing[k] > 0 for k in keys):
        return {**timing, "source": "report"}
    return timing_from_journal(run_dir)


def test_search_overhead_per_candidate(benchmark, tmp_path):
    runs: list[dict[str, Any]] = []
    folders = iter(tmp_path / f"run-{i}" for i in range(ROUNDS))

    def one_round() -> None:
        run_dir = next(folders)
        optimize("zoo:small_cnn", out=run_dir, settings=SearchSettings(**SETTINGS))
        runs.append(search_timing(run_dir))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    per_candidate = statistics.median(r["overhead_seconds_per_candidate"] for r in runs)
    fraction = statistics.median(r["overhead_fraction"] for r in runs)
    record(benchmark.extra_info, "search.overhead_per_candidate_s", per_candidate, unit="s")
    record(benchmark.extra_info, "search.overhead_fraction", fraction, unit="x",
           reference="overhead + the candidate's own training and evaluation, same run")
    benchmark.extra_info.update(runs=runs, settings=SETTINGS)
    print(f"\nsearch overhead ({runs[0]['source']}): {per_candidate:.3f} s per candidate, "
          f"fraction {fraction:.3f}")
