"""Cost analysis: parameters and FLOPs of a subgraph as expressions in the shape symbols.

Convention (ALGORITHM.md 2.4): one multiply-add is 2 FLOPs. ``flops`` counts the matrix work --
conv (with groups), linear, matmul/bmm/einsum and attention -- exactly as
``torch.utils.flop_counter`` does (bias adds excluded), so the two agree to the FLOP (attention
counts as its two matrix products; flop_counter sees those only when attention runs on the math
backend -- it does not count the fused CPU kernel).
``other_flops`` counts everything else at a small stated cost per element (``OTHER_COST``): a bias
add 1 per output element, batch norm 2 (an inference-time scale and shift), layer/group norm 5,
piecewise-linear activations 1, smooth activations 4, softmax 5, elementwise arithmetic 1, pools
one per window element of each output, global pools and reductions one per input element.
Shape-only ops (reshape, permute, getitem, dropout at inference, ...) cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import sympy
import torch
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.diagnostics import report
from alphac.ir import Subgraph, count_params
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.registry import REGISTRY, OpCost, activations, norms
from alphac.passes.analysis.registry.common import FREE as _FREE
from alphac.passes.analysis.shape import ShapeAnalysis, ShapeFact, evaluate_dim
from alphac.passes.analysis.shape_dims import dims_same

__all__ = ["OTHER_COST", "Cost", "CostAnalysis", "CostFact", "ModelCost", "model_cost"]

ZERO = sympy.Integer(0)
#: Other-FLOPs per element of the ops outside ``flops``, as the registry's cost rules count them
#: (gathered here for reference; the rules live with their kinds): elementwise arithmetic 1.
OTHER_COST: dict[str, int] = {
    **dict.fromkeys(["add", "sub", "mul", "div", "neg"], 1),
    **activations.OTHER_FLOPS, **norms.OTHER_FLOPS,
}


class Cost(NamedTuple):
    """Concrete cost: parameter count, matrix FLOPs, other FLOPs."""

    params: int
    flops: int
    other_flops: int


@dataclass(frozen=True, eq=False)
class CostFact:
    """Params and FLOPs of a subgraph in the shape symbols, with their values at ``bindings``.

    Equality is semantic (:func:`alphac.symbols.same`); the hash evaluates at a fixed probe point,
    so equal costs hash alike. Example: a stride-1 ResNet BasicBlock body has
    ``params = 2*C*(9*C + 2)`` (two 3x3 convs without bias, two batch norms) and
    ``flops = 36*B*C**2*H*W``.
    """

    params: sympy.Expr
    flops: sympy.Expr
    other_flops: sympy.Expr = ZERO
    bindings: Mapping[sympy.Symbol, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def total_flops(self) -> sympy.Expr:
        return self.flops + self.other_flops

    def concrete(self) -> Cost:
        """The cost at the traced input."""
        return Cost(*(evaluate_dim(e, self.bindings)
                      for e in (self.params, self.flops, self.other_flops)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CostFact):
            return NotImplemented
        pairs = zip((self.params, self.flops, self.other_flops),
                    (other.params, other.flops, other.other_flops), strict=True)
        return all(dims_same(a, b) for a, b in pairs)

    def __hash__(self) -> int:
        return hash(tuple(_probe(e) for e in (self.params, self.flops, self.other_flops)))


def cost_terms(gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager
               ) -> dict[str, OpCost]:
    """Node name -> its :class:`OpCost` in the subgraph's cost (summed by :class:`CostAnalysis`):
    ``params`` is the cost rule's formula where it counts the node's fresh parameter tensors at
    the bindings, else that count as a constant (what a program lifted from the subgraph keeps)."""
    shapes: ShapeFact = am.get(ShapeAnalysis(), gm, subgraph)
    index = graph_index(gm, am)
    values = shapes.node_shapes
    seen: set[int] = set()
    nodes = [index.nodes[name] for name in subgraph.nodes]
    terms: dict[str, OpCost] = {}
    # Ops claim the parameters they read (module weights, or get_attr weights of a functional
    # conv); parameters left over (a position embedding) count as constants afterwards.
    for node in [n for n in nodes if n.op != "get_attr"] + [n for n in nodes
                                                            if n.op == "get_attr"]:
        cost = _FREE if node.op == "get_attr" else _node_cost(index, node, values)
        params = CostAnalysis._params(gm, node, index.modules, cost.params, seen,
                                      shapes.bindings)
        terms[node.name] = OpCost(params, cost.flops, cost.other)
    return terms


def _probe(expr: sympy.Expr) -> Any:
    point = {s: 7919 + 2 * i for i, s in enumerate(sorted(expr.free_symbols, key=str))}
    try:
        return evaluate_dim(expr, point)
    except (KeyError, TypeError, ValueError):
        return 0


def _node_cost(index: GraphIndex, node: fx.Node, values: Mapping[str, Any]) -> Any:
    """``kind.cost(spec, operand values, value)`` for the node's registered kind; an unknown op
    costs nothing (the shape analysis reports it, so cost stays silent: one report per op)."""
    op = index.op(node)
    kind = REGISTRY.get(op.spec.kind)
    if kind is None:
        return _FREE
    ins = tuple(values.get(o.name) for o in op.operands)
    try:
        return kind.cost(op.spec, ins, values.get(node.name))
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
        _warn_once(op.spec.kind, "the cost rule of {what} cannot model this call; counting it as "
                   "free")
        return _FREE


# ---- parameters: each parameter tensor once, symbolic where the formula checks out ---------------
def _param_tensors(gm: fx.GraphModule, node: fx.Node, modules: Mapping[str, nn.Module]) -> list:
    if node.op == "call_module":
        module = modules.get(str(node.target))
        return list(module.parameters()) if module is not None else []
    if node.op == "get_attr":
        value = _fetch(gm, str(node.target))
        return [value] if isinstance(value, nn.Parameter) else []
    fetched = [_fetch(gm, str(a.target)) for a in node.all_input_nodes if a.op == "get_attr"]
    return [p for p in fetched if isinstance(p, nn.Parameter)]


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


_WARNED: set[str] = set()


@dataclass(frozen=True)
class CostAnalysis:
    """Infer a subgraph's parameters and FLOPs as sympy expressions in its shape symbols.

    Pre: as for :class:`~alphac.passes.analysis.shape.ShapeAnalysis` (traced shapes on every node).
    Post: a :class:`CostFact` whose ``concrete()`` equals, at the traced input, the parameter count
    of the subgraph's modules and ``get_attr`` parameters (each shared tensor once) and, for
    ``flops``, ``torch.utils.flop_counter``'s count. Example: ``nn.Linear(C, 4*C)`` on ``(B, N, C)``
    -> ``params = 4*C**2 + 4*C``, ``flops = 8*B*N*C**2``, ``other_flops = 4*B*N*C`` (the bias).
    """

    name: ClassVar[str] = "cost"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> CostFact:
        shapes: ShapeFact = am.get(ShapeAnalysis(), gm, subgraph)
        terms = cost_terms(gm, subgraph, am).values()
        return CostFact(sympy.Add(*(t.params for t in terms)),
                        sympy.Add(*(t.flops for t in terms)),
                        sympy.Add(*(t.other for t in terms)), shapes.bindings)

    @staticmethod
    def _params(gm: fx.GraphModule, node: fx.Node, modules: Mapping[str, nn.Module],
                formula: sympy.Expr, seen: set[int], bindings: Mapping[sympy.Symbol, int]
                ) -> sympy.Expr:
        tensors = _param_tensors(gm, node, modules)
        fresh = [p for p in tensors if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        count = sum(p.numel() for p in fresh)
        if len(fresh) == len(tensors) and count and _evaluates_to(formula, bindings, count):
            return formula
        if count and node.op == "call_module" and len(fresh) == len(tensors):
            _warn_once(type(modules.get(str(node.target))).__name__,
                       "no symbolic parameter formula for {what}; counting its parameters as a "
                       "constant")
        return sympy.Integer(count)


def _evaluates_to(expr: sympy.Expr, bindings: Mapping[sympy.Symbol, int], value: int) -> bool:
    try:
        return evaluate_dim(expr, bindings) == value
    except (KeyError, TypeError, ValueError):
        return False


def _warn_once(what: str, why: str) -> None:
    report("cost", what, "cost analysis: " + why.format(what=what), seen=_WARNED, stacklevel=3)


# ---- a whole model's cost, as the CLI reports it and the search ranks by -------------------------
@dataclass(frozen=True)
class ModelCost:
    """A traced model's parameters and matrix FLOPs at its example batch.

    ``flops`` is for the whole example batch, ``flops_per_sample`` for one sample (the
    ``torch.utils.flop_counter`` convention: one multiply-add is 2 FLOPs, bias adds excluded);
    ``flops_expr`` is the batch's FLOPs in the input's shape symbols (``B``, ``H``, ``W``, ...).
    """

    params: int
    flops: int
    flops_per_sample: int
    flops_expr: sympy.Expr


def model_cost(gm: fx.GraphModule, example_inputs: torch.Tensor | Sequence[torch.Tensor],
               am: AnalysisManager | None = None) -> ModelCost:
    """Params and FLOPs of the whole of ``gm`` from :class:`CostAnalysis`, at its example batch.

    Pre: ``gm`` carries traced shapes (as a frontend's ``TracedModel.gm`` does) for
    ``example_inputs``, whose first tensor is batch first. The fact is cached in ``am`` when given.
    Post: ``params == count_params(gm)``; ``flops_per_sample * batch == flops``.
    Example: ``nn.Linear(8, 4)`` on a ``(2, 8)`` batch -> ``ModelCost(params=36, flops=128,
    flops_per_sample=64, flops_expr=B*C**2)`` (``B = 2``, ``C = 8``, the output width is ``C/2``).
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    first = next((x for x in inputs if isinstance(x, torch.Tensor) and x.dim() > 0), None)
    if first is None:
        raise ValueError("model_cost needs a batched example input (a tensor, batch first)")
    fact = (am or AnalysisManager()).get(CostAnalysis(), gm, Subgraph.whole(gm))
    batch_flops = fact.concrete().flops
    return ModelCost(params=count_params(gm), flops=batch_flops,
                     flops_per_sample=batch_flops // int(first.shape[0]), flops_expr=fact.flops)
