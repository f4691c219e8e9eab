"""`alphac optimize`: the evolutionary search, with its journal, resume and exported results."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from alphac.cli.common import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    handles_user_errors,
    human,
    print_json,
)


def _cost_ratio(row: dict, seed_row: dict, objective: str) -> float:
    key = {"params": "params", "flops": "flops", "latency": "latency_ms"}[objective]
    return (row[key] or 0) / seed_row[key] if seed_row[key] else 1.0


@handles_user_errors
def optimize(
    model: ModelArg,
    target: TargetOpt = "fashion-mnist",
    candidates: Annotated[int | None, typer.Option(
        "--candidates", help="How many children to train (the seed not counted); default 20, "
        "or unlimited with --budget.", show_default=False)] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Wall-time budget for the whole run, final retraining included "
        "(e.g. 30m, 2h, 1h30m); counted across --resume.", show_default=False)] = None,
    objective: Annotated[str, typer.Option("--objective", help="params, flops or latency "
                                           "(batch 1 on the search's device).")] = "params",
    max_accuracy_drop: Annotated[float, typer.Option(
        "--max-accuracy-drop", help="Best = cheapest within this many points of the seed.")
    ] = 0.5,
    mutator: Annotated[str, typer.Option("--mutator", help="property, random or enumerate.")
                       ] = "property",
    strategy: Annotated[str, typer.Option("--strategy", help="evolution or random-search.")
                        ] = "evolution",
    workers: Annotated[int | None, typer.Option(
        "--workers", help="Parallel candidates (default: one per GPU, else one per 2 CPU "
        "cores).", show_default=False)] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (processes), ray, or "
                                          "inline (this process).")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="An existing Ray "
                           "cluster (default: start a local Ray).", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Fine-tune steps per child (the "
                                              "proxy).", show_default=False)] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Proxy epochs per candidate "
                                                 "(default 1).", show_default=False)] = None,
    final_steps: Annotated[int | None, typer.Option(
        "--final-steps", help="Steps of the final training (default: the proxy's, 3x with "
        "--final-init scratch).", show_default=False)] = None,
    seed_steps: Annotated[int | None, typer.Option(
        "--seed-steps", help="Steps of the seed's own training (default 3x the proxy).",
        show_default=False)] = None,
    seed_epochs: Annotated[float | None, typer.Option(
        "--seed-epochs", help="Epochs of the seed's own training (default 3x the proxy).",
        show_default=False)] = None,
    finetune_lr: Annotated[float | None, typer.Option(
        "--finetune-lr", help="Peak learning rate of the children's fine-tune (default "
        "--lr / 5).", show_default=False)] = None,
    final_init: Annotated[str, typer.Option(
        "--final-init", help="inherited: the front is fine-tuned from its search weights; "
        "scratch: retrained from scratch.")] = "inherited",
    rungs: Annotated[int, typer.Option("--rungs", help="Successive-halving rungs above the "
                                       "proxy (0: off).")] = 0,
    eta: Annotated[int, typer.Option("--eta", help="Successive halving: the best 1/eta of a "
                                     "rung train eta times longer.")] = 3,
    subset: Annotated[int | None, typer.Option("--subset", help="Use only N training images (0: all).",
                                               show_default=False)] = 6000,
    val_images: Annotated[int | None, typer.Option(
        "--val-images", help="Validate on only N of the held-out images (default: all, 10% "
        "of the training set).", show_default=False)] = None,
    test_images: Annotated[int | None, typer.Option(
        "--test-images", help="Test on only N images (default: the whole test set).",
        show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate of the seed's training.")] = 0.05,
    out: Annotated[str, typer.Option("--out", help="Run directory.")] = "alphac-run",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the seed model's weights, data "
                                      "split and training, and of the search.")] = 0,
    search_seed: Annotated[int | None, typer.Option(
        "--search-seed", help="Seed of selection, mutations and children alone (default "
        "--seed): searches that differ only here share one seed model.",
        show_default=False)] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Search for models as accurate as MODEL and cheaper (αNAS evolution); resumable."""
    from alphac.cli.live import SearchView, duration
    from alphac.search.api import optimize as run_search

    options = dict(target=target, candidates=candidates, budget=budget, objective=objective,
                   max_accuracy_drop=max_accuracy_drop, steps=steps, epochs=epochs,
                   final_steps=final_steps, subset=subset, batch_size=batch_size, lr=lr,
                   seed_steps=seed_steps, seed_epochs=seed_epochs, finetune_lr=finetune_lr,
                   final_init=final_init, val_images=val_images, test_images=test_images,
                   workers=workers, executor=executor, ray_address=ray_address, mutator=mutator,
                   strategy=strategy, rungs=rungs, eta=eta, seed=seed, search_seed=search_seed,
                   device=device, data_dir=data_dir, resume=resume, out=out)
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
