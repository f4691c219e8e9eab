"""Analysis benchmarks: whole-model and per-block property inference, against the Jacobian.

``pytest bench/bench_analysis.py --benchmark-only -s`` prints the numbers. Goals (never asserted):
ResNet-50 at 2x3x224x224, shape + depth + mixing + cost over all blocks with a fresh
AnalysisManager, under 0.5 s on a 2-core CPU; abstract mixing at least 50x faster than the
Jacobian ground truth per block. ``cold`` timings clear alphac's memo tables and use a freshly
traced graph; the benchmark rounds after it show the warm (memoized) cost a search pays.

Tracked figures (``bench/compare.py``): the warm whole-model time; per block, the cold time of
the four properties and its ratio to ``torch.func.jacrev`` of the same block (ResNet-18 and
ViT-Ti/4 traced at 1x3x8x8, so the full Jacobian stays small), both measured in each round.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from figures import best_ratio, record, seconds

from alphac.analysis import AnalysisManager
from alphac.frontends import load
from alphac.ir import extract
from alphac.passes.analysis import (
    CostAnalysis,
    DepthAnalysis,
    MixingAnalysis,
    ShapeAnalysis,
)
from alphac.passes.analysis.ground_truth import mixing_ground_truth, subgraph_inputs
from alphac.passes.analysis.shape_dims import clear_same_memo

ANALYSES = (ShapeAnalysis(), DepthAnalysis(), MixingAnalysis(), CostAnalysis())
MODELS = {"resnet50": (2, 3, 224, 224), "vit_s16": (2, 3, 224, 224)}
GOAL_S = {"resnet50": 0.5}
RATIO_GOAL = 50
#: Blocks whose full Jacobian at 1x3x8x8 takes 10-250 ms each on one core.
JACREV_BLOCKS = {"resnet18": ("layer3.0", "layer3.1", "layer4.0", "layer4.1"),
                 "vit_ti4": ("blocks.0", "blocks.1", "blocks.2")}
JACREV_ROUNDS = 5


def infer_all(model, am: AnalysisManager | None = None) -> int:
    """Every property of every block, no fact cached (a fresh AnalysisManager, or ``am`` with the
    graph's facts dropped but its memo tables kept); returns the fact count."""
    am = am if am is not None else AnalysisManager()
    am.invalidate(model.gm)
    subgraphs = [b.subgraph(model.gm) for b in model.blocks]
    for sub in subgraphs:
        for analysis in ANALYSES:
            am.get(analysis, model.gm, sub)
    return len(subgraphs) * len(ANALYSES)


def cold_seconds(name: str) -> tuple[float, object]:
    """One run on a freshly traced graph with alphac's memo tables emptied.

    A small model is analyzed first so that sympy's lazy imports (a one-off per process, about
    0.2 s) are not counted.
    """
    infer_all(load("zoo:small_cnn", (2, 1, 28, 28)))
    model = load(f"zoo:{name}", MODELS[name])
    clear_same_memo()  # the one global memo; infer_all's fresh manager brings empty tables
    start = time.perf_counter()
    infer_all(model)
    return time.perf_counter() - start, model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_whole_model_properties(benchmark, name):
    cold, model = cold_seconds(name)  # warm rounds reuse the traced model
    am = AnalysisManager()
    infer_all(model, am)  # the memo tables warm, as they were before they moved into the manager
    facts = benchmark.pedantic(infer_all, args=(model, am), rounds=5, iterations=1)
    warm = benchmark.stats.stats.mean
    benchmark.extra_info.update(blocks=len(model.blocks), facts=facts, cold_s=round(cold, 4),
                                warm_mean_s=round(warm, 4), goal_s=GOAL_S.get(name))
    record(benchmark.extra_info, f"analysis.whole_model.{name}_s", benchmark.stats.stats.median,
           unit="s")
    print(f"\n{name}: {len(model.blocks)} blocks, shape+depth+mixing+cost: cold {cold:.3f} s, "
          f"warm {warm:.3f} s (goal {GOAL_S.get(name, '-')} s)")


def _cold_properties(gm, sub) -> None:
    clear_same_memo()
    am = AnalysisManager()  # its memo tables start empty
    for analysis in ANALYSES:
        am.get(analysis, gm, sub)


def _jacobian(module, x: torch.Tensor) -> None:
    torch.func.jacrev(module)(x)


@pytest.mark.parametrize("name", sorted(JACREV_BLOCKS))
def test_block_properties_vs_jacrev(benchmark, name):
    model = load(f"zoo:{name}", (1, 3, 8, 8), num_classes=10)
    model.gm.eval()
    blocks = {b.path: b for b in model.blocks}
    cases = []
    for path in JACREV_BLOCKS[name]:
        sub = blocks[path].subgraph(model.gm)
        cases.append((sub, extract(model.gm, sub).eval(), subgraph_inputs(model.gm, sub)[0]))
    for sub, module, x in cases:  # lazy imports, first-call and vmap set-up costs, once
        _cold_properties(model.gm, sub)
        _jacobian(module, x)
    abstract: list[list[float]] = []  # per round, per block
    jacobian: list[list[float]] = []

    def one_round() -> None:  # each block's properties, then its Jacobian, back to back
        times = [(seconds(lambda sub=sub: _cold_properties(model.gm, sub)),
                  seconds(lambda module=module, x=x: _jacobian(module, x)))
                 for sub, module, x in cases]
        abstract.append([a for a, _ in times])
        jacobian.append([j for _, j in times])

    benchmark.pedantic(one_round, rounds=JACREV_ROUNDS, iterations=1)
    per_block_ms = statistics.median(sum(r) for r in abstract) / len(cases) * 1e3
    ratio = best_ratio(abstract, jacobian)
    record(benchmark.extra_info, f"analysis.block_cold.{name}_ms", per_block_ms, unit="ms")
    record(benchmark.extra_info, f"analysis.block_vs_jacrev.{name}", ratio, unit="x",
           reference=f"torch.func.jacrev of the same {len(cases)} blocks at 1x3x8x8")
    benchmark.extra_info.update(blocks=list(JACREV_BLOCKS[name]),
                                abstract_s=abstract, jacrev_s=jacobian)
    print(f"\n{name} 1x3x8x8, {len(cases)} blocks: four properties cold {per_block_ms:.2f} ms "
          f"per block (median); abstract/jacrev {ratio:.4f} (best rounds)")


def test_abstract_vs_jacobian(benchmark):
    model = load("zoo:resnet18", (2, 3, 32, 32))  # a fresh graph: no rule cached for it yet
    rows = []
    for block in model.blocks:
        sub = block.subgraph(model.gm)

        def abstract(sub=sub) -> None:
            MixingAnalysis().compute(model.gm, sub, AnalysisManager())

        cold = seconds(abstract)
        warm = min(seconds(abstract) for _ in range(3))
        module, inputs = extract(model.gm, sub), subgraph_inputs(model.gm, sub)
        jacobian = seconds(lambda m=module, i=inputs: mixing_ground_truth(m, i))
        rows.append((block.path, cold, warm, jacobian))
    cold_total, warm_total, jac_total = (sum(r[k] for r in rows) for k in (1, 2, 3))
    benchmark.pedantic(lambda: [MixingAnalysis().compute(model.gm, b.subgraph(model.gm),
                                                         AnalysisManager())
                                for b in model.blocks], rounds=3, iterations=1)
    benchmark.extra_info.update(
        ratio_cold=round(jac_total / cold_total, 1), ratio_warm=round(jac_total / warm_total, 1),
        goal_ratio=RATIO_GOAL,
        per_block={p: {"abstract_cold_s": round(c, 5), "abstract_warm_s": round(w, 5),
                       "jacobian_s": round(j, 4)} for p, c, w, j in rows})
    print(f"\nresnet18 2x3x32x32, {len(rows)} blocks: abstract mixing cold {cold_total:.4f} s, "
          f"warm {warm_total:.4f} s; Jacobian {jac_total:.2f} s; ratio {jac_total / cold_total:.0f}x "
          f"cold, {jac_total / warm_total:.0f}x warm (goal {RATIO_GOAL}x)")
    for path, c, w, j in rows:
        print(f"  {path:10s} abstract {c * 1e3:6.2f} ms cold {w * 1e3:6.2f} ms warm  "
              f"Jacobian {j * 1e3:7.1f} ms  x{j / c:.0f} cold")
