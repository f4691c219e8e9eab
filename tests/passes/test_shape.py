from __future__ import annotations

import random
import warnings

import pytest
import sympy
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from alphac.analysis import AnalysisManager
from alphac.frontends import load, zoo
from alphac.frontends.blocks import walk_blocks
from alphac.ir import Subgraph
from alphac.lattice import check_laws
from alphac.passes.analysis.mixing import tensor_inputs, tensor_outputs
from alphac.passes.analysis.shape import (
    SHAPE_RULES,
    ShapeAnalysis,
    ShapeFact,
    ShapeLattice,
    ShapeProperty,
    TensorShape,
    evaluate_dim,
    traced_shape,
)
from alphac.properties import INFEASIBLE, is_infeasible
from alphac.symbols import dim, same

B, C, H, W, N = (dim(s) for s in "BCHWN")
MODELS = zoo.names()


def same_dims(dims, expected) -> bool:
    """Dimension tuples equal for every value of the symbols (never raw == on expressions)."""
    return len(dims) == len(expected) and all(same(a, b) for a, b in zip(dims, expected,
                                                                         strict=True))


def shape_of(gm: fx.GraphModule, sub: Subgraph) -> ShapeFact:
    return AnalysisManager().get(ShapeAnalysis(), gm, sub)


def traced(gm: fx.GraphModule, names) -> tuple:
    nodes = {n.name: n for n in gm.graph.nodes}
    return tuple(traced_shape(nodes[n]) for n in names)


def assert_exact(gm: fx.GraphModule, sub: Subgraph) -> ShapeFact:
    """The fact at its bindings is the traced shape of every tensor, with no fallback."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fact = shape_of(gm, sub)
    concrete = fact.concrete()
    # numbered like the mixing analysis: float tensors only, sizes and tuples skipped
    assert concrete["inputs"] == traced(gm, tensor_inputs(gm, sub)), sub
    assert concrete["outputs"] == traced(gm, tensor_outputs(gm, sub)), sub
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, value in fact.node_shapes.items():
        if isinstance(value, TensorShape):
            dims = tuple(evaluate_dim(d, fact.bindings) for d in value.dims)
            assert dims == traced_shape(nodes[name]), name
    return fact


@pytest.mark.parametrize("name", MODELS)
def test_every_block_of_every_zoo_model_is_exact(zoo_model, name):
    model = zoo_model(name)
    for block in model.blocks:
        fact = assert_exact(model.gm, block.subgraph(model.gm))
        assert fact.inputs and fact.outputs
        assert same(fact.inputs[0].dims[0], B), block.path
    assert_exact(model.gm, Subgraph.whole(model.gm))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "vit_ti4"])
def test_same_block_type_gives_the_same_symbolic_fact(zoo_model, name):
    model = zoo_model(name)
    am = AnalysisManager()
    by_type: dict[str, list[ShapeFact]] = {}
    for block in walk_blocks(model.blocks):  # outermost blocks and their inner levels
        by_type.setdefault(block.type, []).append(am.get(ShapeAnalysis(), model.gm,
                                                         block.subgraph(model.gm)))
    for kind, facts in by_type.items():
        for fact in facts[1:]:
            assert fact == facts[0], kind
    assert len(by_type) >= 2


def test_basic_block_expressions_per_stage(zoo_model):
    model = zoo_model("resnet18")
    facts = {b.path: shape_of(model.gm, b.subgraph(model.gm)) for b in model.blocks}
    stride1 = [facts[p] for p in ("layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1")]
    for fact in stride1:
        (x,), (y,) = fact.inputs, fact.outputs
        assert x.layout == y.layout == "NCHW"
        assert same_dims(y.dims, (B, C, H, W))
    down = facts["layer2.0"].outputs[0]
    half = sympy.floor((H - 1) / 2) + 1
    assert same(down.dims[1], 2 * C) and same(down.dims[2], half)
    assert dict(facts["layer3.1"].bindings) == {B: 2, C: 256, H: 4, W: 4}


def test_bottleneck_expansion_is_four_c(zoo_model):
    model = zoo_model("resnet50")
    fact = shape_of(model.gm, model.blocks[0].subgraph(model.gm))
    assert same(fact.outputs[0].dims[1], 4 * C)
    inner = [v for v in fact.node_shapes.values() if isinstance(v, TensorShape)]
    assert any(same(v.dims[1], C) for v in inner)


def test_vit_tokens_are_nlc_and_attention_internals_symbolic(zoo_model):
    model = zoo_model("vit_ti4")
    block = model.blocks[0]
    fact = assert_exact(model.gm, block.subgraph(model.gm))
    (x,) = fact.inputs
    assert x.layout == "NLC" and same_dims(x.dims, (B, N, C))
    widths = [v.dims[-1] for v in fact.node_shapes.values()
              if isinstance(v, TensorShape) and v.layout.endswith("C")]
    assert any(same(w, 3 * C) for w in widths) and any(same(w, 4 * C) for w in widths)
    scores = [v for v in fact.node_shapes.values() if isinstance(v, TensorShape) and v.rank == 4
              and same(v.dims[2], N) and same(v.dims[3], N)]
    assert scores, "q @ k^T should be (B, heads, N, N)"


def test_whole_model_shapes_and_layouts(zoo_model):
    model = zoo_model("resnet18")
    fact = assert_exact(model.gm, Subgraph.whole(model.gm))
    assert fact.inputs[0].layout == "NCHW" and fact.outputs[0].layout == "NC"
    assert same(fact.inputs[0].dims[1], 3)  # image channels stay a constant
    assert same(fact.outputs[0].dims[0], B)


def test_export_frontend_graph(model_file):
    model = load(model_file("shape_branch"), (2, 3, 32, 32))
    fact = assert_exact(model.gm, Subgraph.whole(model.gm))
    assert same_dims(fact.outputs[0].dims, (B, 10))


class Repeat(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu().repeat(1, 2, 1, 1)


def test_aten_ops_are_named_like_their_methods():
    # torch.export names the op aten.repeat.default; the rule must still see "repeat"
    x = torch.randn(2, 8, 6, 6)
    gm = torch.export.export(Repeat(), (x,)).module()
    ShapeProp(gm).propagate(x)
    fact = assert_exact(gm, Subgraph.whole(gm))
    assert same_dims(fact.outputs[0].dims, (B, 2 * C, H, W))


class OpZoo(nn.Module):
    """Many shape-changing ops in one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 32, 3, stride=2, padding=2, dilation=2, groups=4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.avg = nn.AdaptiveAvgPool2d((2, 3))
        self.lin = nn.Linear(32, 64)
        self.conv1d = nn.Conv1d(16, 16, 5, padding=2)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self.pool(self.conv(x))                              # (B, 2C, ., .)
        t = a.flatten(2).transpose(1, 2)                         # (B, L, 2C)
        t = self.lin(t)                                          # (B, L, 4C)
        qkv = t.reshape(t.shape[0], -1, 2, 32).permute(2, 0, 1, 3)
        q, k, v = qkv[0], qkv[1], qkv[1]
        att = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1))
        s = torch.einsum("bhid,bhjd->bhij", q.unsqueeze(1), k.unsqueeze(1)).softmax(-1)
        m = (s @ v.unsqueeze(1)).squeeze(1) + att.squeeze(1)     # (B, L, 32)
        z = torch.cat([m, m * 2], dim=-1).mean(dim=1, keepdim=True)
        w = self.avg(x).sum((2, 3)) + y[:, : x.size(1)]          # (B, C)
        u = self.conv1d(x.flatten(2)[..., :20])
        r = torch.stack([w, w], 0).expand(2, -1, -1).repeat(1, 1, 2)
        c1, c2 = u.chunk(2, dim=1)
        return z.sum() + r.sum() + (c1 - c2).sum() + w[None, :, 1:].sum()


@pytest.fixture
def op_zoo() -> fx.GraphModule:
    from alphac.frontends import annotate_shapes

    gm = fx.symbolic_trace(OpZoo())
    annotate_shapes(gm, (torch.randn(2, 16, 20, 20), torch.randn(2, 40)))
    return gm


def test_op_zoo_is_exact_and_symbolic(op_zoo):
    fact = assert_exact(op_zoo, Subgraph.whole(op_zoo))
    x, y = fact.inputs
    assert x.layout == "NCHW" and y.layout == "NC"
    assert dict(fact.bindings) == {B: 2, C: 16, H: 20, W: 20, dim("C1"): 40}
    values = fact.node_shapes
    conv = values["conv"]
    assert same(conv.dims[1], 2 * C)
    assert same(conv.dims[2], sympy.floor((H - 1) / 2) + 1)
    assert values["lin"].layout == "NLC" and same(values["lin"].dims[-1], 4 * C)
    assert same_dims(values["avg"].dims[2:], (2, 3))
    assert same(values["add_1"].dims[1], C)  # avg-pooled x plus a slice of y broadcast to C


def test_pad_and_shape_only_second_operands():
    class Padded(nn.Module):
        def forward(self, x, y):
            a = F.pad(x, (1, 2, 3, 0)).mean((2, 3))
            return y.view_as(a) + a.expand_as(a), x.reshape_as(x)

    from alphac.frontends import annotate_shapes

    gm = fx.symbolic_trace(Padded())
    annotate_shapes(gm, (torch.randn(2, 8, 5, 6), torch.randn(2, 8)))
    fact = assert_exact(gm, Subgraph.whole(gm))
    assert same_dims(fact.node_shapes["pad"].dims, (B, C, H + 3, W + 3))
    assert same_dims(fact.outputs[0].dims, (B, C)) and fact.outputs[1] == fact.inputs[0]


def test_unknown_op_falls_back_to_traced_constants_with_one_warning():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 2).relu() + torch.cumsum(x, 3)

    from alphac.frontends import annotate_shapes
    from alphac.passes.analysis import shape as shape_module

    gm = fx.symbolic_trace(Odd())
    annotate_shapes(gm, (torch.randn(2, 8, 5, 5),))
    shape_module._WARNED.discard("cumsum")
    with pytest.warns(UserWarning, match="'cumsum'") as record:
        fact = shape_of(gm, Subgraph.whole(gm))
    assert sum("cumsum" in str(w.message) for w in record) == 1
    assert same_dims(fact.outputs[0].dims, (2, 8, 5, 5))
    assert fact.concrete()["outputs"] == ((2, 8, 5, 5),)


def test_inputs_share_symbols_by_role_and_size():
    class Two(nn.Module):
        def forward(self, a, b, c):
            return a + b, c.mean((2, 3))

    from alphac.frontends import annotate_shapes

    gm = fx.symbolic_trace(Two())
    annotate_shapes(gm, (torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6), torch.randn(2, 5, 6, 3)))
    fact = shape_of(gm, Subgraph.whole(gm))
    a, b, c = fact.inputs
    assert a == b and same_dims(a.dims, (B, C, H, W))
    assert same_dims(c.dims, (B, dim("C1"), H, dim("W1")))
    assert fact.bindings[dim("C1")] == 5 and fact.bindings[dim("W1")] == 3


# ---- lattice and property -----------------------------------------------------------------------
def fact_of(*shapes: tuple, layout: str = "NCHW") -> ShapeFact:
    tensors = tuple(TensorShape(tuple(sympy.sympify(d) for d in s), layout[: len(s)])
                    for s in shapes)
    return ShapeFact(tensors[:1], tensors[1:], {B: 2, C: 8, H: 16, W: 16})


HALF = sympy.floor((H - 1) / 2) + 1
DIMS = st.sampled_from([B, C, 2 * C, C / 2, H, W, HALF, sympy.Integer(7)])
FACTS = st.one_of(
    st.sampled_from([ShapeLattice.BOTTOM, ShapeLattice.TOP]),
    st.builds(lambda a, b: fact_of((B, C, H, W), (B, a, b, W)), DIMS, DIMS),
)


@settings(max_examples=150, deadline=None)
@given(FACTS, FACTS, FACTS)
def test_shape_lattice_laws(a, b, c):
    check_laws(ShapeLattice(), a, b, c)


def test_shape_lattice_is_flat():
    lat = ShapeLattice()
    s1 = fact_of((B, C, H, W), (B, C, H, W))
    s2 = fact_of((B, C, H, W), (B, 2 * C, H, W))
    assert lat.join(s1, s1) == s1 and lat.join(s1, s2) == lat.TOP
    assert lat.meet(s1, s2) == lat.BOTTOM and lat.leq(lat.BOTTOM, s2) and not lat.leq(s1, s2)
    # equality is semantic, not structural
    assert fact_of((B, C, H, W), (B, C + C, H, W)) == fact_of((B, C, H, W), (B, 2 * C, H, W))


def test_shape_distance():
    prop = ShapeProperty()
    target = fact_of((B, C, H, W), (B, 2 * C, HALF, HALF))
    assert prop.distance(target, target) == 0
    assert prop.distance(target, fact_of((B, C, H, W), (B, C, HALF, HALF))) == pytest.approx(1 / 8)
    # still too large spatially: fixable by down-sampling
    assert prop.distance(target, fact_of((B, C, H, W), (B, 2 * C, H, W))) == pytest.approx(2 / 8)
    # too small spatially: would need up-sampling
    small = fact_of((B, C, H, W), (B, 2 * C, HALF, HALF))
    assert is_infeasible(prop.distance(fact_of((B, C, H, W), (B, 2 * C, H, W)), small))
    assert prop.distance(target, fact_of((B, C, H, W), (B, 2 * C, HALF))) == INFEASIBLE
    assert prop.distance(target, fact_of((B, C, H, W), (2 * B, 2 * C, HALF, HALF))) == INFEASIBLE
    rng = random.Random(0)
    assert prop.mutate(target, rng, {}) is target


def test_property_infers_through_the_manager(zoo_model):
    model = zoo_model("small_cnn")
    am = AnalysisManager()
    sub = model.blocks[1].subgraph(model.gm)
    fact = ShapeProperty().infer(model.gm, sub, am)
    assert ShapeProperty().infer(model.gm, sub, am) is fact and am.stats.hits == 1


def test_rule_results_are_memoised_in_the_manager(zoo_model):
    model = zoo_model("small_cnn")
    sub = model.blocks[1].subgraph(model.gm)
    first, other = AnalysisManager(), AnalysisManager()
    fact = first.get(ShapeAnalysis(), model.gm, sub)
    assert len(first.table(SHAPE_RULES)) > 0
    assert len(other.table(SHAPE_RULES)) == 0  # nothing global: the other manager is cold
    assert other.get(ShapeAnalysis(), model.gm, sub) == fact
    first.clear()
    assert len(first.table(SHAPE_RULES)) == 0 and first.cached(model.gm) == 0
    assert first.get(ShapeAnalysis(), model.gm, sub) == fact  # the same fact from cold


@pytest.mark.parametrize("name", ["vit_ti4", "efficientnet_b0"])
def test_random_connected_subgraphs_are_exact(zoo_model, grow_subgraph, name):
    """Random cuts through blocks (as selection makes them) never crash and stay exact."""
    model, rng = zoo_model(name), random.Random(0)
    for _ in range(40):
        pool = set(rng.choice(model.blocks).nodes)
        assert_exact(model.gm, grow_subgraph(model.gm, pool, rng))


class _FlattenedAttention(nn.Module):
    """An image block that flattens to tokens and layer-norms them (a ViT block on a conv map)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.norm, self.proj = nn.Conv2d(3, 4, 1), nn.LayerNorm(4), nn.Linear(4, 4)

    def forward(self, x):
        y = self.stem(x)
        t = self.proj(self.norm(y.flatten(2).transpose(1, 2)))
        return y + t.transpose(1, 2).reshape(y.shape)


def test_a_block_input_read_through_a_flatten_gets_its_own_rank(traced):
    """Found by the pipeline fuzz: the consumers' layout search carried the input's rank (4)
    through ``flatten(2)`` (rank 3) to the layer norm and built a rank-4 probe of a rank-3
    shape (ValueError). The flatten says nothing about NCHW, so the conv producing it decides."""
    gm = traced(_FlattenedAttention(), (2, 3, 4, 4))
    names = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    fact = assert_exact(gm, Subgraph.from_nodes(gm, names[1:]))
    assert fact.inputs[0].layout == "NCHW" and same(fact.inputs[0].dims[1], 4)
