"""`alphac optimize`: the evolutionary search, with its journal, resume and exported results."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from alphac.cli.common import (
    JsonOpt,
    ModelArg,
    console,
    handles_user_errors,
    print_json,
)
from alphac.cli.pareto import pareto_table, print_table
from alphac.search.options import signature
from alphac.units import format_duration


def _flag(option: Any) -> Any:
    """The typer option of one row of :data:`alphac.search.options.OPTIONS`."""
    flags = (option.flag, "-t") if option.name == "target" else (option.flag,)
    return Annotated[option.type, typer.Option(*flags, help=option.help,
                                               show_default=option.show_default)]


def optimize(model: str, json_output: bool = False, **options: Any) -> None:
    """Search for models as accurate as MODEL and cheaper (αNAS evolution); resumable."""
    from alphac.cli.live import SearchView
    from alphac.search.api import optimize as run_search

    if json_output:
        print_json(run_search(model, **options).report)
        return
    with SearchView(console) as view:
        result = run_search(model, on_event=view, **options)
    print_table(pareto_table(result.table(), result.objective))
    timing = result.timing
    overhead = timing.get("overhead_fraction")
    console.print(f"search {format_duration(timing['search_seconds'])}, final retraining "
                  f"{format_duration(timing['final_seconds'])}; overhead outside training "
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
