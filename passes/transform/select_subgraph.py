"""Select: grow a random connected, closed and convex subgraph of one block (ALGORITHM.md 3.1)."""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Iterable, Mapping

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from alphac.ir import Subgraph, compute_nodes, consumers, node_map, producers

__all__ = ["select_subgraph", "whole_model_region"]


def whole_model_region(gm: fx.GraphModule) -> tuple[str, ...]:
    """The names of every computing node of ``gm``, in graph order: the region of a model
    without blocks."""
    return tuple(n.name for n in compute_nodes(gm))


def select_subgraph(gm: fx.GraphModule, region: Iterable[str], rng: random.Random, *,
                    p: float = 0.75, max_fraction: float = 0.8,
                    sequential: bool = False) -> Subgraph:
    """A random connected subgraph of ``region``, closed over non-tensor plumbing and convex.

    Pre: ``gm`` is shape-annotated (``node.meta['tensor_meta']``); ``region`` names the nodes of
    one block instance (a ``Block``'s ``nodes``) or :func:`whole_model_region`. Post: growth
    starts at a computing node of ``region`` producing a float tensor (never a size query or a
    ``getitem``) and adds random computing neighbours (producers or consumers) from ``region``,
    stopping with probability ``1 - p`` after each addition and at ``max(1, floor(max_fraction *
    n))`` nodes (``n``: the region's computing nodes); with ``sequential`` the set stays a chain
    extended at either end through single-use edges. Then every boundary value is made a tensor
    (a member's non-tensor value brings its region users, a non-tensor a member reads from a
    region node brings its producer) and every node on a path that leaves the set and re-enters
    joins, until stable; this may go past the cap. The result is connected, convex (splice
    accepts it; inside ``region`` when ``region`` is convex, as blocks are), and a function of
    ``gm``, ``region`` and ``rng``'s state. ValueError when ``region`` has no computing node.

    Example: in ResNet-18's ``layer1.0`` (conv1 bn1 relu conv2 bn2 add relu2), a start at
    ``bn1`` may grow to ``{conv1, bn1, relu}``; in ``x.reshape(x.size(0), -1)`` selecting the
    reshape brings in the ``size`` call.
    """
    names = set(region)
    unknown = sorted(names - node_map(gm).keys())
    if unknown:
        raise ValueError(f"select_subgraph: the region names nodes not in the graph: {unknown}")
    nodes = [n for n in compute_nodes(gm) if n.name in names]  # graph order: the rng's only view
    if not nodes:
        raise ValueError("select_subgraph: the region has no computing node; pass a block's "
                         "nodes or whole_model_region(gm)")
    limit = max(1, math.floor(max_fraction * len(nodes)))
    close = _Closure(gm, {n.name for n in nodes})
    chosen = _grow(nodes, close, rng, p, limit, sequential)
    return Subgraph.from_nodes(gm, close(chosen))


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def _can_start(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return (isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point
            and node.target is not operator.getitem)


def _grow(nodes: list[fx.Node], close: _Closure, rng: random.Random, p: float, limit: int,
          sequential: bool) -> set[str]:
    """The grown node names (for ``sequential``, already closed, and still a chain)."""
    starts = [n for n in nodes if _can_start(n)] or nodes
    if sequential:  # a start that needs plumbing is no chain's end
        starts = [n for n in starts if _is_chain(close.by_name, close({n.name}))] or starts
    start = rng.choice(starts)
    chosen = close({start.name}) if sequential else {start.name}
    while len(chosen) < limit:
        around = _chain_ends(close, chosen) if sequential else _neighbours(close, chosen)
        if not around:
            break
        chosen = around[rng.choice(list(around))]
        if rng.random() >= p:
            break
    return chosen


def _neighbours(close: _Closure, chosen: set[str]) -> dict[str, set[str]]:
    """Candidate -> ``chosen`` grown by it: its computing producers and consumers in the
    region, in graph order."""
    found = {m.name for name in chosen for m in (*producers(close.by_name[name]),
                                                 *consumers(close.by_name[name]))}
    return {n: chosen | {n} for n in sorted(found & close.pool - chosen,
                                            key=close.position.__getitem__)}


def _chain_ends(close: _Closure, chain: set[str]) -> dict[str, set[str]]:
    """Candidate -> closed chain grown by it: a producer of the head or the consumer of the tail
    through a single-use edge (head first); those whose closure breaks the chain left out."""
    members = sorted(chain, key=close.position.__getitem__)
    head, tail = close.by_name[members[0]], close.by_name[members[-1]]
    ends = [q for q in producers(head) if len(q.users) == 1]
    if len(tail.users) == 1:
        ends.append(next(iter(tail.users)))
    grown: dict[str, set[str]] = {}
    for end in ends:
        if end.name in close.pool and end.name not in chain:
            bigger = close(chain | {end.name})
            if _is_chain(close.by_name, bigger):
                grown[end.name] = bigger
    return grown


def _is_chain(by_name: Mapping[str, fx.Node], names: set[str]) -> bool:
    """Whether ``names`` form a path: one head, each member one producer and consumer inside."""
    ins = [sum(p.name in names for p in producers(by_name[n])) for n in names]
    outs = [sum(u.name in names for u in consumers(by_name[n])) for n in names]
    return max(ins) <= 1 and max(outs) <= 1 and ins.count(0) == 1


class _Closure:
    """``close(names)``: ``names`` with the plumbing it needs and the paths that re-enter it."""

    def __init__(self, gm: fx.GraphModule, pool: set[str]) -> None:
        self.order = list(gm.graph.nodes)
        self.by_name = node_map(gm)
        self.position = {n.name: i for i, n in enumerate(self.order)}
        self.pool = pool

    def __call__(self, names: set[str]) -> set[str]:
        members = set(names)
        while True:
            members = self._plumbing(members)
            between = self._reentering(members)
            if not between:
                return members
            members |= between

    def _plumbing(self, members: set[str]) -> set[str]:
        stack = list(members)
        while stack:
            node = self.by_name[stack.pop()]
            extra = [u for u in node.users if not _is_tensor(node)]
            extra += [q for q in node.all_input_nodes if not _is_tensor(q)]
            for other in extra:
                if other.name in self.pool and other.name not in members:
                    members.add(other.name)
                    stack.append(other.name)
        return members

    def _reentering(self, members: set[str]) -> set[str]:
        """Non-members reachable from a member that reach a member (anywhere in the graph: a
        path leaving a block never comes back, since a block is a run of consecutive nodes)."""
        lo, hi = (f(self.position[n] for n in members) for f in (min, max))
        span = self.order[lo:hi + 1]
        below: set[str] = set()
        for node in span:
            if node.name not in members and any(
                    q.name in members or q.name in below for q in node.all_input_nodes):
                below.add(node.name)
        above: set[str] = set()
        for node in reversed(span):
            if node.name not in members and any(
                    u.name in members or u.name in above for u in node.users):
                above.add(node.name)
        return below & above
