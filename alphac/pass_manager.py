"""Passes, the pass registry and the PassManager that composes them.

A pass is a small frozen dataclass with a class-level ``name`` (``ClassVar[str]``), typed options
as fields, and one method ``run(gm, am) -> PassResult``. ``changed`` must be truthful: an idempotent pass run twice reports
``changed=False`` the second time. Mutations go through :class:`alphac.rewriter.Rewriter`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

from torch import fx

from alphac.analysis import ALL_ANALYSES, AnalysisManager
from alphac.errors import PassError
from alphac.rewriter import graph_version

__all__ = ["ALL_ANALYSES", "Pass", "PassManager", "PassResult", "get_pass", "register_pass",
           "registered_passes"]


@dataclass(frozen=True)
class PassResult:
    """What a pass returns: the (possibly new) module, whether it changed, what stays valid."""

    gm: fx.GraphModule
    changed: bool
    preserved: frozenset[str] = field(default_factory=frozenset)


@runtime_checkable
class Pass(Protocol):
    """A graph pass: ``run`` transforms (or only inspects) ``gm``.

    ``name`` is a class variable (``name: ClassVar[str] = "verb_phrase"``), not a dataclass field:
    every instance of a pass, whatever its options, has the same name.
    """

    name: ClassVar[str]

    def run(self, gm: fx.GraphModule, am: AnalysisManager) -> PassResult: ...


Verifier = Callable[[fx.GraphModule], None]

_REGISTRY: dict[str, type] = {}
P = TypeVar("P", bound=type)


def register_pass(cls: P) -> P:
    """Class decorator: make a pass available by its ``name`` to :func:`get_pass`.

    Pre: ``cls`` declares ``name: ClassVar[str] = "..."``; a dataclass *field* called ``name``
    is refused, since an option could then rename one instance. Apply it above ``@dataclass``.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name` to be registered")
    if is_dataclass(cls) and any(f.name == "name" for f in fields(cls)):
        raise TypeError(f"{cls.__name__}.name is a dataclass field; declare it "
                        f"`name: ClassVar[str] = {name!r}`")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"two passes are both called {name!r}")
    _REGISTRY[name] = cls
    return cls


def get_pass(name: str, **options: object) -> Pass:
    """An instance of the registered pass ``name`` with the given options."""
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none registered"
        raise KeyError(f"no pass called {name!r}; known passes: {known}")
    return _REGISTRY[name](**options)


def registered_passes() -> list[str]:
    """Names of every registered pass, sorted."""
    return sorted(_REGISTRY)


class PassManager:
    """Runs passes in order; optionally lints and verifies after each one.

    A failing pass (or a failing lint/verifier after it) is re-raised as
    :class:`alphac.errors.PassError` naming the pass and those already run.

    Example::

        pm = PassManager([EliminateDeadCode(), FoldIdentities()], lint=True)
        result = pm.run(gm)
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        *,
        lint: bool = False,
        verifier: Verifier | None = None,
        am: AnalysisManager | None = None,
    ) -> None:
        self.passes = list(passes)
        self.lint = lint
        self.verifier = verifier
        self.am = am if am is not None else AnalysisManager()

    def run(self, gm: fx.GraphModule) -> PassResult:
        """Run every pass on ``gm``; ``changed`` is true when any pass changed it."""
        done: list[str] = []
        changed = False
        for p in self.passes:
            before = graph_version(gm)
            try:
                result = p.run(gm, self.am)
                if self.lint:
                    result.gm.graph.lint()
                if self.verifier is not None:
                    self.verifier(result.gm)
            except PassError:
                raise
            except Exception as exc:  # noqa: BLE001 - re-raised with the pass named
                raise PassError(p.name, tuple(done), exc) from exc
            if result.gm is not gm:
                self.am.invalidate(gm)
            elif result.changed:
                self.am.restamp(gm, before, result.preserved)
            if result.changed and result.gm is gm and graph_version(gm) == before:
                raise PassError(
                    p.name, tuple(done), RuntimeError("changed the graph without the Rewriter")
                )
            gm = result.gm
            changed = changed or result.changed
            done.append(p.name)
        return PassResult(gm, changed, ALL_ANALYSES if not changed else frozenset())
