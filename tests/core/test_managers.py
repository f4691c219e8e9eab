from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.errors import PassError
from alphac.ir import Subgraph
from alphac.pass_manager import PassManager, PassResult, get_pass, register_pass, registered_passes
from alphac.passes.transform.eliminate_dead_code import EliminateDeadCode
from alphac.passes.transform.remove_identities import RemoveIdentities
from alphac.rewriter import Rewriter, graph_version


@dataclass(frozen=True)
class CountNodes:
    """A toy analysis: how many nodes a subgraph has; ``calls`` records each computation."""

    name: str = "count_nodes"
    calls: list | None = field(default=None, compare=False, hash=False)

    def compute(self, gm, subgraph, am):
        if self.calls is not None:
            self.calls.append(subgraph)
        return len(subgraph.nodes)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.skip = nn.Identity()

    def forward(self, x):
        unused = torch.sigmoid(x)  # noqa: F841 - dead on purpose
        y = self.skip(self.conv(x))
        return torch.relu(y.contiguous())


@pytest.fixture
def gm():
    return fx.symbolic_trace(Net())


def test_analysis_cache_hit_and_invalidation_by_rewrite(gm):
    calls: list = []
    am = AnalysisManager()
    analysis = CountNodes(calls=calls)
    first = am.get(analysis, gm)
    assert am.get(analysis, gm) == first
    assert (am.stats.hits, am.stats.misses, len(calls)) == (1, 1, 1)
    with Rewriter(gm).edit(eliminate_dead_code=True):
        pass
    assert graph_version(gm) == 1
    assert am.get(analysis, gm) == first - 1  # the dead sigmoid is gone
    assert len(calls) == 2 and am.stats.misses == 2


def test_cache_is_per_subgraph(gm):
    am = AnalysisManager()
    a = am.get(CountNodes(), gm, Subgraph.from_nodes(gm, ["conv"]))
    b = am.get(CountNodes(), gm, Subgraph.from_nodes(gm, ["conv", "skip"]))
    assert (a, b) == (1, 2)
    assert am.cached(gm) == 2


def test_two_pass_pipeline_and_idempotence(gm):
    x = torch.randn(2, 3, 8, 8)
    expected = gm(x)
    pm = PassManager([RemoveIdentities(), EliminateDeadCode()], lint=True)
    result = pm.run(gm)
    assert result.changed
    kinds = [n.op for n in result.gm.graph.nodes]
    assert "call_method" not in kinds  # contiguous removed
    assert not any(n.target == "skip" for n in result.gm.graph.nodes)
    assert not any(n.target is torch.sigmoid for n in result.gm.graph.nodes)
    assert torch.allclose(result.gm(x), expected)
    again = pm.run(result.gm)
    assert not again.changed


def test_verifier_runs_after_each_pass(gm):
    seen = []
    pm = PassManager([RemoveIdentities(), EliminateDeadCode()], verifier=lambda g: seen.append(1))
    pm.run(gm)
    assert len(seen) == 2


@dataclass(frozen=True)
class Broken:
    name: str = "broken"

    def run(self, gm, am):
        raise RuntimeError("boom")


@dataclass(frozen=True)
class Sneaky:
    """Claims a change but bypasses the Rewriter."""

    name: str = "sneaky"

    def run(self, gm, am):
        return PassResult(gm, changed=True)


def test_pass_error_names_pass_and_history(gm):
    pm = PassManager([EliminateDeadCode(), Broken()])
    with pytest.raises(PassError) as info:
        pm.run(gm)
    assert info.value.pass_name == "broken"
    assert info.value.already_run == ("eliminate_dead_code",)
    assert "boom" in str(info.value)


def test_change_without_rewriter_is_rejected(gm):
    with pytest.raises(PassError, match="without the Rewriter"):
        PassManager([Sneaky()]).run(gm)


def test_verifier_failure_is_reported_as_pass_error(gm):
    def verifier(g):
        raise AssertionError("bad graph")

    with pytest.raises(PassError, match="bad graph"):
        PassManager([RemoveIdentities()], verifier=verifier).run(gm)


def test_registry():
    assert {"eliminate_dead_code", "remove_identities"} <= set(registered_passes())
    p = get_pass("remove_identities", include_dropout=True)
    assert isinstance(p, RemoveIdentities) and p.include_dropout
    with pytest.raises(KeyError, match="known passes"):
        get_pass("no_such_pass")

    class Nameless:
        pass

    with pytest.raises(TypeError):
        register_pass(Nameless)


@dataclass(frozen=True)
class RenameReluToGelu:
    """Swaps relu for gelu; the node count stays, so it declares count_nodes preserved."""

    name: str = "relu_to_gelu"

    def run(self, gm, am):
        relus = [n for n in gm.graph.nodes if n.target is torch.relu]
        if not relus:
            return PassResult(gm, changed=False)
        with Rewriter(gm).edit():
            for n in relus:
                n.target = torch.nn.functional.gelu
        return PassResult(gm, changed=True, preserved=frozenset({"count_nodes"}))


def test_preserved_facts_survive_a_change_and_others_do_not(gm):
    calls: list = []
    am = AnalysisManager()
    counted = CountNodes(calls=calls)
    am.get(counted, gm)
    pm = PassManager([RenameReluToGelu()], am=am)
    assert pm.run(gm).changed
    am.get(counted, gm)
    assert len(calls) == 1  # preserved: served from the cache at the new version
    PassManager([EliminateDeadCode()], am=am).run(gm)  # changes, preserves nothing
    am.get(counted, gm)
    assert len(calls) == 2
