"""One per-graph index for the analyses, served by the AnalysisManager and dropped on every edit.

A :class:`GraphIndex` holds what every analysis of one graph version needs: the node map, the
submodules (looked up on demand), each node's normalised :class:`~alphac.passes.analysis.registry.Op`
(memoized), the nodes' concrete values (the mixing rules' domain), and the per-graph memo tables
of the analyses (producer layouts, mixing rules, example values, ...). :func:`graph_index` takes it
from :meth:`alphac.analysis.AnalysisManager.graph_cache`, so it lives exactly as long as the graph
version; without a manager it builds a fresh one (public helpers called by tests). The memo
tables keyed by values alone (the shape rules' results) are the manager's too
(:meth:`GraphIndex.shared`, :meth:`alphac.analysis.AnalysisManager.table`): they outlive the
version, and a fresh index without a manager gets private ones.

The index never holds the graph module strongly (the manager keys its store on it weakly): nodes
are held weakly and memoized ops store operand *names*. Example::

    index = graph_index(gm, am)
    index.op(node).spec.kind      # "conv"
    index.concrete(node)          # (2, 8, 4, 4)
    graph_index(gm, am) is index  # until the next Rewriter edit
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

from torch import fx

from alphac.analysis import AnalysisCache, AnalysisManager, MemoTable
from alphac.ir import node_map
from alphac.passes.analysis.mixing_boxes import element_shapes, float_shape
from alphac.passes.analysis.registry import Op, normalize

__all__ = ["GraphIndex", "graph_index"]


class _Submodules(dict):
    """``target -> submodule`` looked up on demand (listing every module of a big model costs
    more than analysing a block); holds the graph module weakly."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self._gm = weakref.ref(gm)

    def __bool__(self) -> bool:
        return True

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self:
            gm = self._gm()
            try:
                self[key] = gm.get_submodule(key) if gm is not None and key else default
            except AttributeError:
                self[key] = default
        return super().get(key, default)


class GraphIndex:
    """Per graph version: node map, modules, memoized ops and concrete values, memo tables.

    ``layouts`` (node name -> producer layout) belongs to the shape analysis, ``rules`` (node name
    -> (id(node), mixing rule)) to the mixing analysis, ``values`` (example values of a run) to
    the ground truth, ``whole`` (the whole graph's symbolic values) to the shape analysis;
    ``table(name)`` gives any other analysis its own dict; ``shared(name)`` the manager's memo
    table keyed by values alone (``cache``: the manager's :class:`~alphac.analysis.AnalysisCache`,
    or a private one).
    """

    __slots__ = ("nodes", "modules", "annotated", "layouts", "rules", "values", "whole",
                 "_ops", "_concrete", "_tables", "_cache")

    def __init__(self, gm: fx.GraphModule, cache: AnalysisCache | None = None) -> None:
        self.nodes: Mapping[str, fx.Node] = weakref.WeakValueDictionary(node_map(gm))
        self.modules = _Submodules(gm)
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        self.annotated = not placeholders or any("tensor_meta" in n.meta for n in placeholders)
        self.layouts: dict[str, str | None] = {}
        self.rules: dict[str, tuple[int, Any]] = {}
        self.values: dict[str, Any] | None = None
        self.whole: dict[str, Any] | None = None
        self._ops: dict[str, tuple[int, Any, tuple[str, ...]]] = {}
        self._concrete: dict[str, Any] = {}
        self._tables: dict[str, dict] = {}
        self._cache = cache if cache is not None else AnalysisCache()

    def op(self, node: fx.Node) -> Op:
        """``normalize(node, modules)``, memoized (operands kept by name, rebuilt on access)."""
        hit = self._ops.get(node.name)
        if hit is not None and hit[0] == id(node):
            return Op(hit[1], tuple(self.nodes[n] for n in hit[2]))
        op = normalize(node, self.modules)
        self._ops[node.name] = (id(node), op.spec, tuple(o.name for o in op.operands))
        return op

    def concrete(self, node: fx.Node) -> Any:
        """The mixing rules' value of ``node``: its shape for a float tensor, a tuple of element
        shapes (None for non-float elements) for a tuple value, else None."""
        if node.name not in self._concrete:
            shape = float_shape(node)
            elems = element_shapes(node) if shape is None else None
            self._concrete[node.name] = shape if elems is None else tuple(elems)
        return self._concrete[node.name]

    def table(self, name: str) -> dict:
        """A per-graph memo dict owned by one analysis (``"depth"``, ...)."""
        return self._tables.setdefault(name, {})

    def shared(self, name: str) -> MemoTable:
        """The manager's memo table ``name`` (keyed by values, shared by every graph)."""
        return self._cache.table(name)


def graph_index(gm: fx.GraphModule, am: AnalysisManager | None = None, *,
                annotated: bool = False) -> GraphIndex:
    """The :class:`GraphIndex` of ``gm`` at its current version: the manager's, or a fresh one.

    With ``annotated``, refuse (ValueError) a graph without concrete shapes in ``tensor_meta``.
    """
    store = am.graph_cache(gm) if am is not None else {}
    index = store.get("index")
    if index is None:
        index = store["index"] = GraphIndex(gm, am.cache if am is not None else None)
    if annotated and not index.annotated:
        raise ValueError("mixing and depth need concrete shapes in node.meta['tensor_meta']; "
                         "annotate the graph first (alphac.ir.annotate_shapes)")
    return index
