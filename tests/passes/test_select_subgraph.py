"""select_subgraph over every block of zoo and library models, both frontends, and small graphs."""

from __future__ import annotations

import functools
import math
import operator
import random

import pytest
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from alphac.analysis import AnalysisManager
from alphac.frontends import find_blocks, load, zoo
from alphac.frontends.trace import _export, annotate_shapes, trace
from alphac.ir import COMPUTE_OPS, Subgraph, node_map
from alphac.passes.analysis.program_infer import lift
from alphac.passes.transform.select_subgraph import select_subgraph, whole_model_region
from alphac.passes.transform.splice import _check_convex
from tests.libmodels import build
from tests.passes.conftest import trace_module

ZOO = ["resnet18", "resnet34", "vit_ti4", "efficientnet_b0", "mobilenet_v2", "small_cnn"]
LIBRARY = ["timm:vit_tiny", "timm:swin_tiny", "timm:convnext_atto", "timm:efficientnet_b0",
           "transformers:vit"]
#: Seeds per block: many on the zoo, fewer on the larger library models.
SEEDS = {**{f"zoo:{m}": 40 for m in ZOO}, "export:vit_ti4": 40, **{m: 10 for m in LIBRARY}}


@functools.cache
def model(name: str) -> tuple[fx.GraphModule, tuple[tuple[str, ...], ...]]:
    """``(gm, the node names of each block)`` for a zoo model (``zoo:``), the zoo ViT through
    torch.export (``export:``) or a library model, loaded once per module."""
    if name.startswith("zoo:"):
        traced = load(name, (2, 3, 16, 16), num_classes=10)
        return traced.gm, tuple(b.nodes for b in traced.blocks)
    if name.startswith("export:"):
        module = zoo.build(name.split(":")[1], num_classes=10, input_shape=(3, 16, 16)).eval()
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        gm = _export(module, (x,))
        annotate_shapes(gm, (x,))
        return gm, tuple(b.nodes for b in find_blocks(gm))
    module = build(name).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gm, frontend = trace(module, (x,))
    annotate_shapes(gm, (x,))
    return gm, tuple(b.nodes for b in find_blocks(gm, module if frontend == "fx" else None))


def is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def cap_of(gm: fx.GraphModule, region, max_fraction: float = 0.8) -> int:
    by_name = node_map(gm)
    return max(1, math.floor(max_fraction * sum(by_name[n].op in COMPUTE_OPS for n in region)))


def check_selection(gm: fx.GraphModule, region, sub: Subgraph, cap: int) -> None:
    """Every postcondition of select_subgraph that can be read off the result."""
    by_name, inside, members = node_map(gm), set(region), set(sub.nodes)
    computing = sub.compute_node_names(gm)
    assert set(computing) <= inside, set(computing) - inside
    assert all(by_name[n].op == "get_attr" for n in members - set(computing))
    assert sub.is_connected(gm)
    _check_convex(by_name, sub)
    for name in sub.inputs:  # a non-tensor input comes from outside the region (export's sym_size)
        node = by_name[name]
        assert is_tensor(node) or node.op == "placeholder" or name not in inside, name
    assert all(is_tensor(by_name[n]) for n in sub.outputs), sub.outputs
    for name in computing:  # closed: a member's non-tensor value has all its region users inside
        node = by_name[name]
        if not is_tensor(node):
            assert {u.name for u in node.users} & inside <= members, name
    if len(computing) > cap:  # only closure goes past the cap: plumbing or a reconverging path
        plumbing = any(not is_tensor(by_name[n]) for n in computing)
        fan_out = any(sum(u.name in members for u in by_name[n].users) > 1 for n in computing)
        assert plumbing or fan_out, (len(computing), cap)


def is_chain(gm: fx.GraphModule, sub: Subgraph) -> bool:
    """A path of single-use edges: each member's value read once, by the next member."""
    by_name = node_map(gm)
    names = sub.compute_node_names(gm)
    members = set(names)
    for earlier, later in zip(names, names[1:], strict=False):
        if [u.name for u in by_name[earlier].users] != [later]:
            return False
    return all(sum(p.name in members for p in by_name[n].all_input_nodes) <= 1 for n in names)


@pytest.mark.parametrize("name", list(SEEDS))
def test_selections_are_connected_convex_closed_and_lift(name: str) -> None:
    gm, blocks = model(name)
    assert blocks, f"{name} has no blocks"
    distinct: set[Subgraph] = set()
    for region in blocks:
        cap = cap_of(gm, region)
        for seed in range(SEEDS[name]):
            sub = select_subgraph(gm, region, random.Random(seed))
            check_selection(gm, region, sub, cap)
            chain = select_subgraph(gm, region, random.Random(seed), sequential=True)
            check_selection(gm, region, chain, cap)
            assert is_chain(gm, chain), chain.nodes
            distinct.update((sub, chain))
    am = AnalysisManager()
    for sub in sorted(distinct, key=lambda s: s.nodes):  # many seeds pick the same subgraph
        lift(gm, sub, am)


@pytest.mark.parametrize("name", list(SEEDS))
def test_same_seed_same_subgraph_and_seeds_differ(name: str) -> None:
    gm, blocks = model(name)
    for region in blocks:
        picks = [select_subgraph(gm, region, random.Random(seed)) for seed in range(SEEDS[name])]
        assert select_subgraph(gm, region, random.Random(3)) == picks[3]
        assert select_subgraph(gm, region, random.Random(3), sequential=True) == \
            select_subgraph(gm, region, random.Random(3), sequential=True)
        assert len(set(picks)) >= min(3, cap_of(gm, region)), (region, set(picks))


def test_export_size_queries_outside_the_blocks_stay_inputs() -> None:
    gm, blocks = model("export:vit_ti4")
    sizes = {n.name for n in gm.graph.nodes if n.target is torch.ops.aten.sym_size.int}
    assert sizes and not sizes & {n for region in blocks for n in region}
    reading = {sub for region in blocks for seed in range(20)
               for sub in [select_subgraph(gm, region, random.Random(seed))]
               if sizes & set(sub.inputs)}
    assert reading, "no selection read the batch size"
    for sub in sorted(reading, key=lambda s: s.nodes)[:5]:
        assert lift(gm, sub)[0].inputs == sub.inputs


def test_library_swin_window_sizes_bring_their_reshapes() -> None:
    gm, blocks = model("timm:swin_tiny")
    by_name = node_map(gm)
    region = blocks[0]
    sizes = {n for n in region if by_name[n].op in COMPUTE_OPS and not is_tensor(by_name[n])}
    readers = {u.name for n in sizes for u in by_name[n].users if is_tensor(u)} & set(region)
    assert sizes and readers  # B, H, W, C = x.shape and the padding arithmetic: the window views
    reached = 0
    for seed in range(10):
        members = set(select_subgraph(gm, region, random.Random(seed)).nodes)
        if members & sizes:
            reached += 1
            used = {u.name for n in members & sizes for u in by_name[n].users} & set(region)
            assert used <= members
    assert reached, "no selection reached the window size arithmetic"


def test_whole_model_region_of_a_model_without_blocks() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 5))
    gm = trace_module(net, (2, 3, 8, 8))
    assert find_blocks(gm) == []
    region = whole_model_region(gm)
    assert region == tuple(n.name for n in gm.graph.nodes if n.op in COMPUTE_OPS)
    seen = set()
    for seed in range(30):
        sub = select_subgraph(gm, region, random.Random(seed))
        check_selection(gm, region, sub, cap_of(gm, region))
        assert len(sub.compute_node_names(gm)) <= 4
        lift(gm, sub)
        seen.add(sub)
    assert len(seen) >= 4


class SizedReshape(nn.Module):
    """conv, relu, then a reshape to ``(a.shape[0] * a.shape[1], -1)``: size plumbing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(36, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x).relu()
        rows = a.shape[0] * a.shape[1]
        return self.fc(a.reshape(rows, -1))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_a_reshape_and_its_size_arithmetic_join_together(p: float) -> None:
    gm = trace_module(SizedReshape(), (2, 3, 8, 8))
    by_name = node_map(gm)
    reshape = next(n.name for n in gm.graph.nodes if n.target == "reshape")
    sizes = {n.name for n in gm.graph.nodes if n.op in COMPUTE_OPS and not is_tensor(n)}
    assert len(sizes) == 5 and by_name[reshape].all_input_nodes[1].target is operator.mul
    region = whole_model_region(gm)
    kinds = set()
    for seed in range(40):
        sub = select_subgraph(gm, region, random.Random(seed), p=p)
        check_selection(gm, region, sub, cap_of(gm, region))
        together = sizes | {reshape}
        assert together <= set(sub.nodes) or not together & set(sub.nodes), sub.nodes
        kinds.add(reshape in sub.nodes)
    if p < 1:  # p = 1 grows 7 of the 9 nodes, which closure makes 8, reshape included
        assert kinds == {True, False}
    # the reshape alone (the only start of this region) pulls in all its size arithmetic
    alone = select_subgraph(gm, (*sorted(sizes), reshape), random.Random(0), max_fraction=0.0)
    assert set(alone.compute_node_names(gm)) == sizes | {reshape}
    assert [by_name[n].op for n in alone.inputs] == ["call_method"]  # the relu's tensor


def test_growth_stops_at_the_cap_and_by_p() -> None:
    net = nn.Sequential(*[nn.Linear(4, 4) if i % 2 == 0 else nn.ReLU() for i in range(10)])
    gm = trace_module(net, (2, 4))
    region = whole_model_region(gm)
    for seed in range(20):
        full = select_subgraph(gm, region, random.Random(seed), p=1.0)
        assert len(full.nodes) == 8  # floor(0.8 * 10)
        one = select_subgraph(gm, region, random.Random(seed), p=0.0)
        assert len(one.compute_node_names(gm)) == 2
        single = select_subgraph(gm, region, random.Random(seed), max_fraction=0.0)
        assert len(single.compute_node_names(gm)) == 1
        assert is_chain(gm, select_subgraph(gm, region, random.Random(seed), sequential=True))


class Plumbed(nn.Module):
    """A chunk's two getitems, a size query and a reshape: only the add is a start."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.relu().chunk(2, 1)
        rows = a.size(0)
        return (a + b).reshape(rows, -1)


def test_a_start_is_never_a_size_query_or_getitem() -> None:
    gm = trace_module(Plumbed(), (2, 4, 3))
    by_name = node_map(gm)
    region = tuple(n.name for n in gm.graph.nodes if n.target in (operator.getitem, "size")
                   or n.target is operator.add)
    assert len(region) == 4 and not is_tensor(by_name["size"])
    add = next(n for n in region if by_name[n].target is operator.add)
    for seed in range(20):
        sub = select_subgraph(gm, region, random.Random(seed), max_fraction=0.0)
        assert sub.nodes == (add,)


def test_a_region_without_computing_nodes_is_refused() -> None:
    gm = trace_module(SizedReshape(), (2, 3, 8, 8))
    placeholders = tuple(n.name for n in gm.graph.nodes if n.op in ("placeholder", "output"))
    with pytest.raises(ValueError, match="no computing node"):
        select_subgraph(gm, placeholders, random.Random(0))
    with pytest.raises(ValueError, match="no computing node"):
        select_subgraph(gm, (), random.Random(0))
    with pytest.raises(ValueError, match="not in the graph"):
        select_subgraph(gm, ("nonexistent",), random.Random(0))
