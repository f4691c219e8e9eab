"""What every alphac command shares: options, model loading, errors, output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from alphac.diagnostics import Diagnostics
from alphac.errors import InvalidInputShapeError, RunDirError, UserError

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


_debug = False  # set by `alphac --debug` on every invocation (the root callback always runs)


def set_debug(on: bool) -> None:
    """Make commands re-raise errors with their traceback (``alphac --debug``) or not."""
    global _debug
    _debug = on


def debug_requested() -> bool:
    """Whether ``alphac --debug`` was given for this invocation."""
    return _debug


def handles_user_errors(fn: F) -> F:
    """Print a UserError as a message (no traceback) and exit with its code; any other exception
    as a one-line internal error, exit 1. With ``--debug`` both re-raise, with their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            if debug_requested():
                exc.__suppress_context__ = False  # show the user's code that caused it, too
                raise
            report_user_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors (BadParameter...)
        except Exception as exc:
            if debug_requested():
                raise
            report_internal_error(exc)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _say(text: str) -> None:
    # soft_wrap: one message per line, whole, so it can be read and grepped in logs
    err_console.print(text, highlight=False, soft_wrap=True)


def report_user_error(exc: UserError) -> None:
    """``error: MESSAGE`` and ``hint: HINT`` on stderr."""
    _say(f"[bold red]error:[/] {escape(exc.message)}")
    if exc.hint:
        _say(f"[yellow]hint:[/] {escape(exc.hint)}")


def report_internal_error(exc: BaseException) -> None:
    """One line on stderr for a bug: what was raised, and how to get the traceback."""
    text = " ".join(str(exc).split())
    if len(text) > 400:
        text = text[:400] + "..."
    _say(f"[bold red]internal error:[/] {escape(type(exc).__name__)}: {escape(text)}; rerun "
         "with --debug for the traceback, and please report it")


def check_out_dir(folder: str | os.PathLike[str], option: str = "--out") -> Path:
    """``folder`` if it is, or can be made as, a writable folder; RunDirError otherwise.

    Makes nothing, so a command can check before its work and create the folder after it.
    """
    path = Path(folder).expanduser()
    fix = f"pass {option} with a folder you can write to (new or existing)"
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{option} {path} is a file, not a folder", hint=fix)
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"cannot create {option} {path}: {ancestor} is a file, not a folder",
                          hint=fix)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot create {option} {path}: {ancestor} is not writable", hint=fix)
    return path


def load_traced(model: str, target: str, input_shape: str | None, *,
                needs_classes: bool = False, shape_option: bool = True):
    """Load and trace MODEL for TARGET (or an explicit input shape): a TracedModel.

    ``needs_classes``: the output must be the target's ``(batch, classes)`` logits
    (OutputShapeError otherwise). ``shape_option``: whether the command has ``--input-shape``
    (the hint for a model that rejects the target's input says what to change).
    """
    from alphac.frontends import load, parse_shape
    from alphac.runtime.targets import get_target

    spec = get_target(target)
    shape = parse_shape(input_shape) if input_shape else spec.example_shape()
    try:
        traced = load(model, shape, num_classes=spec.num_classes)
    except InvalidInputShapeError as exc:
        if shape_option:
            raise
        sample = "x".join(map(str, spec.input_shape))
        raise InvalidInputShapeError(
            f"target {spec.name} feeds {sample} images, and {exc.message}",
            hint="pick the --target whose images your model takes, or change the model's first "
            "layer to take them",
        ) from None
    if needs_classes:
        spec.check_output_shape(traced.output_shape, model=model)
    return traced


def print_diagnostics(diagnostics: Diagnostics) -> None:
    """The run's diagnostics, once, as alphac notes on stderr (stdout stays pure JSON)."""
    say = functools.partial(err_console.print, highlight=False, soft_wrap=True, markup=False)
    for i, line in enumerate(diagnostics.summary()):
        say(f"note: {line}" if i == 0 else line)


def print_json(obj: Any) -> None:
    """One JSON object on stdout (nothing else is printed in --json mode)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
