"""Casts and in-place activations as torch.export spells them (timm EVA's ``x.to(dtype)``,
EfficientViT's ``hardswish_``) against ground truth: exact rules (no fallback), mixing equal to
the Jacobian, shapes equal to the trace; an integer cast stays unknown (its derivative is 0)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import MixingAnalysis
from alphac.passes.analysis.registry import normalize
from alphac.passes.analysis.shape import ShapeAnalysis, evaluate_dim, traced_shape


class Fn(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "to_float32": lambda x: x.to(torch.float32) * 2,
    "to_float64_and_back": lambda x: x.to(dtype=torch.float64).to(torch.float32).sum(-1),
    "to_device": lambda x: x.to("cpu").transpose(1, 2),
    "hardswish_inplace": lambda x: F.hardswish(x * 3, inplace=True),
    "silu_inplace": lambda x: F.silu(x + 1, inplace=True),
}
FORMS = [(c, e) for c in CASES for e in (False, True)]


def _trace(case: str, export: bool) -> tuple[fx.GraphModule, torch.Tensor]:
    root = nn.Sequential(Fn(CASES[case])).eval()
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    gm = torch.export.export(root, (x,)).module() if export else fx.symbolic_trace(root)
    annotate_shapes(gm, (x,))
    return gm, x


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_exact_rules_and_mixing_equals_jacobian(case: str, export: bool) -> None:
    gm, _ = _trace(case, export)
    sub, am = Subgraph.whole(gm), AnalysisManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no op falls back
        am.get(MixingAnalysis(), gm, sub)
        fact = am.get(ShapeAnalysis(), gm, sub)
    assert check_mixing(gm, sub, am) == []
    for node in gm.graph.nodes:
        if node.op == "call_function" and "tensor_meta" in node.meta:
            got = tuple(evaluate_dim(d, fact.bindings) for d in fact.node_shapes[node.name].dims)
            assert got == traced_shape(node), node.name


@pytest.mark.parametrize("export", [False, True])
def test_an_integer_cast_is_not_an_identity(export: bool) -> None:
    root = nn.Sequential(Fn(lambda x: x.to(torch.int64))).eval()
    x = torch.randn(2, 3)
    gm = torch.export.export(root, (x,)).module() if export else fx.symbolic_trace(root)
    casts = [n for n in gm.graph.nodes if "to" in str(n.target)]
    assert casts and all(normalize(n).spec.kind == "unknown" for n in casts)
