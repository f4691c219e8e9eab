"""The mixing lattice, fact and property: laws (hypothesis), canonical form, distance, mutate."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.frontends.blocks import walk_blocks
from alphac.ir import Subgraph
from alphac.lattice import check_laws
from alphac.passes.analysis.depth import DepthAnalysis
from alphac.passes.analysis.mixing import (
    Mix,
    MixingAnalysis,
    MixingFact,
    MixingLattice,
    MixingProperty,
    mix_label,
    tensor_inputs,
    tensor_outputs,
)

IN_RANKS, OUT_RANKS = (2, 1), (3, 2)
LATTICE = MixingLattice(IN_RANKS, OUT_RANKS)
NO, ONE, MANY, ALL = Mix.NONE, Mix.ONE_TO_ONE, Mix.MANY_TO_ONE, Mix.ALL_TO_ONE


@st.composite
def facts(draw: st.DrawFn) -> MixingFact:
    pairs = []
    for i, ri in enumerate(IN_RANKS):
        for o, ro in enumerate(OUT_RANKS):
            if draw(st.booleans()):
                rows = draw(st.lists(st.lists(st.sampled_from(list(Mix)), min_size=ro,
                                              max_size=ro), min_size=ri, max_size=ri))
                pairs.append(((i, o), rows))
    return MixingFact(tuple(pairs), IN_RANKS, OUT_RANKS)


@settings(max_examples=150, deadline=None)
@given(facts(), facts(), facts())
def test_lattice_laws(a: MixingFact, b: MixingFact, c: MixingFact) -> None:
    check_laws(LATTICE, a, b, c)


def test_order_and_worked_examples() -> None:
    one = MixingFact((((0, 0), ((ONE,),)),), (1,), (1,))
    all_ = MixingFact((((0, 0), ((ALL,),)),), (1,), (1,))
    lat = MixingLattice.of(one)
    assert lat.leq(one, all_) and not lat.leq(all_, one)
    assert lat.join(one, all_) == all_ and lat.meet(one, all_) == one
    a = MixingFact((((0, 0), ((ONE, NO),)),), (1,), (2,))
    b = MixingFact((((0, 0), ((NO, MANY),)),), (1,), (2,))
    lat = MixingLattice((1,), (2,))
    assert lat.join(a, b).matrix(0, 0) == ((ONE, MANY),)
    assert lat.meet(a, b) == lat.bottom()
    assert lat.top().matrix(0, 0) == ((ALL, ALL),)


def test_mix_labels() -> None:
    assert [m.label for m in Mix] == ["none", "one", "many", "all"]
    assert NO < ONE < MANY < ALL
    assert mix_label(4, False, 4) == NO
    assert mix_label(4, True, 4) == ALL
    assert mix_label(4, True, 2) == MANY
    assert mix_label(4, True, 1) == ONE and mix_label(4, True, 0) == ONE
    assert mix_label(1, True, 1) == ONE  # a size-1 dim is only paired or not


def test_fact_is_canonical_and_hashable() -> None:
    rows = ((NO, NO, NO), (NO, NO, NO))
    a = MixingFact((((1, 0), ((ONE,), )), ((0, 0), rows)), IN_RANKS, OUT_RANKS)
    b = MixingFact((((1, 0), ((1,),)),), IN_RANKS, OUT_RANKS)
    assert a == b and hash(a) == hash(b)  # all-NONE pairs dropped, ints become Mix, sorted
    assert a.matrix(0, 0) == rows  # an absent valid pair is all NONE
    assert a.matrix(0, 1) == ((NO, NO), (NO, NO))
    assert a.matrix(5, 0) is None
    assert a.as_dict() == {"0->0": [["none"] * 3] * 2, "0->1": [["none"] * 2] * 2,
                           "1->0": [["one"]], "1->1": [["none", "none"]]}


def test_combining_different_ranks_is_an_error() -> None:
    a = MixingFact((((0, 0), ((ONE,),)),), (1,), (1,))
    b = MixingFact((((0, 0), ((ONE, ONE),)),), (1,), (2,))
    with pytest.raises(ValueError, match="ranks"):
        LATTICE.join(a, b)


def test_distance() -> None:
    prop = MixingProperty()
    target = MixingFact((((0, 0), ((ALL, ONE),)),), (1,), (2,))
    assert prop.distance(target, target) == 0
    weaker = MixingFact((((0, 0), ((MANY, ONE),)),), (1,), (2,))
    assert prop.distance(target, weaker) == 0.5
    stronger = MixingFact((((0, 0), ((ALL, ALL),)),), (1,), (2,))
    assert prop.distance(target, stronger) == 0  # the target is a lower bound
    assert prop.distance(target, MixingFact((), (1,), (2,))) == 1.0
    two = MixingFact((((0, 0), ((ALL, ONE),)), ((0, 1), ((ONE,),))), (1,), (2, 1))
    assert prop.distance(two, MixingFact((((0, 0), ((ALL, ONE),)),), (1,), (2, 1))) == 0.5
    assert prop.distance(MixingFact(), weaker) == 0.0


@settings(max_examples=60, deadline=None)
@given(facts(), st.integers(0, 2**32 - 1))
def test_mutate_drops_pairs_only_and_is_deterministic(value: MixingFact, seed: int) -> None:
    prop = MixingProperty()
    child = prop.mutate(value, random.Random(seed), {})
    assert child == prop.mutate(value, random.Random(seed), {})
    assert LATTICE.leq(child, value)  # only relaxes
    assert set(child.matrices()) <= set(value.matrices())
    assert all(value.matrices()[k] == m for k, m in child.matrices().items())
    assert prop.mutate(value, random.Random(seed), {"p": 0.0}) == value
    assert prop.mutate(value, random.Random(seed), {"p": 1.0}).matrices() == {}


def test_numbering_skips_non_tensor_values(zoo_model) -> None:
    tm = zoo_model("vit_ti4")
    attn = next(b for b in walk_blocks(tm.blocks) if b.kind == "Attention")
    names = ["blocks_0_attn_qkv", "reshape", "permute"]
    sub = Subgraph.from_nodes(tm.gm, names)
    assert len(sub.inputs) > 1  # the ints from the size queries come in too
    assert tensor_inputs(tm.gm, sub) == ("blocks_0_norm1",)
    assert tensor_outputs(tm.gm, sub) == ("permute",)
    fact = MixingAnalysis().compute(tm.gm, sub, AnalysisManager())
    assert fact.in_ranks == (3,) and fact.out_ranks == (5,)
    block = MixingAnalysis().compute(tm.gm, attn.subgraph(tm.gm), AnalysisManager())
    assert (block.in_ranks, block.out_ranks) == ((3,), (3,))  # the whole block: tokens in, out
    am = AnalysisManager()
    first = am.get(MixingAnalysis(), tm.gm, sub)
    assert am.get(MixingAnalysis(), tm.gm, sub) is first and am.stats.hits == 1


def test_unannotated_graph_is_refused() -> None:
    gm = fx.symbolic_trace(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="tensor_meta"):
        MixingAnalysis().compute(gm, Subgraph.whole(gm), AnalysisManager())
    with pytest.raises(ValueError, match="tensor_meta"):
        DepthAnalysis().compute(gm, Subgraph.whole(gm), AnalysisManager())
