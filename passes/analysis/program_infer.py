"""Property inference on (program, context), with no GraphModule, and lifting fx subgraphs.

A :class:`Context` binds a :class:`~alphac.passes.analysis.program.Program`'s inputs to the
symbolic values of one block instance (a :class:`~alphac.passes.analysis.shape.ShapeFact`'s
inputs and bindings). :func:`infer` gives the same facts, with the same types and numbering, as
the fx analyses give on a subgraph: :class:`ShapeFact`, :class:`DepthFact`, :class:`MixingFact`
(exact at the context's concrete shapes, through the pull-back that
:func:`~alphac.passes.analysis.mixing.mixing_fact` shares with the fx path), :class:`CostFact`
and a fingerprint; so the properties' ``distance`` functions apply unchanged.

Each op runs its registry rules on its *concrete* spec (widths substituted at the bindings,
:func:`~alphac.passes.analysis.program.substitute`) and the symbolic operand values. The state
after each op (values, depth runs, cost terms, hashes) is memoised per (prefix, context) in the
given :class:`~alphac.analysis.AnalysisManager`'s tables (a fresh manager when none is given): a
program that appends one op to a prefix inferred through the same manager costs that op's shape,
depth and cost rules; the mixing pull-back walks the whole program (its rules are memoised by spec
and shapes, in the same manager).

:func:`lift` turns a subgraph of a traced model into ``(program, context)``: the subgraph's inputs,
its nodes normalised (``get_attr`` constants as ops of kind ``get_attr`` whose ``source`` is the
attribute; a module call's ``source`` is its target, a function or method call's its node name, so
splicing it back unchanged keeps the call as written), and widths as expressions in the input's
symbols. Example::

    am = AnalysisManager()
    program, ctx = lift(gm, block.subgraph(gm), am)
    facts = infer(program, ctx, am)       # == the fx analyses of that subgraph
    infer(program, Context.of(other_fact, block_inputs), am).cost.params   # another instance
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import sympy
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.passes.analysis import shape as shape_mod
from alphac.passes.analysis.cost import CostFact, _node_cost, cost_terms
from alphac.passes.analysis.cost import _warn_once as _warn_cost
from alphac.passes.analysis.depth import DepthFact, _step, depth_class
from alphac.passes.analysis.fingerprint import _digest, _params_text
from alphac.passes.analysis.index import graph_index
from alphac.passes.analysis.mixing import (
    MixingFact,
    mixing_fact,
    renamed,
    top_rule,
    warn_unknown,
)
from alphac.passes.analysis.mixing_boxes import NO_PULLS, Rule
from alphac.passes.analysis.program import Program, ProgramOp, substitute
from alphac.passes.analysis.registry import REGISTRY, OpCost, OpSpec
from alphac.passes.analysis.registry.common import FREE
from alphac.passes.analysis.shape import (
    SHAPE_RULES,
    ShapeAnalysis,
    ShapeFact,
    TensorShape,
    traced_shape,
)
from alphac.passes.analysis.shape_dims import evaluate_dim

__all__ = [
    "Context",
    "ProgramFacts",
    "cost_of",
    "depth_of",
    "fingerprint_of",
    "infer",
    "lift",
    "mixing_of",
    "shape_of",
    "value_shapes",
]

Value = Any


@dataclass(frozen=True, eq=False)
class Context:
    """The values of a program's inputs in one block instance, and the symbols' values there.

    ``values[i]`` is input i's symbolic value (a :class:`TensorShape`, a size expression, a tuple,
    None); ``floats[i]`` whether it is a float tensor (a tuple of flags for a tuple value): only
    float tensors are numbered inputs and carry derivatives, as in the fx analyses. Equality and
    hash are structural (identical expressions), so a context is a memo key.
    Example: ``Context.of(shape_fact)`` for a ResNet block ``((B, C, H, W) NCHW,)`` at
    ``{B: 2, C: 64, H: 8, W: 8}``.
    """

    values: tuple[Value, ...]
    floats: tuple[Any, ...]
    bindings: Mapping[sympy.Symbol, int] = field(default_factory=lambda: MappingProxyType({}))
    _key: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bindings", MappingProxyType(dict(self.bindings)))
        items = tuple(sorted(self.bindings.items(), key=lambda kv: str(kv[0])))
        object.__setattr__(self, "_key", (shape_mod._memo_key(self.values), self.floats, items))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Context) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @classmethod
    def of(cls, fact: ShapeFact, names: Sequence[str] | None = None,
           floats: Sequence[Any] | None = None) -> Context:
        """The context of ``fact``'s float tensor inputs, or of the inputs ``names`` (read from
        ``fact.node_shapes``; ``floats`` defaults to True for every tensor)."""
        values = tuple(fact.inputs) if names is None else tuple(fact.node_shapes[n] for n in names)
        if floats is None:
            floats = tuple(isinstance(v, TensorShape) for v in values)
        return cls(values, tuple(floats), fact.bindings)


@dataclass(frozen=True)
class ProgramFacts:
    """Every property of a program in a context (same types as the fx analyses' facts)."""

    shape: ShapeFact
    depth: DepthFact
    mixing: MixingFact
    cost: CostFact
    fingerprint: str


@dataclass(frozen=True, eq=False)
class _State:
    """What inference knows after a prefix: per value its symbolic value, float flags, concrete
    shape, depth runs and hash; per op its concrete spec and cost term."""

    token: int
    values: tuple[Value, ...]
    floats: tuple[Any, ...]
    concrete: tuple[Any, ...]
    runs: tuple[Mapping[int, tuple[int, int, int]], ...]
    hashes: tuple[str, ...]
    specs: tuple[OpSpec, ...] = ()
    costs: tuple[OpCost, ...] = ()
    constants: frozenset[int] = frozenset()


#: Unique state ids (a prefix memo key): a counter, not a cache, so process-wide.
_TOKENS = itertools.count()
#: The manager's memo tables (:meth:`AnalysisManager.table`): (parent state token, op) or
#: (inputs, context) -> state; (concrete spec, concrete operand values, concrete value) -> mixing
#: rule by operand index.
STATES, MIXING_RULES = "program.states", "program.mixing_rules"
#: How many op transfer steps ran (tests check the prefix memo with it).
STEPS = [0]


def _manager(am: AnalysisManager | None) -> AnalysisManager:
    return am if am is not None else AnalysisManager()


def _carries(flags: Any) -> bool:
    return flags is True or (isinstance(flags, tuple) and any(f is True for f in flags))


def _concrete(value: Value, flags: Any, bindings: Mapping[sympy.Symbol, int]) -> Any:
    """The mixing rules' value: a float tensor's int shape, a tuple of element shapes, else None."""
    try:
        if flags is True and isinstance(value, TensorShape):
            return tuple(evaluate_dim(d, bindings) for d in value.dims)
        if isinstance(flags, tuple) and isinstance(value, tuple) and len(value) == len(flags):
            return tuple(_concrete(v, f, bindings) if f is True else None
                         for v, f in zip(value, flags, strict=True))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _root(program: Program, ctx: Context, memo: dict) -> _State:
    key = (program.inputs, ctx)
    state = memo.get(key)
    if state is None:
        n = len(program.inputs)
        if len(ctx.values) != n:
            raise ValueError(f"a context of {len(ctx.values)} values cannot bind a program of "
                             f"{n} inputs")
        floats = [i for i in range(n) if ctx.floats[i] is True]
        state = memo[key] = _State(
            next(_TOKENS), ctx.values, ctx.floats,
            tuple(_concrete(v, f, ctx.bindings) for v, f in zip(ctx.values, ctx.floats,
                                                                  strict=True)),
            tuple({floats.index(i): (-1, -1, 0)} if i in floats else {} for i in range(n)),
            tuple(_digest(f"input:{i}") for i in range(n)))
    return state


def _state(program: Program, ctx: Context, am: AnalysisManager) -> _State:
    """The state after all of ``program``'s ops, memoised in ``am`` (each prefix on the way)."""
    memo = am.table(STATES)
    state = _root(program, ctx, memo)
    rules = am.table(SHAPE_RULES)
    for op in program.ops:
        key = (state.token, op)
        nxt = memo.get(key)
        if nxt is None:
            nxt = memo[key] = _extend(state, op, ctx, rules)
        state = nxt
    return state


def _extend(state: _State, op: ProgramOp, ctx: Context, rules: dict) -> _State:
    """``state`` after one more op: its shape, float flags, depth and cost transfer."""
    STEPS[0] += 1
    bindings = ctx.bindings
    spec = substitute(op.spec, bindings)
    ins = tuple(state.values[i] for i in op.operands)
    value = _shape_value(op, spec, ins, rules)
    flags = op.floats if op.floats is not None else _derived_floats(
        value, [state.floats[i] for i in op.operands])
    index = len(state.values)
    cost = _op_cost(op, spec, ins, value)
    return _State(
        next(_TOKENS), (*state.values, value), (*state.floats, flags),
        (*state.concrete, _concrete(value, flags, bindings)),
        (*state.runs, _depth_runs(state, op, spec, flags)),
        (*state.hashes, _digest(_token(op, state.hashes))), (*state.specs, spec),
        (*state.costs, cost),
        state.constants | {index} if spec.kind == "get_attr" else state.constants)


def _shape_value(op: ProgramOp, spec: OpSpec, ins: tuple[Value, ...], rules: dict) -> Value:
    if op.fallback is not None:
        return shape_mod._constant(op.fallback)
    if spec.kind == "get_attr":
        traced = spec.get("shape")
        return shape_mod._constant(traced, "?" * len(traced or ()))
    kind = REGISTRY.get(spec.kind)
    return None if kind is None else shape_mod._shape_rule(kind, spec, ins, rules)


def _derived_floats(value: Value, operands: list[Any]) -> Any:
    """A hand-built op's float flags: a tensor is float when some operand carries data."""
    data = any(_carries(f) for f in operands)
    if isinstance(value, TensorShape):
        return data
    if isinstance(value, tuple):
        return tuple(data and isinstance(v, TensorShape) for v in value)
    return False


def _depth_runs(state: _State, op: ProgramOp, spec: OpSpec, flags: Any) -> Mapping:
    if spec.kind == "get_attr" or not _carries(flags):
        return {}
    merged: dict[int, tuple[int, int, int]] = {}
    for src in dict.fromkeys(op.operands):
        for i, runs in state.runs[src].items():
            old = merged.get(i, (-1, -1, -1))
            merged[i] = tuple(map(max, old, runs))  # type: ignore[assignment]
    cls = depth_class(spec)
    return merged if cls is None else {i: _step(r, cls) for i, r in merged.items()}


def _op_cost(op: ProgramOp, spec: OpSpec, ins: tuple[Value, ...], value: Value) -> OpCost:
    kind = REGISTRY.get(spec.kind)
    cost = FREE
    if kind is not None and spec.kind != "get_attr":
        try:
            cost = kind.cost(spec, ins, value)
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
            _warn_cost(spec.kind, "the cost rule of {what} cannot model this call; counting it "
                       "as free")
    if op.fixed_params is not None:
        return OpCost(sympy.Integer(op.fixed_params), cost.flops, cost.other)
    return cost


def _token(op: ProgramOp, hashes: tuple[str, ...]) -> str:
    """The op's structural token: kind, symbolic params, operand hashes; no names, no source."""
    operands = tuple(hashes[i] for i in op.operands)
    if op.spec.kind == "get_attr":
        return f"get_attr:{op.spec.get('shape')}"
    return f"{op.spec.kind}|{_params_text(op.spec.params, operands)}|{','.join(operands)}"


# ---- the facts -----------------------------------------------------------------------------------
def _float_inputs(program: Program, state: _State) -> list[int]:
    return [i for i in range(len(program.inputs)) if state.floats[i] is True]


def _float_outputs(program: Program, state: _State) -> list[int]:
    return [v for v in program.outputs if state.floats[v] is True]


def shape_of(program: Program, ctx: Context, am: AnalysisManager | None = None) -> ShapeFact:
    """The :class:`ShapeFact` of ``program`` in ``ctx`` (``node_shapes`` keyed by input name and
    ``%i`` for the value of op i), memoised in ``am``."""
    state = _state(program, ctx, _manager(am))
    inputs = tuple(state.values[i] for i in _float_inputs(program, state))
    outputs = tuple(state.values[v] for v in _float_outputs(program, state)
                    if isinstance(state.values[v], TensorShape))
    n = len(program.inputs)
    names = {**dict(zip(program.inputs, state.values, strict=False)),
             **{f"%{k}": v for k, v in enumerate(state.values[n:])}}
    return ShapeFact(inputs, outputs, ctx.bindings, MappingProxyType(names))


def value_shapes(program: Program, ctx: Context, am: AnalysisManager | None = None
                 ) -> tuple[Any, ...]:
    """The concrete shape of each of ``program``'s values in ``ctx``, inputs first: a tuple of
    ints for a float tensor, a tuple of those for a tuple of tensors, else None."""
    return _state(program, ctx, _manager(am)).concrete


def depth_of(program: Program, ctx: Context, am: AnalysisManager | None = None) -> DepthFact:
    """The :class:`DepthFact` of ``program`` in ``ctx`` (numbering as ``DepthAnalysis``)."""
    state = _state(program, ctx, _manager(am))
    pairs = [((o, ), v) for o, v in enumerate(_float_outputs(program, state))]
    return DepthFact(tuple(((i, o), max(runs)) for (o,), v in pairs
                           for i, runs in state.runs[v].items()))


def cost_of(program: Program, ctx: Context, am: AnalysisManager | None = None) -> CostFact:
    """The :class:`CostFact` of ``program`` in ``ctx``."""
    costs = _state(program, ctx, _manager(am)).costs
    return CostFact(sympy.Add(*(c.params for c in costs)), sympy.Add(*(c.flops for c in costs)),
                    sympy.Add(*(c.other for c in costs)), ctx.bindings)


def fingerprint_of(program: Program, ctx: Context | None = None,
                   am: AnalysisManager | None = None) -> str:
    """A structural hash of ``program``: op kinds, symbolic params and wiring, outputs in order;
    names, sources and the context do not enter (so it is the same in every block instance)."""
    if ctx is None:
        ctx = Context(tuple(None for _ in program.inputs), tuple(False for _ in program.inputs))
    hashes = _state(program, ctx, _manager(am)).hashes
    n = len(program.inputs)
    outputs = ",".join(hashes[v] for v in program.outputs)
    return _digest(f"out:{outputs};nodes:{','.join(sorted(hashes[n:]))}")


def mixing_of(program: Program, ctx: Context, am: AnalysisManager | None = None) -> MixingFact:
    """The exact :class:`MixingFact` of ``program`` at ``ctx``'s concrete shapes."""
    am = _manager(am)
    state = _state(program, ctx, am)
    memo = am.table(MIXING_RULES)
    n = len(program.inputs)
    keys = [None if v in state.constants else v for v in range(len(state.values))]

    def rule_of(v: int) -> Rule:
        op, spec = program.ops[v - n], state.specs[v - n]
        ins = tuple(state.concrete[i] for i in op.operands)
        rule = _mixing_rule(spec, ins, state.concrete[v], memo)
        return renamed(rule, [keys[i] for i in op.operands])

    ins = [(i, state.concrete[i]) for i in _float_inputs(program, state)]
    outs = [(v, state.concrete[v]) for v in _float_outputs(program, state)]
    order = [v for v in range(len(state.values) - 1, n - 1, -1) if v not in state.constants]
    return mixing_fact(ins, outs, order, rule_of)


def _mixing_rule(spec: OpSpec, ins: tuple[Any, ...], out: Any, memo: dict) -> Rule:
    """``kind.mixing(spec, ins, out)`` by operand index, top (reported) where not modelled;
    memoised in ``memo``."""
    key = (spec, ins, out)
    try:
        hit = memo.get(key, _MISSING)
    except TypeError:
        hit, key = _MISSING, None
    if hit is _MISSING:
        hit = _build_rule(spec, ins, out)
        if key is not None:
            memo[key] = hit
    return hit


_MISSING = object()


def _build_rule(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule:
    kind = REGISTRY.get(spec.kind)
    what = str(spec.get("target", spec.kind)) if spec.kind == "unknown" else spec.kind
    if kind is None:
        warn_unknown(what)
        return top_rule(ins)
    if out is None:
        return NO_PULLS
    try:
        rule = kind.mixing(spec, ins, out)
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
        rule = None
    if rule is None:
        warn_unknown(f"{what} with these arguments")
        return top_rule(ins)
    return rule


def infer(program: Program, ctx: Context, am: AnalysisManager | None = None) -> ProgramFacts:
    """Shape, depth, mixing, cost and fingerprint of ``program`` in ``ctx``, memoised in ``am``
    (a fresh manager when None: nothing is reused from earlier calls)."""
    am = _manager(am)
    return ProgramFacts(shape_of(program, ctx, am), depth_of(program, ctx, am),
                        mixing_of(program, ctx, am), cost_of(program, ctx, am),
                        fingerprint_of(program, ctx, am))


# ---- lift ----------------------------------------------------------------------------------------
#: Width params read off the op's data operand (``in``) or its value (``out``).
_IN_WIDTHS = frozenset({"in_channels", "in_features", "num_features", "num_channels"})
_OUT_WIDTHS = frozenset({"out_channels", "out_features"})


def _floats_of(node: fx.Node) -> Any:
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return bool(meta.dtype.is_floating_point)
    if isinstance(meta, tuple | list):
        return tuple(isinstance(m, TensorMetadata) and bool(m.dtype.is_floating_point)
                     for m in meta)
    return False


def _match(v: Any, dims: Sequence[sympy.Expr], bindings: Mapping[sympy.Symbol, int]) -> Any:
    """The first symbolic dim of ``dims`` worth ``v`` at ``bindings``, else ``v``."""
    if not isinstance(v, int) or isinstance(v, bool):
        return v
    for d in dims:
        try:
            if d.free_symbols and evaluate_dim(d, bindings) == v:
                return d
        except (KeyError, TypeError, ValueError):
            continue
    return v


def _symbolic_widths(spec: OpSpec, x: Value, out: Value,
                     bindings: Mapping[sympy.Symbol, int]) -> OpSpec:
    """``spec`` with its width params as the symbolic dims of operand 0 / the value they equal."""
    xd = x.dims if isinstance(x, TensorShape) else ()
    od = out.dims if isinstance(out, TensorShape) else ()
    params = dict(spec.params)
    for k, v in spec.params:
        if k in _IN_WIDTHS:
            params[k] = _match(v, (*xd[1:2], *xd[-1:], *od), bindings)
        elif k in _OUT_WIDTHS:
            params[k] = _match(v, (*od[1:2], *od[-1:], *xd), bindings)
        elif k == "normalized_shape" and isinstance(v, tuple) and xd and len(v) <= len(xd):
            params[k] = tuple(_match(s, (d,), bindings) for s, d in zip(v, xd[-len(v):],
                                                                          strict=True))
    if spec.get("groups") is not None and spec.get("groups") == spec.get("in_channels"):
        params["groups"] = params.get("in_channels")  # depthwise: groups follow the width
    if params == dict(spec.params):
        return spec
    return OpSpec(spec.kind, tuple(sorted(params.items())))


def lift(gm: fx.GraphModule, subgraph: Subgraph,
         am: AnalysisManager | None = None) -> tuple[Program, Context]:
    """The program computing ``subgraph`` of ``gm`` and the context of its instance there.

    Pre: ``gm`` is shape-annotated (``alphac.frontends.load`` does it). Post: ``infer(program,
    ctx)`` equals the fx analyses of ``subgraph`` (shape inputs/outputs, depth, mixing, cost; the
    fingerprint is the program's own). Example: the body of ResNet-18's ``layer1.0`` lifts to
    conv(C->C) batch_norm relu conv batch_norm add relu with ``in_channels=C``.
    """
    am = am if am is not None else AnalysisManager()
    fact = am.get(ShapeAnalysis(), gm, subgraph)
    index = graph_index(gm, am)
    terms = cost_terms(gm, subgraph, am)
    values, bindings = fact.node_shapes, fact.bindings
    where = {name: i for i, name in enumerate(subgraph.inputs)}
    ops: list[ProgramOp] = []
    for name in subgraph.nodes:
        node = index.nodes[name]
        where[name] = len(subgraph.inputs) + len(ops)
        ops.append(_lift_op(gm, index, node, values, bindings, terms[name], where))
    program = Program(tuple(subgraph.inputs), tuple(ops),
                      tuple(where[n] for n in subgraph.outputs))
    ctx = Context.of(fact, subgraph.inputs,
                     tuple(_floats_of(index.nodes[n]) for n in subgraph.inputs))
    return program, ctx


def _lift_op(gm: fx.GraphModule, index: Any, node: fx.Node, values: Mapping[str, Value],
             bindings: Mapping[sympy.Symbol, int], term: OpCost, where: dict[str, int]
             ) -> ProgramOp:
    fixed = int(term.params) if not term.params.free_symbols else None
    if node.op == "get_attr":
        attr: Any = gm
        for part in str(node.target).split("."):
            attr = getattr(attr, part, None)
        spec = OpSpec.of("get_attr", shape=traced_shape(node),
                         parameter=isinstance(attr, nn.Parameter))
        return ProgramOp(spec, (), str(node.target), _floats_of(node), None, fixed)
    op = index.op(node)
    try:
        operands = tuple(where[o.name] for o in op.operands)
    except KeyError as exc:
        raise ValueError(f"node {node.name} reads {exc}, which is neither an input nor a node "
                         "of the subgraph") from exc
    formula = _node_cost(index, node, values).params
    if term.params == formula:
        fixed = None
    traced = traced_shape(node)
    value = shape_mod._rule_value(index, node, values)
    agrees = value is not None and shape_mod._agrees(value, traced, bindings)
    fallback = traced if traced is not None and not agrees else None
    spec = _symbolic_widths(op.spec, values.get(op.operands[0].name) if op.operands else None,
                            values.get(node.name), bindings)
    source = str(node.target) if node.op == "call_module" else node.name
    return ProgramOp(spec, operands, source, _floats_of(node), fallback, fixed)
