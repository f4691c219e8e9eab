"""What a search tells its watcher: one typed event per step, each with a progress snapshot.

The driver emits an :class:`Event` for every start, finished training, failure, retry,
promotion, seed reference and final retraining; ``on_event`` (the CLI's live view, or a user's
callback given to :func:`alphac.optimize`) receives it. Every event has a ``kind`` (``"done"``,
``"failed"`` ...), its own fields as attributes, and ``progress``, a :class:`Progress` snapshot
(counts, the best so far against the seed, the Pareto front's size, time and ETA).
``event.as_dict()`` is the plain form (its fields plus ``"progress"``), for logs and JSON; a
callback that takes two arguments is called as ``on_event(kind, info)`` with that dict, the form
earlier releases used.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

__all__ = ["EVENTS", "Event", "FailedEvent", "FinalStarted", "FinalTrained", "Point", "Progress",
           "Promoted", "ReferenceTrained", "Retried", "Started", "Trained", "listener"]


@dataclass(frozen=True)
class Point:
    """One model on the accuracy/cost plane (the seed, or the best so far)."""

    val_accuracy: float
    cost: float | None
    id: int | None = None


@dataclass(frozen=True)
class Progress:
    """A snapshot of the search for the live view. ``trained`` children of ``total`` (None:
    until the budget ends), ``running`` jobs, ``failed`` children (``synthesis_failed`` of them
    before training), ``promotions`` (successive-halving rungs climbed), ``pareto`` models on the
    front; ``elapsed_s`` of ``budget_s`` and ``eta_s`` seconds left (None: not known yet)."""

    trained: int = 0
    total: int | None = None
    running: int = 0
    failed: int = 0
    synthesis_failed: int = 0
    promotions: int = 0
    pareto: int = 0
    elapsed_s: float = 0.0
    budget_s: float | None = None
    eta_s: float | None = None
    objective: str = "params"
    seed: Point | None = None
    best: Point | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Event:
    """The base of every event: its ``kind`` and the search's ``progress`` when it happened."""

    kind: ClassVar[str] = "event"
    progress: Progress = field(default_factory=Progress, kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        """The event's fields and ``"progress"`` as plain values."""
        info = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}
        return {**info, "progress": self.progress.as_dict()}


@dataclass(frozen=True)
class Started(Event):
    """A job was handed to a worker: a child's proxy (``rung`` 0), a promotion (``rung`` > 0)
    or a seed reference (``rung`` = -generation)."""

    kind: ClassVar[str] = "start"
    id: int
    rung: int = 0


@dataclass(frozen=True)
class Trained(Event):
    """A model's first training finished (``seed``: the seed model's own training)."""

    kind: ClassVar[str] = "done"
    id: int
    val_accuracy: float
    params: int
    flops: float
    latency_ms: float | None
    seconds: float
    seed: bool = False


@dataclass(frozen=True)
class FailedEvent(Event):
    """A child could not be made (``reason`` starts with ``synthesis:``) or trained."""

    kind: ClassVar[str] = "failed"
    id: int | None
    reason: str | None
    rung: int = 0


@dataclass(frozen=True)
class Retried(Event):
    """A job's worker was lost; the job runs once more."""

    kind: ClassVar[str] = "retry"
    id: int
    rung: int
    reason: str | None


@dataclass(frozen=True)
class Promoted(Event):
    """A model trained on to rung ``rung`` (successive halving)."""

    kind: ClassVar[str] = "promoted"
    id: int
    rung: int
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class ReferenceTrained(Event):
    """The seed, fine-tuned ``generation`` times, for equal-training comparisons."""

    kind: ClassVar[str] = "reference"
    generation: int
    val_accuracy: float
    seconds: float


@dataclass(frozen=True)
class FinalStarted(Event):
    """The final retraining of ``models`` models began (about ``estimate_s`` seconds)."""

    kind: ClassVar[str] = "final_start"
    models: int
    estimate_s: float | None


@dataclass(frozen=True)
class FinalTrained(Event):
    """One model of the final retraining finished; ``row`` is its report row."""

    kind: ClassVar[str] = "final"
    id: int
    val_accuracy: float | None
    test_accuracy: float | None
    row: dict[str, Any] = field(default_factory=dict)


#: Every event type by kind.
EVENTS: dict[str, type[Event]] = {e.kind: e for e in (
    Started, Trained, FailedEvent, Retried, Promoted, ReferenceTrained, FinalStarted,
    FinalTrained)}


def listener(on_event: Callable[..., Any] | None) -> Callable[[Event], None]:
    """``on_event`` as a callable of one :class:`Event`: a callback of two positional
    parameters is called with ``(event.kind, event.as_dict())``; None listens to nothing."""
    if on_event is None:
        return lambda event: None
    try:
        params = [p for p in inspect.signature(on_event).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    except (TypeError, ValueError):  # a builtin without a signature: the typed form
        params = []
    if len(params) >= 2:
        return lambda event: on_event(event.kind, event.as_dict())
    return on_event
