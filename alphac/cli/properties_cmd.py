"""`alphac properties MODEL`: the abstract properties alphac infers for each block.

Per block: symbolic and concrete input/output shapes with layouts, nonlinear depth, the mixing
matrices, parameters and FLOPs (symbolic and at the example input). ``--check`` compares the
abstract mixing with the Jacobian ground truth and exits 1 on any disagreement (7 if the check
itself crashed).
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
    load_traced,
    print_diagnostics,
    print_json,
)
from alphac.diagnostics import collect
from alphac.errors import CheckError, UserError
from alphac.units import format_count

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
    """``(path, type, subgraph)`` of the selected blocks (the whole model when it has none).

    Without ``block``: the outermost blocks; ``block`` may also name an inner one (its path in
    ``alphac inspect``'s tree, e.g. ``blocks.0.attn``).
    """
    from alphac.frontends.blocks import walk_blocks
    from alphac.ir import Subgraph

    gm = traced.gm
    if not traced.blocks:
        if block not in (None, ""):
            raise UserError(f"no block {block!r}: {traced.source} has no blocks",
                            hint="omit --block to analyze the whole model")
        return [("", "model", Subgraph.whole(gm))]
    chosen = (traced.blocks if block is None
              else [b for b in walk_blocks(traced.blocks) if b.path == block])
    if not chosen:
        valid = ", ".join(b.path for b in traced.blocks)
        raise UserError(f"no block {block!r} in {traced.source}",
                        hint=f"choose one of: {valid}")
    return [(b.path, b.type, b.subgraph(gm)) for b in chosen]


# Layout letters where they differ from the dim names shapes use: N is the batch in NCHW but
# names tokens in shapes (B, N, C); L is the token axis of NLC.
_LAYOUT_DIMS = {"N": "B", "L": "N"}


def dim_names(dims, layout: str) -> list[str]:
    """Each axis's name: its one symbol (B, C, H, W, N...), else its layout letter as a dim name.

    ``(B, 2*C, floor(H/2 - 1/2) + 1, W)`` -> ``[B, C, H, W]``; a constant axis of an ``NCHW``
    tensor, like a grey input's 1 channel, is named by its letter (``C``); ``d2`` without one.
    """
    names = []
    for axis, d in enumerate(dims):
        symbols = sorted(str(s) for s in getattr(d, "free_symbols", ()))
        letter = layout[axis] if axis < len(layout) and layout[axis].isalpha() else None
        if len(symbols) == 1:
            names.append(symbols[0])
        else:
            names.append(_LAYOUT_DIMS.get(letter, letter) if letter else f"d{axis}")
    return names


def _tensors(shapes, bindings) -> list[dict[str, Any]]:
    from alphac.passes.analysis.shape import evaluate_dim

    return [{"shape": [str(d) for d in t.dims],
             "concrete": [evaluate_dim(d, bindings) for d in t.dims],
             "layout": t.layout,
             "dims": dim_names(t.dims, t.layout)} for t in shapes]


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
        info["check"] = _checked(gm, path, subgraph, am)
    return info


def _checked(gm, path: str, subgraph, am) -> list[str]:
    """The ground-truth disagreements of one block; a crash of the checker is a CheckError
    (exit 7), never exit 1, which means a real disagreement."""
    from alphac.passes.analysis.ground_truth import check_mixing

    try:
        return check_mixing(gm, subgraph, am)
    except Exception as exc:  # noqa: BLE001 - any failure of the checker itself
        raise CheckError(
            f"the mixing check of block {path or '<model>'!r} crashed: "
            f"{type(exc).__name__}: {exc}",
            hint="this is a bug in alphac's checker, not a disagreement; run without --check "
            "for the properties, and report the model",
        ) from exc


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
    infos = []
    with collect() as diagnostics:
        for p, k, s in selected:
            with diagnostics.label(s, p or "<model>"):
                infos.append(block_properties(traced.gm, p, k, s, am, check=check))
    report: dict[str, Any] = {"model": traced.source, "input_shape": list(traced.input_shape)}
    if not traced.blocks:
        report["note"] = WHOLE_MODEL_NOTE
    report["blocks"] = infos
    report["diagnostics"] = diagnostics.as_list()
    problems = [f"{b['path'] or '<model>'}: {line}" for b in infos for line in b.get("check", [])]
    if json_output:
        print_json(report)
    else:
        _print_tables(report, check)
    print_diagnostics(diagnostics)
    if problems:
        for line in problems:
            err_console.print(f"[red]mixing disagrees[/] {line}", highlight=False)
        raise typer.Exit(1)


_MIX_GLYPHS = {"none": ".", "one": "1", "many": "m", "all": "A"}


def _shape_text(tensors: list[dict[str, Any]]) -> str:
    return "\n".join(f"({', '.join(t['shape'])}) {t['layout']} = "
                     f"{'x'.join(map(str, t['concrete']))}" for t in tensors) or "-"


def _mixing_text(mixing: dict[str, list[list[str]]], inputs: list[dict[str, Any]],
                 outputs: list[dict[str, Any]]) -> str:
    """One line per input->output pair: rows named by the input's dims, columns by the output's."""
    lines = []
    for pair, rows in mixing.items():
        i, o = (int(k) for k in pair.split("->"))
        ins = inputs[i]["dims"] if i < len(inputs) else []
        outs = outputs[o]["dims"] if o < len(outputs) else []
        grid = "  ".join(
            f"{ins[a] if a < len(ins) else a}:{''.join(_MIX_GLYPHS[v] for v in row)}"
            for a, row in enumerate(rows))
        head = f"{pair} ({','.join(outs)})" if outs else pair
        lines.append(f"{head}  {grid}")
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
        table.add_row("mixing", _mixing_text(b["mixing"], b["inputs"], b["outputs"]))
        table.add_row("params",
                      f"{b['params_expr']} = {format_count(b['params'])} ({b['params']:,})")
        batch = b["bindings"].get("B")
        table.add_row("FLOPs" + (f" (example batch of {batch})" if batch else " (example input)"),
                      f"{b['flops_expr']} = {format_count(b['flops'])} ({b['flops']:,})")
        if check:
            table.add_row("check", "agrees with the Jacobian" if not b["check"]
                          else f"[red]{len(b['check'])} disagreements[/]")
        console.print(table)
    console.print("mixing: rows are input dims, columns output dims (named in parentheses); "
                  ". none, 1 one-to-one, m many-to-one, A all-to-one")
