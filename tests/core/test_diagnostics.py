from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import fx, nn

from alphac import diagnostics
from alphac.analysis import AnalysisManager
from alphac.diagnostics import AlphacWarning, Diagnostics, Finding, collect, current, report
from alphac.ir import Subgraph


def _sub(*names: str) -> Subgraph:
    return Subgraph(names, (), names[-1:])


def test_reports_go_into_the_active_collector_counted_per_analysis_and_op():
    first, second = _sub("a", "b"), _sub("c")
    with collect() as diag, warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing reaches the warnings machinery
        with diag.label(first, "layer1.0"):
            report("shape", "cumsum", "no rule for cumsum")
            report("shape", "cumsum", "no rule for cumsum")
            report("mixing", "cumsum", "cumsum is top")
        with diag.label(second, "layer1.1"):
            report("shape", "cumsum", "no rule for cumsum")
        report("shape", "flip", "no rule for flip")
    assert current() is None
    assert diag.findings() == (
        Finding("shape", "cumsum", "no rule for cumsum", 3, ("layer1.0", "layer1.1")),
        Finding("mixing", "cumsum", "cumsum is top", 1, ("layer1.0",)),
        Finding("shape", "flip", "no rule for flip", 1, ("<outside any analysis>",)),
    )
    assert len(diag) == 3
    assert diag.as_list()[0] == {"analysis": "shape", "op": "cumsum", "count": 3,
                                 "blocks": ["layer1.0", "layer1.1"],
                                 "message": "no rule for cumsum"}
    head, *lines = diag.summary()
    assert head.startswith("2 ops have no exact rule; these blocks are conservative: layer1.0, "
                           "layer1.1")
    assert lines[0] == "  cumsum (3 times; layer1.0, layer1.1): no rule for cumsum"
    assert Diagnostics().summary() == []


def test_without_a_collector_one_warning_per_analysis_and_op():
    diagnostics._WARNED.discard(("test", "odd_op"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            report("test", "odd_op", "test analysis: no rule for odd_op")
        report("other", "odd_op", "other analysis: no rule for odd_op")
    messages = [str(w.message) for w in caught]
    assert messages.count("test analysis: no rule for odd_op") == 1
    assert messages.count("other analysis: no rule for odd_op") == 1
    assert all(issubclass(w.category, AlphacWarning) for w in caught)


def test_an_analysis_once_set_is_honoured_and_resettable():
    seen: set[str] = set()
    with pytest.warns(AlphacWarning, match="odd"):
        report("test", "odd", "no rule for odd", seen=seen)
    assert seen == {"odd"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report("test", "odd", "no rule for odd", seen=seen)  # once: silent now
    seen.discard("odd")
    with pytest.warns(AlphacWarning):
        report("test", "odd", "no rule for odd", seen=seen)


def test_each_run_gets_its_own_collector_even_for_the_same_op():
    with collect() as one:
        report("shape", "cumsum", "no rule")
    with collect() as two:
        report("shape", "cumsum", "no rule")  # a second model in the same process: reported too
    assert len(one) == len(two) == 1
    with collect() as outer:
        with collect() as inner:
            report("shape", "flip", "no rule")
        assert current() is outer
    assert len(inner) == 1 and len(outer) == 0


def test_threads_do_not_share_a_collector():
    seen: list[Diagnostics | None] = []
    with collect():
        thread = threading.Thread(target=lambda: seen.append(current()))
        thread.start()
        thread.join()
    assert seen == [None]


@dataclass(frozen=True)
class _Reporting:
    """A toy analysis that reports one op per node it analyses."""

    name: ClassVar[str] = "toy"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> int:
        for node in subgraph.nodes:
            report("toy", node, f"toy analysis: no rule for {node}")
        return len(subgraph.nodes)


def test_the_manager_marks_the_subgraph_being_analysed_and_caches_silently():
    class Two(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, 1).flip(0)

    gm = fx.symbolic_trace(Two())
    am, whole, part = AnalysisManager(), Subgraph.whole(gm), Subgraph.from_nodes(gm, ["cumsum"])
    with collect() as diag:
        with diag.label(whole, "<model>"):
            am.get(_Reporting(), gm, whole)
            am.get(_Reporting(), gm, whole)  # cached: not reported twice
        am.get(_Reporting(), gm, part)  # unlabelled: described by its size
    found = {f.op: f for f in diag.findings()}
    assert found["cumsum"].count == 2
    assert found["cumsum"].where == ("<model>", "<subgraph of 1 nodes>")
    assert found["flip"].where == ("<model>",)
