"""`alphac train MODEL --target T`: train a model, report validation/test accuracy and cost."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from alphac.cli.common import (
    DataDirOpt,
    DeviceOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    err_console,
    handles_user_errors,
    load_traced,
    print_json,
)
from alphac.units import format_count, parse_duration


def run_training(
    model: str, target: str, *, epochs: float | None, steps: int | None, budget: str | None,
    data_dir: str | None, device: str, subset: int | None, batch_size: int | None,
    lr: float | None, seed: int, compile_model: bool,
) -> dict[str, Any]:
    """Load, trace, train and evaluate MODEL; the JSON-ready result of `alphac train`."""
    from alphac.passes.analysis.cost import model_cost
    from alphac.runtime.device import resolve_device
    from alphac.runtime.targets import get_target
    from alphac.runtime.train import TrainingDiverged, load_task_data, train_and_evaluate

    spec = get_target(target)
    seconds = parse_duration(budget) if budget is not None else None
    recipe = spec.recipe.with_budget(epochs=epochs, steps=steps, seconds=seconds).replace(
        subset=subset, batch_size=batch_size, lr=lr, compile=compile_model or None
    )
    dev = resolve_device(device)
    traced = load_traced(model, spec.name, None, needs_classes=True, shape_option=False)
    cost = model_cost(traced.gm, traced.example_inputs)
    extra = {"params": cost.params, "flops": cost.flops_per_sample, "recipe": recipe.to_dict()}
    # Data first: a missing dataset is reported before any progress bar appears.
    data = load_task_data(spec, recipe, seed=seed, data_dir=data_dir, device=dev)
    try:
        with _progress_bar() as on_progress:
            metrics = train_and_evaluate(traced.gm, spec, recipe, seed=seed, data=data,
                                         on_progress=on_progress)
    except TrainingDiverged as exc:
        exc.result = {"model": model, **exc.metrics.to_dict(), **extra}  # for --json
        raise
    return {"model": model, **metrics.to_dict(), **extra}


class _progress_bar:  # noqa: N801 - used as a context manager, reads like a function
    """A rich progress bar on stderr fed by the runtime's progress callback."""

    def __init__(self) -> None:
        self.bar = Progress(
            TextColumn("[bold]train[/]"), BarColumn(),
            TextColumn("epoch {task.fields[epoch]:.2f}  loss {task.fields[loss]:.3f}  "
                       "acc {task.fields[acc]:.3f}  {task.fields[ips]:.0f} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=err_console, transient=False,
        )
        self.task = self.bar.add_task("train", total=1.0, epoch=0.0, loss=float("nan"),
                                      acc=0.0, ips=0.0)

    def __enter__(self):
        self.bar.start()
        return self.update

    def update(self, p) -> None:
        self.bar.update(self.task, completed=p.fraction, epoch=p.epoch, loss=p.loss,
                        acc=p.accuracy, ips=p.images_per_second)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@handles_user_errors
def train(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    epochs: Annotated[float | None, typer.Option("--epochs", help="Train this many epochs.",
                                                 show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Train this many steps.",
                                              show_default=False)] = None,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Wall-time budget: 90s, 5m, 1h, 1h30m.", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    subset: Annotated[int | None, typer.Option("--subset", help="Train on only N images (the "
                                               "validation and test splits stay whole).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Training batch size.",
                                                   show_default=False)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.",
                                             show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    compile_model: Annotated[bool, typer.Option("--compile", help="Use torch.compile.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Train MODEL on a target with its default recipe; report accuracy, cost and speed.

    Without a budget option the target's recipe decides (e.g. 10 epochs for fashion-mnist).
    """
    from alphac.runtime.train import TrainingDiverged

    try:
        result = run_training(
            model, target, epochs=epochs, steps=steps, budget=budget, data_dir=data_dir,
            device=device, subset=subset, batch_size=batch_size, lr=lr, seed=seed,
            compile_model=compile_model,
        )
    except TrainingDiverged as exc:
        if json_output:  # the run is still recorded: one JSON object with status "diverged"
            print_json(exc.result)
        raise
    if json_output:
        print_json(result)
        return
    table = Table(title=f"{model} on {result['target']}", show_header=False)
    for key in ("val_accuracy", "test_accuracy"):
        table.add_row(key.replace("_", " "), f"{100 * result[key]:.2f}%")
    table.add_row("params", f"{format_count(result['params'])} ({result['params']:,})")
    table.add_row("FLOPs (per image)", format_count(result["flops"]))
    table.add_row("steps / epochs", f"{result['steps']} / {result['epochs']:.2f}")
    table.add_row("training time", f"{result['seconds']:.1f} s on {result['device']}")
    table.add_row("throughput", f"{result['images_per_second']:.0f} images/s")
    console.print(table)
