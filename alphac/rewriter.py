"""The Rewriter: the single door through which every graph mutation goes.

Each completed edit bumps the graph's version (kept in ``gm.meta``), lints the graph and recompiles
the module, so cached analysis facts keyed on the version can never be stale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import fx

_VERSION_KEY = "alphac.version"


def graph_version(gm: fx.GraphModule) -> int:
    """The version of ``gm``'s graph: 0 when traced, +1 after every Rewriter edit."""
    return int(gm.meta.get(_VERSION_KEY, 0))


class Rewriter:
    """Mutates a GraphModule in place, then lints, recompiles and bumps its version.

    Example::

        rw = Rewriter(gm)
        with rw.edit() as graph:
            relu = next(n for n in graph.nodes if n.target == torch.relu)
            relu.target = torch.nn.functional.gelu
        assert graph_version(gm) == 1
    """

    def __init__(self, gm: fx.GraphModule, *, lint: bool = True) -> None:
        self.gm = gm
        self.lint = lint

    @contextmanager
    def edit(self, *, eliminate_dead_code: bool = False) -> Iterator[fx.Graph]:
        """Yield the graph to mutate; on a clean exit finish the edit (DCE, lint, recompile)."""
        yield self.gm.graph
        self.finish(eliminate_dead_code=eliminate_dead_code)

    def finish(self, *, eliminate_dead_code: bool = False) -> None:
        """Complete an edit made directly on ``gm.graph``: optional DCE, lint, recompile, bump."""
        graph = self.gm.graph
        if eliminate_dead_code:
            graph.eliminate_dead_code()
            self.gm.delete_all_unused_submodules()
        if self.lint:
            graph.lint()
        self.gm.recompile()
        self.gm.meta[_VERSION_KEY] = graph_version(self.gm) + 1
