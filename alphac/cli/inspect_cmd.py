"""`alphac inspect MODEL`: what alphac sees in a model (frontend, size, cost, blocks)."""

from __future__ import annotations

import functools
from typing import Any

from rich.markup import escape
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
from alphac.diagnostics import Diagnostics, collect
from alphac.ir import Subgraph, compute_nodes
from alphac.units import format_count


def block_tree(block) -> dict[str, Any]:
    """A block as JSON: path, type, node count and its inner repeated levels as ``children``."""
    return {"path": block.path, "type": block.type, "nodes": len(block.nodes),
            "children": [block_tree(c) for c in block.children]}


def summarize(traced) -> tuple[dict[str, Any], Diagnostics]:
    """The facts `inspect` reports, as a JSON-ready dict.

    FLOPs come from the symbolic cost analysis evaluated at the example input (matrix work, the
    same count as ``torch.utils.flop_counter``): ``flops`` for the whole example batch,
    ``flops_per_sample`` for one image (the figure every other command and ``report.json``
    show); ``flops_expr`` is the batch's cost in the input's symbols (B, C, H, W). ``blocks`` are the outermost blocks (the mutation targets, each node in
    at most one), inner repeated levels nested under ``children``; ``diagnostics`` lists the ops
    the cost analysis had no exact rule for.
    """
    from alphac.passes.analysis.cost import model_cost

    with collect() as diagnostics, diagnostics.label(Subgraph.whole(traced.gm), "<model>"):
        cost = model_cost(traced.gm, traced.example_inputs)
    return {
        "model": traced.source,
        "frontend": traced.frontend,
        "nodes": len(compute_nodes(traced.gm)),
        "params": cost.params,
        "flops": cost.flops,
        "flops_per_sample": cost.flops_per_sample,
        "flops_expr": str(cost.flops_expr),
        "input_shape": list(traced.input_shape),
        "output_shape": list(traced.output_shape),
        "blocks": [block_tree(b) for b in traced.blocks],
        "diagnostics": diagnostics.as_list(),
    }, diagnostics


@handles_user_errors
def inspect(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    input_shape: InputShapeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Trace MODEL and show its frontend, size, FLOPs, shapes and blocks; warn where its output
    is not the target's (batch, classes) scores, which `optimize` and `train` refuse."""
    traced = load_traced(model, target, input_shape)
    info, diagnostics = summarize(traced)
    if json_output:
        print_json(info)
    else:
        _print_tables(info)
    print_diagnostics(diagnostics)
    warn_if_output_misfits(traced.output_shape, target, model)


def warn_if_output_misfits(output_shape, target: str, model: str) -> None:
    """``warning:`` and ``hint:`` on stderr where ``optimize`` would refuse this output (the same
    check, :meth:`alphac.runtime.targets.Target.output_mismatch`); nothing where it fits."""
    from alphac.runtime.targets import get_target

    problem = get_target(target).output_mismatch(output_shape, model=model)
    if problem is None:
        return
    say = functools.partial(err_console.print, highlight=False, soft_wrap=True)
    say(f"[bold yellow]warning:[/] {escape(problem.message)}; `alphac optimize` and "
        "`alphac train` refuse it")
    say(f"[yellow]hint:[/] {escape(problem.hint or '')}")


def _rows(block: dict[str, Any], depth: int = 0):
    """``(indented path, type, nodes)`` of a block and, indented below it, its inner levels."""
    path = f"{'  ' * (depth - 1)}└ {block['path']}" if depth else block["path"]
    yield path, block["type"], str(block["nodes"])
    for child in block["children"]:
        yield from _rows(child, depth + 1)


def _print_tables(info: dict[str, Any]) -> None:
    overview = Table(title=f"{info['model']}", show_header=False)
    overview.add_row("frontend", info["frontend"])
    overview.add_row("nodes", str(info["nodes"]))
    overview.add_row("params", f"{format_count(info['params'])} ({info['params']:,})")
    batch = info["input_shape"][0] if info["input_shape"] else 1
    overview.add_row("FLOPs (per image)", format_count(info["flops_per_sample"]))
    overview.add_row(f"FLOPs (example batch of {batch})", format_count(info["flops"]))
    overview.add_row("FLOPs (symbolic)", info["flops_expr"])
    overview.add_row("input", "x".join(map(str, info["input_shape"])))
    overview.add_row("output", "x".join(map(str, info["output_shape"])))
    console.print(overview)
    inner = sum(1 for b in info["blocks"] for _ in _rows(b)) - len(info["blocks"])
    title = f"{len(info['blocks'])} blocks" + (f" ({inner} inner, indented)" if inner else "")
    blocks = Table(title=title)
    for col in ("path", "type", "nodes"):
        blocks.add_column(col, justify="right" if col == "nodes" else "left")
    for b in info["blocks"]:
        for row in _rows(b):
            blocks.add_row(*row)
    console.print(blocks)
