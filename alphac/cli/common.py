"""What every alphac command shares: options, model loading, errors, output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from alphac.diagnostics import Diagnostics
from alphac.errors import UserError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="A Python file providing build_model() (or `model`, or one nn.Module class), "
        "or zoo:NAME (see `alphac zoo`).",
        show_default=False,
    ),
]
TargetOpt = Annotated[
    str,
    typer.Option(
        "--target", "-t", help="Task: cifar10, cifar100, fashion-mnist, mnist, imagenet, synthetic."
    ),
]
InputShapeOpt = Annotated[
    str | None,
    typer.Option(
        "--input-shape",
        help="Full example input shape, batch first (e.g. 2x3x32x32); default: the target's.",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Folder with the dataset (default: ~/.cache/alphac/TARGET).",
                 show_default=False),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]


def handles_user_errors(fn: F) -> F:
    """Print a UserError as a message (no traceback) and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            # soft_wrap: one message per line, whole, so it can be read and grepped in logs
            say = functools.partial(err_console.print, highlight=False, soft_wrap=True)
            say(f"[bold red]error:[/] {exc.message}")
            if exc.hint:
                say(f"[yellow]hint:[/] {exc.hint}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def load_traced(model: str, target: str, input_shape: str | None):
    """Load and trace MODEL for TARGET (or an explicit input shape): a TracedModel."""
    from alphac.frontends import load, parse_shape
    from alphac.runtime.targets import get_target

    spec = get_target(target)
    shape = parse_shape(input_shape) if input_shape else spec.example_shape()
    return load(model, shape, num_classes=spec.num_classes)


def print_diagnostics(diagnostics: Diagnostics) -> None:
    """The run's diagnostics, once, as alphac notes on stderr (stdout stays pure JSON)."""
    say = functools.partial(err_console.print, highlight=False, soft_wrap=True, markup=False)
    for i, line in enumerate(diagnostics.summary()):
        say(f"note: {line}" if i == 0 else line)


def print_json(obj: Any) -> None:
    """One JSON object on stdout (nothing else is printed in --json mode)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def human(n: float) -> str:
    """1234567 -> '1.23M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"

