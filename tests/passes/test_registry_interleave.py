"""The registry's repeat_interleave kind against ground truth, in fx and export forms: exact
rules (no fallback), mixing equal to the Jacobian, shapes equal to the trace, the count as a
size computed in the graph (GCViT); a tensor of counts and the flattened form stay unknown."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
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
    "rotary_last": lambda x: x.repeat_interleave(2, -1),
    "kv_groups": lambda x: torch.repeat_interleave(x, 3, dim=1).sum(1),
    "computed_count": lambda x: x[:1].repeat_interleave(x.shape[0] // 1, dim=0) + x,
}
FORMS = [(c, e) for c in CASES for e in (False, True)]


def _trace(fn: Callable[[torch.Tensor], torch.Tensor], export: bool) -> fx.GraphModule:
    root = nn.Sequential(Fn(fn)).eval()
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    gm = torch.export.export(root, (x,)).module() if export else fx.symbolic_trace(root)
    annotate_shapes(gm, (x,))
    return gm


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_exact_rules_and_mixing_equals_jacobian(case: str, export: bool) -> None:
    gm = _trace(CASES[case], export)
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


def test_the_computed_count_keeps_the_batch_symbolic() -> None:
    gm = _trace(CASES["computed_count"], False)
    fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
    assert str(fact.outputs[0].dims[0]) == "B"


@pytest.mark.parametrize("fn", [lambda x: x.repeat_interleave(torch.tensor([1, 2]), dim=0),
                                lambda x: x.repeat_interleave(2)], ids=["tensor", "flattened"])
def test_others_stay_unknown(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    gm = _trace(fn, False)
    (node,) = [n for n in gm.graph.nodes if str(n.target) == "repeat_interleave"]
    assert normalize(node).spec.kind == "unknown"
