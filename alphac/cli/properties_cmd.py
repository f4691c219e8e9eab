"""`alphac properties MODEL`: the abstract properties alphac infers for each block.

Per block: symbolic and concrete input/output shapes with layouts, nonlinear depth, the mixing
matrices, parameters and FLOPs (symbolic and at the example input). ``--check`` compares the
abstract mixing with the Jacobian ground truth and exits 1 on any disagreement.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from alphac.cli.common import (
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    err_console,
    handles_user_errors,
    human,
    load_traced,
    print_json,
)
from alphac.errors import UserError

BlockOpt = Annotated[
    str | None,
    typer.Option("--block", help="Only this block (its module path, e.g. layer2.0).",
                 show_default=False),
]
CheckOpt = Annotated[
    bool,
    typer.Option("--check", help="Compare the abstract mixing with the Jacobian ground truth; "
                 "exit 1 on any disagreement."),
]
WHOLE_MODEL_NOTE = ("the model has no repeated blocks: the whole model is analyzed as one "
                    "pseudo-block with path ''")


def _blocks(traced, block: str | None) -> list[tuple[str, str, Any]]:
    """``(path, type, subgraph)`` of the selected blocks (the whole model when it has none)."""
    from alphac.ir import Subgraph

    gm = traced.gm
    if not traced.blocks:
        if block not in (None, ""):
            raise UserError(f"no block {block!r}: {traced.source} has no blocks",
                            hint="omit --block to analyze the whole model")
        return [("", "model", Subgraph.whole(gm))]
    chosen = [b for b in traced.blocks if block is None or b.path == block]
    if not chosen:
        valid = ", ".join(b.path for b in traced.blocks)
        raise UserError(f"no block {block!r} in {traced.source}",
                        hint=f"choose one of: {valid}")
    return [(b.path, b.type, b.subgraph(gm)) for b in chosen]


def _tensors(shapes, bindings) -> list[dict[str, Any]]:
    from alphac.passes.analysis.shape import evaluate_dim

    return [{"shape": [str(d) for d in t.dims],
             "concrete": [evaluate_dim(d, bindings) for d in t.dims],
             "layout": t.layout} for t in shapes]


def block_properties(gm, path: str, kind: str, subgraph, am, *, check: bool) -> dict[str, Any]:
    """The JSON-ready properties of one block (with ``check`` the ground-truth disagreements)."""
    from alphac.passes.analysis import (
        CostAnalysis,
        DepthAnalysis,
        MixingAnalysis,
        ShapeAnalysis,
    )

    shape = am.get(ShapeAnalysis(), gm, subgraph)
    cost = am.get(CostAnalysis(), gm, subgraph)
    concrete = cost.concrete()
    info: dict[str, Any] = {
        "path": path,
        "type": kind,
        "inputs": _tensors(shape.inputs, shape.bindings),
        "outputs": _tensors(shape.outputs, shape.bindings),
        "bindings": {str(s): v for s, v in shape.bindings.items()},
        "depth": am.get(DepthAnalysis(), gm, subgraph).as_dict(),
        "mixing": am.get(MixingAnalysis(), gm, subgraph).as_dict(),
        "params": concrete.params,
        "flops": concrete.flops,
        "other_flops": concrete.other_flops,
        "params_expr": str(cost.params),
        "flops_expr": str(cost.flops),
        "other_flops_expr": str(cost.other_flops),
    }
    if check:
        from alphac.passes.analysis.ground_truth import check_mixing

        info["check"] = check_mixing(gm, subgraph, am)
    return info


@handles_user_errors
def properties(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    input_shape: InputShapeOpt = None,
    block: BlockOpt = None,
    check: CheckOpt = False,
    json_output: JsonOpt = False,
) -> None:
    """Show the shape, depth, mixing and cost properties of MODEL's blocks."""
    from alphac.analysis import AnalysisManager

    traced = load_traced(model, target, input_shape)
    am = AnalysisManager()
    selected = _blocks(traced, block)
    infos = [block_properties(traced.gm, p, k, s, am, check=check) for p, k, s in selected]
    report: dict[str, Any] = {"model": traced.source, "input_shape": list(traced.input_shape)}
    if not traced.blocks:
        report["note"] = WHOLE_MODEL_NOTE
    report["blocks"] = infos
    problems = [f"{b['path'] or '<model>'}: {line}" for b in infos for line in b.get("check", [])]
    if json_output:
        print_json(report)
    else:
        _print_tables(report, check)
    if problems:
        for line in problems:
            err_console.print(f"[red]mixing disagrees[/] {line}", highlight=False)
        raise typer.Exit(1)


_MIX_GLYPHS = {"none": ".", "one": "1", "many": "m", "all": "A"}


def _shape_text(tensors: list[dict[str, Any]]) -> str:
    return "\n".join(f"({', '.join(t['shape'])}) {t['layout']} = "
                     f"{'x'.join(map(str, t['concrete']))}" for t in tensors) or "-"


def _mixing_text(mixing: dict[str, list[list[str]]], inputs: list[dict[str, Any]]) -> str:
    lines = []
    for pair, rows in mixing.items():
        layout = inputs[int(pair.split("->")[0])]["layout"] if inputs else ""
        grid = "  ".join(
            f"{layout[a] if a < len(layout) else a}:{''.join(_MIX_GLYPHS[v] for v in row)}"
            for a, row in enumerate(rows))
        lines.append(f"{pair}  {grid}")
    return "\n".join(lines) or "-"


def _print_tables(report: dict[str, Any], check: bool) -> None:
    if "note" in report:
        console.print(f"[yellow]note:[/] {report['note']}")
    for b in report["blocks"]:
        table = Table(title=f"{b['path'] or '<whole model>'}  {b['type']}", show_header=False,
                      title_justify="left")
        table.add_column("property", style="bold")
        table.add_column("value")
        table.add_row("inputs", _shape_text(b["inputs"]))
        table.add_row("outputs", _shape_text(b["outputs"]))
        table.add_row("depth", ", ".join(f"{k}: {v}" for k, v in b["depth"].items()) or "-")
        table.add_row("mixing", _mixing_text(b["mixing"], b["inputs"]))
        table.add_row("params", f"{b['params_expr']} = {human(b['params'])} ({b['params']:,})")
        table.add_row("FLOPs", f"{b['flops_expr']} = {human(b['flops'])} ({b['flops']:,})")
        if check:
            table.add_row("check", "agrees with the Jacobian" if not b["check"]
                          else f"[red]{len(b['check'])} disagreements[/]")
        console.print(table)
    console.print("mixing: rows are input dims, columns output dims; "
                  ". none, 1 one-to-one, m many-to-one, A all-to-one")
