"""The registry's vector_norm, normalize and clamp kinds against ground truth, in fx and export
forms (export spells F.normalize as linalg_vector_norm, clamp_min, expand_as, div): exact
rules (no fallback), mixing equal to the Jacobian, shapes equal to the trace; a tensor bound
of clamp and a matrix norm stay unknown."""

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
from alphac.passes.analysis.registry import OpSpec, materialise, normalize
from alphac.passes.analysis.shape import ShapeAnalysis, evaluate_dim, traced_shape


class Fn(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "normalize_last": lambda x: F.normalize(x, dim=-1),
    "normalize_dim1_p1": lambda x: F.normalize(x, p=1.0, dim=1),
    "norm_method_keepdim": lambda x: x / x.norm(dim=-1, keepdim=True),
    "torch_norm_all": lambda x: x * torch.norm(x),
    "vector_norm_dims": lambda x: torch.linalg.vector_norm(x, ord=3, dim=(0, 2)),
    "clamp_both": lambda x: torch.clamp(x, -0.5, 0.5) * 2,
    "clamp_min_method": lambda x: x.clamp_min(0.1).log(),
    "clamp_max_kw": lambda x: x.clamp(max=0.3),
    "clip": lambda x: x.clip(min=-1.0),
}
FORMS = [(c, e) for c in CASES for e in (False, True)]


def _trace(fn: Callable[[torch.Tensor], torch.Tensor], export: bool) -> fx.GraphModule:
    root = nn.Sequential(Fn(fn)).eval()
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
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


@pytest.mark.parametrize("spec", [
    OpSpec.of("vector_norm", dim=-1, keepdim=True, p=2),
    OpSpec.of("normalize", dim=-1, eps=1e-12, p=2.0),
    OpSpec.of("clamp", min=0.0, max=None),
], ids=lambda s: s.kind)
def test_materialised_specs_normalise_back(spec: OpSpec) -> None:
    built = materialise(spec)
    graph = fx.Graph()
    node = graph.call_function(built.target, (graph.placeholder("x"), *built.args[1:]),
                               dict(built.kwargs))
    assert normalize(node).spec == spec


@pytest.mark.parametrize("fn", [lambda x: x.clamp(min=x.mean()), lambda x: x.norm(p="nuc",
                                                                                  dim=(1, 2))],
                         ids=["tensor_bound", "nuclear_norm"])
def test_others_stay_unknown(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    gm = _trace(fn, False)
    last = [n for n in gm.graph.nodes if n.op.startswith("call")][-1]
    assert normalize(last).spec.kind == "unknown"
