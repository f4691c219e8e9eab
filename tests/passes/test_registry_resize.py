"""The registry's ``resize`` kind (nn.Upsample, F.interpolate, aten upsample_*) against ground
truth: every form normalises to ``resize``; shapes equal the trace; the real analyses need no
fallback; mixing equals the Jacobian (torch.fx and torch.export forms); no matrix FLOPs, as
flop_counter counts."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph, flop_counter_flops
from alphac.passes.analysis.cost import CostAnalysis
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


#: id -> (module, input shape)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "upsample_nearest_2x": (lambda: nn.Upsample(scale_factor=2), (2, 3, 4, 5)),
    "upsample_bilinear_module": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), (1, 2, 3, 4)),
    "nearest_size_down": (lambda: Fn(lambda x: F.interpolate(x, size=(3, 7))), (1, 2, 7, 5)),
    "nearest_exact": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=1.5,
                                                          mode="nearest-exact")), (1, 2, 4, 6)),
    "bilinear_2x": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")),
                    (1, 2, 4, 4)),
    "bilinear_corners_size": (lambda: Fn(lambda x: F.interpolate(
        x, size=(7, 3), mode="bilinear", align_corners=True)), (1, 2, 4, 5)),
    "bicubic_fraction": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=1.5,
                                                             mode="bicubic")), (1, 2, 5, 4)),
    "bilinear_antialias_down": (lambda: Fn(lambda x: F.interpolate(
        x, size=(3, 2), mode="bilinear", antialias=True)), (1, 2, 9, 7)),
    "linear_1d": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=3, mode="linear")),
                  (2, 3, 5)),
    "trilinear_3d": (lambda: Fn(lambda x: F.interpolate(x, size=(2, 4, 3), mode="trilinear")),
                     (1, 2, 3, 3, 5)),
    "size_from_shape": (lambda: Fn(lambda x: F.interpolate(
        x, size=(x.shape[2] * 2, x.shape[3]), mode="bilinear")), (2, 3, 4, 5)),
}
EXPORTED = sorted(set(CASES) - {"size_from_shape"})  # export would bake its sizes in: same op
FORMS = [(c, False) for c in CASES] + [(c, True) for c in EXPORTED]
_TRACED: dict[tuple[str, bool], tuple[fx.GraphModule, torch.Tensor]] = {}


def _case(name: str, export: bool) -> tuple[fx.GraphModule, torch.Tensor]:
    if (name, export) not in _TRACED:
        factory, shape = CASES[name]
        root = nn.Sequential(factory()).eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        gm = torch.export.export(root, (x,)).module() if export else fx.symbolic_trace(root)
        annotate_shapes(gm, (x,))
        _TRACED[name, export] = gm, x
    return _TRACED[name, export]


def _resizes(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if normalize(n, modules).spec.kind == "resize"]


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_every_form_is_resize_and_mixing_equals_jacobian(case: str, export: bool) -> None:
    gm, _ = _case(case, export)
    assert len(_resizes(gm)) == 1
    sub, am = Subgraph.whole(gm), AnalysisManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no op falls back to top
        am.get(MixingAnalysis(), gm, sub)
    problems = check_mixing(gm, sub, am)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_shape_and_cost_need_no_fallback_and_equal_the_trace(case: str, export: bool) -> None:
    gm, x = _case(case, export)
    sub = Subgraph.whole(gm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fact = AnalysisManager().get(ShapeAnalysis(), gm, sub)
        cost = AnalysisManager().get(CostAnalysis(), gm, sub)
    node = _resizes(gm)[0]
    got = tuple(evaluate_dim(d, fact.bindings) for d in fact.node_shapes[node.name].dims)
    assert got == traced_shape(node)
    assert cost.concrete().flops == flop_counter_flops(gm, (x,)) == 0


def test_the_batch_stays_symbolic_and_a_scale_multiplies_the_size() -> None:
    gm, _ = _case("upsample_nearest_2x", False)
    fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
    assert [str(d) for d in fact.outputs[0].dims] == ["B", "3", "2*H", "2*W"]  # 3: the input's channels


def test_nearest_mixing_reads_one_row_per_output_row() -> None:
    """Output row 5 of a 2x nearest upsample reads input row 2 only (the docstring's example)."""
    from alphac.passes.analysis.registry import REGISTRY

    spec = OpSpec.of("resize", size=None, scale=2.0, mode="nearest", align_corners=None,
                     recompute=None, antialias=False)
    rule = REGISTRY["resize"].mixing(spec, ((1, 1, 4, 4),), (1, 1, 8, 8))
    (pull,) = rule.pulls(None)
    (box,) = pull.apply((1, 1, 1 << 5, 0b11111111))
    assert box[2] == 1 << 2 and box[3] == 0b1111


def test_materialised_resize_normalises_back() -> None:
    spec = OpSpec.of("resize", size=(6, 4), scale=None, mode="bilinear", align_corners=False,
                     recompute=None, antialias=False)
    built = materialise(spec)
    graph = fx.Graph()
    x = graph.placeholder("x")
    node = graph.call_function(built.target, (x,), dict(built.kwargs))
    assert normalize(node).spec == spec
