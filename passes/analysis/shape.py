"""Shape analysis: the symbolic shape and layout of every tensor entering and leaving a subgraph.

The input dimensions of a subgraph become symbols by their role (batch ``B``, features ``C``,
spatial ``H``, ``W``, ``D``, tokens ``N``, other ``S``), one symbol per (role, size), numbered
``C1``, ``C2``... for further sizes; size-1 dimensions and feature dims of at most 4 (image
channels) stay constants. The shapes are propagated symbolically through the subgraph by the
per-op rules of the op registry (:mod:`alphac.passes.analysis.registry`), and every result is checked against
the traced shape (``meta['tensor_meta']``) at the symbols' concrete values. An op without a rule,
or a rule that disagrees with the trace, falls back to the traced shape as constants (with one
warning per op), so the fact is always exact at the traced input.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import sympy
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.diagnostics import report
from alphac.ir import Subgraph
from alphac.lattice import Lattice
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.mixing_boxes import float_shape
from alphac.passes.analysis.registry import REGISTRY, OpKind, OpSpec, refs
from alphac.passes.analysis.shape_dims import (
    ONE,
    SPATIAL,
    TensorShape,
    channel_first,
    channel_last,
    default_layout,
    dims_same,
    evaluate_dim,
)
from alphac.properties import INFEASIBLE, Property
from alphac.symbols import dim

__all__ = [
    "ROLE_SYMBOLS",
    "SHAPE_RULES",
    "ShapeAnalysis",
    "ShapeFact",
    "ShapeLattice",
    "ShapeProperty",
    "TensorShape",
    "evaluate_dim",
    "traced_shape",
]

Value = Any  # TensorShape | sympy.Expr | tuple[Value, ...] | None

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


# ---- the per-graph index and the structural memo of rule results --------------------------------
def graph_context(gm: fx.GraphModule, am: AnalysisManager | None = None) -> GraphIndex:
    """The per-graph index of ``gm`` (:func:`~alphac.passes.analysis.index.graph_index`)."""
    return graph_index(gm, am)


#: The manager's memo table (:meth:`AnalysisManager.table`) of shape rule results: (spec, operand
#: values) -> value. Keyed by values alone, so every block and graph the manager sees shares it,
#: and program inference (which runs the same rules) reads it too.
SHAPE_RULES = "shape.rules"


def _memo_key(value: Any) -> Any:
    # Structural (identical expressions), never semantic: a cache, not a comparison.
    if isinstance(value, TensorShape):
        return ("T", value.dims, value.layout)
    if isinstance(value, tuple | list):
        return tuple(_memo_key(v) for v in value)
    return (type(value).__name__, value)


def _shape_rule(kind: OpKind, spec: OpSpec, ins: tuple[Value, ...], memo: dict) -> Value:
    """``kind.shape(spec, ins)``, memoized in ``memo`` (a manager's :data:`SHAPE_RULES` table)
    by spec and operand values."""
    key = (spec, _memo_key(ins))
    try:
        hit = memo.get(key, _MISSING)
    except TypeError:  # an unhashable param: no memo
        return kind.shape(spec, ins)
    if hit is _MISSING:
        hit = memo[key] = kind.shape(spec, ins)
    return hit


_MISSING = object()


def _rule_value(index: GraphIndex, node: fx.Node, env: Mapping[str, Value]) -> Value:
    """The node's symbolic value by its kind's shape rule, operand values read from ``env``
    (an operand missing there is read from its traced shape, as constants)."""
    op = index.op(node)
    kind = REGISTRY.get(op.spec.kind)
    if kind is None:
        return None  # an unknown op: the analysis reports it and uses the traced shape
    ins = tuple(env[o.name] if o.name in env else _constant(traced_shape(o))
                for o in op.operands)
    return _shape_rule(kind, op.spec, ins, index.shared(SHAPE_RULES))


def _layout_effect(index: GraphIndex, node: fx.Node) -> tuple[str | None, Any]:
    """The node's layout effect (:data:`~alphac.passes.analysis.registry.core.LAYOUTS`) and
    its spec."""
    op = index.op(node)
    kind = REGISTRY.get(op.spec.kind)
    return (kind.layout if kind is not None else None), op.spec


def _op_name(spec: Any) -> str:
    return str(spec.get("target", spec.kind)) if spec.kind == "unknown" else spec.kind




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


_SEARCH_DEPTH = 48
#: Distinct letters to see where a permuting op moves each dim (its shape rule moves letters).
_PROBE = "abcdefghijklmnopqrstuvwxyz"
_DECISIVE = frozenset({"channel_first", "feature_last", "attention"})


def external_layout(index: GraphIndex, node: fx.Node, inside: frozenset[str] | None = None
                    ) -> str:
    """The layout of a value produced outside the subgraph ``inside`` (node names).

    Evidence comes first from the ops inside that consume it (a conv reads features at dim 1, a
    linear or layer norm last), so every block of one type labels its inputs alike whatever
    precedes it; then from the ops that produced it; else by rank (:func:`default_layout`).
    The evidence is each op kind's layout effect (``OpKind.layout``).
    Example: swin's block input (B, 8, 8, 48), read by a LayerNorm, is ``NHWC``.
    """
    rank = tensor_rank(node) or 0
    found = _layout_from_consumers(index, node, rank, inside, 0)
    if found is None:
        found = _producer_layout(index, node, rank, 0)
    return found if found is not None and len(found) == rank else default_layout(rank)


def _reads_first(index: GraphIndex, user: fx.Node, node: fx.Node) -> bool:
    """Whether ``node`` is ``user``'s data input: its operand 0, held by no param."""
    op = index.op(user)
    return op.operands[:1] == (node,) and 0 not in refs(tuple(v for _, v in op.spec.params))


def _consumer_says(index: GraphIndex, node: fx.Node, user: fx.Node, rank: int) -> str | None:
    effect, spec = _layout_effect(index, user)
    if effect not in ("channel_first", "feature_last") or not _reads_first(index, user, node):
        return None
    if effect == "channel_first":
        return channel_first(rank) if rank >= 3 else None
    normalized = spec.get("normalized_shape")  # a norm over several dims tells nothing
    return channel_last(rank) if not isinstance(normalized, tuple) or len(normalized) == 1 else None


def _layout_from_consumers(index: GraphIndex, node: fx.Node, rank: int,
                           inside: frozenset[str] | None, depth: int) -> str | None:
    users = [u for u in node.users if inside is None or u.name in inside]
    for user in users:  # direct evidence first, then evidence further down
        found = _consumer_says(index, node, user, rank)
        if found is not None:
            return found
    if depth >= _SEARCH_DEPTH:
        return None
    for user in users:
        effect = _layout_effect(index, user)[0]
        found = None
        if effect == "preserve" and tensor_rank(user) == rank:
            found = _layout_from_consumers(index, user, rank, inside, depth + 1)
        elif effect == "permute" and _reads_first(index, user, node):
            # a flatten changes the rank: its consumers speak of its own rank, not ours
            out = _layout_from_consumers(index, user, tensor_rank(user) or 0, inside, depth + 1)
            found = _unpermute(index, user, node, out, rank) if out is not None else None
        if found is not None:
            return found
    return None


def _unpermute(index: GraphIndex, user: fx.Node, node: fx.Node, out: str, rank: int
               ) -> str | None:
    """The layout of ``node`` when ``user`` (a permuting op of it) has layout ``out``: the shape
    rule, run on distinct letters, tells where each dim goes."""
    shape = traced_shape(node)
    if len(out) != rank or rank > len(_PROBE) or not isinstance(shape, tuple):
        return None
    probe = TensorShape(tuple(sympy.Integer(s) for s in shape), _PROBE[:rank])
    moved = _rule_value(index, user, {node.name: probe})
    if not isinstance(moved, TensorShape) or sorted(moved.layout) != sorted(_PROBE[:rank]):
        return None
    letters = ["?"] * rank
    for k, letter in enumerate(moved.layout):
        letters[_PROBE.index(letter)] = out[k]
    return "".join(letters)


def _producer_layout(index: GraphIndex, node: fx.Node, rank: int, depth: int) -> str | None:
    """The layout the ops that produced ``node`` give it (memoized per graph), None if unknown."""
    if node.name not in index.layouts:
        index.layouts[node.name] = _layout_from_producer(index, node, rank, depth)
    return index.layouts[node.name]


def _layout_from_producer(index: GraphIndex, node: fx.Node, rank: int, depth: int) -> str | None:
    if node.op in ("placeholder", "get_attr") or depth >= _SEARCH_DEPTH:
        return None
    effect = _layout_effect(index, node)[0]
    if effect == "channel_first":
        return channel_first(rank) if rank >= 3 else None
    if effect == "feature_last":
        return channel_last(rank)
    if effect == "attention":  # attention maps and heads: (B, heads, N, d)
        return ("N" + "?" * (rank - 3) + "LC") if rank >= 3 else default_layout(rank)
    operands = index.op(node).operands
    if effect == "preserve":
        same_rank = [a for a in operands if a.op != "get_attr" and tensor_rank(a) == rank]
        decisive = [a for a in same_rank if _layout_effect(index, a)[0] in _DECISIVE]
        pick = (decisive or same_rank)[:1]
        return _producer_layout(index, pick[0], rank, depth + 1) if pick else None
    if effect == "permute" and operands:
        return _permuted_layout(index, node, operands[0], rank, depth)
    return None


def _permuted_layout(index: GraphIndex, node: fx.Node, src: fx.Node, rank: int, depth: int
                     ) -> str | None:
    """The layout a permuting op gives ``node`` from its source's producer layout."""
    shape = traced_shape(src)
    src_layout = _producer_layout(index, src, len(shape or ()), depth + 1)
    if not shape or src_layout is None or len(src_layout) != len(shape):
        return None
    x = TensorShape(tuple(sympy.Integer(s) for s in shape), src_layout)
    out = _rule_value(index, node, {src.name: x})
    return out.layout if isinstance(out, TensorShape) and out.rank == rank else None


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


def _varying(index: GraphIndex, gm: fx.GraphModule, node: fx.Node) -> tuple[bool, ...] | None:
    """Per dim of ``node``, whether its size follows the model's input (symbolic in the whole
    graph's values); only size-1 dims ask. None: all may vary (a model input, no size 1)."""
    shape = traced_shape(node)
    if node.op == "placeholder" or 1 not in shape:
        return None
    if index.whole is None:
        index.whole = {}  # guards against re-entry while the whole graph is inferred
        index.whole = dict(_infer(index, Subgraph.whole(gm))[2])
    value = index.whole.get(node.name)
    if not isinstance(value, TensorShape) or value.rank != len(shape):
        return tuple(False for _ in shape)
    return tuple(bool(d.free_symbols) for d in value.dims)


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


def _infer_node(index: GraphIndex, node: fx.Node, env: dict[str, Value],
                bindings: Mapping[sympy.Symbol, int]) -> Value:
    traced = traced_shape(node)
    if node.op == "get_attr":
        return _constant(traced, "?" * len(traced or ()))
    value = _rule_value(index, node, env)
    if traced is None:
        return value  # sizes and other non-tensor values: nothing to check against
    if value is not None and _agrees(value, traced, bindings):
        return value
    _warn_once(_op_name(index.op(node).spec),
               "no shape rule" if value is None else "the rule disagrees with the trace")
    return _constant(traced)


def _external_value(index: GraphIndex, node: fx.Node, env: dict[str, Value]) -> Value:
    """A non-tensor input (a size computed outside): symbolic when its source tensors are known."""
    if node.op in ("call_function", "call_method") and node.all_input_nodes:
        local = dict(env)
        for src in node.all_input_nodes:
            if src.name not in local:  # a tensor not in the subgraph: its traced size, a constant
                local[src.name] = (_constant(traced_shape(src)) if tensor_rank(src) is not None
                                   else _external_value(index, src, env))
        value = _rule_value(index, node, local)
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
        index = graph_index(gm, am)
        inputs, bindings, env = _infer(index, subgraph, gm)
        outputs = tuple(env[n] for n in subgraph.outputs
                        if isinstance(env[n], TensorShape) and _is_float(index.nodes[n]))
        inner = {n: env[n] for n in (*subgraph.inputs, *subgraph.nodes)}
        return ShapeFact(tuple(inputs), outputs, bindings, MappingProxyType(inner))


def _infer(index: GraphIndex, subgraph: Subgraph, gm: fx.GraphModule | None = None
           ) -> tuple[list[TensorShape], Mapping[sympy.Symbol, int], dict[str, Value]]:
    """Symbolize the inputs of ``subgraph``, then propagate: (float inputs, bindings, values)."""
    symbols = _Symbolizer()
    env: dict[str, Value] = {}
    inputs = []
    inside = frozenset(subgraph.nodes)
    for name in subgraph.inputs:
        node = index.nodes[name]
        if tensor_rank(node) is not None:
            varies = _varying(index, gm, node) if gm is not None else None
            env[name] = symbols.tensor(traced_shape(node), external_layout(index, node, inside),
                                       varies)
            if _is_float(node):
                inputs.append(env[name])
    for name in subgraph.inputs:
        if name not in env:
            env[name] = _external_value(index, index.nodes[name], env)
    bindings = MappingProxyType(symbols.bindings)
    for name in subgraph.nodes:
        env[name] = _infer_node(index, index.nodes[name], env, bindings)
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
