"""`alphac measure MODEL`: params, FLOPs, latency (batch 1) and throughput on a device."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from alphac.cli.common import (
    DeviceOpt,
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    handles_user_errors,
    load_traced,
    print_json,
)
from alphac.units import format_count


@handles_user_errors
def measure(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    input_shape: InputShapeOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int | None, typer.Option(
        "--batch-size", help="Batch for throughput (default 256 on CUDA, 64 on CPU).",
        show_default=False, min=1)] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs (median).", min=1)] = 10,
    json_output: JsonOpt = False,
) -> None:
    """Measure MODEL: params, FLOPs per sample, latency at batch 1 and throughput."""
    from alphac.passes.analysis.cost import model_cost
    from alphac.runtime.device import resolve_device
    from alphac.runtime.measure import measure_speed

    dev = resolve_device(device)
    traced = load_traced(model, target, input_shape)
    sample_shape = traced.input_shape[1:]
    cost = model_cost(traced.gm, traced.example_inputs)
    timing = measure_speed(traced.gm, sample_shape, device=dev, batch_size=batch_size,
                           repeats=repeats)
    result = {"model": model, "params": cost.params, "flops": cost.flops_per_sample,
              "latency_ms": timing.latency_ms, "throughput": timing.throughput,
              "batch_size": timing.batch_size, "device": timing.device,
              "input_shape": list(sample_shape)}
    if json_output:
        print_json(result)
        return
    table = Table(title=f"{model} on {timing.device}", show_header=False)
    table.add_row("params", f"{format_count(cost.params)} ({cost.params:,})")
    table.add_row("FLOPs (per image)", format_count(cost.flops_per_sample))
    table.add_row("latency (batch 1)", f"{timing.latency_ms:.3f} ms")
    table.add_row(f"throughput (batch {timing.batch_size})", f"{timing.throughput:,.0f} images/s")
    console.print(table)
