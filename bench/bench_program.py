"""Program benchmarks (issue 8): inference on (program, context) against the fx path.

``pytest bench/bench_program.py --benchmark-only -s`` prints the medians. Goals (never asserted):
(a) append one op to a 4-op program and infer shape, depth, mixing and cost in the 3 contexts of
ResNet-34's stride-1 basic blocks of one stage: median at most 1 ms; (b) lift and infer a whole
block: at most 5 ms; (c) the same four properties through the fx analyses of one block (a fresh
AnalysisManager), the path a candidate takes today (before any splice or ShapeProp); (d) splice
a 3-op program into one block (modules built, nodes inserted, dead code gone, lint, recompile):
at most 20 ms.

Each median is pytest-benchmark's over its rounds and is a tracked figure (``bench/compare.py``),
absolute: no same-run reference exists for these (the per-block ratio to the Jacobian is in
``bench_analysis.py``).
"""

from __future__ import annotations

import copy

import pytest
from figures import record

from alphac.analysis import AnalysisManager
from alphac.frontends import load
from alphac.passes.analysis import CostAnalysis, DepthAnalysis, MixingAnalysis, ShapeAnalysis
from alphac.passes.analysis import program_infer as pi
from alphac.passes.analysis.program import Program
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec
from alphac.passes.transform.splice import splice
from alphac.symbols import dim

C = dim("C")
SHAPE = (2, 3, 32, 32)
STAGE = ("layer2.1", "layer2.2", "layer2.3")  # ResNet-34's stride-1 blocks of stage 2


@pytest.fixture(scope="module")
def resnet34():
    tm = load("zoo:resnet34", SHAPE, num_classes=10)
    blocks = {b.path: b for b in tm.blocks}
    return tm, [blocks[p].subgraph(tm.gm) for p in STAGE]


def _timed(benchmark, fn, rounds: int, figure: str) -> float:
    """``fn(i)`` for round i = 0..rounds-1 under pytest-benchmark; records and returns the median
    in ms."""
    counter = iter(range(rounds))
    benchmark.pedantic(fn, setup=lambda: ((next(counter),), {}), rounds=rounds)
    median = benchmark.stats.stats.median * 1e3
    record(benchmark.extra_info, figure, median, unit="ms")
    return median


def _all(program: Program, ctx: pi.Context, am: AnalysisManager) -> None:
    pi.shape_of(program, ctx, am)
    pi.depth_of(program, ctx, am)
    pi.mixing_of(program, ctx, am)
    pi.cost_of(program, ctx, am)


def test_append_one_op_in_three_contexts(resnet34, benchmark) -> None:
    tm, subs = resnet34
    am = AnalysisManager()
    contexts = [pi.Context.of(am.get(ShapeAnalysis(), tm.gm, s)) for s in subs]
    four = (Program.of_inputs("x").append(conv_spec(1, C, C / 4), 0).append(OpSpec.of("relu"), 1)
            .append(conv_spec(3, C / 4, C), 2).append(OpSpec.of("relu"), 3))
    for ctx in contexts:
        _all(four.with_outputs(4), ctx, am)
    candidates = [four.append(conv_spec(k, C, m * C / 4), 4).with_outputs(5)
                  for k in (1, 3) for m in range(1, 25)]

    def step(i: int) -> None:
        for ctx in contexts:
            _all(candidates[i % len(candidates)], ctx, am)

    # each candidate fresh: one op's rules run cold
    median = _timed(benchmark, step, len(candidates), "program.append_op_ms")
    print(f"\n(a) append one op + infer 4 properties in 3 contexts: median {median:.3f} ms "
          "(goal <= 1 ms)")


def test_lift_and_infer_a_block(resnet34, benchmark) -> None:
    tm, subs = resnet34

    def run(_: int) -> None:
        am = AnalysisManager()  # empty memo tables
        program, ctx = pi.lift(tm.gm, subs[0], am)
        pi.infer(program, ctx, am)

    median = _timed(benchmark, run, 30, "program.lift_and_infer_block_ms")
    print(f"\n(b) lift + infer a whole block: median {median:.3f} ms (goal <= 5 ms)")


def test_fx_path_for_one_block(resnet34, benchmark) -> None:
    tm, subs = resnet34

    def run(_: int) -> None:
        am = AnalysisManager()
        for analysis in (ShapeAnalysis(), DepthAnalysis(), MixingAnalysis(), CostAnalysis()):
            am.get(analysis, tm.gm, subs[0])

    median = _timed(benchmark, run, 30, "program.fx_block_ms")
    print(f"\n(c) the four properties through fx, one block: median {median:.3f} ms")


def test_splice_a_block(resnet34, benchmark) -> None:
    tm, subs = resnet34
    am = AnalysisManager()
    ctx = pi.Context.of(am.get(ShapeAnalysis(), tm.gm, subs[0]))
    body = (Program.of_inputs("x").append(conv_spec(1, C, C / 4), 0).append(OpSpec.of("relu"), 1)
            .append(conv_spec(3, C / 4, C), 2).with_outputs(3))
    copies = iter([copy.deepcopy(tm.gm) for _ in range(20)])  # copied outside the timing

    def run(_: int) -> None:
        splice(next(copies), subs[0], body, ctx.bindings)

    median = _timed(benchmark, run, 20, "program.splice_block_ms")
    print(f"\n(d) splice a 3-op program into one block: median {median:.3f} ms (goal <= 20 ms)")
