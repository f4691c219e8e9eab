"""`alphac optimize`: the evolutionary search, with its journal, resume and exported results."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer
from rich.table import Table

from alphac.cli.common import (
    JsonOpt,
    ModelArg,
    console,
    handles_user_errors,
    human,
    print_json,
)
from alphac.search.objectives import row_cost
from alphac.search.options import signature


def _cost_ratio(row: dict, seed_row: dict, objective: str) -> float:
    seed_cost = row_cost(seed_row, objective)
    return (row_cost(row, objective) or 0) / seed_cost if seed_cost else 1.0


def _flag(option: Any) -> Any:
    """The typer option of one row of :data:`alphac.search.options.OPTIONS`."""
    flags = (option.flag, "-t") if option.name == "target" else (option.flag,)
    return Annotated[option.type, typer.Option(*flags, help=option.help,
                                               show_default=option.show_default)]


def optimize(model: str, json_output: bool = False, **options: Any) -> None:
    """Search for models as accurate as MODEL and cheaper (αNAS evolution); resumable."""
    from alphac.cli.live import SearchView, duration
    from alphac.search.api import optimize as run_search

    if json_output:
        print_json(run_search(model, **options).report)
        return
    with SearchView(console) as view:
        result = run_search(model, on_event=view, **options)
    report, seed_row = result.report, result.seed_model
    objective = report["settings"]["objective"]
    table = Table(title=f"Pareto front ({objective}; cost = {objective} against the seed)")
    for column in ("id", "", "params", "FLOPs", "latency", "val", "test", "Δtest", "cost"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = {r["id"]: r for r in [seed_row, *result.pareto]}
    for ident in sorted(rows):
        row = rows[ident]
        mark = " ".join(m for m, on in (("seed", ident == seed_row["id"]),
                                         ("best", ident == result.best["id"])) if on)
        change = 100 * ((row["test_accuracy"] or 0) - (seed_row["test_accuracy"] or 0))
        table.add_row(f"#{ident}", mark, human(row["params"]), human(row["flops"]),
                      "-" if row["latency_ms"] is None else f"{row['latency_ms']:.2f} ms",
                      f"{100 * (row['val_accuracy'] or 0):.1f}%",
                      f"{100 * (row['test_accuracy'] or 0):.1f}%",
                      f"{change:+.1f} pts", f"{_cost_ratio(row, seed_row, objective):.0%}")
    console.print(table)
    timing = report["timing"]
    overhead = timing.get("overhead_fraction")
    console.print(f"search {duration(timing['search_seconds'])}, final retraining "
                  f"{duration(timing['final_seconds'])}; overhead outside training "
                  + ("n/a" if overhead is None else f"{100 * overhead:.2f}% of a candidate"),
                  highlight=False)
    console.print(f"best #{result.best['id']} -> {result.best_dir / 'model.py'}; "
                  f"`alphac report {result.run_dir}` shows its lineage", highlight=False)


# the flags come from the option table (alphac.search.options), as alphac.optimize's keywords do
optimize.__signature__ = signature(  # type: ignore[attr-defined]
    first=[inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             annotation=ModelArg)],
    last=[inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, default=False,
                            annotation=JsonOpt)], annotate=_flag)
optimize = handles_user_errors(optimize)
