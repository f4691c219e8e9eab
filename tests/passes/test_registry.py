"""The op registry is complete, an unknown op gets top with one report per analysis, and a program
built by hand (an OpSpec plus operand values, no fx) gets the same facts as the traced op."""

from __future__ import annotations

import inspect

import pytest
import sympy
import torch
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.diagnostics import collect
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis.cost import CostAnalysis
from alphac.passes.analysis.depth import DepthAnalysis, depth_class
from alphac.passes.analysis.index import graph_index
from alphac.passes.analysis.mixing import Mix, MixingAnalysis, _queries, mix_label
from alphac.passes.analysis.mixing_boxes import full
from alphac.passes.analysis.registry import (
    CALL_FORMS,
    MODULE_FORMS,
    REGISTRY,
    OpSpec,
    normalize,
)
from alphac.passes.analysis.registry.core import DEPTH_CLASSES, LAYOUTS
from alphac.passes.analysis.shape import ShapeAnalysis, TensorShape
from alphac.passes.analysis.shape_dims import dims_same


def _trace(module: nn.Module, *shapes: tuple[int, ...]) -> fx.GraphModule:
    gm = fx.symbolic_trace(module.eval())
    gen = torch.Generator().manual_seed(0)
    annotate_shapes(gm, tuple(torch.randn(s, generator=gen) for s in shapes))
    return gm


# ---- completeness ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_kind_has_every_rule(name: str) -> None:
    kind = REGISTRY[name]
    assert kind.name == name
    for rule, arity in ((kind.shape, 2), (kind.mixing, 3), (kind.cost, 3)):
        assert callable(rule)
        assert len(inspect.signature(rule).parameters) == arity, (name, rule)
    assert kind.depth in DEPTH_CLASSES
    assert kind.layout in LAYOUTS
    assert isinstance(kind.doc, str) and kind.doc.strip(), f"{name} has no doc"


@pytest.mark.parametrize("call", sorted(CALL_FORMS))
def test_every_call_form_maps_to_a_registered_kind(call: str) -> None:
    assert CALL_FORMS[call].kind in REGISTRY, call


def _public(cls: type) -> list[type]:
    """``cls``, or for a private base class (``_ConvNd``) its public subclasses."""
    if not cls.__name__.startswith("_"):
        return [cls]
    return [c for sub in cls.__subclasses__() for c in _public(sub)]


def _instances(cls: type) -> list[nn.Module]:
    """A few instances of a module class, built with common small arguments."""
    made = []
    for public in _public(cls):
        for args in ((), (4,), (4, 4), (4, 4, 3), (2, 4), (1, (2, 2))):
            try:
                made.append(public(*args))
            except (TypeError, ValueError, AssertionError, RuntimeError):
                continue
    return made


@pytest.mark.parametrize("cls", sorted({c for c, _ in MODULE_FORMS}, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_module_form_maps_to_a_registered_kind(cls: type) -> None:
    builders = [b for c, b in MODULE_FORMS if c is cls]
    instances = _instances(cls)
    assert instances, f"teach _instances how to build a {cls.__name__}"
    for module in instances:
        for builder in builders:
            built = builder(module)
            assert built is None or built[0] in REGISTRY, (cls.__name__, built)


# ---- an unknown op: top, reported once per analysis ---------------------------------------------
class _Scan(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, 1)


def test_an_unknown_op_gets_top_with_one_report_per_analysis() -> None:
    gm = _trace(_Scan(), (2, 3, 4))
    node = next(n for n in gm.graph.nodes if n.op == "call_function")
    op = normalize(node, dict(gm.named_modules()))
    assert op.spec.kind == "unknown" and op.spec.get("target") == "cumsum"
    assert op.operands == (node.args[0],)
    am, whole = AnalysisManager(), Subgraph.whole(gm)
    with collect() as diag:
        shapes = am.get(ShapeAnalysis(), gm, whole)
        mixing = am.get(MixingAnalysis(), gm, whole)
        depth = am.get(DepthAnalysis(), gm, whole)
        am.get(CostAnalysis(), gm, whole)
    assert shapes.concrete()["outputs"] == ((2, 3, 4),)  # from the trace
    assert mixing.matrix(0, 0) == ((Mix.ALL_TO_ONE,) * 3,) * 3  # every dim into every dim
    assert depth.get(0, 0) == 1 and depth_class(op.spec) == "nonlinear"
    found = {(f.analysis, f.op): f.count for f in diag.findings()}
    assert found == {("shape", "cumsum"): 1, ("mixing", "cumsum"): 1}


# ---- a program built by hand gets the traced op's facts ------------------------------------------
def _matrix(rule, shape: tuple[int, ...]) -> tuple[tuple[Mix, ...], ...]:
    """The mixing matrix of a one-operand rule (operand 0 -> its value of ``shape``)."""
    reached = []
    for query in _queries(shape):
        boxes = [b for pull in rule.pulls(None) if pull.src == 0 for b in pull.apply(query)]
        reached.append([_union(boxes, a) for a in range(len(shape))])
    centre = reached[-1]
    return tuple(tuple(mix_label(n, reached[k][a] == full(n), centre[a].bit_count())
                       for k in range(len(shape))) for a, n in enumerate(shape))


def _union(boxes: list[tuple[int, ...]], dim: int) -> int:
    acc = 0
    for box in boxes:
        acc |= box[dim]
    return acc


@pytest.mark.parametrize(("module", "spec"), [
    (nn.ReLU(), OpSpec.of("relu")),
    (nn.Softmax(dim=1), OpSpec.of("softmax", dim=1)),
], ids=["relu", "softmax"])
def test_a_hand_built_op_gets_the_traced_facts(module: nn.Module, spec: OpSpec) -> None:
    shape = (2, 3, 4, 5)
    gm = _trace(nn.Sequential(module), shape)
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert graph_index(gm).op(node).spec == spec  # the traced op normalises to the same spec
    am, whole = AnalysisManager(), Subgraph.whole(gm)
    kind = REGISTRY[spec.kind]
    # shape: the rule on the symbolic input gives the analysis' output
    facts = am.get(ShapeAnalysis(), gm, whole)
    (x,), (y,) = facts.inputs, facts.outputs
    assert kind.shape(spec, (x,)) == y
    # mixing: the rule at the concrete shape, pulled back by hand, equals the analysis
    rule = kind.mixing(spec, (shape,), shape)
    assert _matrix(rule, shape) == am.get(MixingAnalysis(), gm, whole).matrix(0, 0)
    # cost: the rule on symbolic values equals the cost analysis
    cost, fact = kind.cost(spec, (x,), y), am.get(CostAnalysis(), gm, whole)
    for mine, theirs in zip(cost, (fact.params, fact.flops, fact.other_flops), strict=True):
        assert dims_same(sympy.sympify(mine), theirs)
    # a concrete program: integer shapes give integer facts
    concrete = TensorShape(tuple(sympy.Integer(s) for s in shape), "NCHW")
    assert [int(d) for d in kind.shape(spec, (concrete,)).dims] == list(shape)
