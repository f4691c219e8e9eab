from __future__ import annotations

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from alphac.analysis import AnalysisManager
from alphac.frontends import annotate_shapes, load, zoo
from alphac.frontends.blocks import walk_blocks
from alphac.ir import Subgraph, count_params, extract, flop_counter_flops
from alphac.passes.analysis.cost import OTHER_COST, CostAnalysis, CostFact, model_cost
from alphac.passes.analysis.ground_truth import subgraph_inputs
from alphac.symbols import dim, same

B, C, H, W, N = (dim(s) for s in "BCHWN")
MODELS = zoo.names()
#: Block by block flop_counter runs are slow; these cover basic, bottleneck, attention, MLP and
#: depthwise blocks (the whole-model check covers every model).
PER_BLOCK = ("resnet50", "vit_ti4", "mobilenet_v2", "small_cnn")


def cost_of(gm: fx.GraphModule, sub: Subgraph | None = None) -> CostFact:
    return AnalysisManager().get(CostAnalysis(), gm, sub or Subgraph.whole(gm))


def subgraph_params(gm: fx.GraphModule, sub: Subgraph) -> int:
    """Parameters of the subgraph's modules and get_attr tensors, each tensor once."""
    nodes = {n.name: n for n in gm.graph.nodes}
    found: dict[int, torch.Tensor] = {}
    for name in sub.nodes:
        node = nodes[name]
        if node.op == "call_module":
            found.update({id(p): p for p in gm.get_submodule(str(node.target)).parameters()})
        elif node.op == "get_attr":
            value = gm
            for part in str(node.target).split("."):
                value = getattr(value, part)
            if isinstance(value, nn.Parameter):
                found[id(value)] = value
    return sum(p.numel() for p in found.values())


@pytest.mark.parametrize("name", MODELS)
def test_zoo_cost_matches_numel_and_flop_counter(zoo_model, name):
    model = zoo_model(name)
    whole = cost_of(model.gm).concrete()
    assert whole.params == count_params(model.gm)
    assert whole.flops == flop_counter_flops(model.gm, model.example_inputs)
    am = AnalysisManager()
    for block in model.blocks if name in PER_BLOCK else ():
        sub = block.subgraph(model.gm)
        cost = am.get(CostAnalysis(), model.gm, sub).concrete()
        flops = flop_counter_flops(extract(model.gm, sub), tuple(subgraph_inputs(model.gm, sub)))
        assert (cost.params, cost.flops) == (subgraph_params(model.gm, sub), flops), block.path


def test_basic_block_cost_is_symbolic_and_stage_invariant(zoo_model):
    model = zoo_model("resnet18")
    am = AnalysisManager()
    facts = {b.path: am.get(CostAnalysis(), model.gm, b.subgraph(model.gm)) for b in model.blocks}
    for path in ("layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"):
        fact = facts[path]
        assert same(fact.params, 18 * C**2 + 4 * C), path  # two 3x3 convs, two batch norms
        assert same(fact.flops, 36 * B * C**2 * H * W), path
    assert facts["layer1.1"] == facts["layer4.1"]
    assert facts["layer1.1"].concrete() != facts["layer4.1"].concrete()


def test_bottleneck_and_vit_costs_are_width_polynomials(zoo_model):
    resnet = zoo_model("resnet50")
    fact = cost_of(resnet.gm, resnet.blocks[1].subgraph(resnet.gm))
    # 1x1 C->C/4, 3x3 C/4->C/4, 1x1 C/4->C, three batch norms
    assert same(fact.params, C**2 / 4 + 9 * C**2 / 16 + C**2 / 4 + 2 * (C / 4 + C / 4 + C))
    vit = zoo_model("vit_ti4")
    mlp = next(b for b in walk_blocks(vit.blocks) if b.kind == "Mlp")
    fact = cost_of(vit.gm, mlp.subgraph(vit.gm))
    assert same(fact.params, 8 * C**2 + 5 * C) and same(fact.flops, 16 * B * N * C**2)


class Mixed(nn.Module):
    """Grouped, depthwise, dilated, 1-D and transposed convs, shared and tied weights, attention."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 5, padding=4, dilation=2, groups=32, bias=False)
        self.up = nn.ConvTranspose2d(32, 8, 2, stride=2)
        self.conv1d = nn.Conv1d(8, 8, 3)
        self.shared = nn.Linear(8, 8)
        self.tied = nn.Linear(8, 8, bias=False)
        self.tied.weight = self.shared.weight
        self.norm = nn.LayerNorm(8)
        self.gn = nn.GroupNorm(4, 32)
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.depthwise(self.gn(self.grouped(x))))        # (B, 8, 2H, 2W)
        t = self.conv1d(y.flatten(2)).transpose(1, 2)                # (B, L, 8)
        t = self.norm(self.shared(self.shared(t)) + self.tied(t)) * self.scale
        q = t.unsqueeze(1)
        a = F.scaled_dot_product_attention(q, q, q)
        s = torch.einsum("bhid,bhjd->bhij", q, q).softmax(-1) @ q
        return torch.bmm(a[:, 0], t.transpose(1, 2)).sum() + (s * F.gelu(a)).mean()


def test_hand_made_module_matches_flop_counter_and_numel():
    module = Mixed()
    gm = fx.symbolic_trace(module)
    x = (torch.randn(2, 16, 6, 6),)
    annotate_shapes(gm, x)
    cost = cost_of(gm)
    assert cost.concrete().params == count_params(module)
    # flop_counter misses the fused CPU attention kernel; the math backend runs it as two bmm
    with sdpa_kernel(SDPBackend.MATH):
        assert cost.concrete().flops == flop_counter_flops(gm, x)
    assert cost.params.free_symbols and cost.flops.free_symbols


def test_functional_and_export_graphs(model_file):
    model = load(model_file("shape_branch"), (2, 3, 32, 32))
    assert model.frontend == "export"
    cost = cost_of(model.gm)
    assert cost.concrete().params == count_params(model.gm)
    assert cost.concrete().flops == flop_counter_flops(model.gm, model.example_inputs)


def test_other_flops_follow_the_stated_per_element_costs():
    class Chain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(8)

        def forward(self, x):
            return F.max_pool2d(torch.sigmoid(self.bn(x).relu()) + x, 2)

    gm = fx.symbolic_trace(Chain())
    annotate_shapes(gm, (torch.randn(2, 8, 4, 4),))
    cost = cost_of(gm)
    n = B * C * H * W
    per_element = OTHER_COST["batch_norm"] + OTHER_COST["relu"] + OTHER_COST["sigmoid"] + 1
    pooled = B * C * (sympy.floor(H / 2 - 1) + 1) * (sympy.floor(W / 2 - 1) + 1)
    assert same(cost.other_flops, per_element * n + 4 * pooled)
    assert same(cost.params, 2 * C) and same(cost.flops, 0)
    assert cost.concrete().other_flops == per_element * 256 + 4 * 2 * 8 * 2 * 2


def test_cost_fact_equality_is_semantic_and_hash_consistent():
    a = CostFact(2 * C * (9 * C + 2), 36 * B * C**2 * H * W)
    b = CostFact(18 * C**2 + 4 * C, 36 * B * H * W * C**2)
    assert a == b and hash(a) == hash(b)
    assert a != CostFact(18 * C**2, 36 * B * C**2 * H * W)


def test_model_cost_of_a_linear_layer_at_two_batches():
    for batch in (2, 5):
        x = torch.randn(batch, 8)
        gm = fx.symbolic_trace(nn.Linear(8, 4))
        annotate_shapes(gm, (x,))
        cost = model_cost(gm, x)
        assert (cost.params, cost.flops, cost.flops_per_sample) == (36, 64 * batch, 64)
        assert same(cost.flops_expr, B * C**2)  # 2*B*C*(C/2), the output width 4 = C/2


@pytest.mark.parametrize("name", ["resnet18", "vit_ti4"])
def test_model_cost_matches_count_params_and_flop_counter_per_sample(zoo_model, name):
    model = zoo_model(name)
    batch = model.input_shape[0]
    am = AnalysisManager()
    cost = model_cost(model.gm, model.example_inputs, am)
    flops = flop_counter_flops(model.gm, model.example_inputs)
    assert cost.params == count_params(model.gm)
    assert (cost.flops, cost.flops_per_sample) == (flops, flops // batch)
    assert cost.flops_per_sample * batch == cost.flops
    assert same(cost.flops_expr, am.get(CostAnalysis(), model.gm).flops)
    hits = am.stats.hits
    model_cost(model.gm, model.example_inputs, am)  # served from the manager's cache
    assert am.stats.hits == hits + 1


def test_model_cost_needs_a_batched_input():
    gm = fx.symbolic_trace(nn.Linear(8, 4))
    annotate_shapes(gm, (torch.randn(2, 8),))
    with pytest.raises(ValueError, match="batched"):
        model_cost(gm, (torch.tensor(1.0),))
