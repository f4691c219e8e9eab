"""The live view of `alphac optimize`: lines in a log, a panel on a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from alphac.cli.live import SearchView
from alphac.search.events import (
    FailedEvent,
    Point,
    Progress,
    Promoted,
    ReferenceTrained,
    Started,
    Trained,
)

PROGRESS = Progress(trained=3, total=8, running=1, failed=1, synthesis_failed=1, promotions=2,
                    pareto=2, elapsed_s=75.0, budget_s=600.0, eta_s=130.0, objective="params",
                    seed=Point(0.80, 1000.0), best=Point(0.805, 400.0, id=4))


def test_a_log_gets_one_line_per_event_and_no_panel():
    out = io.StringIO()
    view = SearchView(Console(file=out, width=120), live=False)
    with view:
        view(Started(id=4, rung=0, progress=PROGRESS))
        view(Trained(id=4, val_accuracy=0.805, params=400, flops=9000, latency_ms=None,
                     seconds=12.0, progress=PROGRESS))
        view(Promoted(id=4, rung=1, val_accuracy=0.83, seconds=24.0, progress=PROGRESS))
        view(ReferenceTrained(generation=2, val_accuracy=0.81, seconds=9.0, progress=PROGRESS))
        view(FailedEvent(id=5, reason="synthesis: no chain met the depth", progress=PROGRESS))
    lines = out.getvalue().splitlines()
    assert lines == ["  [3/8] #4: val 80.5%, params 400, FLOPs 9.00k (12 s)",
                     "  #4 rung 1: val 83.0% (24 s)",
                     "  seed fine-tuned 2x (the reference for generation 2): val 81.0% (9 s)",
                     "  #5 failed: synthesis: no chain met the depth"]


def test_a_terminal_gets_a_panel_with_the_best_against_the_seed_and_an_eta():
    view = SearchView(Console(file=io.StringIO(), width=120), live=False)
    view.progress = PROGRESS
    out = io.StringIO()
    Console(file=out, width=120).print(view._panel())
    text = out.getvalue()
    assert "3 trained of 8, 1 running, 1 failed (1 in synthesis), 2 promotions" in text
    assert "#4: val 80.5% (+0.5 pts), params 400 (40% of seed)" in text
    assert "1m15s elapsed of 10m00s, ETA 2m10s" in text


def test_a_panel_before_any_event_shows_no_seed_and_no_eta():
    view = SearchView(Console(file=io.StringIO(), width=120), live=False)
    out = io.StringIO()
    Console(file=out, width=120).print(view._panel())
    text = out.getvalue()
    assert "0 trained of budget" in text and "best so far" not in text
