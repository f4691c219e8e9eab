from __future__ import annotations

import importlib
import pkgutil
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, replace
from typing import ClassVar

import pytest
import torch
from torch import fx, nn

import alphac.passes
from alphac.analysis import ALL_ANALYSES as CORE_ALL_ANALYSES
from alphac.analysis import AnalysisManager
from alphac.errors import PassError
from alphac.ir import Subgraph
from alphac.pass_manager import (
    ALL_ANALYSES,
    PassManager,
    PassResult,
    get_pass,
    register_pass,
    registered_passes,
)
from alphac.passes.transform.eliminate_dead_code import EliminateDeadCode
from alphac.passes.transform.remove_identities import RemoveIdentities
from alphac.rewriter import Rewriter, graph_version


@dataclass(frozen=True)
class CountNodes:
    """A toy analysis: how many nodes a subgraph has; ``calls`` records each computation."""

    name: ClassVar[str] = "count_nodes"
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


def test_memo_tables_belong_to_one_manager(gm):
    first, other = AnalysisManager(), AnalysisManager()
    first.table("toy")["key"] = 1
    assert first.table("toy") is first.table("toy") and first.table("toy")["key"] == 1
    assert "key" not in other.table("toy")  # two managers share no entry
    first.get(CountNodes(), gm)
    first.graph_cache(gm)["index"] = "scratch"
    assert other.cached(gm) == 0 and "index" not in other.graph_cache(gm)
    assert first.cache.sizes() == {"facts": 1, "scratch": 1, "toy": 1}


def test_clear_empties_every_table(gm):
    calls: list = []
    am = AnalysisManager()
    table = am.table("toy")
    table["key"] = 1
    am.table("other")["k"] = 2
    am.get(CountNodes(calls=calls), gm)
    am.graph_cache(gm)["index"] = "scratch"
    am.clear()
    assert am.cache.sizes() == {"facts": 0, "scratch": 0, "toy": 0, "other": 0}
    assert am.table("toy") is table and not table  # a holder's reference stays live, emptied
    assert am.cached(gm) == 0 and am.graph_cache(gm) == {}
    am.get(CountNodes(calls=calls), gm)
    assert len(calls) == 2  # the fact is computed again


def test_a_memo_table_forgets_at_its_bound():
    table = AnalysisManager().table("bounded", limit=2)
    table[1] = table[2] = "a"
    table[2] = "b"  # an existing key: no reset
    assert table == {1: "a", 2: "b"}
    table[3] = "c"
    assert table == {3: "c"}
    assert table.setdefault(4, "d") == "d" and table.setdefault(4, "e") == "d"
    assert table == {3: "c", 4: "d"}


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
    name: ClassVar[str] = "broken"

    def run(self, gm, am):
        raise RuntimeError("boom")


@dataclass(frozen=True)
class Sneaky:
    """Claims a change but bypasses the Rewriter."""

    name: ClassVar[str] = "sneaky"

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

    name: ClassVar[str] = "relu_to_gelu"

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


@dataclass(frozen=True)
class CountCalls:
    """A second toy analysis, so restamp has facts of two analyses to keep or drop."""

    name: ClassVar[str] = "count_calls"

    def compute(self, gm, subgraph, am):
        return sum(n.op == "call_function" for n in gm.graph.nodes if n.name in subgraph.nodes)


@dataclass(frozen=True)
class RenameKeepingEverything:
    """Swaps relu for gelu and declares every analysis preserved."""

    name: ClassVar[str] = "relu_to_gelu_keep_all"

    def run(self, gm, am):
        result = RenameReluToGelu().run(gm, am)
        return replace(result, preserved=ALL_ANALYSES) if result.changed else result


def test_all_analyses_is_one_value_in_core_and_pass_manager():
    assert ALL_ANALYSES is CORE_ALL_ANALYSES


def test_restamp_with_all_analyses_keeps_every_fact(gm):
    am = AnalysisManager()
    counted, calls = CountNodes(calls=[]), CountCalls()
    am.get(counted, gm)
    am.get(calls, gm)
    assert PassManager([RenameKeepingEverything()], am=am).run(gm).changed
    assert am.cached(gm) == 2  # both facts carried to the new version
    misses = am.stats.misses
    am.get(counted, gm)
    am.get(calls, gm)
    assert am.stats.misses == misses and len(counted.calls) == 1


def test_restamp_by_name_keeps_only_the_named_analysis(gm):
    am = AnalysisManager()
    counted, calls = CountNodes(calls=[]), CountCalls()
    am.get(counted, gm)
    am.get(calls, gm)
    PassManager([RenameReluToGelu()], am=am).run(gm)  # preserves count_nodes only
    assert am.cached(gm) == 1
    am.get(counted, gm)
    assert len(counted.calls) == 1


def test_restamp_all_analyses_does_not_revive_facts_of_older_versions(gm):
    am = AnalysisManager()
    am.get(CountNodes(), gm)  # stamped version 0
    Rewriter(gm).finish()  # an edit: version 1, the version-0 fact is stale now
    old = graph_version(gm)
    Rewriter(gm).finish()
    am.restamp(gm, old, ALL_ANALYSES)
    assert am.cached(gm) == 0


def _all_registered_passes() -> list[type]:
    for info in pkgutil.walk_packages(alphac.passes.__path__, "alphac.passes."):
        if info.name.startswith("alphac.passes.transform"):
            importlib.import_module(info.name)
    return [type(get_pass(name)) for name in registered_passes()]


def _option_variants(cls: type) -> list:
    """The default instance and one per boolean option flipped."""
    default = cls()
    flips = [f for f in fields(cls) if f.default is not MISSING and isinstance(f.default, bool)]
    return [default, *(replace(default, **{f.name: not f.default}) for f in flips)]


def test_every_registered_pass_has_a_class_variable_name_shared_by_its_instances():
    passes = _all_registered_passes()
    assert {EliminateDeadCode, RemoveIdentities} <= set(passes)
    for cls in passes:
        assert "ClassVar" in str(cls.__annotations__.get("name")), cls.__name__
        assert not is_dataclass(cls) or "name" not in {f.name for f in fields(cls)}, cls.__name__
        variants = _option_variants(cls)
        assert {v.name for v in variants} == {cls.name}, cls.__name__
    assert len(_option_variants(RemoveIdentities)) == 2  # include_dropout flipped
    with pytest.raises(TypeError):
        RemoveIdentities(name="renamed")  # not an option


def test_every_analysis_has_a_class_variable_name():
    from alphac.passes.analysis import (
        CostAnalysis,
        DepthAnalysis,
        FingerprintAnalysis,
        MixingAnalysis,
        ShapeAnalysis,
    )

    for cls in (CostAnalysis, DepthAnalysis, FingerprintAnalysis, MixingAnalysis, ShapeAnalysis):
        assert "name" not in {f.name for f in fields(cls)}, cls.__name__
        assert cls().name == cls.name


def test_register_pass_refuses_a_name_field():
    @dataclass(frozen=True)
    class NameAsOption:
        name: str = "name_as_option"

        def run(self, gm, am):
            return PassResult(gm, changed=False)

    with pytest.raises(TypeError, match="ClassVar"):
        register_pass(NameAsOption)
    assert "name_as_option" not in registered_passes()
