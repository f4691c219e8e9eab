"""`alphac optimize`: the evolutionary search, with its journal, resume and exported results."""

from __future__ import annotations

from typing import Annotated, Any

import typer

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

_Int = Annotated[int | None, typer.Option(show_default=False)]


def _recipe(steps: int | None, epochs: float | None, subset: int | None, batch: int,
            lr: float) -> dict[str, Any]:
    recipe: dict[str, Any] = {"batch_size": batch, "lr": lr, "subset": subset}
    if steps is not None:
        recipe["steps"] = steps
    recipe["epochs"] = epochs if epochs is not None else 1.0
    return recipe


@handles_user_errors
def optimize(
    model: ModelArg,
    target: TargetOpt = "fashion-mnist",
    candidates: Annotated[int, typer.Option("--candidates", help="How many children to train "
                                            "(the seed not counted).")] = 20,
    objective: Annotated[str, typer.Option("--objective", help="params, flops or latency.")
                         ] = "params",
    max_accuracy_drop: Annotated[float, typer.Option(
        "--max-accuracy-drop", help="Best = cheapest within this many points of the seed.")
    ] = 0.5,
    mutator: Annotated[str, typer.Option("--mutator", help="property, random or enumerate.")
                       ] = "property",
    strategy: Annotated[str, typer.Option("--strategy", help="evolution or random-search.")
                        ] = "evolution",
    workers: Annotated[int, typer.Option("--workers", help="Worker processes.")] = 1,
    executor: Annotated[str, typer.Option("--executor", help="local (processes), ray, or "
                                          "inline (this process).")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="An existing Ray "
                           "cluster (default: start a local Ray).", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Proxy training steps per "
                                              "candidate.", show_default=False)] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="Proxy epochs per candidate "
                                                 "(default 1).", show_default=False)] = None,
    final_steps: Annotated[int | None, typer.Option("--final-steps", help="Steps of the final "
                                                    "retraining of the Pareto front.",
                                                    show_default=False)] = None,
    subset: Annotated[int | None, typer.Option("--subset", help="Use only N training images.",
                                               show_default=False)] = 6000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training batch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 0.05,
    out: Annotated[str, typer.Option("--out", help="Run directory.")] = "alphac-run",
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Search seed.")] = 0,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    json_output: JsonOpt = False,
) -> None:
    """Search for models as accurate as MODEL and cheaper (αNAS evolution); resumable."""
    from alphac.search.driver import SearchSettings
    from alphac.search.driver import optimize as run_search

    proxy = _recipe(steps, epochs, subset, batch_size, lr)
    final = _recipe(final_steps if final_steps is not None else (steps * 3 if steps else None),
                    3.0 if epochs is None else 3 * epochs, subset, batch_size, lr)
    settings = SearchSettings(target=target, candidates=candidates + 1, objective=objective,
                              max_accuracy_drop=max_accuracy_drop, mutator=mutator,
                              strategy=strategy, proxy=proxy, final=final, seed=seed,
                              workers=workers, executor=executor, device=device,
                              data_dir=data_dir, ray_address=ray_address)

    def event(kind: str, info: dict) -> None:
        if json_output:
            return
        if kind == "done":
            console.print(f"  [{info['finished']}/{info['total']}] #{info['id']}: val "
                          f"{100 * info['val_accuracy']:.1f}%, params {human(info['params'])}, "
                          f"FLOPs {human(info['flops'])} ({info['seconds']:.0f} s)",
                          highlight=False)
        elif kind in ("failed", "retry"):
            console.print(f"  #{info['id']} {kind}: {info['reason']}", highlight=False,
                          markup=False)
        elif kind == "final":
            console.print(f"  final #{info['id']}: val {100 * (info['val_accuracy'] or 0):.1f}%, "
                          f"test {100 * (info['test_accuracy'] or 0):.1f}%", highlight=False)

    result = run_search(model, out=out, settings=settings, resume=resume, on_event=event)
    if json_output:
        print_json(result.report)
        return
    seed_row, best = result.report["seed_model"], result.best
    console.print(f"seed: params {human(seed_row['params'])}, test "
                  f"{100 * (seed_row['test_accuracy'] or 0):.1f}%", highlight=False)
    for row in result.pareto:
        console.print(f"pareto #{row['id']}: params {human(row['params'])}, FLOPs "
                      f"{human(row['flops'])}, val {100 * row['val_accuracy']:.1f}%, test "
                      f"{100 * (row['test_accuracy'] or 0):.1f}%", highlight=False)
    console.print(f"best #{best['id']} -> {result.run_dir / 'best' / 'model.py'}", highlight=False)
