"""Diagnostics: what the analyses could not infer exactly, collected per run.

An analysis that meets an op it has no exact rule for answers conservatively (top, or the traced
shape as constants) and *reports* it with :func:`report`. Inside :func:`collect` the report goes
into the active :class:`Diagnostics` collector (a ``contextvars`` variable, so threads and nested
runs keep their own), which counts each ``(analysis, op)`` and remembers which subgraphs were
being analysed (the :class:`~alphac.analysis.AnalysisManager` marks them with :func:`analysing`).
The CLI prints the collection once at the end of a command. Without a collector (library use) a
report falls back to one ``warnings.warn`` per ``(analysis, op)`` and process.

Example::

    with collect() as diag:
        with diag.label(block.subgraph(gm), "layer1.0"):
            am.get(ShapeAnalysis(), gm, block.subgraph(gm))   # meets torch.cumsum
    diag.findings()   # (Finding(analysis='shape', op='cumsum', count=1, where=('layer1.0',)),)
    diag.summary()    # ["1 op has no exact rule; these blocks are conservative: layer1.0", ...]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from alphac.ir import Subgraph


class AlphacWarning(UserWarning):
    """A diagnostic an analysis reported while no collector was active."""


@dataclass(frozen=True)
class Finding:
    """One op one analysis has no exact rule for: how often it met it and where."""

    analysis: str
    op: str
    message: str
    count: int
    where: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"analysis": self.analysis, "op": self.op, "count": self.count,
                "blocks": list(self.where), "message": self.message}


@dataclass
class _Entry:
    message: str
    count: int = 0
    where: list[Subgraph | None] = field(default_factory=list)


class Diagnostics:
    """Collects the reports of one run, keyed by ``(analysis, op)``, in the order first met."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._labels: dict[Subgraph, str] = {}

    def report(self, analysis: str, op: str, message: str) -> None:
        """Count one conservative answer of ``analysis`` for ``op`` in the current subgraph."""
        entry = self._entries.setdefault((analysis, op), _Entry(message))
        entry.count += 1
        sub = _SUBGRAPHS.get()[-1] if _SUBGRAPHS.get() else None
        if sub not in entry.where:
            entry.where.append(sub)

    @contextmanager
    def label(self, subgraph: Subgraph, name: str) -> Iterator[None]:
        """Name ``subgraph`` (a block path) in the findings, for reports made inside."""
        self._labels.setdefault(subgraph, name)
        with analysing(subgraph):
            yield

    def _name(self, sub: Subgraph | None) -> str:
        if sub is None:
            return "<outside any analysis>"
        return self._labels.get(sub, f"<subgraph of {len(sub.nodes)} nodes>")

    def findings(self) -> tuple[Finding, ...]:
        """Every ``(analysis, op)`` reported, first met first."""
        return tuple(Finding(analysis, op, e.message, e.count,
                             tuple(dict.fromkeys(self._name(s) for s in e.where)))
                     for (analysis, op), e in self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def as_list(self) -> list[dict[str, Any]]:
        """JSON-ready findings (the CLI's ``diagnostics`` key)."""
        return [f.as_dict() for f in self.findings()]

    def summary(self) -> list[str]:
        """One headline, then one line per finding; no lines when nothing was reported."""
        found = self.findings()
        if not found:
            return []
        ops = dict.fromkeys(f.op for f in found)
        where = ", ".join(dict.fromkeys(w for f in found for w in f.where))
        have = "op has" if len(ops) == 1 else "ops have"
        lines = [f"{len(ops)} {have} no exact rule; these blocks are conservative: {where}"]
        for f in found:
            times = "once" if f.count == 1 else f"{f.count} times"
            lines.append(f"  {f.op} ({times}; {', '.join(f.where)}): {f.message}")
        return lines


_CURRENT: ContextVar[Diagnostics | None] = ContextVar("alphac_diagnostics", default=None)
_SUBGRAPHS: ContextVar[tuple[Subgraph, ...]] = ContextVar("alphac_subgraphs", default=())
_WARNED: set[tuple[str, str]] = set()


@contextmanager
def collect(diagnostics: Diagnostics | None = None) -> Iterator[Diagnostics]:
    """Make ``diagnostics`` (default: a new collector) the active one inside the block."""
    diag = diagnostics if diagnostics is not None else Diagnostics()
    token = _CURRENT.set(diag)
    try:
        yield diag
    finally:
        _CURRENT.reset(token)


def current() -> Diagnostics | None:
    """The active collector, or None outside :func:`collect`."""
    return _CURRENT.get()


@contextmanager
def analysing(subgraph: Subgraph) -> Iterator[None]:
    """Mark ``subgraph`` as the one being analysed: reports inside name it."""
    token = _SUBGRAPHS.set((*_SUBGRAPHS.get(), subgraph))
    try:
        yield
    finally:
        _SUBGRAPHS.reset(token)


def report(analysis: str, op: str, message: str, *, seen: set[str] | None = None,
           stacklevel: int = 2) -> None:
    """Report that ``analysis`` answered conservatively for ``op``.

    Into the active collector when there is one; otherwise one ``AlphacWarning`` per
    ``(analysis, op)`` (per op in ``seen`` when an analysis keeps its own once-set).
    """
    diag = current()
    if diag is not None:
        diag.report(analysis, op, message)
        return
    once: set[Any] = seen if seen is not None else _WARNED
    key: Any = op if seen is not None else (analysis, op)
    if key not in once:
        once.add(key)
        warnings.warn(message, AlphacWarning, stacklevel=stacklevel + 1)
