"""The registry's conv/pool/pad and linear/matmul/einsum/sdpa kinds against ground truth.

Normalisation of every form (module, function, method, aten via torch.export) to the expected
spec; shape rules at concrete values against the traced shapes; costs against
``torch.utils.flop_counter`` and parameter counts; mixing, through the real analysis (whose
driver runs the registry's rules), against the Jacobian. The cases are ours and those of the
shared suites (test_mixing_ops, test_transformer_ops) that use one of our kinds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import sympy
import test_mixing_ops
import test_transformer_ops
import torch
import torch.nn.functional as F
from test_mixing_ops import Wrap
from test_transformer_ops import WithBuffers
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph, flop_counter_flops
from alphac.passes.analysis.cost import CostAnalysis
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import MixingAnalysis
from alphac.passes.analysis.mixing_boxes import Whole
from alphac.passes.analysis.registry import REGISTRY, OpSpec, Ref, normalize
from alphac.passes.analysis.registry.linear import mask_pattern
from alphac.passes.analysis.shape import ShapeAnalysis, evaluate_dim, traced_shape
from alphac.passes.analysis.shape_dims import TensorShape, default_layout

KINDS = frozenset({"conv", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool",
                   "pad", "linear", "matmul", "einsum", "sdpa"})


def _params(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=gen) for k, v in tensors.items()}


def _with(fn: Callable[..., torch.Tensor], **shapes: tuple[int, ...]) -> Callable[[], nn.Module]:
    """A one-input module ``fn(self, x)`` with parameters of ``shapes`` (read through get_attr)."""
    return lambda: WithBuffers(fn, {}, _params(**{k: torch.empty(s) for k, s in shapes.items()}))


#: id -> (module factory, input shapes): the forms the shared suites do not already cover.
CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    "conv_fn_param": (_with(lambda p, x: F.conv2d(x, p.w, p.b, stride=2, padding=1),
                            w=(4, 3, 3, 3), b=(4,)), [(2, 3, 7, 7)]),
    "conv_fn_groups_same": (_with(lambda p, x: F.conv2d(x, p.w, padding="same", groups=2),
                                  w=(6, 2, 3, 3)), [(2, 4, 5, 5)]),
    "conv1d_fn_dilated": (_with(lambda p, x: F.conv1d(x, p.w, None, 1, 2, 2), w=(5, 3, 3)),
                          [(2, 3, 9)]),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, padding=1, stride=(1, 2, 1)), [(1, 2, 4, 5, 4)]),
    "conv_valid": (lambda: nn.Conv2d(3, 4, 3, padding="valid"), [(2, 3, 6, 6)]),
    "conv_transpose_outpad": (lambda: nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1,
                                                         output_padding=1), [(2, 3, 4, 4)]),
    "conv_transpose1d_fn": (_with(lambda p, x: F.conv_transpose1d(x, p.w, stride=2, groups=1),
                                  w=(3, 2, 3)), [(2, 3, 5)]),
    "conv_transpose_grouped": (lambda: nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2),
                               [(2, 4, 3, 3)]),
    "pad_modules": (lambda: Wrap(lambda p, x: p.z(x) * 2 + p.r(x[..., :5, :5]).sum()
                                 + p.c(x).mean() + p.k(x).mean(),
                                 z=nn.ZeroPad2d((1, 0, 2, 1)), r=nn.ReflectionPad2d(1),
                                 c=nn.CircularPad2d(1), k=nn.ReplicationPad2d((2, 0, 0, 1))),
                    [(2, 3, 5, 6)]),
    "pad_constant1d": (lambda: nn.ConstantPad1d((2, 1), 0.5), [(2, 3, 5)]),
    "pad_negative": (lambda: Wrap(lambda p, x: F.pad(x, (-1, 2, 1, -2))), [(2, 3, 5, 6)]),
    "pad_replicate_computed": (lambda: Wrap(lambda p, x: F.pad(
        x, (1, (3 - x.shape[2] % 3) % 3), mode="replicate")), [(2, 3, 7)]),
    "pools_fn": (lambda: Wrap(lambda p, x: F.max_pool2d(x, 3, 2, 1) + F.avg_pool2d(x, 2, 2)[
        ..., :4, :4].mean()), [(2, 3, 8, 8)]),
    "max_pool1d_dilated": (lambda: Wrap(lambda p, x: F.max_pool1d(x, 2, dilation=2)),
                           [(2, 3, 9)]),
    "avg_pool1d_ceil": (lambda: nn.AvgPool1d(2, ceil_mode=True), [(2, 3, 7)]),
    "adaptive_fn": (lambda: Wrap(lambda p, x: F.adaptive_avg_pool1d(x, 3)), [(2, 4, 8)]),
    "adaptive_max_none": (lambda: nn.AdaptiveMaxPool2d((2, None)), [(2, 3, 5, 6)]),
    "max_pool3d": (lambda: nn.MaxPool3d(2), [(1, 2, 4, 4, 4)]),
    "linear_fn": (_with(lambda p, x: F.linear(x, p.w, p.b), w=(6, 5), b=(6,)), [(2, 4, 5)]),
    "linear_fn_nobias": (_with(lambda p, x: F.linear(x, p.w), w=(3, 5)), [(4, 5)]),
    "matmul_forms": (lambda: Wrap(lambda p, x, y: x.matmul(y) + torch.bmm(x, y)
                                  + x @ y[:1]), [(2, 3, 4), (2, 4, 5)]),
    "matmul_same_operand": (lambda: Wrap(lambda p, x: x @ x), [(2, 4, 4)]),
    "mm": (lambda: Wrap(lambda p, x, y: torch.mm(x, y)), [(3, 4), (4, 5)]),
    "einsum_heads": (lambda: Wrap(lambda p, q, k: torch.einsum("bhqd,bhkd->bhqk", q, k)),
                     [(2, 2, 3, 4), (2, 2, 5, 4)]),
    "einsum_implicit_list": (lambda: Wrap(lambda p, x, y: torch.einsum("ij,jk", [x, y])),
                             [(3, 4), (4, 5)]),
    "sdpa_positional_mask": (lambda: Wrap(lambda p, q, m: F.scaled_dot_product_attention(
        q, q, q, m, 0.0)), [(2, 2, 5, 4), (5, 5)]),
}


def _all_cases() -> dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]]:
    """Ours, and the shared suites' cases that use one of our kinds."""
    return {**{f"mix:{k}": v for k, v in test_mixing_ops.CASES.items()},
            **{f"tr:{k}": v for k, v in test_transformer_ops.CASES.items()}, **CASES}


def _trace(factory: Callable[[], nn.Module], shapes: list[tuple[int, ...]],
           export: bool = False) -> tuple[fx.GraphModule, list[torch.Tensor]]:
    torch.manual_seed(0)
    module = factory().eval()
    root = nn.Sequential(module) if len(shapes) == 1 and not isinstance(module, WithBuffers) \
        else module
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(s, generator=gen) for s in shapes]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padding="same" with an even kernel
        gm = torch.export.export(root, tuple(inputs)).module() if export \
            else fx.symbolic_trace(root)
        annotate_shapes(gm, inputs)
    return gm, inputs


def _ours(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if normalize(n, modules).spec.kind in KINDS]


_TRACED: dict[tuple[str, bool], tuple[fx.GraphModule, list[torch.Tensor]]] = {}


def _case(name: str, export: bool = False) -> tuple[fx.GraphModule, list[torch.Tensor]]:
    if (name, export) not in _TRACED:
        _TRACED[name, export] = _trace(*_all_cases()[name], export=export)
    return _TRACED[name, export]


def _relevant() -> list[str]:
    return sorted(k for k in _all_cases() if _ours(_case(k)[0]))


RELEVANT = _relevant()
#: Cases torch.export captures too (static shapes); their aten forms are checked as well.
EXPORTED = ["conv_fn_param", "conv3d", "conv_transpose_outpad", "conv_transpose1d_fn",
            "pad_modules", "pad_negative", "pools_fn", "max_pool1d_dilated", "adaptive_fn",
            "adaptive_max_none", "linear_fn", "linear_fn_nobias", "matmul_forms", "mm",
            "einsum_heads", "sdpa_positional_mask", "mix:conv_reflect", "mix:conv_transposed",
            "mix:global_avg_pool", "mix:adaptive_max_pool_2", "mix:max_pool_ceil",
            "mix:linear_3d", "tr:sdpa_causal_rectangular", "tr:sdpa_gqa", "tr:pad_computed"]
FORMS = [(c, False) for c in RELEVANT] + [(c, True) for c in EXPORTED]


# ---- values of every node, from one run ----------------------------------------------------------
def _record(gm: fx.GraphModule, inputs: list[torch.Tensor]) -> dict[str, Any]:
    values: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            values[n.name] = super().run_node(n)
            return values[n.name]

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return values


def _symbolic(value: Any) -> Any:
    """A recorded value in the shape domain, at concrete sizes."""
    if isinstance(value, torch.Tensor):
        return TensorShape(tuple(sympy.Integer(s) for s in value.shape), default_layout(value.dim()))
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return sympy.Integer(value)
    if isinstance(value, tuple | list | torch.Size):
        return tuple(_symbolic(v) for v in value)
    return None


def _concrete(value: Any) -> Any:
    if isinstance(value, TensorShape):
        return tuple(int(d) for d in value.dims)
    if isinstance(value, tuple):
        return tuple(_concrete(v) for v in value)
    return value


# ---- mixing through the real analysis (the driver runs the registry's rules) ---------------------
@pytest.mark.parametrize(("case", "export"), FORMS)
def test_mixing_equals_jacobian(case: str, export: bool) -> None:
    gm, _ = _case(case, export)
    sub, am = Subgraph.whole(gm), AnalysisManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no op of ours falls back to top
        am.get(MixingAnalysis(), gm, sub)
    problems = check_mixing(gm, sub, am)
    assert problems == [], "\n".join(problems)


# ---- shape and cost ------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "export"), FORMS)
def test_shape_rules_equal_the_trace(case: str, export: bool) -> None:
    gm, inputs = _case(case, export)
    values, modules = _record(gm, inputs), dict(gm.named_modules())
    nodes = _ours(gm)
    assert nodes
    for node in nodes:
        op = normalize(node, modules)
        ins = tuple(_symbolic(values[n.name]) for n in op.operands)
        got = REGISTRY[op.spec.kind].shape(op.spec, ins)
        want = _symbolic(values[node.name])
        assert got is not None, f"{node.name}: {op.spec}"
        assert _concrete(got) == _concrete(want), f"{node.name}: {op.spec}"


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_shape_and_cost_analyses_need_no_fallback(case: str, export: bool) -> None:
    """The real analyses (symbolic sizes, layouts inferred) run our rules without a report."""
    gm, _ = _case(case, export)
    sub = Subgraph.whole(gm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fact = AnalysisManager().get(ShapeAnalysis(), gm, sub)
        AnalysisManager().get(CostAnalysis(), gm, sub)
    for node in _ours(gm):
        value = fact.node_shapes[node.name]
        value = value[0] if isinstance(value, tuple) else value
        got = tuple(evaluate_dim(d, fact.bindings) for d in value.dims)
        want = traced_shape(node)
        assert got == (want[0] if isinstance(want[0], tuple) else want), node.name


def _node_costs(gm: fx.GraphModule, inputs: list[torch.Tensor]) -> list[tuple[fx.Node, Any]]:
    """Each of our nodes with its registry cost at the traced sizes."""
    values, modules = _record(gm, inputs), dict(gm.named_modules())
    costs = []
    for node in _ours(gm):
        op = normalize(node, modules)
        ins = tuple(_symbolic(values[n.name]) for n in op.operands)
        out = _symbolic(values[node.name])
        out = out[0] if isinstance(out, tuple) else out  # aten's (values, indices)
        costs.append((node, REGISTRY[op.spec.kind].cost(op.spec, ins, out)))
    return costs


#: Legacy counts, kept: flop_counter has no formula for ``mv`` (a matmul with a vector) and sees
#: an outer-product einsum as a ``mul``; the rules count the products' multiply-adds.
FLOP_COUNTER_BLIND = {"mix:matmul_vector", "mix:einsum_outer"}


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_flops_equal_flop_counter(case: str, export: bool) -> None:
    """Every op with matrix FLOPs is ours, so the graph's total is our rules' sum (where
    flop_counter is blind to a product, it counts 0 and the rules still count the product)."""
    gm, inputs = _case(case, export)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        want = flop_counter_flops(gm, tuple(inputs))
    ours = sum(int(c.flops) for _, c in _node_costs(gm, inputs))
    if case in FLOP_COUNTER_BLIND:
        assert want == 0 < ours
    else:
        assert ours == want


def _param_tensors(gm: fx.GraphModule, node: fx.Node) -> list[nn.Parameter]:
    """The parameters a node reads: its module's, or those of its get_attr operands."""
    module = dict(gm.named_modules()).get(str(node.target)) if node.op == "call_module" else None
    tensors = list(module.parameters()) if module is not None else [
        getattr(gm, str(a.target)) for a in node.all_input_nodes if a.op == "get_attr"]
    return [t for t in tensors if isinstance(t, nn.Parameter)]  # not a constant mask


@pytest.mark.parametrize("case", RELEVANT)
def test_param_formula_counts_the_weights(case: str) -> None:
    """As the cost driver uses it: the formula of an op that reads parameters counts them (a
    weight computed in the graph, ``torch.ones(...)``, is no parameter: the driver counts 0)."""
    gm, inputs = _case(case)
    for node, cost in _node_costs(gm, inputs):
        count = sum(t.numel() for t in _param_tensors(gm, node))
        if count or node.op == "call_module":
            assert int(cost.params) == count, node.name


# ---- normalisation -------------------------------------------------------------------------------
def _specs(factory: Callable[[], nn.Module], shapes: list[tuple[int, ...]],
           export: bool = False) -> list[OpSpec]:
    gm, _ = _trace(factory, shapes, export)
    modules = dict(gm.named_modules())
    return [normalize(n, modules).spec for n in _ours(gm)]


CONV = dict(dims=2, kernel=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(1, 1), groups=1,
            in_channels=3, out_channels=4, transposed=False, output_padding=(0, 0),
            padding_mode="zeros")


@pytest.mark.parametrize("export", [False, True])
def test_conv_forms_agree(export: bool) -> None:
    module = _specs(lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), [(2, 3, 7, 7)], export)
    function = _specs(*CASES["conv_fn_param"], export=export)
    if export:  # the module is a call of aten.conv2d with its weight and bias
        assert module == [OpSpec.of("conv", **CONV, weight=Ref(1), bias=Ref(2))]
    else:
        assert module == [OpSpec.of("conv", **CONV, bias=True)]
    assert function == [OpSpec.of("conv", **CONV, weight=Ref(1), bias=Ref(2))]


def test_conv_module_params() -> None:
    [spec] = _specs(lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect", bias=False),
                    [(2, 3, 5, 5)])
    assert spec.get("padding_mode") == "reflect" and spec.get("bias") is False
    [spec] = _specs(*CASES["conv_transpose_outpad"])
    assert (spec.get("transposed"), spec.get("output_padding"), spec.get("out_channels")) == (
        True, (1, 1), 2)
    [spec] = _specs(*CASES["conv_fn_groups_same"])
    assert (spec.get("groups"), spec.get("in_channels"), spec.get("padding")) == (2, 4, (1, 1))
    assert spec.get("same") is True


def test_transposed_forms_agree() -> None:
    fx_spec = _specs(*CASES["conv_transpose_outpad"])[0]
    [aten] = _specs(*CASES["conv_transpose_outpad"], export=True)
    assert dict(aten.params) == {**dict(fx_spec.params), "weight": Ref(1), "bias": Ref(2)}


@pytest.mark.parametrize("export", [False, True])
def test_pool_forms(export: bool) -> None:
    specs = _specs(*CASES["pools_fn"], export=export)
    assert specs[0] == OpSpec.of("max_pool", dims=2, kernel=(3, 3), stride=(2, 2),
                                 padding=(1, 1), dilation=(1, 1), ceil_mode=False)
    assert specs[1] == OpSpec.of("avg_pool", dims=2, kernel=(2, 2), stride=(2, 2),
                                 padding=(0, 0), dilation=(1, 1), ceil_mode=False)
    modules = _specs(lambda: nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2)),
                     [(2, 3, 8, 8)], export)
    assert modules == specs
    assert _specs(*CASES["adaptive_max_none"], export=export) == [
        OpSpec.of("adaptive_max_pool", output_size=(2, 6), with_indices=True) if export
        else OpSpec.of("adaptive_max_pool", output_size=(2, None))]


def test_pool_with_indices_is_unknown() -> None:
    gm, _ = _trace(lambda: nn.MaxPool2d(2, return_indices=True), [(1, 2, 4, 4)])
    modules = dict(gm.named_modules())
    kinds = [normalize(n, modules).spec.kind for n in gm.graph.nodes if n.op == "call_module"]
    assert kinds == ["unknown"]


@pytest.mark.parametrize("export", [False, True])
def test_pad_forms(export: bool) -> None:
    specs = _specs(*CASES["pad_modules"], export=export)
    modes = [(s.get("mode"), s.get("pad")) for s in specs]
    assert modes == [("constant", (1, 0, 2, 1)), ("reflect", (1, 1, 1, 1)),
                     ("circular", (1, 1, 1, 1)), ("replicate", (2, 0, 0, 1))]


def test_computed_pad_amount_is_a_ref() -> None:
    [spec] = _specs(*CASES["pad_replicate_computed"])
    left, right = spec.get("pad")
    assert left == 1 and isinstance(right, Ref) and right.index == 1
    assert spec.get("mode") == "replicate"


@pytest.mark.parametrize("export", [False, True])
def test_linear_forms(export: bool) -> None:
    module = _specs(lambda: nn.Linear(5, 6), [(2, 4, 5)], export)
    function = _specs(*CASES["linear_fn"], export=export)
    expected = OpSpec.of("linear", in_features=5, out_features=6, weight=Ref(1), bias=Ref(2))
    assert function == [expected]
    assert module == ([expected] if export else [
        OpSpec.of("linear", in_features=5, out_features=6, bias=True)])
    [nobias] = _specs(*CASES["linear_fn_nobias"], export=export)
    assert nobias.get("bias") is None and nobias.get("out_features") == 3


@pytest.mark.parametrize("export", [False, True])
def test_matmul_and_einsum_forms(export: bool) -> None:
    specs = _specs(*CASES["matmul_forms"], export=export)
    assert [s.kind for s in specs] == ["matmul"] * 3
    assert specs[0] == OpSpec.of("matmul", other=Ref(1))
    assert _specs(*CASES["matmul_same_operand"], export=export) == [
        OpSpec.of("matmul", other=Ref(0))]
    assert _specs(*CASES["einsum_implicit_list"], export=export) == [
        OpSpec.of("einsum", equation="ij,jk", operands=(Ref(0), Ref(1)))]


@pytest.mark.parametrize("export", [False, True])
def test_sdpa_forms(export: bool) -> None:
    [spec] = _specs(*CASES["sdpa_positional_mask"], export=export)
    assert spec == OpSpec.of("sdpa", key=Ref(0), value=Ref(0), attn_mask=Ref(1), dropout_p=0.0,
                             is_causal=False, scale=None, enable_gqa=False)
    [causal] = _specs(*test_transformer_ops.CASES["sdpa_gqa"], export=export)
    assert causal.get("enable_gqa") is True and causal.get("key") == Ref(1)


# ---- rules at hand-built specs (a Program's view) ------------------------------------------------
def test_computed_weight_is_pulled_whole() -> None:
    spec = OpSpec.of("conv", **{**CONV, "stride": (1, 1)}, weight=Ref(1), bias=None)
    rule = REGISTRY["conv"].mixing(spec, ((2, 3, 5, 5), (4, 3, 3, 3)), (2, 4, 5, 5))
    assert [type(p) for p in rule.pulls(None)][1:] == [Whole]
    assert rule.pulls(None)[1].src == 1
    linear = OpSpec.of("linear", in_features=5, out_features=6, weight=Ref(1), bias=Ref(2))
    rule = REGISTRY["linear"].mixing(linear, ((4, 5), (6, 5), (6,)), (4, 6))
    assert sorted(p.src for p in rule.pulls(None) if isinstance(p, Whole)) == [1, 2]


def test_sdpa_mask_pattern_param() -> None:
    """A constant boolean mask's pattern in the spec makes each query read only its keys."""
    allowed = mask_pattern(torch.tensor([[True, False], [True, True]]))
    spec = OpSpec.of("sdpa", key=Ref(0), value=Ref(0), attn_mask=Ref(1), is_causal=False,
                     enable_gqa=False, mask_allowed=allowed)
    rule = REGISTRY["sdpa"].mixing(spec, ((1, 2, 4), None), (1, 2, 4))
    value_pull = rule.pulls(None)[-1]
    assert value_pull.apply((1, 0b01, 0b1111)) == ((1, 0b01, 0b1111),)  # query 0: key 0 only
    assert value_pull.apply((1, 0b10, 0b1111)) == ((1, 0b11, 0b1111),)


def test_normalize_reads_a_constant_bool_mask() -> None:
    # the mask's pattern is part of the spec, so a hand-built program can state it too
    [spec] = _specs(*test_transformer_ops.CASES["sdpa_bool_mask_constant"])
    assert spec.get("mask_allowed") is not None


def test_every_kind_has_every_rule() -> None:
    for name in KINDS:
        kind = REGISTRY[name]
        assert callable(kind.shape) and callable(kind.mixing) and callable(kind.cost)
    assert REGISTRY["sdpa"].depth == "nonlinear"
    assert {REGISTRY[k].layout for k in ("conv", "max_pool", "adaptive_avg_pool")} == {
        "channel_first"}
    assert (REGISTRY["linear"].layout, REGISTRY["matmul"].layout, REGISTRY["pad"].layout) == (
        "feature_last", "attention", "preserve")
