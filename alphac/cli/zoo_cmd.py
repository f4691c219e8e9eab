"""`alphac zoo`: the built-in models."""

from __future__ import annotations

from rich.table import Table

from alphac.cli.common import JsonOpt, console, handles_user_errors, print_json


@handles_user_errors
def zoo(json_output: JsonOpt = False) -> None:
    """List the built-in models (use them as MODEL with zoo:NAME)."""
    from alphac.frontends import zoo as registry

    rows = [{"name": f"zoo:{n}", "description": registry.describe(n)} for n in registry.names()]
    if json_output:
        print_json({"models": rows})
        return
    table = Table(title="alphac model zoo")
    table.add_column("MODEL")
    table.add_column("description")
    for r in rows:
        table.add_row(r["name"], r["description"])
    console.print(table)
