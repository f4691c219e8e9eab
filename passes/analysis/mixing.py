"""Mixing: which input dims reach which output dims, and how (ALGORITHM.md section 2.3).

For every (tensor input i, tensor output o) pair of a subgraph the value is a matrix
``M[a][k]`` (input dim a, output dim k) over the chain NONE < ONE_TO_ONE < MANY_TO_ONE <
ALL_TO_ONE. Its meaning is the Jacobian's (see :mod:`alphac.passes.analysis.ground_truth`): take
the 1-D slice of output o through its centre (index ``size // 2`` in every dim) along k; a is
*paired* with k when every position along a has a nonzero derivative into some element of the
slice; the kind is read from the centre element alone: it depends on every position along a ->
ALL_TO_ONE, on more than one -> MANY_TO_ONE, else ONE_TO_ONE. A size-1 input dim is degenerate:
paired gives ONE_TO_ONE, unpaired NONE (:func:`mix_label`, shared with the ground truth).

Inference is exact at the concrete shapes of ``node.meta['tensor_meta']``: starting from the
slice (and centre) boxes of each output it pulls index boxes back through the per-op mixing rules
of the op registry (:mod:`~alphac.passes.analysis.registry`; a backward dependency analysis over
unions of boxes, joined with set union where paths meet), then reduces the sets reaching each
input to labels. A rule names its sources by operand index; :func:`_named` maps them to nodes.

Numbering: tensor input i is the i-th name of ``subgraph.inputs`` whose value is a floating-point
tensor (:func:`tensor_inputs`); likewise outputs (:func:`tensor_outputs`). Ints from size queries,
tuples and integer tensors get no index. A pair with no dependency at all is absent (bottom).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.diagnostics import report
from alphac.ir import COMPUTE_OPS, Subgraph
from alphac.lattice import Lattice
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.mixing_boxes import (
    NO_PULLS,
    Box,
    Pull,
    Rule,
    Whole,
    float_shape,
    full,
    simplify,
)
from alphac.passes.analysis.registry import REGISTRY, Op, OpSpec
from alphac.passes.analysis.registry.common import is_shape
from alphac.properties import Property


class Mix(IntEnum):
    """How an input dim reaches an output dim; the order is the lattice order."""

    NONE = 0
    ONE_TO_ONE = 1
    MANY_TO_ONE = 2
    ALL_TO_ONE = 3

    @property
    def label(self) -> str:
        return ("none", "one", "many", "all")[self.value]


Matrix = tuple[tuple[Mix, ...], ...]


def mix_label(size: int, covered: bool, centre_count: int) -> Mix:
    """The label of an input dim of ``size`` positions: ``covered`` by the output slice, and
    ``centre_count`` positions feeding the centre output element. ``mix_label(4, True, 3)`` is
    MANY_TO_ONE; ``mix_label(1, True, 1)`` is ONE_TO_ONE (a size-1 dim is only paired or not)."""
    if not covered:
        return Mix.NONE
    if size > 1 and centre_count == size:
        return Mix.ALL_TO_ONE
    return Mix.MANY_TO_ONE if centre_count > 1 else Mix.ONE_TO_ONE


def _matrix(rows: Any) -> Matrix:
    return tuple(tuple(Mix(v) for v in row) for row in rows)


@dataclass(frozen=True)
class MixingFact:
    """Mixing matrices per (tensor input, tensor output) pair, plus the ranks of those tensors.

    ``pairs`` is kept canonical: sorted, all-NONE matrices dropped (an absent pair is bottom).
    Example: a 1x1 stride-2 conv on (2, 8, 4, 4) gives ``matrix(0, 0)`` rows B: (one, none,
    none, none), C: (all, all, all, all), H: (none, none, none, none), W: (none, none, none, none).
    """

    pairs: tuple[tuple[tuple[int, int], Matrix], ...] = ()
    in_ranks: tuple[int, ...] = ()
    out_ranks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        clean = sorted(((tuple(k), _matrix(m)) for k, m in self.pairs), key=lambda p: p[0])
        clean = [(k, m) for k, m in clean if any(any(row) for row in m)]
        object.__setattr__(self, "pairs", tuple(clean))
        object.__setattr__(self, "in_ranks", tuple(self.in_ranks))
        object.__setattr__(self, "out_ranks", tuple(self.out_ranks))

    def matrices(self) -> dict[tuple[int, int], Matrix]:
        """The present (non-bottom) pairs."""
        return dict(self.pairs)

    def matrix(self, i: int, o: int) -> Matrix | None:
        """``M[input dim][output dim]`` of pair (i, o); all-NONE if absent, None if no such pair."""
        found = self.matrices().get((i, o))
        if found is not None:
            return found
        if 0 <= i < len(self.in_ranks) and 0 <= o < len(self.out_ranks):
            return ((Mix.NONE,) * self.out_ranks[o],) * self.in_ranks[i]
        return None

    def as_dict(self) -> dict[str, list[list[str]]]:
        """``{"i->o": [["none"|"one"|"many"|"all", ...], ...]}`` for every pair."""
        keys = {(i, o) for i in range(len(self.in_ranks)) for o in range(len(self.out_ranks))}
        keys |= set(self.matrices())
        return {f"{i}->{o}": [[v.label for v in row] for row in self.matrix(i, o) or ()]
                for i, o in sorted(keys)}


def _combine(a: MixingFact, b: MixingFact, keep_all: bool, pick: Any) -> MixingFact:
    if a.in_ranks and b.in_ranks and (a.in_ranks, a.out_ranks) != (b.in_ranks, b.out_ranks):
        raise ValueError("cannot combine mixing facts of tensors with different ranks")
    ma, mb = a.matrices(), b.matrices()
    keys = ma.keys() | mb.keys() if keep_all else ma.keys() & mb.keys()
    pairs = []
    for key in keys:
        x, y = ma.get(key), mb.get(key)
        if x is None or y is None:
            pairs.append((key, x or y))
            continue
        if len(x) != len(y) or any(len(r) != len(s) for r, s in zip(x, y, strict=True)):
            raise ValueError(f"mixing matrices of pair {key} have different shapes")
        pairs.append((key, tuple(tuple(map(pick, r, s)) for r, s in zip(x, y, strict=True))))
    return MixingFact(tuple(pairs), a.in_ranks or b.in_ranks, a.out_ranks or b.out_ranks)


class MixingLattice(Lattice[MixingFact]):
    """Mixing facts of fixed tensor ranks, ordered entry-wise (an absent pair is all NONE).

    ``a <= b``: b demands at least as much mixing everywhere. Examples: {0->0: [[one]]} <=
    {0->0: [[all]]}, join = {0->0: [[all]]}; {0->0: [[one, none]]} and {0->0: [[none, many]]}
    are incomparable: join [[one, many]], meet = the empty fact (bottom).
    """

    def __init__(self, in_ranks: tuple[int, ...] = (), out_ranks: tuple[int, ...] = ()) -> None:
        self.in_ranks, self.out_ranks = tuple(in_ranks), tuple(out_ranks)

    @classmethod
    def of(cls, fact: MixingFact) -> MixingLattice:
        """The lattice ``fact`` lives in (same ranks)."""
        return cls(fact.in_ranks, fact.out_ranks)

    def bottom(self) -> MixingFact:
        return MixingFact((), self.in_ranks, self.out_ranks)

    def top(self) -> MixingFact:
        pairs = [((i, o), ((Mix.ALL_TO_ONE,) * ro,) * ri)
                 for i, ri in enumerate(self.in_ranks) for o, ro in enumerate(self.out_ranks)]
        return MixingFact(tuple(pairs), self.in_ranks, self.out_ranks)

    def join(self, a: MixingFact, b: MixingFact) -> MixingFact:
        return _combine(a, b, True, max)

    def meet(self, a: MixingFact, b: MixingFact) -> MixingFact:
        return _combine(a, b, False, min)


class MixingProperty(Property[MixingFact]):
    """Mixing as a search property: the target is an entry-wise lower bound.

    ``distance``: for each target pair the fraction of its entries with T > C (an absent
    candidate pair is all NONE), averaged over target pairs; 0 iff satisfied. ``mutate`` drops
    each pair with probability ``params['p']`` (default 0.5), so it only relaxes. Example:
    target {0->0: [[all, one]]}, candidate {0->0: [[many, one]]} -> distance 0.5.
    """

    name = "mixing"
    lattice = MixingLattice()

    def infer(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> MixingFact:
        return am.get(MixingAnalysis(), gm, subgraph)

    def distance(self, target: MixingFact, candidate: MixingFact) -> float:
        have = candidate.matrices()
        scores = []
        for key, t in target.pairs:
            c = have.get(key, ())
            entries = [(v, c[a][k] if a < len(c) and k < len(c[a]) else Mix.NONE)
                       for a, row in enumerate(t) for k, v in enumerate(row)]
            scores.append(sum(tv > cv for tv, cv in entries) / len(entries))
        return sum(scores) / len(scores) if scores else 0.0

    def mutate(self, value: MixingFact, rng: random.Random, params: Mapping[str, Any]) -> MixingFact:
        p = float(params.get("p", 0.5))
        kept = tuple(pair for pair in value.pairs if rng.random() >= p)
        return MixingFact(kept, value.in_ranks, value.out_ranks)


def graph_nodes(gm: fx.GraphModule, am: AnalysisManager | None = None) -> Mapping[str, fx.Node]:
    """``alphac.ir.node_map(gm)``, from the graph's index."""
    return graph_index(gm, am, annotated=True).nodes


def float_names(index: GraphIndex, names: tuple[str, ...]) -> tuple[str, ...]:
    """The ``names`` whose value is a float tensor (those get an index), in order."""
    return tuple(n for n in names if float_shape(index.nodes[n]) is not None)


def tensor_inputs(gm: fx.GraphModule, subgraph: Subgraph,
                  am: AnalysisManager | None = None) -> tuple[str, ...]:
    """The inputs that get an index (float tensors), in ``subgraph.inputs`` order."""
    return float_names(graph_index(gm, am), subgraph.inputs)


def tensor_outputs(gm: fx.GraphModule, subgraph: Subgraph,
                   am: AnalysisManager | None = None) -> tuple[str, ...]:
    """The outputs that get an index (float tensors), in ``subgraph.outputs`` order."""
    return float_names(graph_index(gm, am), subgraph.outputs)


_WARNED: set[str] = set()


def warn_unknown(what: str) -> None:
    """Report (warn once per op without a collector) that mixing treats ``what`` as top."""
    report("mixing", what, f"mixing analysis does not know the op {what!r}; assuming every input "
           "dim mixes into every output dim (top)", seen=_WARNED, stacklevel=4)


def _rule(index: GraphIndex, node: fx.Node) -> Any:
    """The node's rule, built once per graph version (rules only read the op and its shapes)."""
    cached = index.rules.get(node.name)
    if cached is None or cached[0] != id(node):
        cached = index.rules[node.name] = (id(node), _build_rule(index, node))
    return cached[1]


def _build_rule(index: GraphIndex, node: fx.Node) -> Any:
    """``kind.mixing(spec, operand values, value)`` with its pulls renamed to operand nodes;
    top (with one report per op) where the kind is unknown or its rule cannot model the call."""
    op = index.op(node)
    kind = REGISTRY.get(op.spec.kind)
    ins = tuple(index.concrete(o) for o in op.operands)
    out = index.concrete(node)
    what = _op_name(op.spec)
    if kind is None:
        warn_unknown(what)
        return _top(op, ins)
    if out is None:
        return NO_PULLS  # a non-float value (a size, a mask) carries no derivative
    try:
        rule = kind.mixing(op.spec, ins, out)
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
        rule = None
    if rule is None:
        warn_unknown(f"{what} with these arguments")
        return _top(op, ins)
    return _named(rule, op)


def _op_name(spec: OpSpec) -> str:
    return str(spec.get("target", spec.kind)) if spec.kind == "unknown" else spec.kind


def _top(op: Op, ins: tuple[Any, ...]) -> Rule:
    """Every position of every float operand (each float element of a tuple) reaches every
    output position."""
    return _named(top_rule(ins), op)


def top_rule(ins: tuple[Any, ...]) -> Rule:
    """:func:`_top` by operand index (before renaming)."""
    pulls: list[Pull] = []
    for i, value in enumerate(ins):
        if is_shape(value):
            pulls.append(Whole(i, None, value))
        elif isinstance(value, tuple):
            pulls.extend(Whole(i, j, s) for j, s in enumerate(value) if is_shape(s))
    return Rule(default=pulls)



def _named(rule: Rule, op: Op) -> Rule:
    """``rule`` with each pull's operand index replaced by its operand's node name; pulls into
    constants (``get_attr`` parameters) dropped."""
    return renamed(rule, [None if o.op == "get_attr" else o.name for o in op.operands])


def renamed(rule: Rule, keys: Sequence[Hashable | None]) -> Rule:
    """``rule`` with each pull's source operand index ``i`` replaced by ``keys[i]`` (a node name,
    a program's value index); pulls into a ``None`` key (a constant) are dropped. Pulls are
    copied: a rule may share them."""
    def rename(pulls: tuple[Pull, ...]) -> list[Pull]:
        out = []
        for pull in pulls:
            key = keys[pull.src]
            if key is not None:
                pull = copy.copy(pull)
                pull.src = key
                out.append(pull)
        return out

    return Rule({elem: rename(p) for elem, p in rule.by_elem.items()}, rename(rule.default))


def _queries(shape: tuple[int, ...]) -> list[Box]:
    """The slice through the centre along each dim, then the centre element itself."""
    centre = tuple(1 << (m // 2) for m in shape)
    return [centre[:k] + (full(m),) + centre[k + 1:] for k, m in enumerate(shape)] + [centre]


def pull_back(order: Iterable[Hashable], rule_of: Callable[[Hashable], Rule],
              outs: Sequence[tuple[Hashable, tuple[int, ...]]]) -> dict:
    """Per value key: elem -> query index -> boxes reaching the queries (backwards, exact).

    ``outs`` are the (key, concrete shape) of the outputs, whose query boxes (:func:`_queries`)
    are numbered in order; ``order`` visits the computing values consumers first (reversed
    topological order); ``rule_of(key)`` is a value's rule with pulls naming keys
    (:func:`renamed`). Values outside ``order`` (inputs) keep what reaches them. Shared by fx
    subgraphs (keys are node names) and programs (value indices).
    """
    state: dict[Hashable, dict[int | None, dict[int, list[Box]]]] = {}
    qi = 0
    for key, shape in outs:
        for box in _queries(shape):
            state.setdefault(key, {}).setdefault(None, {})[qi] = [box]
            qi += 1
    for key in order:
        pending = state.pop(key, None)
        if not pending:
            continue
        rule = rule_of(key)
        for elem, per_query in pending.items():
            pulls = rule.pulls(elem)
            for q, boxes in per_query.items():
                boxes = simplify(boxes)
                for pull in pulls:
                    dest = state.setdefault(pull.src, {}).setdefault(pull.elem, {})
                    acc = dest.setdefault(q, [])
                    for box in boxes:
                        acc.extend(pull.apply(box))
    return state


def mixing_fact(ins: Sequence[tuple[Hashable, tuple[int, ...]]],
                outs: Sequence[tuple[Hashable, tuple[int, ...]]], order: Iterable[Hashable],
                rule_of: Callable[[Hashable], Rule]) -> MixingFact:
    """The exact :class:`MixingFact` of a dataflow graph given by :func:`pull_back`'s arguments:
    ``ins``/``outs`` the (key, concrete shape) of its float tensor inputs and outputs in order."""
    state = pull_back(order, rule_of, outs)
    pairs = []
    for i, (key, shape) in enumerate(ins):
        reached = state.get(key, {}).get(None, {})
        first = 0
        for o, (_, out_shape) in enumerate(outs):
            queries = [reached.get(first + k, ()) for k in range(len(out_shape) + 1)]
            first += len(out_shape) + 1
            centre = queries[-1]
            rows = []
            for a, n in enumerate(shape):
                count = _project(centre, a).bit_count()
                rows.append(tuple(mix_label(n, _project(qs, a) == full(n), count)
                                  for qs in queries[:-1]))
            pairs.append(((i, o), tuple(rows)))
    return MixingFact(tuple(pairs), tuple(len(s) for _, s in ins),
                      tuple(len(s) for _, s in outs))


def infer_mixing(gm: fx.GraphModule, subgraph: Subgraph,
                 am: AnalysisManager | None = None) -> MixingFact:
    """The exact :class:`MixingFact` of ``subgraph`` at the shapes in ``tensor_meta``."""
    index = graph_index(gm, am, annotated=True)
    by_name = index.nodes
    ins = [(n, float_shape(by_name[n])) for n in float_names(index, subgraph.inputs)]
    outs = [(n, float_shape(by_name[n])) for n in float_names(index, subgraph.outputs)]
    order = [n for n in reversed(subgraph.nodes) if by_name[n].op in COMPUTE_OPS]
    return mixing_fact(ins, outs, order, lambda name: _rule(index, by_name[name]))


def _project(boxes: Any, dim: int) -> int:
    acc = 0
    for box in boxes:
        acc |= box[dim]
    return acc


@dataclass(frozen=True)
class MixingAnalysis:
    """Infer a subgraph's :class:`MixingFact` (pure; cached by the AnalysisManager).

    Pre: every node carries ``meta['tensor_meta']`` (``alphac.frontends.load`` does this).
    Post: the fact equals the Jacobian ground truth (:func:`ground_truth.check_mixing`) for the
    modelled ops; an unknown op contributes top with one warning. Example: for block
    ``layer1.0`` of ``load("zoo:resnet18", (2, 3, 4, 4))`` (two 3x3 convs on a 4x4 map),
    ``fact.matrix(0, 0)[2][2]`` (H -> H) is ``Mix.ALL_TO_ONE``; at 32x32 it is MANY_TO_ONE.
    """

    name: ClassVar[str] = "mixing"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> MixingFact:
        return infer_mixing(gm, subgraph, am)
