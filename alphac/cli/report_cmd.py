"""`alphac report`: a finished search's Pareto table, its best model and that model's lineage."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from alphac.cli.common import JsonOpt, console, err_console, handles_user_errors, print_json
from alphac.cli.pareto import accuracy_text, cost_text, pareto_table, print_table

RunDirArg = Annotated[
    str,
    typer.Argument(metavar="RUN_DIR", help="The run directory (`alphac optimize --out`).",
                   show_default=False),
]
PlotOpt = Annotated[
    bool,
    typer.Option("--plot/--no-plot", help="Draw RUN_DIR/pareto.png (again: the search draws it)."),
]


@handles_user_errors
def report(run_dir: RunDirArg, json_output: JsonOpt = False, plot: PlotOpt = True) -> None:
    """Print the seed against the Pareto front, the best model and the mutations that made it;
    draw RUN_DIR/pareto.png. Writes nothing else: the journal is opened read-only."""
    from alphac.search.report import PlotUnavailableError, load_run, plot_pareto

    run = load_run(run_dir)
    table, steps = run.table(), run.best_lineage()
    plotted = None
    if plot:
        try:
            plotted = plot_pareto(run)
        except PlotUnavailableError as exc:  # the table is the report; the plot is a bonus
            err_console.print(f"note: {exc.message} ({exc.hint})", highlight=False, markup=False,
                              soft_wrap=True)
    if json_output:
        print_json(_json(run, table, steps, plotted))
        return
    _print_header(run)
    print_table(pareto_table(table, run.objective))
    _print_best(run, table)
    _print_lineage(steps)
    if plotted is not None:
        console.print(f"wrote {plotted}", highlight=False, markup=False, soft_wrap=True)


def _json(run: Any, table: list, steps: list, plotted: Any) -> dict[str, Any]:
    return {"run_dir": str(run.run_dir), "objective": run.objective,
            "max_accuracy_drop": run.settings.get("max_accuracy_drop"),
            "counts": run.counts,
            "proxy_fidelity_kendall_tau": run.report.get("proxy_fidelity_kendall_tau"),
            "seed_model": run.seed_model.to_json(),
            "pareto": [row.to_json() for row in run.pareto], "best": run.best.to_json(),
            "best_model": str(run.best_model_path),
            "table": [row.as_dict() for row in table],
            "lineage": [step.as_dict() for step in steps],
            "failures": [{"id": ind.id, "parent": ind.parent, "reason": ind.reason,
                          "attempts": ind.attempts} for ind in run.failures()],
            "settings": run.settings, "plot": None if plotted is None else str(plotted)}


def _print_header(run: Any) -> None:
    counts = run.counts
    tau = run.report.get("proxy_fidelity_kendall_tau")
    trained = ", ".join(f"{counts[s]} {s}" for s in ("done", "failed", "running", "queued")
                        if counts.get(s))
    console.print(f"[bold]{run.run_dir}[/]: {run.settings.get('target', '?')}, objective "
                  f"{run.objective}, best within {run.settings.get('max_accuracy_drop', '?')} "
                  f"points of the seed", highlight=False, soft_wrap=True)
    fidelity = f"; proxy -> final Kendall tau {tau:.2f}" if tau is not None else ""
    console.print(f"  individuals: {trained or 'none'}{fidelity}", highlight=False,
                  soft_wrap=True)
    for ind in run.failures():
        console.print(f"  failed #{ind.id}: {ind.reason}", highlight=False, soft_wrap=True,
                      markup=False)


def _print_best(run: Any, rows: list) -> None:
    best = next(row for row in rows if row.is_best) if any(r.is_best for r in rows) else None
    where = run.best_model_path
    if best is None or best.is_seed:
        console.print(f"best: the seed #{run.seed_model['id']} (no cheaper model within the "
                      f"accuracy constraint) -> {where}", highlight=False, soft_wrap=True)
        return
    params = cost_text(best.params, best.params_change)
    test = accuracy_text(best.test_accuracy, best.test_points, "%")
    console.print(f"[bold]best: #{best.id}[/], params {params}, test {test} -> {where}",
                  highlight=False, soft_wrap=True)


def _print_lineage(steps: list) -> None:
    say = functools.partial(console.print, highlight=False, soft_wrap=True, markup=False)
    say(f"lineage of the best model #{steps[-1].id} ({len(steps) - 1} mutations from the seed):")
    for step in steps:
        val = accuracy_text(step.val_accuracy, None, "%")
        if step.kind is None:
            say(f"  #{step.id} seed, proxy val {val}")
            continue
        where = step.block or "<model>"
        block_type = step.block_type or "no block"
        also = f", also in {', '.join(step.instances[1:])}" if len(step.instances) > 1 else ""
        say(f"  #{step.id} <- #{step.parent}: {step.kind} of {where} ({block_type}{also}), "
            f"params {cost_text(step.params_before, None)} -> "
            f"{cost_text(step.params_after, None)}, FLOPs per image "
            f"{cost_text(step.flops_before, None)} -> "
            f"{cost_text(step.flops_after, None)}, proxy val {val}")
        _print_change(say, step)


def _print_change(say: Any, step: Any) -> None:
    before = step.replaced or (", ".join(step.subgraph) if step.subgraph else None)
    label = {"rewrite": ("replaced", "with"), "duplicate": ("copied", "added"),
             "delete": ("removed", None)}.get(step.kind, ("replaced", "with"))
    if before:
        _block(say, label[0], before)
    for i, chain in enumerate(step.chains):
        say(f"      chain {i}: {' -> '.join(chain)}")
    if label[1] and step.replacement:
        _block(say, label[1], step.replacement)


def _block(say: Any, label: str, code: str) -> None:
    lines = code.splitlines() or [""]
    say(f"      {label}:")
    for line in lines:
        say(f"        {line}")
