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
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import sympy
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.diagnostics import report
from alphac.ir import Subgraph, node_map
from alphac.lattice import Lattice
from alphac.passes.analysis.mixing_boxes import float_shape
from alphac.passes.analysis.ops import OpSpec, graph_modules, op_spec, target_name
from alphac.passes.analysis.shape_dims import (
    ONE,
    SPATIAL,
    TensorShape,
    channel_first,
    channel_last,
    clear_same_memo,
    default_layout,
    dims_same,
    evaluate_dim,
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
    layouts: dict[str, str | None] = field(default_factory=dict)
    whole: dict[str, Value] | None = None  # the whole graph's values, for what varies

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


_LAYOUT_KEEPING = _PRESERVING | {"pad", "roll", "masked_fill"}
_SEARCH_DEPTH = 48


def external_layout(ctx: _Context, node: fx.Node, inside: frozenset[str] | None = None) -> str:
    """The layout of a value produced outside the subgraph ``inside`` (node names).

    Evidence comes first from the ops inside that consume it (a conv reads features at dim 1, a
    linear or layer norm last), so every block of one type labels its inputs alike whatever
    precedes it; then from the ops that produced it; else by rank (:func:`default_layout`).
    Example: swin's block input (B, 8, 8, 48), read by a LayerNorm, is ``NHWC``.
    """
    rank = tensor_rank(node) or 0
    found = _layout_from_consumers(ctx, node, rank, inside, 0)
    if found is None:
        found = _producer_layout(ctx, node, rank, 0)
    return found if found is not None and len(found) == rank else default_layout(rank)


def _first_operand(user: fx.Node) -> Any:
    return user.args[0] if user.args else next(iter(user.kwargs.values()), None)


def _consumer_says(ctx: _Context, node: fx.Node, user: fx.Node, rank: int) -> str | None:
    spec = ctx.spec(user)
    if _first_operand(user) is not node:
        return None
    if spec.kind in _CHANNEL_FIRST and rank >= 3:
        return channel_first(rank)
    if spec.kind == "linear" or (spec.kind == "layer_norm"
                                 and len(spec.get("normalized_shape") or ()) == 1):
        return channel_last(rank)
    return None


def _layout_from_consumers(ctx: _Context, node: fx.Node, rank: int,
                           inside: frozenset[str] | None, depth: int) -> str | None:
    users = [u for u in node.users if inside is None or u.name in inside]
    for user in users:  # direct evidence first, then evidence further down
        found = _consumer_says(ctx, node, user, rank)
        if found is not None:
            return found
    if depth >= _SEARCH_DEPTH:
        return None
    for user in users:
        kind = ctx.spec(user).kind
        if kind in _LAYOUT_KEEPING and tensor_rank(user) == rank:
            found = _layout_from_consumers(ctx, user, rank, inside, depth + 1)
        elif kind in ("permute", "transpose") and _first_operand(user) is node:
            out = _layout_from_consumers(ctx, user, rank, inside, depth + 1)
            found = _unpermute(ctx.spec(user), out, rank) if out is not None else None
        else:
            found = None
        if found is not None:
            return found
    return None


def _unpermute(spec: OpSpec, out: str, rank: int) -> str | None:
    """The input layout of a permute/transpose whose output has layout ``out``."""
    if len(out) != rank:
        return None
    if spec.kind == "transpose":
        order = list(range(rank))
        a, b = spec.get("dim0", 0) % rank, spec.get("dim1", 1) % rank
        order[a], order[b] = order[b], order[a]
    else:
        order = [d % rank for d in spec.get("dims") or () if isinstance(d, int)]
    if sorted(order) != list(range(rank)):
        return None
    letters = ["?"] * rank
    for k, d in enumerate(order):
        letters[d] = out[k]
    return "".join(letters)


def _producer_layout(ctx: _Context, node: fx.Node, rank: int, depth: int) -> str | None:
    """The layout the ops that produced ``node`` give it (memoized per graph), None if unknown."""
    if node.name not in ctx.layouts:
        ctx.layouts[node.name] = _layout_from_producer(ctx, node, rank, depth)
    return ctx.layouts[node.name]


def _layout_from_producer(ctx: _Context, node: fx.Node, rank: int, depth: int) -> str | None:
    if node.op in ("placeholder", "get_attr") or depth >= _SEARCH_DEPTH:
        return None
    spec = ctx.spec(node)
    if spec.kind in _CHANNEL_FIRST and rank >= 3:
        return channel_first(rank)
    if spec.kind in ("linear", "layer_norm"):
        return channel_last(rank)
    if spec.kind in _FEATURE_LAST:  # attention maps and heads: (B, heads, N, d)
        return ("N" + "?" * (rank - 3) + "LC") if rank >= 3 else default_layout(rank)
    same_rank = [a for a in node.all_input_nodes if a.op != "get_attr" and tensor_rank(a) == rank]
    if spec.kind in _LAYOUT_KEEPING and same_rank:
        decisive = [a for a in same_rank if ctx.spec(a).kind in _DECISIVE]
        return _producer_layout(ctx, (decisive or same_rank)[0], rank, depth + 1)
    if spec.kind in ("transpose", "permute", "flatten") and node.all_input_nodes:
        src = node.all_input_nodes[0]
        shape = traced_shape(src)
        src_layout = _producer_layout(ctx, src, len(shape or ()), depth + 1)
        if shape and src_layout is not None and len(src_layout) == len(shape):
            x = TensorShape(tuple(sympy.Integer(s) for s in shape), src_layout)
            out = apply_rule(spec, (x,), {}, "")
            if isinstance(out, TensorShape) and out.rank == rank:
                return out.layout
    return None


# ---- symbolization and propagation ---------------------------------------------------------------
class _Symbolizer:
    """Gives input dimensions symbols: one per (role, concrete size), numbered within a role.

    A size-1 dimension stays the constant 1 (it broadcasts) unless it is one that varies with the
    model's input: the batch always, a spatial dim where ``varies`` says so (a 1x1 map of a deep
    stage grows with the resolution; one after global pooling does not).
    """

    def __init__(self) -> None:
        self.by_role: dict[str, dict[int, sympy.Expr]] = {}
        self.bindings: dict[sympy.Symbol, int] = {}

    def dimension(self, role: str, size: int, varies: bool = False) -> sympy.Expr:
        if size == 1 and role != "N" and not (varies and role in SPATIAL):
            return ONE
        if role == "C" and size <= MAX_CONSTANT_CHANNELS:
            return sympy.Integer(size)
        table = self.by_role.setdefault(role, {})
        if size not in table:
            base = ROLE_SYMBOLS.get(role, "S")
            symbol = dim(base if not table else f"{base}{len(table)}")
            table[size] = symbol
            self.bindings[symbol] = size
        return table[size]

    def tensor(self, shape: tuple[int, ...], layout: str,
               varies: tuple[bool, ...] | None = None) -> TensorShape:
        flags = varies or (True,) * len(shape)
        dims = tuple(self.dimension(role, size, v)
                     for role, size, v in zip(layout, shape, flags, strict=True))
        return TensorShape(dims, layout)


def _varying(ctx: _Context, gm: fx.GraphModule, node: fx.Node) -> tuple[bool, ...] | None:
    """Per dim of ``node``, whether its size follows the model's input (symbolic in the whole
    graph's values); only size-1 dims ask. None: all may vary (a model input, no size 1)."""
    shape = traced_shape(node)
    if node.op == "placeholder" or 1 not in shape:
        return None
    if ctx.whole is None:
        ctx.whole = {}  # guards against re-entry while the whole graph is inferred
        ctx.whole = dict(_infer(ctx, Subgraph.whole(gm))[2])
    value = ctx.whole.get(node.name)
    if not isinstance(value, TensorShape) or value.rank != len(shape):
        return tuple(False for _ in shape)
    return tuple(bool(d.free_symbols) for d in value.dims)


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
    report("shape", what, f"shape analysis: {why} for op {what!r}; using its traced shape as "
           "constants", seen=_WARNED, stacklevel=3)


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
        inputs, bindings, env = _infer(ctx, subgraph, gm)
        outputs = tuple(env[n] for n in subgraph.outputs
                        if isinstance(env[n], TensorShape) and _is_float(ctx.nodes[n]))
        inner = {n: env[n] for n in (*subgraph.inputs, *subgraph.nodes)}
        return ShapeFact(tuple(inputs), outputs, bindings, MappingProxyType(inner))


def _infer(ctx: _Context, subgraph: Subgraph, gm: fx.GraphModule | None = None
           ) -> tuple[list[TensorShape], Mapping[sympy.Symbol, int], dict[str, Value]]:
    """Symbolize the inputs of ``subgraph``, then propagate: (float inputs, bindings, values)."""
    symbols = _Symbolizer()
    env: dict[str, Value] = {}
    inputs = []
    inside = frozenset(subgraph.nodes)
    for name in subgraph.inputs:
        node = ctx.nodes[name]
        if tensor_rank(node) is not None:
            varies = _varying(ctx, gm, node) if gm is not None else None
            env[name] = symbols.tensor(traced_shape(node), external_layout(ctx, node, inside),
                                       varies)
            if _is_float(node):
                inputs.append(env[name])
    for name in subgraph.inputs:
        if name not in env:
            env[name] = _external_value(ctx, ctx.nodes[name], env)
    bindings = MappingProxyType(symbols.bindings)
    for name in subgraph.nodes:
        env[name] = _infer_node(ctx, ctx.nodes[name], env, bindings)
    return inputs, bindings, env


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
