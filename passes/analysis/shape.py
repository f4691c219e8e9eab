"""Shape analysis: the symbolic shape and layout of every tensor entering and leaving a subgraph.

The input dimensions of a subgraph become symbols by their role (batch ``B``, features ``C``,
spatial ``H``, ``W``, ``D``, tokens ``N``, other ``S``), one symbol per (role, size), numbered
``C1``, ``C2``... for further sizes; size-1 dimensions and feature dims of at most 4 (image
channels) stay constants. The shapes are propagated symbolically through the subgraph by the
per-op rules of :mod:`alphac.passes.analysis.shape_rules`, and every result is checked against
the traced shape (``meta['tensor_meta']``) at the symbols' concrete values. An op without a rule,
or a rule that disagrees with the trace, falls back to the traced shape as constants (with one
warning per op), so the fact is always exact at the traced input.
"""

from __future__ import annotations

import random
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import sympy
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph, node_map
from alphac.lattice import Lattice
from alphac.passes.analysis.mixing_boxes import float_shape
from alphac.passes.analysis.ops import OpSpec, graph_modules, op_spec, target_name
from alphac.passes.analysis.shape_dims import (
    ONE,
    SPATIAL,
    TensorShape,
    channel_first,
    clear_same_memo,
    default_layout,
    dims_same,
    evaluate_dim,
    feature_last,
)
from alphac.passes.analysis.shape_rules import Value, apply_rule, clear_rule_memo
from alphac.properties import INFEASIBLE, Property
from alphac.rewriter import graph_version
from alphac.symbols import dim

__all__ = [
    "ROLE_SYMBOLS",
    "ShapeAnalysis",
    "ShapeFact",
    "ShapeLattice",
    "ShapeProperty",
    "TensorShape",
    "clear_caches",
    "evaluate_dim",
    "traced_shape",
]

#: Layout letter -> name of the symbol for an input dimension in that role.
ROLE_SYMBOLS = {"N": "B", "C": "C", "H": "H", "W": "W", "D": "D", "L": "N", "?": "S"}
#: Feature dims this small are image channels (grey, RGB, RGBA), not a width: kept constant.
MAX_CONSTANT_CHANNELS = 4


@dataclass(frozen=True, eq=False)
class ShapeFact:
    """Symbolic shapes of a subgraph's float tensor inputs and outputs (in ``Subgraph`` order,
    numbered like :func:`~alphac.passes.analysis.mixing.tensor_inputs`).

    ``bindings`` gives each symbol's value at the traced input; ``node_shapes`` the symbolic value
    of every input and inner node by name (for the cost analysis and for instantiating widths).
    Equality and hash use ``inputs`` and ``outputs`` only: two blocks of one type at different
    stages have equal facts. Example: a ResNet BasicBlock at stride 1 has inputs
    ``((B, C, H, W) NCHW,)`` and the same outputs, with bindings ``{B: 2, C: 64, H: 56, W: 56}``
    in stage 1.
    """

    inputs: tuple[TensorShape, ...]
    outputs: tuple[TensorShape, ...]
    bindings: Mapping[sympy.Symbol, int] = field(default_factory=lambda: MappingProxyType({}))
    node_shapes: Mapping[str, Value] = field(default_factory=lambda: MappingProxyType({}))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShapeFact):
            return NotImplemented
        return self.inputs == other.inputs and self.outputs == other.outputs

    def __hash__(self) -> int:
        return hash((self.inputs, self.outputs))

    def concrete(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """``{"inputs": ..., "outputs": ...}`` as integer shapes at the bindings."""
        def ints(shapes: tuple[TensorShape, ...]) -> tuple[tuple[int, ...], ...]:
            return tuple(tuple(evaluate_dim(d, self.bindings) for d in t.dims) for t in shapes)

        return {"inputs": ints(self.inputs), "outputs": ints(self.outputs)}


# ---- per-graph context (node map, modules, op specs), rebuilt when the graph version changes ----
@dataclass
class _Context:
    nodes: dict[str, fx.Node]
    modules: dict[str, Any]
    specs: dict[str, OpSpec] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)

    def spec(self, node: fx.Node) -> OpSpec:
        if node.name not in self.specs:
            self.specs[node.name] = op_spec(node, self.modules)
        return self.specs[node.name]


_CONTEXTS: weakref.WeakKeyDictionary[fx.GraphModule, tuple[tuple[int, int], _Context]] = (
    weakref.WeakKeyDictionary()
)


def graph_context(gm: fx.GraphModule) -> _Context:
    """Node map, modules and memoized op specs of ``gm`` at its current version."""
    version = (graph_version(gm), len(gm.graph.nodes))
    hit = _CONTEXTS.get(gm)
    if hit is None or hit[0] != version:
        ctx = _Context(node_map(gm), graph_modules(gm))
        _CONTEXTS[gm] = (version, ctx)
        return ctx
    return hit[1]


def clear_caches() -> None:
    """Empty the shape analysis' memo tables (rule results, comparisons, per-graph contexts).

    Only benchmarks need this, to time a cold start; results never depend on the memo.
    """
    clear_rule_memo()
    clear_same_memo()
    _CONTEXTS.clear()


def traced_shape(node: fx.Node) -> Any:
    """The traced shape of ``node``: a tuple of ints, a tuple of those (tuple outputs), or None."""
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        return tuple(int(s) for s in meta.shape)
    if isinstance(meta, tuple | list) and all(hasattr(m, "shape") for m in meta):
        return tuple(tuple(int(s) for s in m.shape) for m in meta)
    return None


def tensor_rank(node: fx.Node) -> int | None:
    """The rank of ``node``'s value when it is one tensor, else None."""
    shape = traced_shape(node)
    if shape is None or (shape and not isinstance(shape[0], int)):
        return None
    return len(shape)


_CHANNEL_FIRST = frozenset({"conv", "batch_norm", "group_norm", "max_pool", "avg_pool",
                            "adaptive_avg_pool", "adaptive_max_pool"})
_FEATURE_LAST = frozenset({"linear", "layer_norm", "matmul", "sdpa"})
_DECISIVE = _CHANNEL_FIRST | _FEATURE_LAST
_PRESERVING = frozenset({"relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish",
                         "hardsigmoid", "leaky_relu", "elu", "softmax", "log_softmax", "dropout",
                         "identity", "neg", "add", "sub", "mul", "div", "cat"})


def external_layout(ctx: _Context, node: fx.Node, depth: int = 0) -> str:
    """The layout of a value produced outside the subgraph, from the ops that produced it."""
    if node.name in ctx.layouts:
        return ctx.layouts[node.name]
    layout = _layout_from_producer(ctx, node, tensor_rank(node) or 0, depth)
    ctx.layouts[node.name] = layout
    return layout


def _layout_from_producer(ctx: _Context, node: fx.Node, rank: int, depth: int) -> str:
    if node.op != "placeholder" and node.op != "get_attr" and depth < 48:
        spec = ctx.spec(node)
        if spec.kind in _CHANNEL_FIRST and rank >= 3:
            return channel_first(rank)
        if spec.kind in _FEATURE_LAST:
            return feature_last(default_layout(rank))
        same_rank = [a for a in node.all_input_nodes
                     if a.op != "get_attr" and tensor_rank(a) == rank]
        if spec.kind in _PRESERVING and same_rank:
            decisive = [a for a in same_rank if ctx.spec(a).kind in _DECISIVE]
            return external_layout(ctx, (decisive or same_rank)[0], depth + 1)
        if spec.kind in ("transpose", "permute", "flatten") and node.all_input_nodes:
            src = node.all_input_nodes[0]
            src_layout = external_layout(ctx, src, depth + 1)
            shape = traced_shape(src)
            if shape and len(src_layout) == len(shape):
                x = TensorShape(tuple(sympy.Integer(s) for s in shape), src_layout)
                out = apply_rule(spec, (x,), {}, "")
                if isinstance(out, TensorShape) and out.rank == rank:
                    return out.layout
    return default_layout(rank)


# ---- symbolization and propagation ---------------------------------------------------------------
class _Symbolizer:
    """Gives input dimensions symbols: one per (role, concrete size), numbered within a role."""

    def __init__(self) -> None:
        self.by_role: dict[str, dict[int, sympy.Expr]] = {}
        self.bindings: dict[sympy.Symbol, int] = {}

    def dimension(self, role: str, size: int) -> sympy.Expr:
        if size == 1 and role != "N":
            return ONE  # a size-1 dimension is degenerate (it broadcasts); keep it constant
        if role == "C" and size <= MAX_CONSTANT_CHANNELS:
            return sympy.Integer(size)
        table = self.by_role.setdefault(role, {})
        if size not in table:
            base = ROLE_SYMBOLS.get(role, "S")
            symbol = dim(base if not table else f"{base}{len(table)}")
            table[size] = symbol
            self.bindings[symbol] = size
        return table[size]

    def tensor(self, shape: tuple[int, ...], layout: str) -> TensorShape:
        dims = tuple(self.dimension(role, size) for role, size in zip(layout, shape, strict=True))
        return TensorShape(dims, layout)


def _freeze(value: Any, env: dict[str, Value]) -> Any:
    if isinstance(value, fx.Node):
        return env.get(value.name)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, env) for v in value)
    if isinstance(value, slice):
        return ("slice", _freeze(value.start, env), _freeze(value.stop, env),
                _freeze(value.step, env))
    if value is Ellipsis:
        return "..."
    if isinstance(value, dict):
        return {k: _freeze(v, env) for k, v in value.items()}
    return value


_WARNED: set[str] = set()


def _warn_once(what: str, why: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        warnings.warn(f"shape analysis: {why} for op {what!r}; using its traced shape as "
                      "constants", stacklevel=3)


def _constant(shape: Any, layout: str | None = None) -> Value:
    if shape is None:
        return None
    if shape and not isinstance(shape[0], int):
        return tuple(_constant(s) for s in shape)
    dims = tuple(sympy.Integer(s) for s in shape)
    return TensorShape(dims, layout if layout and len(layout) == len(dims) else
                       default_layout(len(dims)))


def _agrees(value: Value, traced: Any, bindings: Mapping[sympy.Symbol, int]) -> bool:
    if isinstance(value, TensorShape):
        if not isinstance(traced, tuple) or len(traced) != value.rank:
            return False
        try:
            return all(evaluate_dim(d, bindings) == t for d, t in zip(value.dims, traced,
                                                                      strict=True))
        except (KeyError, TypeError, ValueError):
            return False
    if isinstance(value, tuple) and isinstance(traced, tuple) and len(value) == len(traced):
        return all(_agrees(v, t, bindings) for v, t in zip(value, traced, strict=True))
    return False


def _infer_node(ctx: _Context, node: fx.Node, env: dict[str, Value],
                bindings: Mapping[sympy.Symbol, int]) -> Value:
    traced = traced_shape(node)
    if node.op == "get_attr":
        return _constant(traced, "?" * len(traced or ()))
    spec = ctx.spec(node)
    args = _freeze(node.args, env)
    kwargs = _freeze(dict(node.kwargs), env)
    value = apply_rule(spec, args, kwargs, target_name(node))
    if traced is None:
        return value  # sizes and other non-tensor values: nothing to check against
    if value is not None and _agrees(value, traced, bindings):
        return value
    what = spec.get("target", spec.kind) if spec.kind == "unknown" else spec.kind
    _warn_once(str(what), "no shape rule" if value is None else "the rule disagrees with the trace")
    return _constant(traced)


def _external_value(ctx: _Context, node: fx.Node, env: dict[str, Value]) -> Value:
    """A non-tensor input (a size computed outside): symbolic when its source tensor is known."""
    if node.op in ("call_function", "call_method") and node.all_input_nodes:
        src = node.all_input_nodes[0]
        local = dict(env)
        if src.name not in local:  # a tensor not in the subgraph: its traced size, a constant
            rank = tensor_rank(src)
            local[src.name] = (_constant(traced_shape(src)) if rank is not None
                               else _external_value(ctx, src, env))
        value = apply_rule(ctx.spec(node), _freeze(node.args, local),
                           _freeze(dict(node.kwargs), local), target_name(node))
        if value is not None:
            return value
    example = node.meta.get("val", node.meta.get("example_value"))
    return sympy.Integer(example) if isinstance(example, int) else None


def _is_float(node: fx.Node) -> bool:
    # Only floating-point tensors are numbered inputs/outputs, as in mixing.tensor_inputs.
    return float_shape(node) is not None


@dataclass(frozen=True)
class ShapeAnalysis:
    """Infer the symbolic shapes of a subgraph's tensor inputs and outputs.

    Pre: every node of ``gm`` carries ``meta['tensor_meta']`` (``alphac.frontends.load`` does it).
    Post: a :class:`ShapeFact` whose shapes, evaluated at its bindings, equal the traced shapes.
    Example: the body of a stride-2 ResNet BasicBlock with input ``(B, C, H, W)`` has output
    ``(B, 2*C, floor(H/2 - 1/2) + 1, floor(W/2 - 1/2) + 1)``.
    """

    name: ClassVar[str] = "shape"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> ShapeFact:
        ctx = graph_context(gm)
        symbols = _Symbolizer()
        env: dict[str, Value] = {}
        inputs = []
        for name in subgraph.inputs:
            node = ctx.nodes[name]
            if tensor_rank(node) is not None:
                env[name] = symbols.tensor(traced_shape(node), external_layout(ctx, node))
                if _is_float(node):
                    inputs.append(env[name])
        for name in subgraph.inputs:
            if name not in env:
                env[name] = _external_value(ctx, ctx.nodes[name], env)
        bindings = MappingProxyType(symbols.bindings)
        for name in subgraph.nodes:
            env[name] = _infer_node(ctx, ctx.nodes[name], env, bindings)
        outputs = tuple(env[n] for n in subgraph.outputs
                        if isinstance(env[n], TensorShape) and _is_float(ctx.nodes[n]))
        inner = {n: env[n] for n in (*subgraph.inputs, *subgraph.nodes)}
        return ShapeFact(tuple(inputs), outputs, bindings, MappingProxyType(inner))


# ---- lattice and property ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Extreme:
    name: str

    def __repr__(self) -> str:
        return self.name


ShapeValue = ShapeFact | _Extreme


class ShapeLattice(Lattice[ShapeValue]):
    """The flat lattice of shapes: ``BOTTOM`` < every exact shape fact < ``TOP``.

    ``a <= b`` reads "b is at least as strong": only equal shapes are comparable. Examples: with
    ``S1`` = ``(B, C, H, W) -> (B, C, H, W)`` and ``S2`` = ``(B, C, H, W) -> (B, 2*C, H, W)``,
    ``join(S1, S1) == S1`` and ``meet(S1, BOTTOM) == BOTTOM``; ``join(S1, S2) == TOP`` (no shape
    is both) and ``meet(S1, S2) == BOTTOM``.
    """

    BOTTOM = _Extreme("BOTTOM")
    TOP = _Extreme("TOP")

    def bottom(self) -> ShapeValue:
        return self.BOTTOM

    def top(self) -> ShapeValue:
        return self.TOP

    def join(self, a: ShapeValue, b: ShapeValue) -> ShapeValue:
        if a == self.BOTTOM or a == b:
            return b
        if b == self.BOTTOM:
            return a
        return self.TOP

    def meet(self, a: ShapeValue, b: ShapeValue) -> ShapeValue:
        if a == self.TOP or a == b:
            return b
        if b == self.TOP:
            return a
        return self.BOTTOM


class ShapeProperty(Property[ShapeValue]):
    """Shape as a hard constraint (ALGORITHM.md 2.1): exact match wanted, upsampling impossible.

    ``distance(target, candidate)`` is :data:`~alphac.properties.INFEASIBLE` when the tensor count,
    a rank or a batch size differ, or when a candidate spatial dimension is smaller than the
    target's at the target's bindings (only down-sampling is available: a valid window of kernel
    ``k`` and stride ``s`` reaches any smaller size); else the fraction of mismatched dimensions
    over all inputs and outputs; 0 iff every dimension matches. ``mutate`` returns its argument.
    Example: target ``(B, C, H, W)``, candidate ``(B, 2*C, H, W)`` -> 0.25; candidate
    ``(B, C, floor(H/2 - 1/2) + 1, W)`` as target and ``(B, C, H, W)`` as candidate -> 0.25, the
    other way round -> INFEASIBLE.
    """

    name = "shape"
    lattice = ShapeLattice()

    def infer(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> ShapeFact:
        return am.get(ShapeAnalysis(), gm, subgraph)

    def distance(self, target: ShapeValue, candidate: ShapeValue) -> float:
        if not isinstance(target, ShapeFact) or not isinstance(candidate, ShapeFact):
            return 0.0 if target == candidate or target == ShapeLattice.BOTTOM else INFEASIBLE
        if (len(target.inputs), len(target.outputs)) != (len(candidate.inputs),
                                                         len(candidate.outputs)):
            return INFEASIBLE
        pairs = [*zip(target.inputs, candidate.inputs, strict=True),
                 *zip(target.outputs, candidate.outputs, strict=True)]
        values = {**candidate.bindings, **target.bindings}
        total = mismatched = 0
        for t, c in pairs:
            verdict = _compare(t, c, values)
            if verdict is None:
                return INFEASIBLE
            total += t.rank
            mismatched += verdict
        return mismatched / total if total else 0.0

    def mutate(self, value: ShapeValue, rng: random.Random,
               params: Mapping[str, Any]) -> ShapeValue:
        return value  # shape is a hard constraint: never perturbed


def _value(expr: sympy.Expr, values: Mapping[sympy.Symbol, int]) -> int | None:
    try:
        return evaluate_dim(expr, values)
    except (KeyError, TypeError, ValueError):
        return None


def _compare(t: TensorShape, c: TensorShape, values: Mapping[sympy.Symbol, int]) -> int | None:
    """Mismatched dimensions of candidate ``c`` against target ``t``; None when infeasible."""
    if t.rank != c.rank:
        return None
    mismatched = 0
    for i, (td, cd) in enumerate(zip(t.dims, c.dims, strict=True)):
        tv, cv = _value(td, values), _value(cd, values)
        known_apart = tv is not None and cv is not None and tv != cv
        if not known_apart and dims_same(td, cd):
            continue
        role = t.layout[i]
        if role == "N" or (i == 0 and "N" not in t.layout):
            return None  # the batch is never changed by a subgraph
        if role in SPATIAL and tv is not None and cv is not None and cv < tv:
            return None  # would need up-sampling
        mismatched += 1
    return mismatched
