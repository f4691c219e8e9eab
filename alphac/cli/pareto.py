"""The Pareto table as the terminal shows it: one rich renderer for `optimize` and `alphac report`.

Rows are :class:`alphac.search.report.ParetoRow` values (``RunResult.table()``): the seed first,
then the front by increasing cost. Costs print as counts (``140.46k``) with their change against
the seed in brackets (``-50%``), accuracies as percentages with their change in points.

Example::

    print_table(pareto_table(run.table(), run.objective))
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from alphac.cli.common import console
from alphac.units import format_count

__all__ = ["accuracy_text", "cost_text", "pareto_table", "print_table"]

_DASH = "-"


def pareto_table(rows: list, objective: str | None = None) -> Table:
    """Seed first; changes against it in brackets (cost in %, accuracy in points); the best bold.

    ``objective`` (params, flops, latency) is named in the title; the latency column appears only
    where some row has one (it is measured for that objective only).
    """
    with_latency = any(row.latency_ms is not None for row in rows)
    by = f" by {objective}" if objective else ""
    table = Table(title=f"the seed and the Pareto front{by}, retrained with the final recipe",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("id", "model", "params", "FLOPs per image",
                 *(("latency ms",) if with_latency else ()), "val acc %", "test acc %"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for row in rows:
        plain = row.is_seed  # the seed's own changes are all zero: shown as plain values
        cells = [f"#{row.id}", _role(row),
                 cost_text(row.params, None if plain else row.params_change),
                 cost_text(row.flops, None if plain else row.flops_change)]
        if with_latency:
            cells.append(cost_text(row.latency_ms, None if plain else row.latency_change))
        cells += [accuracy_text(row.val_accuracy, None if plain else row.val_points),
                  accuracy_text(row.test_accuracy, None if plain else row.test_points)]
        table.add_row(*cells, style="bold" if row.is_best else None)
    return table


def print_table(table: Table) -> None:
    """Print ``table`` whole: into a log or a pipe at its natural width, so no cell wraps."""
    # rich's default of 80 columns outside a terminal cannot be exceeded by a print; a terminal
    # keeps its own width.
    out = console
    if not console.is_terminal:
        needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
        out = Console(file=console.file, width=max(console.width, needed))
    out.print(table)


def cost_text(value: Any, change: float | None) -> str:
    """``500 (-50%)``: a count (or milliseconds) and its relative change; ``-`` when unknown."""
    if value is None:
        return _DASH
    text = format_count(value) if isinstance(value, int) else f"{value:.2f}"
    return text if change is None else f"{text} ({_percent(change)})"


def accuracy_text(value: float | None, points: float | None, unit: str = "") -> str:
    """``89.70 (-0.30)``: a fraction as a percentage and its change in points."""
    if value is None:
        return _DASH
    text = f"{100 * value:.2f}{unit}"
    return text if points is None else f"{text} ({points:+.2f})"


def _percent(change: float) -> str:
    return f"{100 * change:+.1f}%" if abs(change) < 0.095 else f"{100 * change:+.0f}%"


def _role(row: Any) -> str:
    # The best model is on the front by construction, so "best" says both.
    words = ["seed"] if row.is_seed else []
    words += ["best"] if row.is_best else ([] if row.is_seed or not row.on_front else ["front"])
    return ", ".join(words)
