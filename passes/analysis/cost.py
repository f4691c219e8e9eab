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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import sympy
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.diagnostics import report
from alphac.ir import Subgraph
from alphac.passes.analysis.ops import OpSpec
from alphac.passes.analysis.shape import (
    ShapeAnalysis,
    ShapeFact,
    TensorShape,
    evaluate_dim,
    graph_context,
)
from alphac.passes.analysis.shape_dims import dims_same

__all__ = ["OTHER_COST", "Cost", "CostAnalysis", "CostFact"]

ZERO = sympy.Integer(0)
#: FLOPs per element for the ops outside ``flops`` (see the module docstring).
OTHER_COST: dict[str, int] = {
    **dict.fromkeys(["relu", "relu6", "leaky_relu", "add", "sub", "mul", "div", "neg"], 1),
    **dict.fromkeys(["gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "elu"], 4),
    "softmax": 5, "log_softmax": 5, "batch_norm": 2, "layer_norm": 5, "group_norm": 5,
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


def _probe(expr: sympy.Expr) -> Any:
    point = {s: 7919 + 2 * i for i, s in enumerate(sorted(expr.free_symbols, key=str))}
    try:
        return evaluate_dim(expr, point)
    except (KeyError, TypeError, ValueError):
        return 0


def _numel(t: TensorShape) -> sympy.Expr:
    return sympy.Mul(*t.dims)


class _OpCost(NamedTuple):
    params: sympy.Expr
    flops: sympy.Expr
    other: sympy.Expr


_FREE = _OpCost(ZERO, ZERO, ZERO)


def _conv_cost(spec: OpSpec, x: TensorShape, out: TensorShape) -> _OpCost:
    groups, cin = spec.get("groups"), spec.get("in_channels")
    per_group = sympy.Integer(1) if groups == cin else x.dims[1] / groups
    kernel = math.prod(spec.get("kernel"))
    weight = out.dims[1] * per_group * kernel
    bias = out.dims[1] if spec.get("bias") else ZERO
    if spec.get("transposed"):  # flop_counter: every input position meets the whole kernel
        flops = 2 * _numel(x) * (out.dims[1] / groups) * kernel
    else:
        flops = 2 * _numel(out) * per_group * kernel
    return _OpCost(weight + bias, flops, _numel(out) if spec.get("bias") else ZERO)


def _linear_cost(spec: OpSpec, x: TensorShape, out: TensorShape) -> _OpCost:
    fin, fout = x.dims[-1], out.dims[-1]
    bias = fout if spec.get("bias") else ZERO
    return _OpCost(fin * fout + bias, 2 * _numel(out) * fin,
                   _numel(out) if spec.get("bias") else ZERO)


def _einsum_flops(spec: OpSpec, operands: list[TensorShape]) -> sympy.Expr:
    equation = str(spec.get("equation", ""))
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(operands) != 2 or len(terms) != 2 or "." in equation:
        return ZERO
    sizes = {}
    for term, t in zip(terms, operands, strict=True):
        sizes.update({ch: d for ch, d in zip(term, t.dims, strict=True) if ch not in sizes})
    return 2 * sympy.Mul(*sizes.values())


def _norm_cost(spec: OpSpec, x: TensorShape, out: TensorShape) -> _OpCost:
    other = OTHER_COST[spec.kind] * _numel(out)
    if spec.kind == "layer_norm":
        n = len(spec.get("normalized_shape") or ())
        width = sympy.Mul(*x.dims[x.rank - n:]) if n else ZERO
        affine = spec.get("affine", True)
    else:
        width, affine = x.dims[1] if x.rank > 1 else ZERO, spec.get("affine", True)
    return _OpCost(2 * width if affine else ZERO, ZERO, other)


def op_cost(spec: OpSpec, out: Any, operands: list[Any]) -> _OpCost:
    """Symbolic cost of one op from its spec, output value and operand values (shape facts)."""
    tensors = [o for o in operands if isinstance(o, TensorShape)]
    if not isinstance(out, TensorShape) or not tensors:
        return _FREE
    x, kind = tensors[0], spec.kind
    if kind == "conv" and x.rank == out.rank:
        return _conv_cost(spec, x, out)
    if kind == "linear":
        return _linear_cost(spec, x, out)
    if kind == "matmul" and len(tensors) >= 2:
        return _OpCost(ZERO, 2 * _numel(out) * x.dims[-1], ZERO)
    if kind == "einsum":
        return _OpCost(ZERO, _einsum_flops(spec, tensors), ZERO)
    if kind == "sdpa" and len(tensors) >= 3:
        q, k, v = tensors[:3]
        scores = sympy.Mul(*q.dims[:-1]) * k.dims[-2]
        return _OpCost(ZERO, 2 * scores * (q.dims[-1] + v.dims[-1]), 5 * scores)
    if kind in ("batch_norm", "layer_norm", "group_norm"):
        return _norm_cost(spec, x, out)
    if kind in ("max_pool", "avg_pool"):
        return _OpCost(ZERO, ZERO, math.prod(spec.get("kernel")) * _numel(out))
    if kind in ("adaptive_avg_pool", "adaptive_max_pool", "reduce"):
        return _OpCost(ZERO, ZERO, _numel(x))
    if kind in OTHER_COST:
        return _OpCost(ZERO, ZERO, OTHER_COST[kind] * _numel(out))
    return _FREE


def _arg_nodes(args: Any) -> list[fx.Node]:
    """The nodes among ``args`` in argument order, repeats kept (``sdpa(q, q, q)``)."""
    if isinstance(args, fx.Node):
        return [args]
    if isinstance(args, list | tuple):
        return [n for a in args for n in _arg_nodes(a)]
    return []


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
        ctx = graph_context(gm)
        values = shapes.node_shapes
        seen: set[int] = set()
        params, flops, other = [], [], []
        nodes = [ctx.nodes[name] for name in subgraph.nodes]
        # Ops claim the parameters they read (module weights, or get_attr weights of a functional
        # conv); parameters left over (a position embedding) count as constants afterwards.
        for node in [n for n in nodes if n.op != "get_attr"] + [n for n in nodes
                                                                if n.op == "get_attr"]:
            cost = _FREE
            if node.op != "get_attr":
                operands = [values.get(a.name) for a in _arg_nodes(node.args)]
                cost = op_cost(ctx.spec(node), values.get(node.name), operands)
            flops.append(cost.flops)
            other.append(cost.other)
            params.append(self._params(gm, node, ctx.modules, cost.params, seen, shapes.bindings))
        return CostFact(sympy.Add(*params), sympy.Add(*flops), sympy.Add(*other), shapes.bindings)

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
            _warn_once(type(modules[str(node.target)]).__name__)
        return sympy.Integer(count)


def _evaluates_to(expr: sympy.Expr, bindings: Mapping[sympy.Symbol, int], value: int) -> bool:
    try:
        return evaluate_dim(expr, bindings) == value
    except (KeyError, TypeError, ValueError):
        return False


def _warn_once(what: str) -> None:
    report("cost", what, f"cost analysis: no symbolic parameter formula for {what}; counting its "
           "parameters as a constant", seen=_WARNED, stacklevel=3)
