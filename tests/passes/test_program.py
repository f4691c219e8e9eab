"""Programs: properties inferred on ``lift(subgraph)`` equal the fx analyses on every zoo block,
on 500 seeded random subgraphs and on torch.export graphs; a hand-built program is inferred in
the contexts of two ResNet blocks; appending an op reuses its prefix's memoised facts."""

from __future__ import annotations

import random
import warnings

import pytest
import sympy
import torch
from test_splice import BOTTLENECK, C
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.frontends import zoo
from alphac.frontends.blocks import find_blocks
from alphac.frontends.trace import _export, annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis import program_infer
from alphac.passes.analysis.cost import CostAnalysis
from alphac.passes.analysis.depth import DepthAnalysis
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import MixingAnalysis
from alphac.passes.analysis.program import Program
from alphac.passes.analysis.program_infer import Context, fingerprint_of, infer, lift
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec
from alphac.passes.analysis.shape import ShapeAnalysis
from alphac.passes.analysis.shape_dims import dims_same, evaluate_dim
from alphac.symbols import dim

MODELS = zoo.names()
SMALL = (2, 3, 16, 16)  # as tests/passes/conftest.py
RANDOM_PER_MODEL = 50  # 10 models: 500 random subgraphs


def _differences(gm, sub, am) -> list[str]:
    """Which properties of ``lift(sub)`` differ from the fx analyses of ``sub``."""
    program, ctx = lift(gm, sub, am)
    facts = infer(program, ctx)
    shape = am.get(ShapeAnalysis(), gm, sub)
    found = []
    if (shape.inputs, shape.outputs) != (facts.shape.inputs, facts.shape.outputs):
        found.append("shape")
    if am.get(DepthAnalysis(), gm, sub) != facts.depth:
        found.append("depth")
    if am.get(MixingAnalysis(), gm, sub) != facts.mixing:
        found.append("mixing")
    cost = am.get(CostAnalysis(), gm, sub)
    if cost != facts.cost or cost.concrete() != facts.cost.concrete():
        found.append("cost")
    return [f"{sub.nodes[:3]}...: {what}" for what in found]


def _all_differences(gm, subgraphs) -> list[str]:
    am = AnalysisManager()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unknown ops are reported by the fx path
        return [d for sub in subgraphs for d in _differences(gm, sub, am)]


@pytest.mark.parametrize("name", MODELS)
def test_lift_matches_fx_on_blocks_and_random_subgraphs(name: str, zoo_model, grow_subgraph):
    tm = zoo_model(name)
    rng = random.Random(f"program-{name}")
    pool = {n.name for n in tm.gm.graph.nodes}
    subs = [b.subgraph(tm.gm) for b in tm.blocks]
    subs += [grow_subgraph(tm.gm, pool, rng) for _ in range(RANDOM_PER_MODEL)]
    assert _all_differences(tm.gm, subs) == []


@pytest.mark.parametrize("name", MODELS)
def test_lift_matches_fx_on_torch_export_graphs(name: str, grow_subgraph):
    model = zoo.build(name, num_classes=10, input_shape=SMALL[1:]).eval()
    x = torch.randn(*SMALL)
    gm = _export(model, (x,))
    annotate_shapes(gm, (x,))
    blocks = find_blocks(gm)
    assert blocks, f"{name}: no blocks in the export graph"
    rng = random.Random(f"program-export-{name}")
    pool = {n.name for n in gm.graph.nodes}
    subs = [b.subgraph(gm) for b in blocks] + [grow_subgraph(gm, pool, rng) for _ in range(5)]
    assert _all_differences(gm, subs) == []


def _resnet_block_contexts(zoo_model) -> list[Context]:
    """The contexts of ResNet-18's ``layer1.0`` (C = 64) and ``layer3.1`` (C = 256)."""
    tm = zoo_model("resnet18")
    am = AnalysisManager()
    out = []
    for path in ("layer1.0", "layer3.1"):
        block = next(b for b in tm.blocks if b.path == path)
        out.append(Context.of(am.get(ShapeAnalysis(), tm.gm, block.subgraph(tm.gm))))
    return out


def test_hand_built_program_in_two_resnet_contexts(zoo_model):
    B, H, W = dim("B"), dim("H"), dim("W")
    widths = []
    for ctx in _resnet_block_contexts(zoo_model):
        facts = infer(BOTTLENECK, ctx)
        assert facts.shape.outputs == facts.shape.inputs  # (B, C, H, W) back to itself
        assert dims_same(facts.cost.params, 5 * C**2 / 2)  # C*C/4 + 9*C/4*C
        assert dims_same(facts.cost.flops, 5 * B * C**2 * H * W)
        assert facts.depth.as_dict() == {"0->0": 3}
        widths.append(BOTTLENECK.instantiate(ctx.bindings)[0].get("out_channels"))
        assert facts.fingerprint == fingerprint_of(BOTTLENECK)  # context-free
    assert widths == [16, 64]


@pytest.mark.parametrize("width", [16, 32])
def test_hand_built_program_mixing_matches_the_jacobian(width: int, traced):
    """At each width, the program's mixing equals the Jacobian ground truth of the same chain
    written as torch modules (traced only for the ground truth), and its cost the module's."""
    module = nn.Sequential(nn.Conv2d(width, width // 4, 1, bias=False), nn.ReLU(),
                           nn.Conv2d(width // 4, width, 3, padding=1, bias=False))
    gm = traced(module, (2, width, 4, 4))
    am = AnalysisManager()
    whole = Subgraph.whole(gm)
    assert check_mixing(gm, whole, am) == []
    ctx = Context.of(am.get(ShapeAnalysis(), gm, whole))
    facts = infer(BOTTLENECK, ctx)
    assert facts.mixing == am.get(MixingAnalysis(), gm, whole)
    assert facts.cost.concrete().params == sum(p.numel() for p in module.parameters())


def test_widths_of_a_lifted_block_follow_the_instance(zoo_model):
    tm = zoo_model("resnet18")
    am = AnalysisManager()
    first, other = (next(b for b in tm.blocks if b.path == p) for p in ("layer1.0", "layer3.1"))
    program, _ = lift(tm.gm, first.subgraph(tm.gm), am)
    ctx = Context.of(am.get(ShapeAnalysis(), tm.gm, other.subgraph(tm.gm)))
    convs = [s for s in program.instantiate(ctx.bindings) if s.kind == "conv"]
    assert [(s.get("in_channels"), s.get("out_channels")) for s in convs] == [(256, 256)] * 2
    lifted_other = infer(*lift(tm.gm, other.subgraph(tm.gm), am))
    assert infer(program, ctx).cost == lifted_other.cost
    assert infer(program, ctx).cost.concrete() == lifted_other.cost.concrete()


def test_fingerprints_ignore_names_and_see_ops(zoo_model):
    tm = zoo_model("resnet18")
    a, b = (lift(tm.gm, blk.subgraph(tm.gm))[0] for blk in tm.blocks[:2])
    assert a.ops != b.ops or a.inputs != b.inputs  # different sources and names
    assert fingerprint_of(a) == fingerprint_of(b)
    gelu = [i for i, op in enumerate(a.ops) if op.spec.kind == "relu"][0]
    changed = Program(a.inputs, (*a.ops[:gelu], type(a.ops[gelu])(OpSpec.of("gelu"),
                                                                  a.ops[gelu].operands),
                                 *a.ops[gelu + 1:]), a.outputs)
    assert fingerprint_of(changed) != fingerprint_of(a)


def test_appending_an_op_reuses_the_prefix(zoo_model):
    contexts = _resnet_block_contexts(zoo_model)
    am = AnalysisManager()
    base = BOTTLENECK.append(OpSpec.of("relu"), 3).with_outputs(4)
    for ctx in contexts:
        infer(base, ctx, am)
    longer = base.append(conv_spec(1, C, 2 * C), 4).with_outputs(5)
    before = program_infer.STEPS[0]
    facts = [infer(longer, ctx, am) for ctx in contexts]
    assert program_infer.STEPS[0] - before == len(contexts)  # one op's transfer per context
    for ctx, fact in zip(contexts, facts, strict=True):
        width = evaluate_dim(fact.shape.outputs[0].dims[1], ctx.bindings)
        assert width == 2 * ctx.bindings[C]
    before = program_infer.STEPS[0]
    infer(longer, contexts[0], am)
    assert program_infer.STEPS[0] == before  # fully memoised


def test_the_prefix_memo_belongs_to_one_manager(zoo_model):
    ctx = _resnet_block_contexts(zoo_model)[0]
    program = BOTTLENECK.append(OpSpec.of("relu"), 3).with_outputs(4)
    first, other = AnalysisManager(), AnalysisManager()
    facts = infer(program, ctx, first)
    steps = len(program.ops)
    before = program_infer.STEPS[0]
    assert infer(program, ctx, other) == facts  # another manager: computed afresh, equal
    assert program_infer.STEPS[0] - before == steps
    before = program_infer.STEPS[0]
    infer(program, ctx)  # no manager: a fresh one, nothing reused
    assert program_infer.STEPS[0] - before == steps
    first.clear()
    before = program_infer.STEPS[0]
    assert infer(program, ctx, first) == facts
    assert program_infer.STEPS[0] - before == steps  # cleared: every op's transfer again


def test_context_is_a_value(zoo_model):
    a, b = _resnet_block_contexts(zoo_model)
    again = _resnet_block_contexts(zoo_model)[0]
    assert a == again and hash(a) == hash(again) and a != b
    with pytest.raises(ValueError, match="cannot bind"):
        infer(Program.of_inputs("x", "y").with_outputs(0), a)


def test_symbolic_widths_are_exact_at_the_lift(zoo_model):
    tm = zoo_model("resnet18")
    program, ctx = lift(tm.gm, tm.blocks[0].subgraph(tm.gm))
    conv = next(op for op in program.ops if op.spec.kind == "conv")
    assert conv.spec.get("in_channels") == C and conv.source is not None
    assert sympy.Integer(conv.spec.get("out_channels").subs(ctx.bindings)) == 64
