"""Splice: a hand-built program materialised into ResNet-18 blocks, golden-printed and checked."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from alphac import frontends
from alphac.analysis import AnalysisManager
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.program import Program
from alphac.passes.analysis.program_infer import lift
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec
from alphac.passes.transform.splice import splice
from alphac.rewriter import Rewriter, graph_version
from alphac.symbols import dim

C = dim("C")




BOTTLENECK = (Program.of_inputs("x")
              .append(conv_spec(1, C, C / 4), 0)
              .append(OpSpec.of("relu"), 1)
              .append(conv_spec(3, C / 4, C), 2)
              .with_outputs(3))


@pytest.fixture
def model():
    return frontends.load("zoo:resnet18", (2, 3, 16, 16), num_classes=10)


def _body(model, path: str) -> Subgraph:
    """The residual branch of block ``path``: conv1 .. bn2 (the add and last relu stay)."""
    block = next(b for b in model.blocks if b.path == path)
    return Subgraph.from_nodes(model.gm, [n for n in block.nodes if "conv" in n or "bn" in n
                                          or "relu1" in n])


def _splice(model, path: str, width: int) -> Subgraph:
    return splice(model.gm, _body(model, path), BOTTLENECK, {C: width})


GOLDEN = """\
    stem_2 = getattr(self.stem, "2")(stem_1);  stem_1 = None
    layer1_0_syn_conv_0 = self.layer1_0_syn_conv_0(stem_2)
    layer1_0_syn_relu_0 = self.layer1_0_syn_relu_0(layer1_0_syn_conv_0);  layer1_0_syn_conv_0 = None
    layer1_0_syn_conv_1 = self.layer1_0_syn_conv_1(layer1_0_syn_relu_0);  layer1_0_syn_relu_0 = None
    add = layer1_0_syn_conv_1 + stem_2;  layer1_0_syn_conv_1 = stem_2 = None
    layer1_0_relu2 = getattr(self.layer1, "0").relu2(add);  add = None
"""


def test_golden_code_after_splicing_into_layer1_0(model) -> None:
    new = _splice(model, "layer1.0", 64)
    assert GOLDEN in model.gm.code
    assert new.nodes == ("layer1_0_syn_conv_0", "layer1_0_syn_relu_0", "layer1_0_syn_conv_1")
    assert not hasattr(model.gm.get_submodule("layer1.0"), "conv1")  # the old modules are deleted
    assert graph_version(model.gm) == 1


def test_spliced_model_runs_forward_and_backward(model) -> None:
    _splice(model, "layer1.0", 64)
    x = torch.randn(2, 3, 16, 16)
    out = model.gm(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.gm.layer1_0_syn_conv_0.weight.grad is not None


def test_two_instances_get_their_own_widths(model) -> None:
    _splice(model, "layer1.1", 64)
    _splice(model, "layer2.1", 128)
    gm = model.gm
    assert (gm.layer1_1_syn_conv_0.in_channels, gm.layer1_1_syn_conv_0.out_channels) == (64, 16)
    assert (gm.layer1_1_syn_conv_1.in_channels, gm.layer1_1_syn_conv_1.out_channels) == (16, 64)
    assert (gm.layer2_1_syn_conv_0.in_channels, gm.layer2_1_syn_conv_0.out_channels) == (128, 32)
    assert gm.layer2_1_syn_conv_1.kernel_size == (3, 3)
    assert graph_version(gm) == 2
    assert gm(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_blocks_are_still_found_after_a_splice(model) -> None:
    new = _splice(model, "layer1.0", 64)
    blocks = frontends.blocks.find_blocks(model.gm)
    block = next(b for b in blocks if b.path == "layer1.0")
    assert set(new.nodes) <= set(block.nodes)


def test_jacobian_of_the_materialised_program_agrees(model) -> None:
    new = _splice(model, "layer2.1", 128)
    annotate_shapes(model.gm, model.example_inputs)
    assert check_mixing(model.gm, new, AnalysisManager()) == []


def test_a_splice_that_changes_nothing_does_not_bump(model) -> None:
    body = _body(model, "layer1.0")
    rw = Rewriter(model.gm)
    outputs = tuple(rw.node(n) for n in body.outputs)
    rw.splice(body, lambda rw, inputs: outputs)  # the subgraph in place of itself
    assert rw.commit() is False
    assert graph_version(model.gm) == 0


class _TokenModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.head = torch.nn.Linear(5, 4), torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x).transpose(1, 2)).transpose(1, 2).mean(1))


@pytest.mark.parametrize("with_context", [True, False])
def test_a_batch_norm_after_a_copied_call_follows_the_programs_rank(traced, with_context):
    """Found by the pipeline fuzz: a batch norm reading a node the splice had just made (the
    copied ``transpose``, which has no ``tensor_meta``) was built for rank 4 (BatchNorm2d) on a
    rank-3 (B, C, N) value, and the child failed to run. The program's shapes give its rank."""
    gm = traced(_TokenModel(), (2, 3, 5))
    sub = Subgraph.from_nodes(gm, ["transpose", "relu", "transpose_1"])
    lifted, ctx = lift(gm, sub)
    norm = OpSpec.of("batch_norm", num_features=4, affine=True, bias=True, running_stats=True,
                     batch_stats=False, eps=1e-5, momentum=0.1)
    ops = (lifted.ops[0], replace(lifted.ops[1], spec=norm, source=None), lifted.ops[2])
    program = replace(lifted, ops=ops)
    splice(gm, sub, program, ctx.bindings, context=ctx if with_context else None)
    norms = [m for m in gm.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert [type(m) for m in norms] == [torch.nn.BatchNorm1d]
    assert gm(torch.randn(2, 3, 5)).shape == (2, 3)


class _Attention(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn, self.norm = torch.nn.MultiheadAttention(8, 2, batch_first=True), \
            torch.nn.LayerNorm(8)

    def forward(self, x):
        out, _ = self.attn(x, x, x, need_weights=False)
        return self.norm(x + out)


def test_a_module_without_rules_splices_back_as_called(traced):
    """Found by the pipeline fuzz: a lifted ``nn.MultiheadAttention`` call (kind ``unknown``)
    could be neither reused nor materialised, so every subgraph holding one failed to splice
    (NotMaterialisable); it is now copied as called, with all its arguments."""
    gm = traced(_Attention(), (2, 5, 8))
    x = torch.randn(2, 5, 8)
    before = gm(x)
    names = [n.name for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    sub = Subgraph.from_nodes(gm, names)
    program, ctx = lift(gm, sub)
    assert any(op.spec.kind == "unknown" for op in program.ops)
    splice(gm, sub, program, ctx.bindings, context=ctx)
    assert "self.attn(x, x, x, need_weights = False)" in gm.code
    torch.testing.assert_close(gm(x), before)
