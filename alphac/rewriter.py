"""The Rewriter: the single door through which every graph mutation goes.

Edits are made with tracked verbs, like xDSL's rewriter: :meth:`Rewriter.insert` (and its
``call_module``/``call_function``/``call_method``/``get_attr`` spellings), :meth:`set_arg`,
:meth:`replace_all_uses`, :meth:`erase` and :meth:`splice`. Each verb records whether it changed
the graph; :meth:`commit` then eliminates dead code, deletes unused submodules, lints, recompiles
and bumps the graph's version (kept in ``gm.meta``) exactly once -- and not at all when nothing
changed, so cached analysis facts keyed on the version are never stale and never needlessly
dropped. No code outside this module edits a graph directly (``tests/test_graph_edits.py``).

Versions: a graph is at version 0 when a frontend hands it out, although capture itself edits it
(drops guard nodes and bound-argument placeholders, inserts mode values): those edits use
``Rewriter(gm, bump=False)``, documented at :class:`Rewriter`.

Example::

    with Rewriter(gm).session() as rw:
        relu = rw.node("relu")
        gelu = rw.call_function(torch.nn.functional.gelu, (relu.args[0],), after=relu)
        rw.replace_all_uses(relu, gelu)
    assert graph_version(gm) == 1   # DCE erased the relu
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

_VERSION_KEY = "alphac.version"

#: A splice builder: ``builder(rewriter, inputs) -> outputs`` inserts the replacement's nodes
#: (at the rewriter's cursor) reading ``inputs`` and returns the nodes standing for the outputs.
Builder = Callable[["Rewriter", tuple[fx.Node, ...]], Sequence[fx.Node]]


def graph_version(gm: fx.GraphModule) -> int:
    """The version of ``gm``'s graph: 0 when traced, +1 after every completed Rewriter edit."""
    return int(gm.meta.get(_VERSION_KEY, 0))


class Rewriter:
    """Mutates a GraphModule in place through tracked verbs; :meth:`commit` finishes the edit.

    Pre: ``gm`` is a GraphModule nobody else is editing. Post (after :meth:`commit`): the graph
    lints, the module is recompiled, and the version went up by one iff something changed.
    ``created`` lists the nodes inserted since the last commit, in insertion order.

    ``bump=False`` is for capture only: a frontend finishing a graph it has not handed out yet
    (so no analysis can hold a fact about it) commits without a bump, and the graph it returns
    is at version 0, "as traced". Pre: the graph is at version 0 (else ValueError: an edited
    graph has been handed out). This beats resetting the version at the end of capture: versions
    only ever go up, nothing can turn a stale fact fresh by lowering one, and no capture path
    can forget the reset.
    """

    def __init__(self, gm: fx.GraphModule, *, lint: bool = True, bump: bool = True) -> None:
        if not bump and graph_version(gm) != 0:
            raise ValueError(f"Rewriter(bump=False) is for graphs being captured, but this one "
                             f"is at version {graph_version(gm)}: it has been handed out")
        self.gm = gm
        self.lint = lint
        self.bump = bump
        self.changed = False
        self.created: list[fx.Node] = []
        self._cursor: fx.Node | None = None  # insert before this node when no place is given
        self._meta: dict[str, Any] = {}  # meta given to every node inserted while it is set

    # ---- sessions ------------------------------------------------------------------------------
    @contextmanager
    def session(self, *, eliminate_dead_code: bool = True) -> Iterator[Rewriter]:
        """Yield this rewriter for verbs; on a clean exit :meth:`commit`."""
        yield self
        self.commit(eliminate_dead_code=eliminate_dead_code)

    @contextmanager
    def edit(self, *, eliminate_dead_code: bool = False) -> Iterator[fx.Graph]:
        """Yield the raw graph (legacy: untracked, so it counts as a change); then finish."""
        yield self.gm.graph
        self.finish(eliminate_dead_code=eliminate_dead_code)

    def finish(self, *, eliminate_dead_code: bool = False) -> None:
        """Complete an untracked edit made directly on ``gm.graph`` (always bumps)."""
        self.changed = True
        self.commit(eliminate_dead_code=eliminate_dead_code)

    def commit(self, *, eliminate_dead_code: bool = True, keep_submodules: bool = False) -> bool:
        """DCE and unused submodules (optional), lint, recompile, bump once; False: no change.

        ``keep_submodules`` keeps the submodules that dead-code elimination left uncalled (capture
        keeps every submodule fx copied from the model, called or not).
        """
        if eliminate_dead_code and self.gm.graph.eliminate_dead_code():
            self.changed = True
        if not self.changed:
            return False
        if eliminate_dead_code and not keep_submodules:
            self.gm.delete_all_unused_submodules()
        if self.lint:
            self.gm.graph.lint()
        self.gm.recompile()
        if self.bump:
            self.gm.meta[_VERSION_KEY] = graph_version(self.gm) + 1
        self.changed, self.created = False, []
        return True

    # ---- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> fx.Node:
        """The node called ``name`` (KeyError names the graph's nodes)."""
        for n in self.gm.graph.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in the graph")

    def fresh_name(self, hint: str) -> str:
        """An attribute name free on ``gm``: ``hint`` made an identifier, suffixed ``_0``, ``_1``..."""
        base = re.sub(r"\W", "_", hint).strip("_") or "m"
        i = 0
        while hasattr(self.gm, f"{base}_{i}"):
            i += 1
        return f"{base}_{i}"

    # ---- verbs ---------------------------------------------------------------------------------
    def insert(self, op: str, target: Any, args: tuple[Any, ...] = (),
               kwargs: dict[str, Any] | None = None, *, before: fx.Node | None = None,
               after: fx.Node | None = None, meta: dict[str, Any] | None = None) -> fx.Node:
        """Insert a node ``op(target)(*args, **kwargs)`` before/after a node (default: at the
        cursor, else at the end before the output)."""
        graph = self.gm.graph
        if before is not None and after is not None:
            raise ValueError("insert: give before or after, not both")
        place = (graph.inserting_after(after) if after is not None
                 else graph.inserting_before(before or self._cursor or _output(graph)))
        with place:
            node = graph.create_node(op, target, tuple(args), dict(kwargs or {}))
        node.meta.update({**self._meta, **(meta or {})})
        self.created.append(node)
        self.changed = True
        return node

    def call_module(self, module: nn.Module, args: tuple[Any, ...] = (),
                    kwargs: dict[str, Any] | None = None, *, name: str = "m",
                    **place: Any) -> fx.Node:
        """Add ``module`` under a fresh name from ``name`` and insert a call to it."""
        target = self.fresh_name(name)
        self.gm.add_submodule(target, module)
        return self.insert("call_module", target, args, kwargs, **place)

    def call_function(self, fn: Callable[..., Any], args: tuple[Any, ...] = (),
                      kwargs: dict[str, Any] | None = None, **place: Any) -> fx.Node:
        return self.insert("call_function", fn, args, kwargs, **place)

    def call_method(self, method: str, args: tuple[Any, ...] = (),
                    kwargs: dict[str, Any] | None = None, **place: Any) -> fx.Node:
        return self.insert("call_method", method, args, kwargs, **place)

    def replace_module(self, target: str, module: nn.Module) -> bool:
        """Put ``module`` at the submodule path ``target`` (every call of the old module now
        calls it); whether that changed anything (the same object: no change)."""
        owner_path, _, name = target.rpartition(".")
        owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
        if getattr(owner, name, None) is module:
            return False
        setattr(owner, name, module)
        self.changed = True
        return True

    def get_attr(self, target: str, **place: Any) -> fx.Node:
        """Read the parameter, buffer or submodule ``target`` (a dotted path on ``gm``)."""
        return self.insert("get_attr", target, **place)

    def set_arg(self, node: fx.Node, key: int | str, value: Any) -> bool:
        """Set ``node``'s positional argument ``key`` (an int) or keyword argument ``key`` (a str,
        added if absent) to ``value``; whether that changed it. Use lists follow (fx updates
        ``users`` of the nodes the old and new values read).

        Example: ``rw.set_arg(bn, 5, False)`` turns ``aten.batch_norm(x, w, b, m, v, True, ...)``
        into ``...(x, w, b, m, v, False, ...)``; ``rw.set_arg(drop, "p", 0.0)`` sets ``p=0.0``.
        """
        if isinstance(key, int):
            if _same(node.args[key], value):
                return False
            node.update_arg(key, value)
        else:
            if key in node.kwargs and _same(node.kwargs[key], value):
                return False
            node.update_kwarg(key, value)
        self.changed = True
        return True

    def replace_all_uses(self, old: fx.Node, new: fx.Node) -> int:
        """Make every user of ``old`` read ``new`` instead; how many users moved."""
        if old is new:
            return 0
        moved = old.replace_all_uses_with(new, propagate_meta=False)
        self.changed |= bool(moved)
        return len(moved)

    def erase(self, *nodes: fx.Node) -> None:
        """Erase ``nodes`` (users first); each must be unused once the others are gone."""
        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        for node in sorted(nodes, key=order.__getitem__, reverse=True):
            if node.users:
                raise ValueError(f"erase: {node.name} is still used by "
                                 f"{sorted(u.name for u in node.users)}")
            self.gm.graph.erase_node(node)
            self.changed = True

    def splice(self, subgraph: Any, builder: Builder, *,
               meta: dict[str, Any] | None = None) -> tuple[fx.Node, ...]:
        """Replace ``subgraph`` (an :class:`alphac.ir.Subgraph`) by what ``builder`` inserts.

        ``builder(self, inputs)`` gets the subgraph's input nodes (in order) and inserts its nodes
        at the cursor (where the subgraph starts, after its last input), each given ``meta``; it
        returns one node per subgraph output, whose uses are redirected to it. The old nodes
        become dead; :meth:`commit` removes them. Returns the builder's outputs.
        """
        nodes = {n.name: n for n in self.gm.graph.nodes}
        inputs = tuple(nodes[name] for name in subgraph.inputs)
        outputs = tuple(nodes[name] for name in subgraph.outputs)
        self._cursor, self._meta = _anchor(self.gm.graph, subgraph, inputs), dict(meta or {})
        try:
            new = tuple(builder(self, inputs))
        finally:
            self._cursor, self._meta = None, {}
        if len(new) != len(outputs):
            raise ValueError(f"splice: the builder returned {len(new)} outputs for a subgraph "
                             f"with {len(outputs)}")
        for old, repl in zip(outputs, new, strict=True):
            self.replace_all_uses(old, repl)
        return new


_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device,
          torch.layout, torch.memory_format)


def _same(a: Any, b: Any) -> bool:
    """Whether argument values ``a`` and ``b`` are the same: the same nodes (by identity) and
    equal plain constants, in the same containers; anything else (a tensor) only if identical.
    fx stores lists and dicts as its immutable subclasses, which count as plain ones here."""
    if a is b:
        return True
    if _kind(a) is not _kind(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, slice):
        return _same((a.start, a.stop, a.step), (b.start, b.stop, b.step))
    return isinstance(a, _PLAIN) and bool(a == b)


def _kind(value: Any) -> type:
    return list if isinstance(value, list) else dict if isinstance(value, dict) else type(value)


def _output(graph: fx.Graph) -> fx.Node:
    return next(n for n in reversed(graph.nodes) if n.op == "output")


def _anchor(graph: fx.Graph, subgraph: Any, inputs: tuple[fx.Node, ...]) -> fx.Node:
    """The node to insert before: the subgraph's first node, unless an input comes after it."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    members = [n for n in graph.nodes if n.name in set(subgraph.nodes)]
    last_input = max((order[n] for n in inputs), default=-1)
    first = next((n for n in members if order[n] > last_input), None)
    if first is None or first.op == "placeholder":
        return next(n for n in graph.nodes if order[n] > last_input and n.op != "placeholder")
    return first
