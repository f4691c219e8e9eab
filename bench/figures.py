"""Tracked figures: the numbers ``bench/compare.py`` compares, recorded by the benchmarks.

A figure is one number per benchmark run, stored in the pytest-benchmark JSON under
``benchmarks[i].extra_info.figures[name]`` as ``{"value", "unit", "better", "kind",
"reference"}``. ``kind`` is ``ratio`` when the value is divided by a reference measured in the
same run (``reference`` says what; machine speed and load cancel out), else ``absolute``.
``better`` is ``lower`` (times) or ``higher`` (throughputs).

Absolute figures are medians over rounds. A ratio of short items (blocks, synthesis problems),
each timed with its reference back to back in every round, is the sum over items of each item's
best (least) time over the rounds, over the same for the reference: other jobs on a shared
machine only ever add time, and in bursts, so an item's best round is its own cost; the two sums
hold the same kinds of work, and machine speed cancels out. The training loops, many seconds
each, take the median of their per-round ratios instead (:func:`median_ratio`), and the search's
overhead fraction is the median of the driver's own, one per run.

Example::

    record(benchmark.extra_info, "synthesis.per_candidate_ms", 1.9, unit="ms")
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

UNITS = ("s", "ms", "images/s", "x")


def record(extra_info: MutableMapping[str, Any], name: str, value: float, *, unit: str,
           better: str = "lower", reference: str | None = None) -> None:
    """Store figure ``name`` in a benchmark's ``extra_info`` (a ratio when ``reference`` names
    what it was divided by)."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
    if not value > 0:
        raise ValueError(f"figure {name} must be a positive number, got {value!r}")
    extra_info.setdefault("figures", {})[name] = {
        "value": float(value), "unit": unit, "better": better,
        "kind": "ratio" if reference else "absolute", "reference": reference}


def seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ratio(values: Sequence[float], references: Sequence[float]) -> float:
    """The median over rounds of ``values[r] / references[r]`` (for long items measured once a
    round, back to back: the training loops)."""
    return statistics.median(v / r for v, r in zip(values, references, strict=True))


def best_ratio(rounds: Sequence[Sequence[float]],
               reference_rounds: Sequence[Sequence[float]]) -> float:
    """``sum_i min_r rounds[r][i] / sum_i min_r reference_rounds[r][i]`` (see the docstring)."""
    def best(table: Sequence[Sequence[float]]) -> float:
        return sum(min(column) for column in zip(*table, strict=True))

    return best(rounds) / best(reference_rounds)
