"""Registry families layout, indexing and constants: normalisation of every form, shape rules
against the trace (symbolic sizes evaluated at the bindings) and mixing rules against the Jacobian.

The mixing rules run through a small pull-back over the registry (``_registry_mixing``): operand
values as the registry defines them (a float tensor's shape, a tuple value's element shapes,
None otherwise; a constant integer index tensor's values as a ``torch.Tensor``), pulls into
constants (``get_attr``) dropped. fx traces give the function and method forms, ``torch.export``
the aten forms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sympy
import torch
from torch import fx, nn

from alphac.frontends.trace import _export, annotate_shapes
from alphac.ir import Subgraph, extract
from alphac.passes.analysis.ground_truth import (
    _AllOutputs,
    mixing_ground_truth,
    subgraph_inputs,
)
from alphac.passes.analysis.mixing import (
    MixingFact,
    _queries,
    mix_label,
    tensor_inputs,
    tensor_outputs,
)
from alphac.passes.analysis.mixing_boxes import element_shapes, float_shape, full, simplify
from alphac.passes.analysis.registry import REGISTRY, OpSpec, Ref, normalize
from alphac.passes.analysis.shape_dims import ONE, TensorShape, default_layout, evaluate_dim
from alphac.symbols import dim

FAMILY = {"reshape", "flatten", "unflatten", "permute", "transpose", "unsqueeze", "squeeze",
          "expand", "repeat", "roll", "cat", "stack", "getitem", "chunk", "split",
          "tensor_split", "unbind", "size", "arange", "full"}
S = ("slice", None, None, None)


class Fn(nn.Module):
    """``fn(self, *xs)`` with named constant buffers and parameters (read through get_attr)."""

    def __init__(self, fn: Callable[..., Any], buffers: dict[str, torch.Tensor] | None = None,
                 params: dict[str, torch.Tensor] | None = None, **modules: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        for name, value in (buffers or {}).items():
            self.register_buffer(name, value)
        for name, value in (params or {}).items():
            setattr(self, name, nn.Parameter(value))
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self, x)


def _window(p: Any, x: torch.Tensor) -> torch.Tensor:
    b, h, w, c = x.shape
    win = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4, c)
    return win.view(b, h // 2, w // 2, 2, 2, c).transpose(2, 3).reshape(b, h, w, c)


def _qkv(p: Any, x: torch.Tensor) -> torch.Tensor:
    B_, N, C = x.shape
    qkv = p.qkv(x).reshape(B_, N, 3, 2, C // 2).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    return q + k * v


#: id -> (module, input shape). Every op of the families, in function and method spellings.
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "view_size_hole": (lambda: Fn(lambda p, x: x.view(x.size(0), -1, 2)), (2, 3, 4)),
    "reshape_tuple": (lambda: Fn(lambda p, x: torch.reshape(x, (3, 2, 4))), (2, 3, 4)),
    "view_as": (lambda: Fn(lambda p, x: x.view_as(x.transpose(1, 2))), (2, 3, 4)),
    "reshape_as": (lambda: Fn(lambda p, x: x.reshape_as(x.flatten(1))), (2, 3, 4)),
    "view_shape_value": (lambda: Fn(lambda p, x: x.flatten(1).view(x.shape)), (2, 3, 4)),
    "window_partition": (lambda: Fn(_window), (2, 4, 6, 3)),
    "qkv_unbind": (lambda: Fn(_qkv, qkv=nn.Linear(4, 12)), (2, 5, 4)),
    "flatten_module": (lambda: Fn(lambda p, x: p.f(x), f=nn.Flatten()), (2, 3, 4, 5)),
    "flatten_fn": (lambda: Fn(lambda p, x: torch.flatten(x, 1, 2)), (2, 3, 4, 5)),
    "unflatten": (lambda: Fn(lambda p, x: x.unflatten(1, (2, -1))), (2, 6, 4)),
    "permute_negative": (lambda: Fn(lambda p, x: x.permute(0, -1, 1, -2)), (2, 3, 4, 5)),
    "permute_fn": (lambda: Fn(lambda p, x: torch.permute(x, (2, 0, 1))), (2, 3, 4)),
    "transpose_t": (lambda: Fn(lambda p, x: x.transpose(-2, -1)[0].t()), (2, 3, 4)),
    "unsqueeze_squeeze": (lambda: Fn(lambda p, x: x.unsqueeze(1).squeeze(1).squeeze()),
                          (2, 1, 4)),
    "squeeze_dims": (lambda: Fn(lambda p, x: x.squeeze((1, 3))), (2, 1, 4, 1)),
    "expand": (lambda: Fn(lambda p, x: x.expand(3, -1, 4, -1)), (2, 1, 5)),
    "expand_size": (lambda: Fn(lambda p, x: p.cls.expand(x.shape[0], -1, -1) + x, None,
                               {"cls": torch.zeros(1, 1, 4)}), (2, 3, 4)),
    "expand_as": (lambda: Fn(lambda p, x: x[:, :1].expand_as(x)), (2, 3, 4)),
    "repeat": (lambda: Fn(lambda p, x: x.repeat(2, 1, 3, 1)), (2, 3, 4)),
    "roll": (lambda: Fn(lambda p, x: torch.roll(x, shifts=(-1, 2), dims=(1, 2))), (2, 4, 5)),
    "roll_flat": (lambda: Fn(lambda p, x: x.roll(2)), (1, 5, 1)),
    "cat": (lambda: Fn(lambda p, x: torch.cat((x, x[:, :1], x), dim=1)), (2, 3, 4)),
    "cat_token": (lambda: Fn(lambda p, x: torch.cat([p.cls.expand(x.size(0), -1, -1), x], -2),
                             None, {"cls": torch.zeros(1, 1, 4)}), (2, 3, 4)),
    "concat": (lambda: Fn(lambda p, x: torch.concat((x, x), -1)), (2, 3)),
    "stack": (lambda: Fn(lambda p, x: torch.stack([x, x * 2.0, x], dim=1)), (2, 3)),
    "getitem_basic": (lambda: Fn(lambda p, x: x[1, ..., None, 1:4:2]), (2, 3, 5)),
    "getitem_negative": (lambda: Fn(lambda p, x: x[:, -2:, :-1]), (2, 5, 4)),
    "getitem_computed_stop": (lambda: Fn(lambda p, x: x[:, :x.size(2)]), (2, 5, 3)),
    "getitem_computed_start": (lambda: Fn(lambda p, x: x[:, x.size(2):]), (2, 5, 3)),
    "getitem_table": (lambda: Fn(lambda p, x: p.table[p.idx].view(4, 4, -1).permute(2, 0, 1)
                                 + x, {"idx": torch.randint(0, 9, (16,))},
                                 {"table": torch.randn(9, 3)}), (3, 4, 4)),
    "getitem_levit": (lambda: Fn(lambda p, x: x + p.biases[:, p.idxs],
                                 {"idxs": torch.randint(0, 5, (4, 4))},
                                 {"biases": torch.randn(2, 5)}), (2, 4, 4)),
    "getitem_gather_data": (lambda: Fn(lambda p, x: x[:, p.idx],
                                       {"idx": torch.tensor([3, 0, 0, -1])}), (2, 5, 3)),
    "chunk": (lambda: Fn(lambda p, x: x.chunk(2, dim=-1)[1]), (2, 3, 4)),
    "split_int": (lambda: Fn(lambda p, x: torch.split(x, 2, 1)[2]), (2, 5, 3)),
    "split_sizes": (lambda: Fn(lambda p, x: x.split([1, 1, 2], dim=2)[2]), (2, 3, 4)),
    "split_computed": (lambda: Fn(lambda p, x: x.split(x.shape[-1] // 3, -1)[1]), (2, 3, 6)),
    "split_tuple_slice": (lambda: Fn(lambda p, x: x.split(1, 1)[1:][0]), (2, 3, 4)),
    "tensor_split": (lambda: Fn(lambda p, x: torch.tensor_split(x, 3, dim=2)[2]), (2, 3, 5)),
    "tensor_split_indices": (lambda: Fn(lambda p, x: x.tensor_split([1, 3], 1)[1]), (2, 5, 3)),
    "unbind": (lambda: Fn(lambda p, x: torch.unbind(x, 1)[2]), (2, 3, 4)),
    "sizes": (lambda: Fn(lambda p, x: x.reshape(x.size(0) * x.shape[1], x.dim(), -1)),
              (2, 3, 4, 2)),
    "ndim": (lambda: Fn(lambda p, x: x.reshape(x.ndim, -1)), (2, 3, 4)),
    "arange": (lambda: Fn(lambda p, x: x + torch.arange(1, 2 * x.shape[-1], 2)), (2, 3, 4)),
    "arange_end": (lambda: Fn(lambda p, x: x * (torch.arange(x.size(0)) + 1).view(-1, 1)),
                   (3, 2)),
    "zeros_cat": (lambda: Fn(lambda p, x: torch.cat((torch.zeros((x.shape[0], 1, 4)), x), 1)),
                  (2, 3, 4)),
    "ones_full": (lambda: Fn(lambda p, x: x * torch.ones((3, 4)) + torch.full((1, 3, 4), 2.0)
                             + torch.empty(x.shape[1:]) * 0.0), (2, 3, 4)),
}
#: Cases torch.export cannot capture as written (fx-only spellings).
NOT_EXPORTED = {"roll_flat"}
#: (case, captured through torch.export): every case through fx, and through export where it can.
FORMS = [pytest.param(c, e, id=f"{c}-{'aten' if e else 'fx'}") for c in sorted(CASES)
         for e in (False, True) if not (e and c in NOT_EXPORTED)]


def _trace(case: str, export: bool = False) -> fx.GraphModule:
    factory, shape = CASES[case]
    torch.manual_seed(0)
    module = factory().eval()
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    gm = _export(module, (example,)) if export else fx.symbolic_trace(module)
    annotate_shapes(gm, [example])
    return gm


def _ops(gm: fx.GraphModule) -> list[tuple[fx.Node, Any]]:
    modules = dict(gm.named_modules())
    return [(n, normalize(n, modules)) for n in gm.graph.nodes
            if n.op in ("call_function", "call_method", "call_module")
            and n.target != "_guards_fn"]  # torch.export's input guards


# ---- normalisation -------------------------------------------------------------------------------
#: (fn, input shape, the specs of the family ops in graph order).
SPECS: dict[str, tuple[Callable[..., Any], tuple[int, ...], list[OpSpec]]] = {
    "view": (lambda x: x.view(x.size(0), -1), (2, 3, 4), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("reshape", shape=(Ref(1), -1))]),
    "reshape_fn": (lambda x: torch.reshape(x, (4, 6)), (2, 3, 4),
                   [OpSpec.of("reshape", shape=(4, 6))]),
    "view_as": (lambda x: x.view_as(x), (2, 3), [OpSpec.of("reshape", shape=Ref(0))]),
    "expand_as": (lambda x: x.expand_as(x), (2, 3), [OpSpec.of("expand", sizes=Ref(0))]),
    "repeat": (lambda x: x.repeat(1, 2), (2, 3), [OpSpec.of("repeat", repeats=(1, 2))]),
    "expand": (lambda x: x.expand((2, 3)), (1, 3), [OpSpec.of("expand", sizes=(2, 3))]),
    "permute": (lambda x: x.permute(1, 0), (2, 3), [OpSpec.of("permute", dims=(1, 0))]),
    "t": (lambda x: x.t(), (2, 3), [OpSpec.of("transpose", dim0=0, dim1=1)]),
    "transpose": (lambda x: torch.transpose(x, 0, -1), (2, 3),
                  [OpSpec.of("transpose", dim0=0, dim1=-1)]),
    "flatten": (lambda x: x.flatten(1), (2, 3, 4),
                [OpSpec.of("flatten", start_dim=1, end_dim=-1)]),
    "unflatten": (lambda x: x.unflatten(-1, (2, 2)), (2, 4),
                  [OpSpec.of("unflatten", dim=-1, sizes=(2, 2))]),
    "squeeze": (lambda x: x.squeeze(), (2, 1), [OpSpec.of("squeeze", dim=None)]),
    "unsqueeze": (lambda x: torch.unsqueeze(x, -1), (2,), [OpSpec.of("unsqueeze", dim=-1)]),
    "roll": (lambda x: x.roll(1, 0), (2,), [OpSpec.of("roll", shifts=1, dims=0)]),
    "cat": (lambda x: torch.cat([x, x], 1), (2, 3),
            [OpSpec.of("cat", tensors=(Ref(0), Ref(0)), dim=1)]),
    "stack": (lambda x: torch.stack((x, x)), (2, 3),
              [OpSpec.of("stack", tensors=(Ref(0), Ref(0)), dim=0)]),
    "getitem": (lambda x: x[0, ..., None, 1:], (2, 3, 4),
                [OpSpec.of("getitem", index=(0, "...", None, ("slice", 1, None, None)))]),
    "split": (lambda x: x.split([1, 2], 1)[1], (2, 3), [
        OpSpec.of("split", split_size=(1, 2), dim=1), OpSpec.of("getitem", index=1)]),
    "split_kw": (lambda x: torch.split(x, split_size_or_sections=1), (2, 3),
                 [OpSpec.of("split", split_size=1, dim=0)]),
    "chunk": (lambda x: x.chunk(3, -1), (2, 3), [OpSpec.of("chunk", chunks=3, dim=-1)]),
    "tensor_split": (lambda x: torch.tensor_split(x, (1,), dim=1), (2, 3),
                     [OpSpec.of("tensor_split", sections=(1,), dim=1)]),
    "unbind": (lambda x: x.unbind(), (2, 3), [OpSpec.of("unbind", dim=0)]),
    "dim_ndim_shape": (lambda x: (x.dim(), x.ndim, x.shape), (2, 3), [
        OpSpec.of("size", attr="ndim", dim=None), OpSpec.of("size", attr="ndim", dim=None),
        OpSpec.of("size", attr="shape", dim=None)]),
    "arange": (lambda x: torch.arange(x.size(0)), (2, 3), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("arange", start=0, end=Ref(0), step=1)]),
    "arange_start_step": (lambda x: torch.arange(1, x.size(0), 2), (7,), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("arange", start=1, end=Ref(0), step=2)]),
    "zeros_tuple": (lambda x: torch.zeros((x.size(0), 4)), (2,), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("full", size=(Ref(0), 4), value=0)]),
    "ones_tuple": (lambda x: torch.ones((x.size(0), 4)), (2,), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("full", size=(Ref(0), 4), value=1)]),
    "full": (lambda x: torch.full((x.size(0),), 3.0), (2,), [
        OpSpec.of("size", attr="shape", dim=0), OpSpec.of("full", size=(Ref(0),), value=3.0)]),
}


class _Lambda(nn.Module):
    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_function_and_method_forms_normalise(case: str) -> None:
    fn, shape, expected = SPECS[case]
    gm = fx.symbolic_trace(_Lambda(fn))
    annotate_shapes(gm, [torch.randn(shape)])
    assert [op.spec for _, op in _ops(gm) if op.spec.kind in FAMILY] == expected


#: aten spelling -> (fn, input shape, the spec of the first op of that aten kind).
ATEN: dict[str, tuple[Callable[..., Any], tuple[int, ...], OpSpec]] = {
    "view": (lambda x: x.view(6, -1), (2, 3, 4), OpSpec.of("reshape", shape=(6, -1))),
    "select": (lambda x: x[:, -1], (2, 3, 4), OpSpec.of("getitem", index=(S, -1))),
    "select_negative_dim": (lambda x: x.select(-1, 0), (2, 3, 4),
                            OpSpec.of("getitem", index=(S, S, 0))),
    "slice": (lambda x: x[:, 1::2], (2, 5, 4),
              OpSpec.of("getitem", index=(S, ("slice", 1, 9223372036854775807, 2)))),
    "index": (lambda x: x[:, torch.tensor([1, 0])], (2, 3),
              OpSpec.of("getitem", index=(S, Ref(1)))),
    "permute": (lambda x: x.permute(1, 0), (2, 3), OpSpec.of("permute", dims=(1, 0))),
    "transpose": (lambda x: x.transpose(0, 1), (2, 3, 4),
                  OpSpec.of("transpose", dim0=0, dim1=1)),
    "expand": (lambda x: x.expand(3, 2, 3), (2, 3), OpSpec.of("expand", sizes=(3, 2, 3))),
    "repeat": (lambda x: x.repeat(2, 1), (2, 3), OpSpec.of("repeat", repeats=(2, 1))),
    "cat": (lambda x: torch.cat([x, x], 1), (2, 3),
            OpSpec.of("cat", tensors=(Ref(0), Ref(0)), dim=1)),
    "split_with_sizes": (lambda x: x.split([1, 2], 1)[1] * 1.0, (2, 3),
                         OpSpec.of("split", split_size=(1, 2), dim=1)),
    "unbind": (lambda x: x.unbind(1)[0] * 1.0, (2, 3), OpSpec.of("unbind", dim=1)),
    "unsqueeze": (lambda x: x.unsqueeze(0), (2, 3), OpSpec.of("unsqueeze", dim=0)),
    "arange": (lambda x: x + torch.arange(3), (2, 3),
               OpSpec.of("arange", start=0, end=3, step=1)),
    "zeros": (lambda x: x + torch.zeros(2, 3), (2, 3),
              OpSpec.of("full", size=(2, 3), value=0)),
}


@pytest.mark.parametrize("case", sorted(ATEN))
def test_aten_forms_normalise(case: str) -> None:
    fn, shape, expected = ATEN[case]
    x = torch.randn(shape)
    gm = torch.export.export(_Lambda(fn), (x,)).module()
    annotate_shapes(gm, [x])
    specs = [op.spec for _, op in _ops(gm) if op.spec.kind == expected.kind]
    assert specs and specs[0] == expected, specs


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_every_op_has_a_form(case: str, export: bool) -> None:
    unknown = [op.spec for _, op in _ops(_trace(case, export)) if op.spec.kind not in REGISTRY]
    assert unknown == []


# ---- shape ---------------------------------------------------------------------------------------
def _symbolic_input(node: fx.Node, bindings: dict, symbolic: frozenset[int]) -> TensorShape:
    """The input's shape with symbols for the dims in ``symbolic`` (of size > 1)."""
    shape = tuple(node.meta["tensor_meta"].shape)
    dims = []
    for k, n in enumerate(shape):
        if n == 1 or k not in symbolic:
            dims.append(ONE if n == 1 else sympy.Integer(n))
            continue
        s = dim(f"D{k}_{n}")
        bindings[s] = n
        dims.append(s)
    return TensorShape(tuple(dims), default_layout(len(dims)))


def _constant(node: fx.Node) -> TensorShape:
    shape = tuple(node.meta["tensor_meta"].shape)
    return TensorShape(tuple(sympy.Integer(n) for n in shape), default_layout(len(shape)))


def _symbolic_shapes(gm: fx.GraphModule, symbolic: frozenset[int] = frozenset({0}),
                     ) -> tuple[dict[str, Any], dict, dict[str, str]]:
    """Every node's symbolic value by the registry's shape rules (the input's dims ``symbolic``
    are symbols, as the batch of an export); the kinds without an answer."""
    values: dict[str, Any] = {}
    bindings: dict = {}
    misses: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            values[node.name] = _symbolic_input(node, bindings, symbolic)
        elif node.op == "get_attr":
            values[node.name] = _constant(node)
    for node, op in _ops(gm):
        ins = tuple(values.get(o.name) for o in op.operands)
        kind = REGISTRY.get(op.spec.kind)
        value = kind.shape(op.spec, ins) if kind is not None else None
        if value is None:
            misses[node.name] = op.spec.kind
        values[node.name] = value
    return values, bindings, misses


def _evaluate(value: Any, bindings: dict) -> Any:
    if isinstance(value, TensorShape):
        return tuple(evaluate_dim(d, bindings) for d in value.dims)
    if isinstance(value, tuple):
        return tuple(_evaluate(v, bindings) for v in value)
    return evaluate_dim(value, bindings)


def _traced(node: fx.Node, actual: dict[str, Any]) -> Any:
    meta = node.meta.get("tensor_meta")
    if hasattr(meta, "shape"):
        return tuple(int(s) for s in meta.shape)
    if isinstance(meta, tuple | list):
        return tuple(tuple(int(s) for s in m.shape) for m in meta)
    value = actual.get(node.name)
    return tuple(int(v) for v in value) if isinstance(value, tuple) else int(value)


def _actual_values(gm: fx.GraphModule) -> dict[str, Any]:
    out: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            out[n.name] = result
            return result

    shape = next(n for n in gm.graph.nodes if n.op == "placeholder").meta["tensor_meta"].shape
    with torch.no_grad():
        Recorder(gm).run(torch.randn(shape))
    return out


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_shape_rules_match_the_trace(case: str, export: bool) -> None:
    gm = _trace(case, export)
    values, bindings, misses = _symbolic_shapes(gm)
    family_misses = {n: k for n, k in misses.items() if k in FAMILY}
    assert family_misses == {}
    actual = _actual_values(gm)
    for node, op in _ops(gm):
        if op.spec.kind in FAMILY and values[node.name] is not None:
            got = _evaluate(values[node.name], bindings)
            assert got == _traced(node, actual), (node.name, values[node.name])


def test_symbolic_sizes_stay_symbolic() -> None:
    gm = _trace("window_partition")
    values, bindings, misses = _symbolic_shapes(gm, frozenset({0, 1, 2}))
    assert misses == {}
    assert [str(d) for d in values["reshape_1"].dims] == ["D0_2", "D1_4", "D2_6", "3"]
    assert _evaluate(values["reshape"], bindings) == (12, 4, 3)
    values, _, misses = _symbolic_shapes(_trace("arange"), frozenset({2}))
    assert misses == {}
    assert sympy.simplify(values["arange"].dims[0] - dim("D2_4")) == 0  # ceil((2W - 1) / 2)


# ---- mixing --------------------------------------------------------------------------------------
def _concrete(node: Any) -> Any:
    """A value as the mixing rules see it; a constant integer tensor as its values."""
    if not isinstance(node, fx.Node):
        return None
    shape = float_shape(node)
    if shape is not None:
        return shape
    elems = element_shapes(node)
    if elems is not None:
        return tuple(elems)
    if node.op == "get_attr":
        value = node.graph.owning_module.get_buffer(str(node.target))
        return value if not value.is_floating_point() else None
    return None


def _registry_mixing(gm: fx.GraphModule) -> MixingFact:
    """The mixing fact of the whole graph by the registry's mixing rules (a small pull-back)."""
    sub = Subgraph.whole(gm)
    by_name = {n.name: n for n in gm.graph.nodes}
    ops = dict((n.name, op) for n, op in _ops(gm))
    ins, outs = tensor_inputs(gm, sub), tensor_outputs(gm, sub)
    state: dict[str, dict] = {}
    qi = 0
    for name in outs:
        for box in _queries(float_shape(by_name[name])):
            state.setdefault(name, {}).setdefault(None, {})[qi] = [box]
            qi += 1
    for name in reversed(sub.nodes):
        pending = state.pop(name, None) if name in ops else None
        if not pending:
            continue
        op = ops[name]
        kind = REGISTRY[op.spec.kind]
        rule = kind.mixing(op.spec, tuple(_concrete(o) for o in op.operands),
                           _concrete(by_name[name]))
        assert rule is not None, f"{name}: {op.spec} not modelled"
        for elem, per_query in pending.items():
            for pull in rule.pulls(elem):
                src = op.operands[pull.src]
                if src.op == "get_attr":
                    continue
                dest = state.setdefault(src.name, {}).setdefault(pull.elem, {})
                for q, boxes in per_query.items():
                    acc = dest.setdefault(q, [])
                    for box in simplify(boxes):
                        acc.extend(pull.apply(box))
    return _fact(gm, state, ins, outs)


def _fact(gm: fx.GraphModule, state: dict, ins: tuple, outs: tuple) -> MixingFact:
    by_name = {n.name: n for n in gm.graph.nodes}
    out_shapes = [float_shape(by_name[n]) for n in outs]
    pairs = []
    for i, name in enumerate(ins):
        shape, reached, first = float_shape(by_name[name]), state.get(name, {}).get(None, {}), 0
        for o, out_shape in enumerate(out_shapes):
            queries = [reached.get(first + k, ()) for k in range(len(out_shape) + 1)]
            first += len(out_shape) + 1
            rows = [tuple(mix_label(n, _proj(qs, a) == full(n), _proj(queries[-1], a).bit_count())
                          for qs in queries[:-1]) for a, n in enumerate(shape)]
            pairs.append(((i, o), tuple(rows)))
    return MixingFact(tuple(pairs), tuple(len(float_shape(by_name[n])) for n in ins),
                      tuple(map(len, out_shapes)))


def _proj(boxes: Any, d: int) -> int:
    acc = 0
    for box in boxes:
        acc |= box[d]
    return acc


@pytest.mark.parametrize(("case", "export"), FORMS)
def test_mixing_rules_equal_the_jacobian(case: str, export: bool) -> None:
    gm = _trace(case, export)
    mine = _registry_mixing(gm).matrices()
    sub = Subgraph.whole(gm)
    module = _AllOutputs(extract(gm, sub), len(sub.outputs))
    truth = mixing_ground_truth(module, subgraph_inputs(gm, sub))
    assert mine == truth


# ---- the registry entries ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(FAMILY))
def test_family_kinds_are_complete_and_free(kind: str) -> None:
    entry = REGISTRY[kind]
    assert all(callable(r) for r in (entry.shape, entry.mixing, entry.cost)) and entry.doc
    x = TensorShape((dim("B"), sympy.Integer(4)), "NC")
    assert entry.cost(OpSpec.of(kind), (x,), x) == (0, 0, 0)
    assert entry.depth == ("transparent" if kind in {"getitem", "size", "arange", "full"}
                           else "linear")


def test_layout_effects() -> None:
    effects = {k: REGISTRY[k].layout for k in FAMILY}
    assert {k for k, v in effects.items() if v == "permute"} == {"permute", "transpose",
                                                                  "flatten"}
    assert {k for k, v in effects.items() if v == "preserve"} == {"roll", "cat"}


def test_a_hand_built_program_uses_the_same_rules() -> None:
    B, C = dim("B"), dim("C")
    x = TensorShape((B, sympy.Integer(4), C), "NLC")
    spec = OpSpec.of("reshape", shape=(Ref(1), -1))
    out = REGISTRY["reshape"].shape(spec, (x, B))
    assert out.dims[0] == B and sympy.simplify(out.dims[1] - 4 * C) == 0
    rule = REGISTRY["getitem"].mixing(OpSpec.of("getitem", index=1), (((2, 3), (2, 5)),), (2, 5))
    (pull,) = rule.pulls(None)
    assert (pull.src, pull.elem) == (0, 1)


def test_an_index_tensor_of_unknown_values_reads_its_whole_dim_only() -> None:
    spec = OpSpec.of("getitem", index=(S, Ref(1)))
    (pull,) = REGISTRY["getitem"].mixing(spec, ((2, 5, 3), None), (2, 4, 3)).pulls(None)
    assert pull.apply((0b1, 0b1, 0b10)) == ((0b1, full(5), 0b10),)
    values = REGISTRY["getitem"].mixing(spec, ((2, 5, 3), torch.tensor([3, 0, 0, -1])), (2, 4, 3))
    assert values.pulls(None)[0].apply((0b1, 0b1, 0b10)) == ((0b1, 0b1000, 0b10),)
