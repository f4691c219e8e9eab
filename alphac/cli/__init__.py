"""The alphac command line: `alphac COMMAND --help` for each command."""

from __future__ import annotations

import typer

from alphac import __version__
from alphac.cli.common import set_debug
from alphac.cli.data_cmd import data_app
from alphac.cli.inspect_cmd import inspect
from alphac.cli.measure_cmd import measure
from alphac.cli.mutate_cmd import mutate
from alphac.cli.optimize_cmd import optimize
from alphac.cli.properties_cmd import properties
from alphac.cli.report_cmd import report
from alphac.cli.train_cmd import train
from alphac.cli.zoo_cmd import zoo

app = typer.Typer(
    name="alphac",
    help="alphac: a compiler for neural architectures. Point it at a PyTorch model and a task; "
    "it finds a cheaper model that is as accurate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"alphac {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="On an error, show the Python traceback (for bug reports) "
        "instead of the short message."
    ),
) -> None:
    """alphac: property-guided neural architecture search over torch.fx."""
    set_debug(debug)


app.command()(inspect)
app.command()(zoo)
app.command()(train)
app.command()(measure)
app.command(name="properties")(properties)
app.command()(mutate)
app.command()(optimize)
app.command()(report)
app.add_typer(data_app, name="data")


def main() -> None:
    """Console entry point."""
    app()
