from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from alphac.ir import Subgraph, compute_nodes, count_params, extract, node_map


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return (y + x) * self.scale


@pytest.fixture
def gm() -> fx.GraphModule:
    return fx.symbolic_trace(Residual())


def test_subgraph_boundary(gm):
    sub = Subgraph.from_nodes(gm, ["conv", "relu"])
    assert sub.nodes == ("conv", "relu")
    assert sub.inputs == ("x",)
    assert sub.outputs == ("relu",)


def test_subgraph_pulls_in_parameters_as_members(gm):
    sub = Subgraph.from_nodes(gm, ["add", "mul"])
    assert "scale" in sub.nodes  # get_attr: a constant, not an input
    assert set(sub.inputs) == {"relu", "x"}
    assert sub.outputs == ("mul",)


def test_whole_graph(gm):
    sub = Subgraph.whole(gm)
    assert sub.inputs == ("x",)
    assert sub.outputs == ("mul",)
    assert len(sub.compute_node_names(gm)) == len(compute_nodes(gm))


def test_subgraph_is_hashable_value(gm):
    a = Subgraph.from_nodes(gm, ["relu", "conv"])
    b = Subgraph.from_nodes(gm, ["conv", "relu"])
    assert a == b and hash(a) == hash(b)


def test_unknown_node_and_empty(gm):
    with pytest.raises(KeyError, match="nope"):
        Subgraph.from_nodes(gm, ["nope"])
    with pytest.raises(ValueError):
        Subgraph((), (), ())


def test_connectivity(gm):
    assert Subgraph.from_nodes(gm, ["conv", "relu", "add"]).is_connected(gm)
    assert not Subgraph.from_nodes(gm, ["conv", "mul"]).is_connected(gm)


def test_extract_computes_the_same_values(gm):
    x = torch.randn(2, 4, 8, 8)
    sub = Subgraph.from_nodes(gm, ["conv", "relu", "add"])
    part = extract(gm, sub)
    expected = torch.relu(gm.conv(x)) + x
    assert torch.allclose(part(x, x) if len(sub.inputs) == 2 else part(x), expected)
    # parameters are shared, not copied
    assert part.conv.weight is gm.conv.weight


def test_count_params_counts_shared_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, lin)
    assert count_params(model) == 12


def test_node_map(gm):
    assert set(node_map(gm)) >= {"x", "conv", "relu", "add", "mul", "output"}
