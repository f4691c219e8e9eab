"""Width mutations and kept weights: boundary shapes exact, properties kept, channels inherited."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.channels import ChannelStep
from alphac.codegen import generate_code, inherit_weights
from alphac.frontends import find_blocks, load
from alphac.frontends.trace import trace
from alphac.ir import Subgraph, annotate_shapes
from alphac.passes.analysis import DepthAnalysis, MixingAnalysis
from alphac.passes.analysis.program_infer import lift
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec
from alphac.passes.transform.chains import chains, with_chains
from alphac.passes.transform.keep_weights import aligned_chains, channel_plan
from alphac.passes.transform.mutate import MutationConfig, mutate
from alphac.passes.transform.splice import ORIGIN_KEY, splice
from alphac.passes.transform.width_mutation import new_width, width_groups
from alphac.search.candidate import build_from_code
from alphac.symbols import dim

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import libmodels  # noqa: E402


def _randomise(gm: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Give every norm non-trivial statistics (as training would) and return the state."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in gm.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
    return {k: v.clone() for k, v in gm.state_dict().items()}


def test_internal_widths_of_a_plain_and_a_residual_net(zoo_model):
    cnn = width_groups(zoo_model("small_cnn", (2, 1, 28, 28)).gm)
    assert [(g.producer, g.consumers, g.channelwise) for g in cnn[:2]] == [
        ("features_0_conv", ("features_1_conv",), ("features_0_bn",)),
        ("features_1_conv", ("features_3_conv",), ("features_1_bn",))]  # through the max pool
    assert cnn[-1].consumers == ("fc",)  # through the global pool and the flatten
    resnet = width_groups(zoo_model("resnet18").gm)
    # a block's hidden width only: the stage widths meet at the residual adds
    assert [g.producer for g in resnet] == [f"layer{s}_{b}_conv1" for s in range(1, 5)
                                            for b in range(2)]
    assert {g.role for g in resnet} == {"layer#.#.conv#"}


def test_functional_graphs_and_shared_modules_form_no_group(zoo_model):
    from alphac.frontends import zoo
    from alphac.frontends.trace import _export

    model = zoo.build("small_cnn", num_classes=10, input_shape=(1, 28, 28)).eval()
    x = torch.randn(2, 1, 28, 28)
    exported = _export(model, (x,))
    annotate_shapes(exported, (x,))
    assert width_groups(exported) == []

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.bn, self.b = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.b(self.bn(self.a(x))) + self.bn(self.a(x))

    gm, _ = trace(Shared().eval(), (torch.randn(2, 3, 8, 8),))
    annotate_shapes(gm, (torch.randn(2, 3, 8, 8),))
    assert width_groups(gm) == []


@pytest.mark.parametrize("name,shape,seeds", [("small_cnn", (2, 1, 28, 28), 3),
                                              ("resnet18", None, 2), ("mobilenet_v2", None, 1),
                                              ("vit_ti4", None, 1)])
def test_a_width_mutation_keeps_its_boundary_shapes_and_properties(zoo_model, name, shape, seeds):
    t = zoo_model(name, shape) if shape else zoo_model(name)
    for seed in range(seeds):
        child = mutate(t.gm, t.blocks, t.example_inputs, seed=seed, kind="width")
        rec = child.record
        assert rec.kind == rec.mutator == "width" and rec.weight_plan
        am = AnalysisManager()  # the changed region: its boundary shapes and properties stay
        old, new = (Subgraph.from_nodes(g, rec.subgraph) for g in (t.gm, child.gm))
        assert (old.inputs, old.outputs) == (new.inputs, new.outputs)
        shapes = [{n.name: tuple(n.meta["tensor_meta"].shape) for n in g.graph.nodes
                   if n.name in (*old.inputs, *old.outputs)} for g in (t.gm, child.gm)]
        assert shapes[0] == shapes[1]
        for analysis in (DepthAnalysis(), MixingAnalysis()):
            assert am.get(analysis, t.gm, old) == am.get(analysis, child.gm, new), (name, seed)
        assert rec.params_child != rec.params_parent
        code = generate_code(child.gm)  # a standalone child with the same output shape
        assert "import alphac" not in code
        model = build_from_code(code).eval()
        assert model(t.example_inputs[0]).shape == tuple(t.output_shape)


def test_a_library_model_mutates_its_widths():
    module = libmodels.build("timm:resnet18").eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    gm, frontend = trace(module, (x,))
    annotate_shapes(gm, (x,))
    blocks = find_blocks(gm, module if frontend == "fx" else None)
    child = mutate(gm, blocks, (x,), seed=1, kind="width")
    assert child.record.achieved["widths"]
    inherit_weights(child.gm, gm.state_dict(), plan=child.record.weight_plan)
    assert child.gm.eval()(x).shape == (2, 10)


def test_narrowing_keeps_the_strongest_channels_and_widening_keeps_the_function(zoo_model):
    t = load("zoo:resnet18", (2, 3, 32, 32), num_classes=10)
    parent = copy.deepcopy(t.gm).eval()
    state = _randomise(parent)
    x = t.example_inputs[0]
    seen = set()
    for seed, ratio in ((0, 0.5), (1, 0.25), (2, 1.5), (3, 2.0)):
        child = mutate(parent, t.blocks, t.example_inputs, seed=seed, kind="width",
                       config=MutationConfig(width_ratios=(ratio,)))
        report = inherit_weights(child.gm, state, plan=child.record.weight_plan)
        assert not report.skipped  # every tensor comes from the parent, sliced or whole
        for producer, (old, new) in child.record.achieved["widths"].items():
            target = producer.replace("_conv1", ".conv1").replace("_", ".", 1).replace("_", ".")
            w_old, w_new = state[f"{target}.weight"], child.gm.state_dict()[f"{target}.weight"]
            if new < old:
                seen.add("narrow")
                keep = torch.sort(torch.topk(w_old.abs().sum((1, 2, 3)), new).indices).values
                assert torch.equal(w_new, w_old[keep])
                bn = target.replace("conv1", "bn1")
                assert torch.equal(child.gm.state_dict()[f"{bn}.running_var"],
                                   state[f"{bn}.running_var"][keep])
                conv2 = target.replace("conv1", "conv2")
                assert torch.equal(child.gm.state_dict()[f"{conv2}.weight"],
                                   state[f"{conv2}.weight"][:, keep])
            else:
                seen.add("widen")
        if all(new > old for old, new in child.record.achieved["widths"].values()):
            with torch.no_grad():  # new channels read zeros: the same function
                torch.testing.assert_close(child.gm.eval()(x), parent(x), atol=1e-4, rtol=1e-4)
    assert seen == {"narrow", "widen"}


def test_new_width_rounds_to_friendly_sizes():
    assert new_width(64, 0.75) == 48 and new_width(32, 0.5) == 16 and new_width(512, 0.25) == 128
    assert new_width(8, 0.25) == 2 and new_width(16, 0.95) is None


def test_a_rewritten_chain_keeps_and_maps_the_parents_channels(zoo_model):
    t = zoo_model("resnet18")
    parent = copy.deepcopy(t.gm).eval()
    state = _randomise(parent, seed=3)
    block = next(b for b in t.blocks if b.path == "layer1.1")
    body = Subgraph.from_nodes(parent, [n for n in block.nodes if "conv" in n or "bn" in n
                                        or "relu1" in n])
    program, ctx = lift(parent, body)
    chain = chains(program)[0]
    old_ops = [program.ops[k] for k in chain.ops]
    C = dim("C")
    bn = dict(old_ops[1].spec.params)
    new_specs = [conv_spec(3, C, C / 2), OpSpec("batch_norm", tuple(
        (k, C / 2 if k == "num_features" else v) for k, v in bn.items())), old_ops[2].spec,
        conv_spec(3, C / 2, C), old_ops[4].spec]
    aligned = aligned_chains(old_ops, new_specs)
    assert [op.origin for op in aligned][:2] == ["layer1.1.conv1", "layer1.1.bn1"]
    assert aligned[4].source == "layer1.1.bn2"  # written as it was: the same module, by name
    child = copy.deepcopy(parent)
    part = splice(child, body, with_chains(program, {chain: aligned}), ctx.bindings, context=ctx)
    origins = {n.meta[ORIGIN_KEY]: str(n.target) for n in child.graph.nodes
               if n.name in part.nodes and ORIGIN_KEY in n.meta}
    old_specs = {op.source: op.spec for op in program.ops if op.source}
    plan, _ = channel_plan(aligned, [origins.get(op.origin or "") for op in aligned], old_specs, 0)
    assert [s.kind for s in plan] == ["resize", "channelwise", "resize"]
    assert plan[0].out_group == plan[1].out_group == plan[2].in_group == 0
    assert plan[2].out_group is None  # the chain's output keeps the parent's channels
    report = inherit_weights(child, state, plan=plan)
    got = child.state_dict()
    keep = torch.sort(torch.topk(state["layer1.1.conv1.weight"].abs().sum((1, 2, 3)), 32)
                      .indices).values
    assert torch.equal(got[f"{plan[0].new}.weight"], state["layer1.1.conv1.weight"][keep])
    assert torch.equal(got[f"{plan[2].new}.weight"], state["layer1.1.conv2.weight"][:, keep])
    assert torch.equal(got["layer1.1.bn2.running_var"], state["layer1.1.bn2.running_var"])
    assert not report.skipped


def test_channel_steps_reject_unknown_kinds():
    with pytest.raises(ValueError, match="kind"):
        ChannelStep("a", "a", "scale")


def _resize_every_group(gm, ratio: float):
    from alphac.channels import apply_channel_plan
    from alphac.passes.transform.width_mutation import resize_group
    from alphac.rewriter import Rewriter

    child = copy.deepcopy(gm)
    rw = Rewriter(child)
    plan = []
    for gid, group in enumerate(width_groups(child)):
        plan += resize_group(rw, group, new_width(group.width, ratio), gid)
    rw.commit()
    apply_channel_plan(child, gm.state_dict(), tuple(plan))
    return child.eval(), plan


def test_a_chain_of_widened_widths_computes_the_parent_exactly():
    """The middle conv of a chain reads one resized group and writes another: both of its
    axes follow their groups (it used to keep its fresh weights, so the child started at
    chance accuracy)."""
    gm = load("zoo:small_cnn", (1, 1, 28, 28), num_classes=10, seed=0).gm
    _randomise(gm)
    gm.eval()
    child, plan = _resize_every_group(gm, 1.5)
    assert sum(1 for s in plan if s.new == "features.1.conv") == 2  # a reader and a writer
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(child(x), gm(x), rtol=1e-5, atol=1e-5)


def test_a_chain_of_narrowed_widths_keeps_the_strongest_channels_on_both_axes():
    gm = load("zoo:small_cnn", (1, 1, 28, 28), num_classes=10, seed=0).gm
    _randomise(gm)
    child, _ = _resize_every_group(gm.eval(), 0.875)
    old, new = gm.get_submodule("features.1.conv").weight, child.get_submodule("features.1.conv").weight
    rows = torch.sort(torch.topk(old.abs().reshape(old.shape[0], -1).sum(1), new.shape[0])
                      .indices).values
    first = gm.get_submodule("features.0.conv").weight
    cols = torch.sort(torch.topk(first.abs().reshape(first.shape[0], -1).sum(1),
                                 new.shape[1]).indices).values
    torch.testing.assert_close(new, old[rows][:, cols])
