"""The analyses on the library models (timm, torchvision; eval mode): no conservative answer, a
symbolic cost that holds at another batch size and resolution, mixing equal to the Jacobian."""

from __future__ import annotations

import random
import warnings

import libmodels
import pytest
import torch
from torch import fx, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from alphac.analysis import AnalysisManager
from alphac.diagnostics import collect
from alphac.frontends import FX, find_blocks, trace
from alphac.frontends.blocks import Block
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph, flop_counter_flops
from alphac.passes.analysis import (
    CostAnalysis,
    DepthAnalysis,
    MixingAnalysis,
    ShapeAnalysis,
    evaluate_dim,
)
from alphac.passes.analysis.ground_truth import check_mixing

FX_MODELS = [n for n in libmodels.MODELS if not n.startswith("transformers:")]
#: Architectures whose resolution is fixed (a position embedding, a token-mixing MLP, attention
#: biases or windows sized for the image): only the batch varies.
FIXED_RESOLUTION = {"timm:vit_tiny", "timm:deit_tiny_distilled", "timm:swin_tiny",
                    "timm:levit_128s", "timm:mixer"}
#: Models whose blocks differ most (attention, token mixing): three sampled blocks each; one for
#: every other model (bench/library_models.py checks every block of every model).
JACOBIAN_MODELS = ["timm:vit_tiny", "timm:swin_tiny", "timm:levit_128s", "timm:mixer",
                   "timm:convnext_atto", "timm:poolformer_s12"]

_TRACED: dict[tuple[str, tuple[int, ...]], tuple[nn.Module, fx.GraphModule, list[Block],
                                                 torch.Tensor]] = {}


def traced(name: str, shape: tuple[int, ...] = libmodels.INPUT):
    """``(model, gm, blocks, example)`` of a library model traced in eval mode at ``shape``."""
    key = (name, shape)
    if key not in _TRACED:
        model = libmodels.build(name).eval()
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm, frontend = trace(model, [example])
        assert frontend == FX, f"{name} now needs torch.export (see test_export_library_properties)"
        annotate_shapes(gm, [example])
        _TRACED[key] = (model, gm, find_blocks(gm, model), example)
    return _TRACED[key]


def _subgraphs(gm: fx.GraphModule, blocks: list[Block]) -> dict[str, Subgraph]:
    return {**{b.path: b.subgraph(gm) for b in blocks}, "<model>": Subgraph.whole(gm)}


@pytest.mark.parametrize("name", FX_MODELS)
def test_every_op_has_an_exact_rule(name: str) -> None:
    _, gm, blocks, _ = traced(name)
    am = AnalysisManager()
    with collect() as diag:
        for path, sub in _subgraphs(gm, blocks).items():
            with diag.label(sub, path):
                for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis(),
                                 CostAnalysis()):
                    am.get(analysis, gm, sub)
    assert diag.findings() == (), diag.summary()


@pytest.mark.parametrize("name", FX_MODELS)
def test_symbolic_cost_holds_at_another_size(name: str) -> None:
    """Cost traced at (2, 3, 32, 32), evaluated at the symbols of a trace at batch 3 (and 64x64
    for conv nets), equals that trace's cost block by block, and flop_counter's for the model."""
    side = 32 if name in FIXED_RESOLUTION else 64
    _, gm, blocks, _ = traced(name)
    model, big, big_blocks, example = traced(name, (3, 3, side, side))
    here, there = _subgraphs(gm, blocks), _subgraphs(big, big_blocks)
    am, am_big = AnalysisManager(), AnalysisManager()
    for path in here.keys() & there.keys():
        fact = am.get(CostAnalysis(), gm, here[path])
        measured = am_big.get(CostAnalysis(), big, there[path])
        predicted = tuple(evaluate_dim(e, measured.bindings)
                          for e in (fact.params, fact.flops, fact.other_flops))
        assert predicted == tuple(measured.concrete()), path
        if path == "<model>":
            with sdpa_kernel(SDPBackend.MATH):  # flop_counter counts attention on this backend
                assert predicted[1] == flop_counter_flops(model, (example,))


@pytest.mark.parametrize("name", FX_MODELS)
def test_mixing_equals_jacobian_on_sampled_blocks(name: str) -> None:
    _, gm, blocks, _ = traced(name)
    rng = random.Random(0)
    am = AnalysisManager()
    for block in rng.sample(blocks, min(3 if name in JACOBIAN_MODELS else 1, len(blocks))):
        problems = check_mixing(gm, block.subgraph(gm), am, draws=2)
        assert problems == [], f"{block.path}: " + "\n".join(problems[:10])


def test_blocks_of_one_type_get_equal_shape_facts() -> None:
    _, gm, blocks, _ = traced("timm:swin_tiny")
    am = AnalysisManager()
    by_type: dict[str, list] = {}
    for block in blocks:
        by_type.setdefault(block.type, []).append(am.get(ShapeAnalysis(), gm, block.subgraph(gm)))
    for kind, facts in by_type.items():
        assert all(f == facts[0] for f in facts), kind
        assert facts[0].inputs[0].layout == "NHWC", kind  # channels last, read by a LayerNorm
