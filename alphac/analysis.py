"""Analyses and the analysis manager that caches their facts by graph version.

An analysis is a small frozen (hashable) dataclass with a ``name`` and one pure method
``compute(gm, subgraph, am) -> Fact``. It never mutates the graph; facts are frozen, hashable
values. It may ask ``am`` for other facts (mixing asks for shapes), which are cached too.

The manager caches facts per GraphModule, keyed by (analysis, subgraph) and stamped with the
graph version (:func:`alphac.rewriter.graph_version`); a Rewriter edit bumps the version, so stale
facts are never served. It also owns one scratch store per graph (:meth:`AnalysisManager.graph_cache`)
where analyses keep their per-graph tables (a node map, memoized op specs), emptied with the facts,
and named memo tables keyed by values alone (:meth:`AnalysisManager.table`: shape rule results,
program inference's prefix states), shared by every graph the manager sees. All three live in one
:class:`AnalysisCache`, emptied by one :meth:`AnalysisCache.clear`; two managers share nothing.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from torch import fx

from alphac.diagnostics import analysing
from alphac.ir import Subgraph
from alphac.rewriter import graph_version

F = TypeVar("F", covariant=True)

#: ``preserved`` value meaning every analysis stays valid (a pass that changed nothing, or an edit
#: that no analysis can see). Lives here, not in the pass manager, because :meth:`restamp` reads it.
ALL_ANALYSES: frozenset[str] = frozenset({"*"})


@runtime_checkable
class Analysis(Protocol[F]):
    """A pure analysis: ``compute`` infers a frozen fact about a subgraph of ``gm``.

    ``name`` is a class variable: every instance of an analysis, whatever its options, shares it.
    """

    name: ClassVar[str]

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> F: ...


class MemoTable(dict):
    """A memo dict that empties itself rather than grow past ``limit`` entries.

    A memo, not a store: anything in it can be recomputed, so forgetting everything at the bound
    keeps memory flat at the price of a cold start. Writes through ``[]=`` and ``setdefault``
    respect the bound. Example: ``t = MemoTable(2); t[1] = t[2] = 0; t[3] = 0`` leaves ``{3: 0}``.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        if len(self) >= self.limit and key not in self:
            self.clear()
        super().__setitem__(key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


class AnalysisCache:
    """Every memo of one :class:`AnalysisManager`, emptied by one :meth:`clear`.

    ``facts`` (per graph, weakly: (analysis, subgraph) -> (version, fact)), ``scratch`` (per
    graph, weakly: the analyses' per-graph tables, stamped) and named :class:`MemoTable` s keyed by
    values alone (``"shape.rules"``: (spec, operand shapes) -> rule result), which any graph may
    hit. Example::

        cache = AnalysisCache()
        cache.table("shape.rules")[key] = value
        cache.clear()                 # facts, scratch and every table are empty
        cache.sizes()["shape.rules"]  # 0
    """

    def __init__(self) -> None:
        self.facts: weakref.WeakKeyDictionary[fx.GraphModule, dict[Any, tuple[int, Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self.scratch: weakref.WeakKeyDictionary[fx.GraphModule, tuple[tuple[int, int], dict]] = (
            weakref.WeakKeyDictionary()
        )
        self._tables: dict[str, MemoTable] = {}

    def table(self, name: str, limit: int = 200_000) -> MemoTable:
        """The memo table called ``name`` (made on first use with bound ``limit``)."""
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = MemoTable(limit)
        return table

    def clear(self) -> None:
        """Forget every fact, scratch store and memo entry (the tables themselves stay, empty,
        so an analysis holding one keeps a live reference)."""
        self.facts.clear()
        self.scratch.clear()
        for table in self._tables.values():
            table.clear()

    def sizes(self) -> dict[str, int]:
        """Entries per store: ``facts`` (all graphs), ``scratch`` (graphs), then each table."""
        return {"facts": sum(len(v) for v in self.facts.values()), "scratch": len(self.scratch),
                **{name: len(t) for name, t in self._tables.items()}}


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


class AnalysisManager:
    """Computes analyses on demand and caches their facts until the graph changes.

    Example::

        am = AnalysisManager()
        fact = am.get(ShapeAnalysis(), gm, subgraph)   # computed
        fact = am.get(ShapeAnalysis(), gm, subgraph)   # cached (am.stats.hits == 1)
        with Rewriter(gm).edit() as g: ...             # version bump
        fact = am.get(ShapeAnalysis(), gm, subgraph)   # recomputed
    """

    def __init__(self) -> None:
        self.cache = AnalysisCache()
        self.stats = CacheStats()

    def get(self, analysis: Analysis[Any], gm: fx.GraphModule, subgraph: Subgraph | None = None):
        """The fact ``analysis`` infers for ``subgraph`` (default: the whole graph) of ``gm``."""
        sub = subgraph if subgraph is not None else Subgraph.whole(gm)
        key = (analysis, sub)
        version = graph_version(gm)
        entries = self.cache.facts.setdefault(gm, {})
        hit = entries.get(key)
        if hit is not None and hit[0] == version:
            self.stats.hits += 1
            return hit[1]
        self.stats.misses += 1
        with analysing(sub):  # an op without an exact rule is reported against this subgraph
            fact = analysis.compute(gm, sub, self)
        entries[key] = (version, fact)
        return fact

    def graph_cache(self, gm: fx.GraphModule) -> dict[str, Any]:
        """A scratch dict for ``gm``'s per-graph tables, empty again once the graph changes.

        Stamped with the graph version and node count (the count catches an edit made without a
        Rewriter). Pre: what is stored must not hold ``gm`` strongly (nodes do: store names, or
        hold nodes weakly), or ``gm`` would never be collected.
        Example: ``am.graph_cache(gm).setdefault("index", ...)`` is the same object until an edit.
        """
        stamp = (graph_version(gm), len(gm.graph.nodes))
        hit = self.cache.scratch.get(gm)
        if hit is None or hit[0] != stamp:
            hit = (stamp, {})
            self.cache.scratch[gm] = hit
        return hit[1]

    def table(self, name: str, limit: int = 200_000) -> MemoTable:
        """This manager's memo table ``name``, keyed by values alone (:meth:`AnalysisCache.table`).

        Pre: keys and values never hold a graph or its nodes (the table outlives every graph).
        """
        return self.cache.table(name, limit)

    def clear(self) -> None:
        """Forget everything this manager memoised (benchmarks time cold starts with it)."""
        self.cache.clear()

    def cached(self, gm: fx.GraphModule) -> int:
        """How many facts for ``gm`` are cached and still valid."""
        version = graph_version(gm)
        return sum(1 for v, _ in self.cache.facts.get(gm, {}).values() if v == version)

    def invalidate(self, gm: fx.GraphModule) -> None:
        """Drop every fact and the scratch store cached for ``gm``."""
        self.cache.facts.pop(gm, None)
        self.cache.scratch.pop(gm, None)

    def restamp(self, gm: fx.GraphModule, old_version: int, preserved: frozenset[str]) -> None:
        """After an edit, keep the facts of analyses (by name) that the edit declared preserved.

        ``preserved`` names analyses, or contains ``"*"`` (:data:`ALL_ANALYSES`): every fact stamped
        ``old_version`` is carried to the current version. Facts of other versions stay stale.
        The scratch store is not carried: it is keyed by node count too, and rebuilt on demand.
        """
        new_version = graph_version(gm)
        keep_all = not ALL_ANALYSES.isdisjoint(preserved)
        entries = self.cache.facts.get(gm, {})
        for key, (version, fact) in list(entries.items()):
            if version == old_version and (keep_all or key[0].name in preserved):
                entries[key] = (new_version, fact)
