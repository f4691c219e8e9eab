"""`alphac inspect MODEL`: what alphac sees in a model (frontend, size, cost, blocks)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from alphac.cli.common import (
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    handles_user_errors,
    human,
    load_traced,
    print_diagnostics,
    print_json,
)
from alphac.diagnostics import Diagnostics, collect
from alphac.ir import Subgraph, compute_nodes


def block_tree(block) -> dict[str, Any]:
    """A block as JSON: path, type, node count and its inner repeated levels as ``children``."""
    return {"path": block.path, "type": block.type, "nodes": len(block.nodes),
            "children": [block_tree(c) for c in block.children]}


def summarize(traced) -> tuple[dict[str, Any], Diagnostics]:
    """The facts `inspect` reports, as a JSON-ready dict.

    FLOPs come from the symbolic cost analysis evaluated at the example input (matrix work, the
    same count as ``torch.utils.flop_counter``); ``flops_expr`` is that cost in the input's
    symbols (B, C, H, W). ``blocks`` are the outermost blocks (the mutation targets, each node in
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
    """Trace MODEL and show its frontend, size, FLOPs, shapes and blocks."""
    info, diagnostics = summarize(load_traced(model, target, input_shape))
    if json_output:
        print_json(info)
    else:
        _print_tables(info)
    print_diagnostics(diagnostics)


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
    overview.add_row("params", f"{human(info['params'])} ({info['params']:,})")
    overview.add_row(
        "FLOPs", f"{human(info['flops'])} at this input, {human(info['flops_per_sample'])}/sample"
    )
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
