"""Children that start near their parents: fresh convs and linears start as the identity on the
channels they can pass through, and channels stay known through a fresh width-keeping conv
(issue #17: a rewrite child whose chain stacked fresh convs started with near-constant logits
and its fine-tune stayed at chance)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from alphac.codegen import inherit_weights
from alphac.frontends import load
from alphac.ir import Subgraph
from alphac.passes.analysis.program import ProgramOp
from alphac.passes.analysis.program_infer import lift
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec
from alphac.passes.transform.chains import chains, with_chains
from alphac.passes.transform.keep_weights import (
    aligned_chains,
    channel_plan,
    keeps_channels,
    start_fresh_near_identity,
    start_near_identity,
)
from alphac.passes.transform.mutate import mutate
from alphac.passes.transform.splice import splice
from alphac.symbols import dim

C = dim("C")


def _normalised(gm: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """``gm`` in eval mode with non-trivial norms (random affine, statistics of ``x``), as a
    trained model's would be."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in gm.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.5)
                m.momentum = None  # a cumulative average: one batch sets the statistics
        gm.train()
        gm(x)
        for m in gm.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return gm.eval()


def test_a_fresh_conv_passes_its_channels_through() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 32, 9, 9)
    same = nn.Conv2d(32, 32, 3, padding=3, dilation=3, bias=True)
    assert start_near_identity(same)
    torch.testing.assert_close(same(x), x)
    strided = nn.Conv2d(32, 32, 5, stride=2, padding=2)
    assert start_near_identity(strided)
    torch.testing.assert_close(strided(x), x[:, :, ::2, ::2])
    narrow = nn.Conv2d(32, 16, 3, padding=1, groups=16, bias=False)
    assert start_near_identity(narrow)
    torch.testing.assert_close(narrow(x), x[:, ::2])  # the first channel of each group


def test_a_widening_keeps_its_default_init_on_the_new_channels() -> None:
    torch.manual_seed(0)
    wide = nn.Linear(8, 16)
    before = wide.weight.detach().clone()
    assert start_near_identity(wide)
    z = torch.randn(3, 8)
    torch.testing.assert_close(wide(z)[:, :8], z)
    assert torch.equal(wide.weight[8:], before[8:]) and wide.weight[8:].abs().sum() > 0


def test_a_conv_without_a_centre_is_left_as_it_was() -> None:
    torch.manual_seed(0)
    for conv in (nn.Conv2d(8, 8, 2), nn.Conv2d(8, 8, 3, padding=0), nn.ConvTranspose2d(8, 8, 3)):
        before = conv.weight.detach().clone()
        assert not start_near_identity(conv)
        assert torch.equal(conv.weight, before)


def _replace_bn_relu(parent: nn.Module, new_specs) -> tuple[nn.Module, list[ProgramOp]]:
    """``parent`` (small_cnn) with ``features.0``'s ``bn relu`` replaced by ``new_specs``."""
    sub = Subgraph.from_nodes(parent, ["features_0_bn", "features_0_relu"])
    program, ctx = lift(parent, sub)
    chain = chains(program)[0]
    aligned = aligned_chains([program.ops[k] for k in chain.ops], new_specs(program, chain))
    child = copy.deepcopy(parent)
    splice(child, sub, with_chains(program, {chain: aligned}), ctx.bindings, context=ctx)
    return child, list(aligned)


def test_a_fresh_chain_started_near_identity_computes_the_replaced_subgraph() -> None:
    """``bn relu`` replaced by ``bn relu conv3x3 d=3 relu conv3x3 d=2`` (the norm kept, two
    fresh width-keeping convs): at the start the child computes what the parent computes; at
    the default init it does not (its logits shrink towards a constant)."""
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    parent = _normalised(load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10, seed=0).gm, x)

    def specs(program, chain):
        bn, relu = (program.ops[k].spec for k in chain.ops)
        return [bn, relu, conv_spec(3, C, C, dilation=3), relu, conv_spec(3, C, C, dilation=2)]

    torch.manual_seed(0)
    child, aligned = _replace_bn_relu(parent, specs)
    assert aligned[0].source == "features.0.bn"  # the parent's trained norm, by name
    fresh = copy.deepcopy(child)
    assert len(start_fresh_near_identity(child, parent)) == 2
    with torch.no_grad():
        want, got, default = parent(x), child.eval()(x), fresh.eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (default - want).abs().max() > 0.1 * want.abs().max()


def test_the_reproduced_collapse_starts_near_its_parent() -> None:
    """Issue #17's child (small_cnn, seed 3: ``bn relu`` in three blocks replaced by ``relu
    conv3x3 g=16 d=3 /2 relu conv3x3 g=16 d=2``) keeps the norm and starts with logits of the
    parent's scale that follow the parent's; it started with logits about 1% of the parent's,
    uncorrelated with them, and fine-tuned to 10% (chance) on Fashion-MNIST."""
    traced = load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10, seed=0)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    parent = _normalised(copy.deepcopy(traced.gm), x)
    child = mutate(parent, traced.blocks, traced.example_inputs, seed=3)
    assert child.record.kind == "rewrite" and len(child.record.instances) == 3
    assert child.record.chains[0][:2] == ("batch_norm", "relu")
    assert child.record.fingerprint_child != child.record.fingerprint_parent
    inherit_weights(child.gm, parent.state_dict(), plan=child.record.weight_plan)
    with torch.no_grad():
        a, b = parent(x), child.gm.eval()(x)
    assert 0.3 < float(b.std() / a.std()) < 3.0
    assert float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) > 0.25


def _plan(first_out):
    """The plan of ``conv1x1(C->first_out)`` (fresh), ``conv3x3(->C/2)`` and ``bn`` replacing
    a block's ``conv3x3(C->C) bn``."""
    bn = OpSpec.of("batch_norm", num_features=C, affine=True, bias=True, running_stats=True,
                   batch_stats=False, eps=1e-5, momentum=0.1)
    old = [ProgramOp(conv_spec(3, C, C), (0,), source="b.conv"), ProgramOp(bn, (1,), source="b.bn")]
    narrow_bn = OpSpec.of("batch_norm", **{**dict(bn.params), "num_features": C / 2})
    new = [conv_spec(1, C, first_out), conv_spec(3, first_out, C / 2), narrow_bn]
    ops = aligned_chains(old, new)
    assert [op.origin for op in ops] == [None, "b.conv", "b.bn"]
    steps, _ = channel_plan(ops, ["syn_conv_0", "syn_conv_1", "syn_bn_0"],
                            {"b.conv": old[0].spec, "b.bn": bn}, 0)
    return steps


def test_channels_stay_known_through_a_fresh_conv_that_keeps_its_width() -> None:
    assert keeps_channels(conv_spec(1, C, C)) and not keeps_channels(conv_spec(1, C, 2 * C))
    steps = _plan(C)
    assert [(s.new, s.old, s.kind) for s in steps] == [("syn_conv_1", "b.conv", "resize"),
                                                      ("syn_bn_0", "b.bn", "channelwise")]
    assert steps[0].in_group is None and steps[0].out_group == steps[1].out_group == 0
    assert _plan(2 * C) == ()  # after a widening the channels are new
