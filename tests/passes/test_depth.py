"""Depth: lattice laws, known blocks, transparent and size-query paths, brute-force agreement on
random subgraphs, and the distance/mutate semantics of the property."""

from __future__ import annotations

import random
from itertools import groupby

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph, node_map
from alphac.lattice import check_laws
from alphac.passes.analysis.depth import (
    DepthAnalysis,
    DepthFact,
    DepthLattice,
    DepthProperty,
    _carries_data,
    _class_of,
    infer_depth,
)
from alphac.passes.analysis.index import graph_index
from alphac.passes.analysis.mixing import tensor_inputs, tensor_outputs

LATTICE = DepthLattice(2, 2, cap=50)


@st.composite
def facts(draw: st.DrawFn) -> DepthFact:
    keys = draw(st.sets(st.sampled_from([(i, o) for i in range(2) for o in range(2)])))
    return DepthFact(tuple((k, draw(st.integers(0, 50))) for k in sorted(keys)))


@settings(max_examples=150, deadline=None)
@given(facts(), facts(), facts())
def test_lattice_laws(a: DepthFact, b: DepthFact, c: DepthFact) -> None:
    check_laws(LATTICE, a, b, c)


def test_worked_examples_and_fact_api() -> None:
    a = DepthFact((((0, 0), 2),))
    b = DepthFact((((0, 1), 0), ((0, 0), 3)))
    assert LATTICE.leq(a, b) and LATTICE.join(a, b) == b and LATTICE.meet(a, b) == a
    c, d = DepthFact((((0, 0), 2), ((1, 0), 5))), DepthFact((((0, 0), 4),))
    assert LATTICE.join(c, d) == DepthFact((((0, 0), 4), ((1, 0), 5)))
    assert LATTICE.meet(c, d) == DepthFact((((0, 0), 2),))
    assert LATTICE.top().get(1, 1) == 50 and LATTICE.bottom() == DepthFact()
    assert b.pairs == (((0, 0), 3), ((0, 1), 0)) and b.get(0, 1) == 0 and b.get(1, 1) is None
    assert b.as_dict() == {"0->0": 3, "0->1": 0} and hash(b) == hash(DepthFact(b.pairs))


BLOCK_DEPTHS = {
    "resnet18": {"BasicBlock": 4}, "resnet50": {"Bottleneck": 6},
    "vit_ti4": {"Block": 5, "Attention": 3, "Mlp": 3}, "small_cnn": {"ConvBlock": 2},
    "efficientnet_b0": {"MBConv": None, "SqueezeExcitation": 5},
    "mobilenet_v2": {"InvertedResidual": None},
}


@pytest.mark.parametrize("name", sorted(BLOCK_DEPTHS))
def test_known_blocks(name: str, zoo_model) -> None:
    tm = zoo_model(name)
    am = AnalysisManager()
    for block in tm.blocks:
        fact = am.get(DepthAnalysis(), tm.gm, block.subgraph(tm.gm))
        expected = BLOCK_DEPTHS[name].get(block.kind)
        if block.kind in ("MBConv", "InvertedResidual"):
            # [1x1 expand, act] dw, act, [SE: pool+fc, act, fc, gate, mul] project: L N L N ...;
            # the first stage has no expansion (an Identity, transparent).
            expand = any(n.endswith("expand_0") for n in block.nodes)
            expected = 2 * expand + (7 if name == "efficientnet_b0" else 3)
        assert fact.pairs == (((0, 0), expected),), (block.path, fact)


class Paths(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        a = torch.relu(self.conv(x)) + x          # L N L on the long path, L on the short one
        b = y.reshape(x.size(0), -1)              # x reaches b only through a size query
        c = x.contiguous()[0]                     # identity and getitem are transparent
        d = torch.cumsum(y, 1).relu()             # unknown counts as nonlinear: N N -> 1 run
        return a, b, c, d


def test_paths_runs_and_size_queries(traced) -> None:
    gm = traced(Paths(), (2, 3, 4, 4), (2, 3, 4, 4))
    fact = infer_depth(gm, Subgraph.whole(gm))
    assert fact.as_dict() == {"0->0": 3, "0->2": 0, "1->1": 1, "1->3": 1}


class MaskedPath(nn.Module):
    def forward(self, x):
        return torch.relu(x.masked_fill(x > 0.5, 0.0))  # x > 0.5 is a bool mask: no data path


def test_paths_through_masks_carry_no_data(traced) -> None:
    gm = traced(MaskedPath(), (2, 3, 4, 4))
    # only x -> masked_fill -> relu (L N) counts; x -> gt -> masked_fill would add a run
    assert infer_depth(gm, Subgraph.whole(gm)).as_dict() == {"0->0": 2}


def _brute_force(gm, sub: Subgraph) -> dict[tuple[int, int], int]:
    """Max over explicitly enumerated paths of the number of same-class runs."""
    by_name, inside, index = node_map(gm), set(sub.nodes), graph_index(gm)
    outs = {n: o for o, n in enumerate(tensor_outputs(gm, sub))}
    best: dict[tuple[int, int], int] = {}

    def walk(node, i: int, classes: list[str]) -> None:
        if node.name in outs:
            runs = len([k for k, _ in groupby(classes)])
            best[i, outs[node.name]] = max(best.get((i, outs[node.name]), -1), runs)
        for user in node.users:
            if user.name in inside and _carries_data(user):
                cls = _class_of(index, user)
                walk(user, i, classes + [cls] if cls else classes)

    for i, name in enumerate(tensor_inputs(gm, sub)):
        walk(by_name[name], i, [])
    return best


@pytest.mark.parametrize("name", ["resnet50", "vit_ti4", "efficientnet_b0", "mobilenet_v2"])
def test_matches_path_enumeration_on_random_subgraphs(name: str, zoo_model, grow_subgraph) -> None:
    tm = zoo_model(name)
    rng = random.Random(f"depth-{name}")
    pool = {n.name for n in tm.gm.graph.nodes}
    for _ in range(60):
        sub = grow_subgraph(tm.gm, pool, rng)
        assert dict(infer_depth(tm.gm, sub).pairs) == _brute_force(tm.gm, sub), sub.nodes


def test_distance() -> None:
    prop = DepthProperty()
    target = DepthFact((((0, 0), 4), ((0, 1), 2)))
    assert prop.distance(target, target) == 0
    assert prop.distance(target, DepthFact((((0, 0), 3),))) == pytest.approx(0.625)
    assert prop.distance(target, DepthFact((((0, 0), 9), ((0, 1), 2)))) == 0  # lower bound
    assert prop.distance(DepthFact((((0, 0), 0),)), DepthFact()) == 1.0  # missing pair
    assert prop.distance(DepthFact((((0, 0), 0),)), DepthFact((((0, 0), 0),))) == 0
    assert prop.distance(DepthFact(), target) == 0


@settings(max_examples=80, deadline=None)
@given(facts(), st.integers(0, 2**32 - 1))
def test_mutate(value: DepthFact, seed: int) -> None:
    prop = DepthProperty()
    child = prop.mutate(value, random.Random(seed), {})
    assert child == prop.mutate(value, random.Random(seed), {})
    assert [k for k, _ in child.pairs] == [k for k, _ in value.pairs]
    for (_, d), (_, c) in zip(value.pairs, child.pairs, strict=True):
        assert c >= 0 and abs(c - d) <= 2
    assert prop.mutate(value, random.Random(seed), {"p": 0.0}) == value
    wide = prop.mutate(value, random.Random(seed), {"p": 1.0, "delta_max": 3})
    assert all(abs(c - d) == 3 or c == 0 for (_, d), (_, c) in zip(value.pairs, wide.pairs,
                                                                      strict=True))


def test_mutate_moves_both_ways() -> None:
    prop, value = DepthProperty(), DepthFact((((0, 0), 5),))
    seen = {prop.mutate(value, random.Random(s), {}).get(0, 0) for s in range(200)}
    assert seen == {3, 4, 5, 6, 7}
