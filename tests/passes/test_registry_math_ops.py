"""The registry's elementwise math kinds (pow with a constant exponent, sqrt, rsqrt, exp, log,
sin, cos, abs, erf, reciprocal) against ground truth, in fx and export forms: exact rules (no
fallback), mixing equal to the Jacobian, shapes equal to the trace, FLOPs as flop_counter (0
matrix FLOPs); a tensor exponent or a constant base stays unknown."""

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
from alphac.passes.analysis.registry import OpSpec, materialise, normalize
from alphac.passes.analysis.shape import ShapeAnalysis, evaluate_dim, traced_shape


class Fn(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _positive(x: torch.Tensor) -> torch.Tensor:
    return x.abs() + 1


CASES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "pow_operator": lambda x: (x ** 2).sum(1),  # sums over dim 1: not only elementwise
    "pow_method_fraction": lambda x: _positive(x).pow(0.5),
    "pow_function_negative": lambda x: torch.pow(_positive(x), -2),
    "pow_inplace": lambda x: (x * 1).pow_(3),
    "rsqrt_mean": lambda x: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6),
    "sqrt": lambda x: torch.sqrt(_positive(x)),
    "exp_log": lambda x: torch.log(_positive(x)).exp(),
    "sin_cos": lambda x: torch.sin(x) + x.cos(),
    "erf_reciprocal": lambda x: torch.erf(x) * torch.reciprocal(_positive(x)),
    "rsqrt_inplace": lambda x: _positive(x).rsqrt_(),
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


def test_forms_of_pow_agree_and_materialise_back() -> None:
    specs = set()
    for fn in (lambda x: x ** 2, lambda x: x.pow(2), lambda x: torch.pow(x, 2)):
        gm = _trace(fn, False)
        specs |= {normalize(n).spec for n in gm.graph.nodes if n.op.startswith("call")}
    assert specs == {OpSpec.of("pow", exponent=2)}
    built = materialise(OpSpec.of("pow", exponent=2))
    graph = fx.Graph()
    node = graph.call_function(built.target, (graph.placeholder("x"), *built.args[1:]),
                               dict(built.kwargs))
    assert normalize(node).spec == OpSpec.of("pow", exponent=2)


@pytest.mark.parametrize("fn", [lambda x: 2 ** x, lambda x: x ** x, lambda x: x ** 1],
                         ids=["constant_base", "tensor_exponent", "identity"])
def test_other_pows_stay_unknown(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    gm = _trace(fn, False)
    (node,) = [n for n in gm.graph.nodes if n.op.startswith("call")]
    assert normalize(node).spec.kind == "unknown"
