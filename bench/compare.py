"""Benchmark regression tracking that holds on a noisy machine: figures against a baseline.

Each benchmark records *figures* (``bench/figures.py``) in its pytest-benchmark JSON. Where a
reference is measured in the same run (abstract inference against ``torch.func.jacrev`` of the
same block, the runtime's training loop against a plain one, synthesis per candidate against one
property inference) the figure is that ratio, so machine speed and load cancel out; the others
are absolute medians. Nothing is compared against a single old run: the baseline
(``bench/baselines/baseline.json``) is made from several back-to-back runs, keeps their raw
values, and gives every figure its own threshold from their spread::

    spread    = max(repeats) / min(repeats) - 1          # the largest change seen with no change
    threshold = max(FLOOR, SAFETY * spread)              # allowed slowdown, as a fraction

A figure *regressed* when it is worse than the baseline's median by more than its threshold
(``now / baseline - 1`` for times, ``baseline / now - 1`` for throughputs and "higher is better"
ratios); a figure missing from the run counts as a failure, a new one is only listed.

Usage::

    python bench/compare.py baseline RUN1.json RUN2.json RUN3.json   # writes the baseline
    python bench/compare.py check RUN.json                           # exit 1 on a regression
    python bench/compare.py table                                    # the repeats, as Markdown
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "baselines" / "baseline.json"
SAFETY = 2.0
FLOOR = 0.10
MIN_RUNS = 3


class CompareError(Exception):
    """A result or baseline file that cannot be used (says which and why)."""


@dataclass(frozen=True)
class Figure:
    """One tracked number of one run."""

    name: str
    value: float
    unit: str
    better: str
    kind: str
    reference: str | None = None


@dataclass(frozen=True)
class Row:
    """One figure's verdict: ``change`` is the slowdown as a fraction (positive is worse)."""

    name: str
    kind: str
    unit: str
    baseline: float | None
    current: float | None
    change: float | None
    threshold: float | None
    status: str  # ok | regressed | improved | missing | new
    reference: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("regressed", "missing")


def figures_of(result: Mapping[str, Any]) -> dict[str, Figure]:
    """The figures of one pytest-benchmark JSON result (``extra_info.figures`` of each test)."""
    if "benchmarks" not in result:
        raise CompareError("not a pytest-benchmark JSON result (no 'benchmarks')")
    found: dict[str, Figure] = {}
    for bench in result["benchmarks"]:
        for name, f in (bench.get("extra_info") or {}).get("figures", {}).items():
            if name in found:
                raise CompareError(f"figure {name} is recorded by two benchmarks")
            found[name] = Figure(name, float(f["value"]), f["unit"], f["better"], f["kind"],
                                 f.get("reference"))
    return found


def slowdown(better: str, baseline: float, current: float) -> float:
    """How many times worse ``current`` is than ``baseline`` (below 1: better)."""
    return current / baseline if better == "lower" else baseline / current


def spread(values: Sequence[float]) -> float:
    """The run-to-run spread of repeats: ``max / min - 1``."""
    return max(values) / min(values) - 1


def threshold_for(values: Sequence[float], *, safety: float = SAFETY,
                  floor: float = FLOOR) -> float:
    """The allowed slowdown of a figure whose repeats are ``values``."""
    return max(floor, safety * spread(values))


def make_baseline(results: Sequence[Mapping[str, Any]], *, safety: float = SAFETY,
                  floor: float = FLOOR) -> dict[str, Any]:
    """A baseline from back-to-back runs: per figure the median, the repeats, their spread and
    the threshold. Pre: at least ``MIN_RUNS`` runs, each with the same figures."""
    if len(results) < MIN_RUNS:
        raise CompareError(f"a baseline needs at least {MIN_RUNS} runs to measure the spread, "
                           f"got {len(results)}")
    runs = [figures_of(r) for r in results]
    names = sorted(runs[0])
    for i, run in enumerate(runs[1:], start=2):
        if sorted(run) != names:
            odd = sorted(set(run) ^ set(names))
            raise CompareError(f"run {i} does not have the figures of run 1: {', '.join(odd)}")
    figures = {}
    for name in names:
        first = runs[0][name]
        values = [run[name].value for run in runs]
        figures[name] = {"value": statistics.median(values), "unit": first.unit,
                         "better": first.better, "kind": first.kind,
                         "reference": first.reference, "repeats": values,
                         "spread": spread(values),
                         "threshold": threshold_for(values, safety=safety, floor=floor)}
    info = results[-1]
    return {"created": datetime.now(UTC).isoformat(timespec="seconds"),
            "commits": sorted({(r.get("commit_info") or {}).get("id") or "?" for r in results}),
            "dirty": any((r.get("commit_info") or {}).get("dirty") for r in results),
            "machine": {k: (info.get("machine_info") or {}).get(k)
                        for k in ("node", "processor", "machine", "python_version")},
            "cpu": ((info.get("machine_info") or {}).get("cpu") or {}).get("brand_raw"),
            "rule": {"safety": safety, "floor": floor,
                     "threshold": "max(floor, safety * (max(repeats) / min(repeats) - 1))"},
            "runs": len(results), "figures": figures}


def compare(baseline: Mapping[str, Any], result: Mapping[str, Any]) -> list[Row]:
    """Every baseline figure against ``result``, then the figures the baseline lacks."""
    now = figures_of(result)
    rows = []
    for name, base in sorted(baseline["figures"].items()):
        common = dict(name=name, kind=base["kind"], unit=base["unit"], baseline=base["value"],
                      threshold=base["threshold"], reference=base.get("reference"))
        figure = now.get(name)
        if figure is None:
            rows.append(Row(current=None, change=None, status="missing", **common))
            continue
        factor = slowdown(base["better"], base["value"], figure.value)
        status = ("regressed" if factor - 1 > base["threshold"]
                  else "improved" if 1 / factor - 1 > base["threshold"] else "ok")
        rows.append(Row(current=figure.value, change=factor - 1, status=status, **common))
    for name in sorted(set(now) - set(baseline["figures"])):
        f = now[name]
        rows.append(Row(name, f.kind, f.unit, None, f.value, None, None, "new", f.reference))
    return rows


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    text = f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return text if unit == "x" else f"{text} {unit}"


_STYLE = {"ok": "green", "improved": "cyan", "regressed": "bold red", "missing": "bold red",
          "new": "yellow"}


def render(rows: Sequence[Row]) -> Table:
    """The comparison as a rich table (change: positive is slower/worse)."""
    table = Table(title="benchmark figures against bench/baselines/baseline.json")
    for column in ("figure", "kind", "baseline", "now", "change", "threshold", "status"):
        table.add_column(column, justify="right" if column not in ("figure", "kind") else "left")
    for r in rows:
        table.add_row(r.name, r.kind, _number(r.baseline, r.unit), _number(r.current, r.unit),
                      "-" if r.change is None else f"{r.change:+.1%}",
                      "-" if r.threshold is None else f"{r.threshold:.0%}",
                      f"[{_STYLE[r.status]}]{r.status}[/]")
    return table


def summary(rows: Sequence[Row]) -> str:
    """One line per failure, or that every figure held."""
    lines = []
    for r in rows:
        if r.status == "regressed":
            lines.append(f"REGRESSED {r.name}: {r.change:+.1%} worse than the baseline "
                         f"({_number(r.baseline, r.unit)} -> {_number(r.current, r.unit)}), "
                         f"threshold {r.threshold:.0%}"
                         + (f"; reference: {r.reference}" if r.reference else ""))
        elif r.status == "missing":
            lines.append(f"MISSING {r.name}: not in this run (its benchmark failed or was "
                         "not run)")
    if not lines:
        held = sum(r.status in ("ok", "improved") for r in rows)
        return f"all {held} figures within their thresholds"
    return "\n".join(lines)


def markdown(baseline: Mapping[str, Any]) -> str:
    """The baseline's repeats, spreads and thresholds as a Markdown table."""
    runs = baseline["runs"]
    head = ("| figure | kind | " + " | ".join(f"run {i + 1}" for i in range(runs))
            + " | median | spread | threshold |")
    lines = [head, "|" + "---|" * (runs + 5)]
    for name, f in baseline["figures"].items():
        repeats = " | ".join(_number(v, f["unit"]) for v in f["repeats"])
        lines.append(f"| {name} | {f['kind']} | {repeats} | {_number(f['value'], f['unit'])} "
                     f"| {f['spread']:.1%} | {f['threshold']:.0%} |")
    return "\n".join(lines)


def _load(path: str | Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        hint = " (make bench-baseline records one)" if what == "baseline" else ""
        raise CompareError(f"no {what} at {path}{hint}") from exc
    except json.JSONDecodeError as exc:
        raise CompareError(f"{what} {path} is not JSON: {exc}") from exc


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("baseline", help="write a baseline from back-to-back runs")
    base.add_argument("runs", nargs="+", help="pytest-benchmark JSON files (at least 3)")
    base.add_argument("--out", default=str(BASELINE))
    base.add_argument("--safety", type=float, default=SAFETY)
    base.add_argument("--floor", type=float, default=FLOOR)
    check = sub.add_parser("check", help="compare a run with the baseline; exit 1 on regression")
    check.add_argument("run", help="a pytest-benchmark JSON file")
    check.add_argument("--baseline", default=str(BASELINE))
    table = sub.add_parser("table", help="print the baseline's repeats as Markdown")
    table.add_argument("--baseline", default=str(BASELINE))
    args = parser.parse_args(argv)
    console = console or Console(width=max(Console().width, 128))  # whole figure names
    try:
        if args.command == "baseline":
            made = make_baseline([_load(p, "result") for p in args.runs], safety=args.safety,
                                 floor=args.floor)
            Path(args.out).write_text(json.dumps(made, indent=2) + "\n")
            console.print(f"wrote {args.out} from {len(args.runs)} runs")
            console.print(markdown(made), markup=False, soft_wrap=True)
            return 0
        if args.command == "table":
            console.print(markdown(_load(args.baseline, "baseline")), markup=False,
                          soft_wrap=True)
            return 0
        baseline, result = _load(args.baseline, "baseline"), _load(args.run, "result")
        rows = compare(baseline, result)
    except CompareError as exc:
        console.print(f"error: {exc}", markup=False)
        return 2
    node = (result.get("machine_info") or {}).get("node")
    if node != baseline["machine"].get("node"):
        console.print(f"note: the baseline was recorded on {baseline['machine'].get('node')}, "
                      f"this run on {node}: absolute figures may differ for that alone",
                      markup=False)
    console.print(render(rows))
    console.print(summary(rows), markup=False, soft_wrap=True)
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
