"""The analyses on the library models captured through torch.export (Hugging Face transformers,
aten-level graphs): no conservative answer anywhere, mixing equal to the Jacobian on sampled
blocks."""

from __future__ import annotations

import random
import warnings

import libmodels
import pytest
import torch
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.diagnostics import collect
from alphac.frontends import EXPORT, find_blocks, trace
from alphac.frontends.blocks import Block, walk_blocks
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis import CostAnalysis, DepthAnalysis, MixingAnalysis, ShapeAnalysis
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import tensor_inputs

EXPORT_MODELS = ["transformers:vit", "transformers:swin", "transformers:convnext"]
_TRACED: dict[str, tuple[fx.GraphModule, list[Block]]] = {}


def traced(name: str) -> tuple[fx.GraphModule, list[Block]]:
    """``(gm, blocks)`` of a library model captured in eval mode, every nested block included."""
    if name not in _TRACED:
        model = libmodels.build(name).eval()
        example = torch.randn(libmodels.INPUT, generator=torch.Generator().manual_seed(0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm, frontend = trace(model, [example])
        assert frontend == EXPORT, f"{name} no longer needs torch.export"
        annotate_shapes(gm, [example])
        _TRACED[name] = (gm, list(walk_blocks(find_blocks(gm))))
    return _TRACED[name]


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_every_aten_op_has_an_exact_rule(name: str) -> None:
    gm, blocks = traced(name)
    am = AnalysisManager()
    subgraphs = {**{b.path: b.subgraph(gm) for b in blocks}, "<model>": Subgraph.whole(gm)}
    with collect() as diag:
        for path, sub in subgraphs.items():
            with diag.label(sub, path):
                for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis(),
                                 CostAnalysis()):
                    am.get(analysis, gm, sub)
    assert diag.findings() == (), diag.summary()


@pytest.mark.parametrize("name", EXPORT_MODELS)
def test_block_mixing_equals_jacobian(name: str) -> None:
    gm, blocks = traced(name)
    fed = [b for b in blocks if tensor_inputs(gm, b.subgraph(gm))]  # not a table-only block
    assert len(fed) >= 2
    am = AnalysisManager()
    for block in random.Random(0).sample(fed, 2):
        problems = check_mixing(gm, block.subgraph(gm), am)
        assert problems == [], f"{block.path}:\n" + "\n".join(problems)
