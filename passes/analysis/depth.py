"""Depth: how many alternating linear/nonlinear runs the longest path has (ALGORITHM.md 2.2).

Ops are classed by their registered kind's ``depth`` (:mod:`~alphac.passes.analysis.registry`):
nonlinear (relu, gelu, silu, sigmoid, softmax, hardswish, attention, ...), linear (conv, linear,
matmul, norms, pools, add, mul, reshape/permute, dropout, ...) and transparent (identity, size
queries, constants such as ``arange``, comparisons, and ``getitem`` and aten's ``index`` as
ALGORITHM.md lists them). An op the registry does not know counts as nonlinear: it cannot be
proved linear. For every (tensor input i, tensor output o) pair with a data path from i to o the value is the maximum over paths of the
number of maximal same-class runs along the path, transparent ops skipped; pairs without a path are
absent. Paths through size queries carry no data and do not count. Inputs and outputs are numbered
as in :func:`alphac.passes.analysis.mixing.tensor_inputs` / ``tensor_outputs``.

Example: a ResNet BasicBlock ``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)`` has classes L L N L L L N
on its long path, runs L|N|L|N, so depth 4 for pair 0->0 (the shortcut path add, relu gives 2).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from alphac.analysis import AnalysisManager
from alphac.ir import COMPUTE_OPS, Subgraph
from alphac.lattice import Lattice
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.mixing import float_names
from alphac.passes.analysis.registry import REGISTRY, OpSpec
from alphac.properties import Property

LINEAR, NONLINEAR = "linear", "nonlinear"
#: Large enough to bound every real depth; the top of :class:`DepthLattice`.
DEPTH_CAP = 1 << 20


def depth_class(spec: OpSpec) -> str | None:
    """``'linear'``, ``'nonlinear'`` or None (transparent) for an op: its registered kind's
    ``depth``; an unknown kind is nonlinear (it cannot be proved linear)."""
    kind = REGISTRY.get(spec.kind)
    if kind is None:
        return NONLINEAR
    return None if kind.depth == "transparent" else kind.depth


@dataclass(frozen=True)
class DepthFact:
    """Depth per (tensor input, tensor output) pair, sorted; an absent pair has no data path.

    Example: ``DepthFact((((0, 0), 4),)).as_dict() == {"0->0": 4}``.
    """

    pairs: tuple[tuple[tuple[int, int], int], ...] = ()

    def __post_init__(self) -> None:
        clean = sorted(((int(i), int(o)), int(d)) for (i, o), d in self.pairs)
        object.__setattr__(self, "pairs", tuple(clean))

    def get(self, i: int, o: int) -> int | None:
        """The depth of pair (i, o), None when o does not depend on i."""
        return dict(self.pairs).get((i, o))

    def as_dict(self) -> dict[str, int]:
        return {f"{i}->{o}": d for (i, o), d in self.pairs}


class DepthLattice(Lattice[DepthFact]):
    """Depth facts ordered pair-wise by depth, an absent pair below depth 0.

    ``a <= b``: b demands at least a's depth on every pair of a. Examples: {0->0: 2} <= {0->0: 3,
    0->1: 0}, join = {0->0: 3, 0->1: 0}; {0->0: 2, 1->0: 5} and {0->0: 4} are incomparable: join
    {0->0: 4, 1->0: 5}, meet {0->0: 2}. ``top`` gives every pair of the arity depth ``cap``.
    """

    def __init__(self, n_inputs: int = 0, n_outputs: int = 0, cap: int = DEPTH_CAP) -> None:
        self.n_inputs, self.n_outputs, self.cap = n_inputs, n_outputs, cap

    def bottom(self) -> DepthFact:
        return DepthFact()

    def top(self) -> DepthFact:
        return DepthFact(tuple(((i, o), self.cap) for i in range(self.n_inputs)
                               for o in range(self.n_outputs)))

    def join(self, a: DepthFact, b: DepthFact) -> DepthFact:
        merged = dict(a.pairs)
        for key, d in b.pairs:
            merged[key] = max(d, merged.get(key, d))
        return DepthFact(tuple(merged.items()))

    def meet(self, a: DepthFact, b: DepthFact) -> DepthFact:
        other = dict(b.pairs)
        return DepthFact(tuple((k, min(d, other[k])) for k, d in a.pairs if k in other))


class DepthProperty(Property[DepthFact]):
    """Depth as a search property: the target is a lower bound per pair.

    ``distance`` = mean over target pairs of max(0, T - C) / max(T, 1), an absent candidate pair
    counting 1 (0 iff satisfied). ``mutate`` moves each depth by delta = consecutive
    Bernoulli(``p``) successes (default 0.5) capped at ``delta_max`` (default 2), random sign,
    floor 0. Example: target {0->0: 4, 0->1: 2}, candidate {0->0: 3} -> (1/4 + 1) / 2 = 0.625.
    """

    name = "depth"
    lattice = DepthLattice()

    def infer(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> DepthFact:
        return am.get(DepthAnalysis(), gm, subgraph)

    def distance(self, target: DepthFact, candidate: DepthFact) -> float:
        have = dict(candidate.pairs)
        scores = [1.0 if key not in have else max(0, t - have[key]) / max(t, 1)
                  for key, t in target.pairs]
        return sum(scores) / len(scores) if scores else 0.0

    def mutate(self, value: DepthFact, rng: random.Random, params: Mapping[str, Any]) -> DepthFact:
        p, delta_max = float(params.get("p", 0.5)), int(params.get("delta_max", 2))
        return DepthFact(tuple((key, max(0, d + depth_delta(rng, p, delta_max)))
                               for key, d in value.pairs))


def depth_delta(rng: random.Random, p: float = 0.5, delta_max: int = 2) -> int:
    """One depth perturbation: consecutive Bernoulli(``p``) successes capped at ``delta_max``,
    with a random sign (ALGORITHM.md 2.2). Example: at p=0.5, 0 with probability 1/2."""
    delta = 0
    while delta < delta_max and rng.random() < p:
        delta += 1
    if delta and rng.random() < 0.5:
        delta = -delta
    return delta


def _class_of(index: GraphIndex, node: fx.Node) -> str | None:
    """The node's depth class, memoized in the graph's index."""
    classes = index.table("depth")
    cached = classes.get(node.name)
    if cached is None or cached[0] != id(node):
        spec = index.op(node).spec
        cls = depth_class(spec)
        cached = classes[node.name] = (id(node), cls)
    return cached[1]


def _is_float_meta(meta: object) -> bool:
    return isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point


def _carries_data(node: fx.Node) -> bool:
    """Whether ``node``'s value is (or holds) a float tensor: masks from comparisons, index
    tensors and sizes carry no derivative, so paths through them are not data paths."""
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):  # a NamedTuple: test it before tuples of them
        return _is_float_meta(meta)
    return isinstance(meta, (tuple, list)) and any(_is_float_meta(m) for m in meta)


# Per value: input index -> (runs ending linear, runs ending nonlinear, 0 if a path of only
# transparent ops exists); -1 marks "no such path".
_Runs = tuple[int, int, int]


def _step(runs: _Runs, cls: str) -> _Runs:
    lin, non, bare = runs
    same, other = (lin, non) if cls == LINEAR else (non, lin)
    best = max(same, other + 1 if other >= 0 else -1, bare + 1 if bare >= 0 else -1)
    return (best, -1, -1) if cls == LINEAR else (-1, best, -1)


def infer_depth(gm: fx.GraphModule, subgraph: Subgraph,
                am: AnalysisManager | None = None) -> DepthFact:
    """The :class:`DepthFact` of ``subgraph``: a max-plus dynamic program in topological order."""
    index = graph_index(gm, am, annotated=True)
    by_name = index.nodes
    state: dict[str, dict[int, _Runs]] = {
        name: {i: (-1, -1, 0)} for i, name in enumerate(float_names(index, subgraph.inputs))}
    for name in subgraph.nodes:
        node = by_name[name]
        if node.op not in COMPUTE_OPS or not _carries_data(node):
            continue
        merged: dict[int, _Runs] = {}
        for pred in node.all_input_nodes:
            for i, runs in state.get(pred.name, {}).items():
                old = merged.get(i, (-1, -1, -1))
                merged[i] = tuple(map(max, old, runs))  # type: ignore[assignment]
        cls = _class_of(index, node)
        state[name] = merged if cls is None else {i: _step(r, cls) for i, r in merged.items()}
    pairs = [((i, o), max(runs)) for o, name in enumerate(float_names(index, subgraph.outputs))
             for i, runs in state.get(name, {}).items()]
    return DepthFact(tuple(pairs))


@dataclass(frozen=True)
class DepthAnalysis:
    """Infer a subgraph's :class:`DepthFact` (pure; cached by the AnalysisManager).

    Pre: nodes carry ``meta['tensor_meta']`` (to tell tensors from size queries). Post: one pair
    per (tensor input, tensor output) with a data path. Example: the BasicBlock ``layer1.0`` of
    ``load("zoo:resnet18", (2, 3, 32, 32))`` gives ``DepthFact((((0, 0), 4),))``.
    """

    name: ClassVar[str] = "depth"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> DepthFact:
        return infer_depth(gm, subgraph, am)
