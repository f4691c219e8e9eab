"""The live view of `alphac optimize`: a rich panel on a terminal, one line per event elsewhere.

:class:`SearchView` is the search's ``on_event`` callback. On a terminal it redraws a panel
(candidates trained, running and failed, promotions, the best model so far against the seed, the
Pareto front's size, elapsed time and ETA) and prints finished candidates above it; in a log or a
pipe it prints one plain line per finished, failed or promoted candidate, so logs stay greppable.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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
        self.progress: dict[str, Any] = {}
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

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        self.progress = info.get("progress", self.progress)
        line = self._line(kind, info)
        if kind == "final_start":
            self.phase = f"retraining {info['models']} models with the final recipe"
        elif kind == "done" and info.get("seed"):
            self.phase = "searching"
        if line is not None:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)
        if self._live is not None:
            self._live.update(self._panel())

    def _line(self, kind: str, info: dict[str, Any]) -> str | None:
        p = self.progress
        if kind == "done":
            who = "seed" if info.get("seed") else f"#{info['id']}"
            total = p.get("total")
            count = "" if info.get("seed") else f"[{p.get('trained')}/{total or '-'}] "
            latency = (f", {info['latency_ms']:.2f} ms" if info.get("latency_ms") is not None
                       else "")
            return (f"  {count}{who}: val {100 * info['val_accuracy']:.1f}%, params "
                    f"{format_count(info['params'])}, FLOPs {format_count(info['flops'])}{latency} "
                    f"({info['seconds']:.0f} s)")
        if kind == "promoted":
            return (f"  #{info['id']} rung {info['rung']}: val "
                    f"{100 * info['val_accuracy']:.1f}% ({info['seconds']:.0f} s)")
        if kind in ("failed", "retry"):
            rung = f" rung {info['rung']}" if info.get("rung") else ""
            return f"  #{info['id']}{rung} {kind}: {info.get('reason')}"
        if kind == "final_start":
            return (f"  retraining {info['models']} models (the Pareto front and the seed) with "
                    f"the final recipe, about {format_duration(info.get('estimate_s'))}")
        if kind == "final":
            return (f"  final #{info['id']}: val {100 * (info['val_accuracy'] or 0):.1f}%, "
                    f"test {100 * (info['test_accuracy'] or 0):.1f}%")
        return None

    def _panel(self) -> Panel:
        p = self.progress
        objective = p.get("objective", "params")
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        total = p.get("total")
        table.add_row("candidates", f"{p.get('trained', 0)} trained of {total or 'budget'}, "
                      f"{p.get('running', 0)} running, {p.get('failed', 0)} failed "
                      f"({p.get('synthesis_failed', 0)} in synthesis), "
                      f"{p.get('promotions', 0)} promotions")
        seed, best = p.get("seed"), p.get("best")
        if seed:
            table.add_row("seed", f"val {100 * seed['val_accuracy']:.1f}%, {objective} "
                          f"{_cost(seed['cost'], objective)}")
        if best and seed:
            ratio = (best["cost"] / seed["cost"]) if seed["cost"] else 1.0
            table.add_row("best so far", f"#{best['id']}: val {100 * best['val_accuracy']:.1f}% "
                          f"({100 * (best['val_accuracy'] - seed['val_accuracy']):+.1f} pts), "
                          f"{objective} {_cost(best['cost'], objective)} ({ratio:.0%} of seed)")
        table.add_row("pareto front", str(p.get("pareto", 0)))
        budget = p.get("budget_s")
        table.add_row("time", f"{format_duration(p.get('elapsed_s', 0.0))} elapsed"
                      + (f" of {format_duration(budget)}" if budget else "")
                      + f", ETA {format_duration(p.get('eta_s'))}")
        return Panel(Group(Text(self.phase, style="cyan"), table), title="alphac optimize",
                     expand=False)
