"""Registry families elementwise, norms and reductions: every form normalises to the expected
spec; the shape rule equals the trace, the mixing rule the Jacobian ground truth, parameter
formulas the real counts, and depth classes and layouts the expected tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import fx, nn

from alphac.frontends.trace import annotate_shapes
from alphac.modes import ModeValue
from alphac.passes.analysis.ground_truth import mixing_ground_truth
from alphac.passes.analysis.mixing import _queries, mix_label
from alphac.passes.analysis.mixing_boxes import (
    NO_PULLS,
    element_shapes,
    float_shape,
    full,
)
from alphac.passes.analysis.registry import REGISTRY, OpSpec, Ref, kind_of, normalize
from alphac.passes.analysis.registry.elementwise import DROP_PATH_CLASSES
from alphac.passes.analysis.shape_dims import TensorShape, default_layout
from alphac.symbols import dim

FAMILY = ("add", "sub", "mul", "div", "neg", "floordiv", "mod", "compare", "masked_fill",
          "identity", "dropout", "drop_path", "mode_value", "batch_norm", "layer_norm",
          "group_norm", "reduce")


class Fn(nn.Module):
    """``fn(parts, *inputs)`` with ``parts`` registered as submodules (call_module leaves)."""

    def __init__(self, fn: Callable[..., Any], **parts: nn.Module) -> None:
        super().__init__()
        self.fn, self.parts = fn, nn.ModuleDict(parts)

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.fn(self.parts, *xs)


class Fn2(Fn):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        return self.fn(self.parts, x, y)


class Fn1(Fn):
    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self.parts, x)


class DropPath(nn.Module):
    """timm's stochastic depth by class name: identity in eval mode."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, DropPath | ModeValue) or super().is_leaf_module(m, name)


R = torch.randn
BN = nn.BatchNorm2d(4).eval()
with torch.no_grad():
    BN.running_mean.uniform_(-1, 1)
    BN.running_var.uniform_(0.5, 2)

#: id -> (module, inputs, expected kind, expected params (a subset), legacy-exact mixing).
CASES: dict[str, tuple[nn.Module, tuple, str, dict, bool]] = {
    "add_op": (Fn2(lambda p, x, y: x + y), (R(2, 3, 4), R(3, 1)), "add", {"other": Ref(1)}, True),
    "add_scalar": (Fn1(lambda p, x: torch.add(x, 2.0, alpha=3)), (R(2, 3),), "add",
                   {"other": 2.0, "alpha": 3}, True),
    "radd_scalar": (Fn1(lambda p, x: 2.0 + x), (R(2, 3),), "add", {"input": 2.0, "other": Ref(0)},
                    True),
    "iadd": (Fn2(lambda p, x, y: x.add_(y)), (R(2, 3), R(2, 3)), "add", {"other": Ref(1)}, False),
    "sub_method": (Fn2(lambda p, x, y: x.sub(y)), (R(2, 3, 4), R(4)), "sub", {}, True),
    "rsub": (Fn1(lambda p, x: torch.rsub(x, 1.0)), (R(2, 3),), "sub", {"reverse": True}, True),
    "mul_self": (Fn1(lambda p, x: x * x), (R(2, 3),), "mul", {"other": Ref(0)}, True),
    "mul_tiled": (Fn2(lambda p, x, y: x * y), (R(2, 6), R(2, 1)), "mul", {}, True),
    "div": (Fn2(lambda p, x, y: x / y), (R(2, 3), R(2, 3).abs() + 1), "div", {}, True),
    "div_floor": (Fn1(lambda p, x: torch.div(x, 2, rounding_mode="floor")), (R(2, 3),), "div",
                  {"rounding_mode": "floor"}, False),
    "neg": (Fn1(lambda p, x: -x), (R(2, 3),), "neg", {}, True),
    "mod": (Fn1(lambda p, x: x % 1.5), (R(2, 3),), "mod", {"other": 1.5}, False),
    "gt": (Fn1(lambda p, x: x > 0), (R(2, 3),), "compare", {"op": "gt", "other": 0}, True),
    "eq_method": (Fn2(lambda p, x, y: x.eq(y)), (R(2, 3), R(3)), "compare", {"op": "eq"}, True),
    "masked_fill": (Fn2(lambda p, x, m: x.masked_fill(m, -1.0)),
                    (R(2, 3, 4), torch.zeros(3, 4, dtype=torch.bool)), "masked_fill", {"mask": Ref(1), "value": -1.0}, True),
    "masked_fill_tensor": (Fn2(lambda p, x, v: x.masked_fill(x > 0, v)),
                           (R(2, 3), R(())), "masked_fill", {"mask": Ref(1), "value": Ref(2)},
                           True),
    "contiguous": (Fn1(lambda p, x: x.contiguous()), (R(2, 3),), "identity", {}, True),
    "clone": (Fn1(lambda p, x: torch.clone(x)), (R(2, 3),), "identity", {}, True),
    "detach": (Fn1(lambda p, x: x.detach()), (R(2, 3),), "identity", {}, True),
    "type_as": (Fn2(lambda p, x, y: x.type_as(y)), (R(2, 3), R(4)), "identity",
                {"other": Ref(1)}, False),
    "nn_identity": (Fn1(lambda p, x: p.i(x), i=nn.Identity()), (R(2, 3),), "identity", {}, True),
    "nn_dropout": (Fn1(lambda p, x: p.d(x), d=nn.Dropout(0.3)), (R(2, 3),), "dropout", {"p": 0.3},
                   True),
    "nn_dropout2d": (Fn1(lambda p, x: p.d(x), d=nn.Dropout2d(0.1)), (R(2, 3, 4, 4),), "dropout",
                     {"p": 0.1}, True),
    "f_dropout": (Fn1(lambda p, x: F.dropout(x, 0.2, training=False)), (R(2, 3),), "dropout",
                  {"p": 0.2}, True),
    "f_dropout_default": (Fn1(lambda p, x: F.dropout(x, training=False)), (R(2, 3),), "dropout",
                          {"p": 0.5}, True),
    "drop_path": (Fn1(lambda p, x: p.dp(x), dp=DropPath(0.1)), (R(2, 3),), "drop_path",
                  {"p": 0.1}, True),
    "bn_module": (Fn1(lambda p, x: p.bn(x), bn=BN), (R(2, 4, 3, 3),), "batch_norm",
                  {"batch_stats": False, "affine": True, "num_features": 4}, True),
    "bn_no_running": (Fn1(lambda p, x: p.bn(x), bn=nn.BatchNorm2d(4, track_running_stats=False)),
                      (R(2, 4, 3, 3),), "batch_norm", {"batch_stats": True}, True),
    "bn1d": (Fn1(lambda p, x: p.bn(x), bn=nn.BatchNorm1d(4).eval()), (R(3, 4, 5),),
             "batch_norm", {"batch_stats": False}, True),
    "f_batch_norm": (Fn1(lambda p, x: F.batch_norm(x, p.bn.running_mean, p.bn.running_var,
                                                    p.bn.weight, p.bn.bias, False), bn=BN),
                     (R(2, 4, 3, 3),), "batch_norm", {"batch_stats": False, "affine": True}, True),
    "f_batch_norm_training": (Fn1(lambda p, x: F.batch_norm(
        x, p.bn.running_mean.clone(), p.bn.running_var.clone(), p.bn.weight, training=True),
        bn=BN), (R(2, 4, 3, 3),), "batch_norm",
        {"batch_stats": True, "affine": True, "bias": False}, True),
    "f_batch_norm_kwargs": (Fn1(lambda p, x: F.batch_norm(
        x, running_mean=None, running_var=None, weight=p.bn.weight, bias=p.bn.bias,
        training=True), bn=BN), (R(2, 4, 3, 3),), "batch_norm", {"batch_stats": True}, True),
    "ln_module": (Fn1(lambda p, x: p.ln(x), ln=nn.LayerNorm(4)), (R(2, 3, 4),), "layer_norm",
                  {"normalized_shape": (4,), "affine": True}, True),
    "ln_two_dims": (Fn1(lambda p, x: p.ln(x), ln=nn.LayerNorm((3, 4))), (R(2, 3, 4),),
                    "layer_norm", {"normalized_shape": (3, 4)}, True),
    "ln_one_element": (Fn1(lambda p, x: p.ln(x), ln=nn.LayerNorm(1)), (R(2, 3, 1),),
                       "layer_norm", {}, True),
    "f_layer_norm": (Fn1(lambda p, x: F.layer_norm(x, (4,))), (R(2, 3, 4),), "layer_norm",
                     {"normalized_shape": (4,), "affine": False}, True),
    "f_layer_norm_int": (Fn1(lambda p, x: F.layer_norm(x, [4], p.ln.weight, p.ln.bias),
                             ln=nn.LayerNorm(4)), (R(2, 3, 4),), "layer_norm",
                         {"normalized_shape": (4,), "affine": True}, True),
    "gn_module": (Fn1(lambda p, x: p.gn(x), gn=nn.GroupNorm(2, 4)), (R(2, 4, 3, 3),),
                  "group_norm", {"num_groups": 2}, True),
    "gn_one_group": (Fn1(lambda p, x: p.gn(x), gn=nn.GroupNorm(1, 4)), (R(2, 4, 3),),
                     "group_norm", {"num_groups": 1}, True),
    "f_group_norm": (Fn1(lambda p, x: F.group_norm(x, 4)), (R(2, 4, 3, 3),), "group_norm",
                     {"num_groups": 4, "affine": False}, True),
    "mean_dims": (Fn1(lambda p, x: x.mean((2, 3))), (R(2, 3, 4, 5),), "reduce",
                  {"op": "mean", "dim": (2, 3), "keepdim": False}, True),
    "sum_keepdim": (Fn1(lambda p, x: torch.sum(x, dim=-1, keepdim=True)), (R(2, 3, 4),), "reduce",
                    {"op": "sum", "dim": -1, "keepdim": True}, True),
    "sum_all": (Fn1(lambda p, x: x.sum()), (R(2, 3),), "reduce", {"dim": None}, True),
    "amax": (Fn1(lambda p, x: torch.amax(x, 1)), (R(2, 3, 4),), "reduce", {"op": "amax"}, True),
    "amin_list": (Fn1(lambda p, x: x.amin([0, 2])), (R(2, 3, 4),), "reduce",
                  {"op": "amin", "dim": (0, 2)}, True),
}


#: A mask input is all False: a data-dependent mask hides positions from the Jacobian that the
#: rule (sound for every mask) keeps.
#: detach passes the data through (identity, as the analyses have always counted it) but stops
#: gradients: its Jacobian is zero.
_NO_JACOBIAN = frozenset({"detach", "iadd"})  # and an in-place op on an input has none


def _trace(module: nn.Module, inputs: tuple) -> fx.GraphModule:
    gm = fx.GraphModule(module, _Tracer().trace(module.eval()))
    annotate_shapes(gm, list(inputs))
    return gm


def _ops(gm: fx.GraphModule) -> list[fx.Node]:
    modules = dict(gm.named_modules())
    return [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")
            and normalize(n, modules).spec.kind in FAMILY]


def _symbolic(node: Any) -> Any:
    """The node's value in the shape domain, at its traced (concrete) shape."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    if hasattr(meta, "shape"):
        dims = tuple(sympy.Integer(int(s)) for s in meta.shape)
        return TensorShape(dims, default_layout(len(dims)))
    if isinstance(meta, tuple | list):
        return tuple(_symbolic_meta(m) for m in meta)
    return None


def _symbolic_meta(meta: Any) -> TensorShape:
    dims = tuple(sympy.Integer(int(s)) for s in meta.shape)
    return TensorShape(dims, default_layout(len(dims)))


def _concrete(node: fx.Node) -> Any:
    """The node's value in the mixing domain."""
    elements = element_shapes(node)
    return tuple(elements) if elements is not None else float_shape(node)


def _traced(node: fx.Node) -> Any:
    meta = node.meta.get("tensor_meta")
    if hasattr(meta, "shape"):
        return tuple(int(s) for s in meta.shape)
    return tuple(tuple(int(s) for s in m.shape) for m in meta)


def _dims(value: Any) -> Any:
    if isinstance(value, TensorShape):
        return tuple(int(d) for d in value.dims)
    return tuple(_dims(v) for v in value)


# ---- normalisation, shape, depth, cost ------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_normalisation_gives_the_expected_spec(case: str) -> None:
    module, inputs, kind, params, _ = CASES[case]
    gm = _trace(module, inputs)
    op = normalize(_ops(gm)[-1], dict(gm.named_modules()))
    assert op.spec.kind == kind
    for key, value in params.items():
        assert op.spec.get(key) == value, (key, op.spec)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert op.operands[0] in placeholders or op.spec.get("input") is not None


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_and_params_agree_with_the_trace(case: str) -> None:
    module, inputs, *_ = CASES[case]
    gm = _trace(module, inputs)
    modules = dict(gm.named_modules())
    for node in _ops(gm):
        op = normalize(node, modules)
        kind = kind_of(op.spec)
        ins = tuple(_symbolic(n) for n in op.operands)
        out = kind.shape(op.spec, ins)
        assert _dims(out) == _traced(node), (node.name, out)
        if node.op != "call_module":  # a parameter formula against the real count
            assert kind.cost(op.spec, ins, out).params == _params(gm, node)


def _params(gm: fx.GraphModule, node: fx.Node) -> int:
    found = [gm.get_parameter(str(a.target)) for a in node.all_input_nodes if a.op == "get_attr"
             and isinstance(getattr(gm.get_submodule(str(a.target).rpartition(".")[0]),
                                    str(a.target).rpartition(".")[2]), nn.Parameter)]
    return sum(p.numel() for p in found)


# ---- mixing -----------------------------------------------------------------------------------
def _pull(rule: Any, out: tuple[int, ...], sources: dict[Any, int]) -> dict[int, list[list]]:
    """Per operand index, per query of the output, the boxes the rule pulls back."""
    reached: dict[int, list[list]] = {}
    queries = _queries(out)
    for q, box in enumerate(queries):
        for pull in rule.pulls(None):
            index = sources.get(pull.src, pull.src)
            reached.setdefault(index, [[] for _ in queries])[q].extend(pull.apply(box))
    return reached


def _labels(boxes: list[list], shape: tuple[int, ...]) -> tuple:
    """The mixing matrix of one operand, labelled as :func:`infer_mixing` does."""
    def project(bs: list, a: int) -> int:
        acc = 0
        for b in bs:
            acc |= b[a]
        return acc

    centre = boxes[-1]
    return tuple(tuple(mix_label(n, project(qs, a) == full(n), project(centre, a).bit_count())
                       for qs in boxes[:-1]) for a, n in enumerate(shape))


@pytest.mark.parametrize("case", sorted(CASES))
def test_mixing_equals_the_jacobian(case: str) -> None:
    module, inputs, *_ = CASES[case]
    gm = _trace(module, inputs)
    modules = dict(gm.named_modules())
    node = _ops(gm)[-1]
    op = normalize(node, modules)
    out = _concrete(node)
    rule = kind_of(op.spec).mixing(op.spec, tuple(_concrete(n) for n in op.operands), out)
    assert rule is not None
    if float_shape(node) is None:
        assert rule is NO_PULLS or not rule.pulls(None)
        return
    constants = {i for i, n in enumerate(op.operands) if n.op == "get_attr"}  # the driver drops
    reached = {i: b for i, b in _pull(rule, out, {}).items() if i not in constants}
    floats = [n for n in gm.graph.nodes if n.op == "placeholder" and float_shape(n)]
    got = {}
    for i, ph in enumerate(floats):
        index = op.operands.index(ph) if ph in op.operands else None
        if index in reached and any(reached[index]):
            matrix = _labels(reached[index], float_shape(ph))
            if any(any(row) for row in matrix):
                got[(i, 0)] = matrix
    if case not in _NO_JACOBIAN:
        assert got == mixing_ground_truth(gm, list(inputs))


# ---- aten forms, sizes, mode values, programs --------------------------------------------------
def _aten_node(fn: Callable[..., Any], *args: Any) -> fx.Node:
    """A one-op graph calling ``fn`` (an aten overload) on placeholders ``args`` (tensors)."""
    graph = fx.Graph()
    values = [graph.placeholder(f"a{i}") if isinstance(a, torch.Tensor) else a
              for i, a in enumerate(args)]
    node = graph.call_function(fn, tuple(values))
    graph.output(node)
    gm = fx.GraphModule(nn.Module(), graph)
    annotate_shapes(gm, [a for a in args if isinstance(a, torch.Tensor)])
    return node


aten = torch.ops.aten
X, W, RM, RV = R(2, 4, 3, 3), R(4), torch.zeros(4), torch.ones(4)


@pytest.mark.parametrize(("fn", "args", "params"), [
    (aten.batch_norm.default, (X, W, W, RM, RV, True, 0.1, 1e-5, False),
     {"batch_stats": False, "running_stats": True}),
    (aten.batch_norm.default, (X, W, W, None, None, True, 0.1, 1e-5, False),
     {"batch_stats": True, "running_stats": False}),
    (aten._native_batch_norm_legit_no_training.default, (X, W, W, RM, RV, 0.1, 1e-5),
     {"batch_stats": False, "tuple_form": "no_training"}),
    (aten._native_batch_norm_legit_functional.default, (X, W, W, RM, RV, True, 0.1, 1e-5),
     {"batch_stats": True, "tuple_form": "functional"}),
    (aten._native_batch_norm_legit_functional.default, (X, W, W, RM, RV, False, 0.1, 1e-5),
     {"batch_stats": False, "tuple_form": "functional"}),
    (aten.layer_norm.default, (X, [3], None, None, 1e-5, False), {"normalized_shape": (3,)}),
    (aten.group_norm.default, (X, 2, W, W, 1e-5, False), {"num_groups": 2, "affine": True}),
    (aten.mean.dim, (X, [2, 3]), {"op": "mean", "dim": (2, 3)}),
    (aten.amax.default, (X, [-1]), {"op": "amax", "dim": (-1,)}),
    (aten.sum.dim_IntList, (X, [1], True), {"op": "sum", "keepdim": True}),
    (aten.dropout.default, (X, 0.2, False), {"p": 0.2}),
    (aten.remainder.Scalar, (X, 2), {"other": 2}),
    (aten.gt.Scalar, (X, 0), {"op": "gt"}),
    (aten.masked_fill.Scalar, (X, X > 0, 0.0), {"value": 0.0}),
    (aten.clone.default, (X,), {}),
])
def test_aten_forms(fn: Any, args: tuple, params: dict) -> None:
    node = _aten_node(fn, *args)
    op = normalize(node)
    for key, value in params.items():
        assert op.spec.get(key) == value, (key, op.spec)
    ins = tuple(_symbolic(n) for n in op.operands)
    out = kind_of(op.spec).shape(op.spec, ins)
    assert _dims(out) == _traced(node)
    mixing = kind_of(op.spec).mixing(op.spec, tuple(_concrete(n) for n in op.operands),
                                     _concrete(node))
    assert mixing is not None


def test_batch_norm_tuple_form_reads_element_zero_per_channel() -> None:
    node = _aten_node(aten._native_batch_norm_legit_no_training.default, X, W, W, RM, RV, 0.1, 1e-5)
    op = normalize(node)
    rule = kind_of(op.spec).mixing(op.spec, tuple(_concrete(n) for n in op.operands),
                                   _concrete(node))
    (pull,) = [p for p in rule.pulls(0) if p.src == 0]
    assert pull.dims == tuple((k, None) for k in range(4))
    cost = kind_of(op.spec).cost(op.spec, tuple(_symbolic(n) for n in op.operands),
                                 kind_of(op.spec).shape(op.spec, (_symbolic(op.operands[0]),)))
    assert cost.other == 2 * X.numel() and cost.params == 8


def test_size_arithmetic_is_symbolic() -> None:
    H, ws, B = dim("H"), dim("ws"), dim("B")
    spec = OpSpec.of

    def value(kind: str, *ins: Any, **params: Any) -> Any:
        return REGISTRY[kind].shape(spec(kind, **params), ins)

    pad = value("mod", value("sub", ws, value("mod", H, ws, other=Ref(1)), other=Ref(1)), ws,
                other=Ref(1))
    assert sympy.simplify(pad.subs({H: 7, ws: 3}) - 2) == 0
    assert value("floordiv", B, other=4).subs(B, 9) == 2
    assert value("mul", H, other=2) == 2 * H
    assert value("sub", H, input=10, other=Ref(0)) == 10 - H
    assert value("sub", H, other=1, reverse=True) == 1 - H
    assert value("div", H, other=2) == H / 2
    assert value("div", B, other=4, rounding_mode="floor").subs(B, 9) == 2
    assert value("neg", H) == -H
    assert value("compare", H, other=2) is None
    assert value("add", H, other=0.5) is None


def test_broadcast_keeps_the_best_layout() -> None:
    B, C, H, W_ = dim("B"), dim("C"), dim("H"), dim("W")
    x = TensorShape((B, C, H, W_), "NCHW")
    y = TensorShape((C, sympy.Integer(1), sympy.Integer(1)), "???")
    out = REGISTRY["mul"].shape(OpSpec.of("mul", other=Ref(1)), (y, x))
    assert out == x
    mask = TensorShape((H, W_), "??")
    assert REGISTRY["masked_fill"].shape(OpSpec.of("masked_fill", mask=Ref(1), value=0.0),
                                         (x, mask)) == x


def test_mode_value_module_form() -> None:
    module = Fn1(lambda p, x: F.dropout(x, p.m(), training=False), m=ModeValue(0.0, 0.5))
    gm = _trace(module, (R(2, 3),))
    modules = dict(gm.named_modules())
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    op = normalize(node, modules)
    assert op.spec == OpSpec.of("mode_value", value=0.0) and op.operands == ()
    kind = kind_of(op.spec)
    assert kind.depth == "transparent" and kind.mixing(op.spec, (), None) is NO_PULLS
    assert REGISTRY["mode_value"].shape(OpSpec.of("mode_value", value=3), ()) == 3


def test_unknown_modules_stay_unknown_and_drop_path_classes_are_known() -> None:
    class Other(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class _Leaves(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, name: str) -> bool:
            return isinstance(m, Other) or super().is_leaf_module(m, name)

    module = Fn1(lambda p, x: p.o(x), o=Other())
    gm = fx.GraphModule(module, _Leaves().trace(module))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    assert normalize(node, dict(gm.named_modules())).spec.kind == "unknown"
    assert {"DropPath", "DropBlock2d", "StochasticDepth"} <= DROP_PATH_CLASSES


#: The layout effects these kinds must have (what the shape analysis' layout inference expects).
_LEGACY_LAYOUTS = {"batch_norm": "channel_first", "group_norm": "channel_first",
                   "layer_norm": "feature_last",
                   **dict.fromkeys(["add", "sub", "mul", "div", "neg", "masked_fill", "identity",
                                    "dropout"], "preserve")}


def test_layouts_are_the_expected_ones() -> None:
    for name in FAMILY:
        assert REGISTRY[name].layout == _LEGACY_LAYOUTS.get(name), name
