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
    model_cost,
    print_json,
)
from alphac.ir import compute_nodes


def summarize(traced) -> dict[str, Any]:
    """The facts `inspect` reports, as a JSON-ready dict.

    FLOPs come from the symbolic cost analysis evaluated at the example input (matrix work, the
    same count as ``torch.utils.flop_counter``); ``flops_expr`` is that cost in the input's
    symbols (B, C, H, W).
    """
    cost = model_cost(traced)
    return {
        "model": traced.source,
        "frontend": traced.frontend,
        "nodes": len(compute_nodes(traced.gm)),
        "params": cost["params"],
        "flops": cost["flops_batch"],
        "flops_per_sample": cost["flops"],
        "flops_expr": cost["flops_expr"],
        "input_shape": list(traced.input_shape),
        "output_shape": list(traced.output_shape),
        "blocks": [
            {"path": b.path, "type": b.type, "nodes": len(b.nodes)} for b in traced.blocks
        ],
    }


@handles_user_errors
def inspect(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    input_shape: InputShapeOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Trace MODEL and show its frontend, size, FLOPs, shapes and blocks."""
    info = summarize(load_traced(model, target, input_shape))
    if json_output:
        print_json(info)
        return
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
    blocks = Table(title=f"{len(info['blocks'])} blocks")
    for col in ("path", "type", "nodes"):
        blocks.add_column(col, justify="right" if col == "nodes" else "left")
    for b in info["blocks"]:
        blocks.add_row(b["path"], b["type"], str(b["nodes"]))
    console.print(blocks)
