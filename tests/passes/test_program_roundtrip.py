"""Round trips through programs: ``splice(gm, s, *lift(gm, s))`` leaves a model computing the same
function (outputs, fingerprint, params, FLOPs) on every zoo block of both frontends and on seeded
random subgraphs; a hand-built program spliced into ResNet-18 agrees with the fx analyses and the
Jacobian of its materialised module."""

from __future__ import annotations

import copy
import random
import warnings
from dataclasses import dataclass

import pytest
import sympy
import torch
from test_splice import BOTTLENECK, C
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.frontends import zoo
from alphac.frontends.blocks import find_blocks
from alphac.frontends.trace import _export, annotate_shapes
from alphac.ir import Subgraph, count_params, extract, flop_counter_flops
from alphac.passes.analysis.cost import CostAnalysis
from alphac.passes.analysis.depth import DepthAnalysis
from alphac.passes.analysis.fingerprint import FingerprintAnalysis
from alphac.passes.analysis.ground_truth import check_mixing, subgraph_inputs
from alphac.passes.analysis.program import Program, ProgramOp
from alphac.passes.analysis.program_infer import Context, infer, lift
from alphac.passes.analysis.registry import NotMaterialisable
from alphac.passes.analysis.shape import ShapeAnalysis
from alphac.passes.transform.eliminate_dead_code import EliminateDeadCode
from alphac.passes.transform.splice import splice
from alphac.rewriter import graph_version

MODELS = zoo.names()
SMALL = (2, 3, 16, 16)  # as tests/passes/conftest.py
RANDOM_FX = 10  # convex random subgraphs per model and fx: 100 in all
RANDOM_EXPORT = 2


@dataclass(frozen=True)
class Whole:
    """What must survive a round trip: the model's outputs, fingerprint, params and FLOPs."""

    outputs: torch.Tensor
    fingerprint: str
    params: int
    flop_counter: int
    cost: object

    @classmethod
    def of(cls, gm, x: torch.Tensor) -> Whole:
        am, whole = AnalysisManager(), Subgraph.whole(gm)
        with torch.no_grad():
            out = gm(x)
        return cls(out, am.get(FingerprintAnalysis(), gm, whole), count_params(gm),
                   flop_counter_flops(gm, (x,)), am.get(CostAnalysis(), gm, whole).concrete())

    def differences(self, other: Whole) -> list[str]:
        found = [] if torch.allclose(self.outputs, other.outputs, rtol=1e-4, atol=1e-5) else [
            "outputs"]
        return found + [k for k in ("fingerprint", "params", "flop_counter", "cost")
                        if getattr(self, k) != getattr(other, k)]


@dataclass
class Traced:
    gm: object
    example: tuple[torch.Tensor, ...]
    blocks: list
    x: torch.Tensor
    reference: Whole


def _fx(name: str, zoo_model) -> Traced:
    tm = zoo_model(name)
    gm = copy.deepcopy(tm.gm).eval()
    return _prepared(gm, tuple(tm.example_inputs), tm.blocks)


def _exported(name: str) -> Traced:
    model = zoo.build(name, num_classes=10, input_shape=SMALL[1:]).eval()
    x = torch.randn(*SMALL, generator=torch.Generator().manual_seed(0))
    gm = _export(model, (x,))
    annotate_shapes(gm, (x,))
    return _prepared(gm, (x,), find_blocks(gm))


def _prepared(gm, example, blocks) -> Traced:
    # Norm weights and statistics at their init values (1, 0) would look like a fresh module's:
    # redraw every 1-d float tensor, so a splice that loses one changes the outputs.
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for tensor in [*gm.parameters(), *gm.buffers()]:
            if tensor.dim() == 1 and tensor.is_floating_point():
                tensor.copy_(0.75 + 0.5 * torch.rand(tensor.shape, generator=gen))
    # A splice eliminates dead code in the whole graph (export leaves unused buffers such as
    # num_batches_tracked as get_attr nodes): the reference is the graph without it.
    EliminateDeadCode().run(gm, AnalysisManager())
    x = torch.randn(*SMALL, generator=torch.Generator().manual_seed(1))
    return Traced(gm, example, blocks, x, Whole.of(gm, x))


def _round_trip(t: Traced, sub: Subgraph) -> list[str] | None:
    """How ``splice(gm', sub, *lift(gm', sub))`` on a copy differs from the model; None when
    splice refuses ``sub`` as not convex (then the copy must be untouched)."""
    gm = _copy(t.gm)
    try:
        splice(gm, sub, *_lifted(gm, sub))
    except ValueError as exc:
        assert "not convex" in str(exc) and graph_version(gm) == 0
        return None
    annotate_shapes(gm, t.example)
    return t.reference.differences(Whole.of(gm, t.x))


def _copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy whose graph and module tree a splice may edit; it shares the leaf modules and
    tensors with ``gm`` (a splice never writes to those), which a deep copy would clone."""
    copied = fx.GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
    return copied.train(gm.training) if isinstance(gm.training, bool) else copied


def _lifted(gm, sub):
    program, ctx = lift(gm, sub)
    return program, ctx.bindings


def _all_blocks_at_once(t: Traced, blocks: list[Subgraph]) -> list[str]:
    """Splice every block's lifted program into one copy (each block named by its nodes, its
    inputs read again after the blocks before it were replaced), then compare the model once."""
    gm = _copy(t.gm)
    lifted = [_lifted(gm, b) for b in blocks]
    for block, (program, bindings) in zip(blocks, lifted, strict=True):
        splice(gm, Subgraph.from_nodes(gm, block.nodes), program, bindings)
    annotate_shapes(gm, t.example)
    return t.reference.differences(Whole.of(gm, t.x))


def _failures(t: Traced, blocks: list[Subgraph], rng: random.Random, grow, randoms: int
              ) -> list[str]:
    """Round-trip failures of every block (all spliced together; one by one only to name a
    failure) and of ``randoms`` random connected convex subgraphs (the non-convex ones drawn on
    the way are refused, untouched, and not counted)."""
    found, pool = [], {n.name for n in t.gm.graph.nodes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unknown ops are reported by the fx path
        if _all_blocks_at_once(t, blocks):
            for sub in blocks:
                diff = _round_trip(t, sub)
                if diff != []:
                    found.append(f"{sub.nodes[:3]}: {'not convex' if diff is None else diff}")
        done = 0
        for _ in range(8 * randoms):
            sub = grow(t.gm, pool, rng)
            diff = _round_trip(t, sub)
            if diff is not None:
                done += 1
                found += [f"{sub.nodes[:3]}: {diff}"] if diff else []
            if done == randoms:
                break
    return found + ([] if done == randoms else [f"only {done} convex random subgraphs"])


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_fx_blocks_and_random_subgraphs(name: str, zoo_model, grow_subgraph) -> None:
    t = _fx(name, zoo_model)
    blocks = [b.subgraph(t.gm) for b in t.blocks]
    assert _failures(t, blocks, random.Random(f"roundtrip-{name}"), grow_subgraph,
                     RANDOM_FX) == []


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_torch_export(name: str, grow_subgraph) -> None:
    t = _exported(name)
    assert t.blocks, f"{name}: no blocks in the export graph"
    blocks = [b.subgraph(t.gm) for b in t.blocks]
    assert _failures(t, blocks, random.Random(f"roundtrip-export-{name}"), grow_subgraph,
                     RANDOM_EXPORT) == []


def test_a_subgraph_leaving_and_reentering_is_refused(zoo_model) -> None:
    """EfficientNet's squeeze-excite: {depthwise act, gate, mul} has a path through the pool."""
    t = _fx("efficientnet_b0", zoo_model)
    gm = t.gm
    gate = next(n for n in gm.graph.nodes if n.name.endswith("se_gate"))
    mul = next(iter(gate.users))
    act = next(a for a in mul.all_input_nodes if a is not gate)
    sub = Subgraph.from_nodes(gm, [act.name, gate.name, mul.name])
    with pytest.raises(ValueError, match="not convex"):
        splice(gm, sub, *_lifted(gm, sub))
    assert graph_version(gm) == 0


# ---- the materialise rules: calls rebuilt from their specs instead of copied ------------------
def _without_call_sources(program: Program, gm) -> Program:
    """``program`` with function and method calls forgetting the node they came from, so splice
    materialises them from their specs (modules and parameters keep their source: weights)."""
    calls = {n.name for n in gm.graph.nodes if n.op in ("call_function", "call_method")}
    ops = tuple(ProgramOp(op.spec, op.operands, None, op.floats, op.fallback, op.fixed_params)
                if op.source in calls else op for op in program.ops)
    return Program(program.inputs, ops, program.outputs)


@pytest.mark.parametrize("name", ["resnet18", "vit_ti4", "efficientnet_b0"])
def test_blocks_rebuilt_from_specs_compute_the_same(name: str, zoo_model) -> None:
    """Outputs, params and FLOPs survive (all ten zoo models pass; three keep the suite fast);
    the fingerprint may not, as it reads the call's spelling (``torch.flatten(x, start_dim=1,
    end_dim=-1)`` for ``x.flatten(1)``)."""
    met: set[str] = set()
    for t in (_fx(name, zoo_model), _exported(name)):
        gm = _copy(t.gm)
        lifted = [(b.nodes, *lift(gm, b.subgraph(gm))) for b in t.blocks]
        for nodes, program, ctx in lifted:  # one copy: each block's inputs read again
            try:
                splice(gm, Subgraph.from_nodes(gm, nodes), _without_call_sources(program, gm),
                       ctx.bindings)
            except NotMaterialisable as exc:
                met.add(str(exc).split(":")[0])
            annotate_shapes(gm, t.example)  # the next block's build rules read operand shapes
        diff = [d for d in t.reference.differences(Whole.of(gm, t.x)) if d != "fingerprint"]
        assert diff == []
    assert met == set()  # every kind of these blocks builds, functional norms included


# ---- a hand-built program against the fx analyses and the Jacobian ------------------------------
# the same bottleneck as test_splice (tests/passes is on sys.path: each test folder is)


def _body(gm, blocks, path: str) -> Subgraph:
    """The residual branch of block ``path``: conv1 .. bn2 (the add and last relu stay)."""
    block = next(b for b in blocks if b.path == path)
    return Subgraph.from_nodes(gm, [n for n in block.nodes if "conv" in n or "bn" in n
                                    or "relu1" in n])


@pytest.mark.parametrize(("path", "width"), [("layer1.0", 64), ("layer2.1", 128)])
def test_hand_built_program_spliced_into_resnet18(path: str, width: int, zoo_model) -> None:
    tm = zoo_model("resnet18")
    gm = copy.deepcopy(tm.gm)
    body = _body(gm, tm.blocks, path)
    ctx = Context.of(AnalysisManager().get(ShapeAnalysis(), gm, body))
    assert ctx.bindings[C] == width
    facts = infer(BOTTLENECK, ctx)
    new = splice(gm, body, BOTTLENECK, ctx.bindings)
    annotate_shapes(gm, tm.example_inputs)
    am = AnalysisManager()
    assert check_mixing(gm, new, am) == []
    shape = am.get(ShapeAnalysis(), gm, new)
    assert (shape.inputs, shape.outputs) == (facts.shape.inputs, facts.shape.outputs)
    assert am.get(DepthAnalysis(), gm, new) == facts.depth
    cost = am.get(CostAnalysis(), gm, new)
    assert sympy.simplify(cost.params - facts.cost.params) == 0
    assert sympy.simplify(cost.flops - facts.cost.flops) == 0
    assert cost.concrete() == facts.cost.concrete()
    part = extract(gm, new)
    assert flop_counter_flops(part, tuple(subgraph_inputs(gm, new, am=am))) \
        == facts.cost.concrete().flops
    assert count_params(part) == facts.cost.concrete().params == 5 * width**2 // 2
