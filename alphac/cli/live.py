"""The live view of `alphac optimize`: a rich panel on a terminal, one line per event elsewhere.

:class:`SearchView` is the search's ``on_event`` callback: it takes the typed events of
:mod:`alphac.search.events`. On a terminal it redraws a panel
(candidates trained, running and failed, promotions, the best model so far against the seed, the
Pareto front's size, elapsed time and ETA) and prints finished candidates above it; in a log or a
pipe it prints one plain line per finished, failed or promoted candidate, so logs stay greppable.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from alphac.search.events import (
    Event,
    FailedEvent,
    FinalStarted,
    FinalTrained,
    Progress,
    Promoted,
    ReferenceTrained,
    Retried,
    Trained,
)
from alphac.units import format_count, format_duration


def _cost(value: float | None, objective: str) -> str:
    if value is None:
        return "?"
    return f"{value:.2f} ms" if objective == "latency" else format_count(value)


class SearchView:
    """``on_event`` for :func:`alphac.search.driver.optimize`; use as a context manager."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live_enabled = console.is_terminal if live is None else live
        self.progress = Progress()
        self.phase = "training the seed"
        self._live: Live | None = None

    def __enter__(self) -> SearchView:
        if self.live_enabled:
            self._live = Live(self._panel(), console=self.console, refresh_per_second=2,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def __call__(self, event: Event) -> None:
        self.progress = event.progress
        if isinstance(event, FinalStarted):
            self.phase = f"retraining {event.models} models with the final recipe"
        elif isinstance(event, Trained) and event.seed:
            self.phase = "searching"
        line = self._line(event)
        if line is not None:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if self._live is not None:
            self._live.update(self._panel())

    def _line(self, event: Event) -> str | None:
        p = self.progress
        if isinstance(event, Trained):
            who = "seed" if event.seed else f"#{event.id}"
            count = "" if event.seed else f"[{p.trained}/{p.total or '-'}] "
            latency = f", {event.latency_ms:.2f} ms" if event.latency_ms is not None else ""
            return (f"  {count}{who}: val {100 * event.val_accuracy:.1f}%, params "
                    f"{format_count(event.params)}, FLOPs {format_count(event.flops)}{latency} "
                    f"({event.seconds:.0f} s)")
        if isinstance(event, Promoted):
            return (f"  #{event.id} rung {event.rung}: val {100 * event.val_accuracy:.1f}% "
                    f"({event.seconds:.0f} s)")
        if isinstance(event, ReferenceTrained):
            return (f"  seed fine-tuned {event.generation}x (the reference for generation "
                    f"{event.generation}): val {100 * event.val_accuracy:.1f}% "
                    f"({event.seconds:.0f} s)")
        if isinstance(event, FailedEvent | Retried):
            rung = f" rung {event.rung}" if event.rung else ""
            return f"  #{event.id}{rung} {event.kind}: {event.reason}"
        if isinstance(event, FinalStarted):
            return (f"  retraining {event.models} models (the Pareto front and the seed) with "
                    f"the final recipe, about {format_duration(event.estimate_s)}")
        if isinstance(event, FinalTrained):
            return (f"  final #{event.id}: val {100 * (event.val_accuracy or 0):.1f}%, "
                    f"test {100 * (event.test_accuracy or 0):.1f}%")
        return None

    def _panel(self) -> Panel:
        p = self.progress
        objective = p.objective
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("candidates", f"{p.trained} trained of {p.total or 'budget'}, "
                      f"{p.running} running, {p.failed} failed "
                      f"({p.synthesis_failed} in synthesis), {p.promotions} promotions")
        seed, best = p.seed, p.best
        if seed:
            table.add_row("seed", f"val {100 * seed.val_accuracy:.1f}%, {objective} "
                          f"{_cost(seed.cost, objective)}")
        if best and seed:
            ratio = (best.cost / seed.cost) if seed.cost and best.cost is not None else 1.0
            table.add_row("best so far", f"#{best.id}: val {100 * best.val_accuracy:.1f}% "
                          f"({100 * (best.val_accuracy - seed.val_accuracy):+.1f} pts), "
                          f"{objective} {_cost(best.cost, objective)} ({ratio:.0%} of seed)")
        table.add_row("pareto front", str(p.pareto))
        table.add_row("time", f"{format_duration(p.elapsed_s)} elapsed"
                      + (f" of {format_duration(p.budget_s)}" if p.budget_s else "")
                      + f", ETA {format_duration(p.eta_s)}")
        return Panel(Group(Text(self.phase, style="cyan"), table), title="alphac optimize",
                     expand=False)
