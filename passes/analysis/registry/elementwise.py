"""Elementwise ops: arithmetic (on tensors and on sizes), comparisons, masked_fill, identity,
dropout, drop path and mode values.

Shape: binary ops broadcast their tensor operands (the layout of the highest-rank, best-known
one); on sizes they compute the size (``x.shape[1] * 2``, ``B_ // nW``, ``(ws - H % ws) % ws``
as sympy expressions). Mixing: each output element reads its own (broadcast) element of every
float operand; a comparison is a boolean mask (no derivative); identity, dropout and drop path
read their input elementwise (eval mode); a floored division is piecewise constant (zero
derivative almost everywhere; torch does not differentiate ``floor_divide``). Cost: 1 other-FLOP per output element for add, sub,
mul, div and neg; nothing for the rest. A python scalar operand is a param (``other=2.0``); a
tensor or size operand is a Ref. Example: ``2 - x`` is ``OpSpec.of("sub", input=2, other=%0)``.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch
from torch import nn

from alphac.modes import ModeValue
from alphac.passes.analysis.mixing_boxes import Product, Rule, broadcast_dims
from alphac.passes.analysis.registry.build import function, method, module
from alphac.passes.analysis.registry.common import (
    FREE,
    NO_PULLS,
    ZERO,
    extras,
    free,
    is_shape,
    numel,
    same_shape,
)
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
    NotMaterialisable,
    OpCost,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    module_form,
    refs,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import (
    TensorShape,
    as_expr,
    default_layout,
    div_floor,
)
from alphac.passes.analysis.shape_dims import broadcast_dims as broadcast_sizes

_MISSING = object()
#: Stochastic depth (timm DropPath/DropBlock2d, torchvision StochasticDepth), known by class name.
DROP_PATH_CLASSES = frozenset({"DropPath", "DropBlock2d", "StochasticDepth"})



def _sources(spec: OpSpec) -> list[int]:
    """Operand indices of the data inputs: operand 0 (unless the first argument is a constant
    param ``input``), then the Refs of ``other``."""
    first = [0] if spec.get("input", _MISSING) is _MISSING else refs(spec.get("input"))
    return list(dict.fromkeys([*first, *refs(spec.get("other"))]))


def _pair(spec: OpSpec, ins: tuple[Any, ...]) -> tuple[Any, Any]:
    """The values ``(a, b)`` of a binary op ``a <op> b`` (``rsub`` swaps them)."""
    a = spec.value("input", ins, _MISSING)
    if a is _MISSING:
        a = ins[0] if ins else None
    b = spec.value("other", ins)
    return (b, a) if spec.get("reverse") else (a, b)


# ---- shape -----------------------------------------------------------------------------------
def _size_arith(kind: str, a: sympy.Expr, b: sympy.Expr, rounding: Any = None) -> Any:
    """``a <op> b`` on sizes: ``H * W``, ``B_ // nW``, ``(ws - H % ws) % ws``, ``C / heads``."""
    if kind in ("add", "sub", "mul"):
        return {"add": a + b, "sub": a - b, "mul": a * b}[kind]
    if kind == "div" and rounding is None:
        return a / b
    if b.is_zero:
        return None
    if kind == "floordiv" or (kind == "div" and rounding == "floor"):
        return div_floor(a, int(b)) if b.is_Integer and b > 0 else sympy.floor(a / b)
    if kind == "mod":
        return sympy.Mod(a, b)
    return None


def _binary_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    """Broadcast of the tensor operands; on two sizes, the size arithmetic."""
    a, b = _pair(spec, ins)
    tensors = [v for v in (a, b) if isinstance(v, TensorShape)]
    if not tensors:
        x, y = as_expr(a), as_expr(b)
        if x is None or y is None:
            return None
        return _size_arith(spec.kind, x, y, spec.get("rounding_mode"))
    dims = broadcast_sizes([t.dims for t in tensors])
    best = max(tensors, key=lambda t: (t.rank, -t.layout.count("?")))
    layout = best.layout if best.rank == len(dims) else default_layout(len(dims))
    return TensorShape(dims, layout)


def _neg_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    x = ins[0] if ins else None
    if isinstance(x, TensorShape):
        return x
    size = as_expr(x)
    return None if size is None else -size


def _mode_value_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    """An integer mode value is a size; anything else (a flag, a probability) has no shape."""
    return as_expr(spec.get("value"))


# ---- mixing ----------------------------------------------------------------------------------
def _binary_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Every float operand broadcast to the output; a non-float result has no derivative."""
    if not is_shape(out):
        return NO_PULLS
    sources = _sources(spec)
    pulls = []
    for i in sources:
        if i < len(ins) and is_shape(ins[i]):
            dims = broadcast_dims(ins[i], out)
            if dims is None:
                return None
            pulls.append(Product(i, None, dims))
    return Rule({None: [*pulls, *extras(ins, set(sources))]})


def _elementwise(shape_only: bool = False):
    """Mixing rule: each output element reads its own (broadcast) element of operand 0; other
    float operands whole, except ``other`` when it lends only its dtype (``type_as``)."""

    def mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
        if not is_shape(out):
            return NO_PULLS
        xs = ins[0] if ins and spec.get("input", _MISSING) is _MISSING else None
        if not is_shape(xs):
            return Rule(default=extras(ins, set()))
        dims = broadcast_dims(xs, out)
        if dims is None:
            return None
        skip = {0, *refs(spec.get("other"))} if shape_only else {0}
        return Rule({None: [Product(0, None, dims), *extras(ins, skip)]})

    return mixing


def _no_pulls(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule:
    return NO_PULLS


def _div_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """True division is elementwise; with a rounding mode it is piecewise constant."""
    return NO_PULLS if spec.get("rounding_mode") is not None else _binary_mixing(spec, ins, out)


# ---- cost ------------------------------------------------------------------------------------
def _arith_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    """1 other-FLOP per output element of a tensor op (size arithmetic is free)."""
    if not isinstance(out, TensorShape) or not any(isinstance(v, TensorShape) for v in ins):
        return FREE
    return OpCost(ZERO, ZERO, numel(out))


# ---- kinds -----------------------------------------------------------------------------------
_unary = _elementwise()
for _kind in ("add", "sub", "mul", "div"):
    register(OpKind(_kind, "linear", _binary_shape,
                    _div_mixing if _kind == "div" else _binary_mixing, _arith_cost,
                    layout="preserve", doc=f"{_kind}, broadcast; on sizes too"))
register(
    OpKind("neg", "linear", _neg_shape, _unary, _arith_cost, layout="preserve", doc="-x"),
    OpKind("floordiv", "nonlinear", _binary_shape, _no_pulls, free,
           doc="a // b, on sizes (B_ // nW); on tensors piecewise constant (zero derivative)"),
    OpKind("mod", "nonlinear", _binary_shape, _binary_mixing, free,
           doc="a % b, on sizes ((ws - H % ws) % ws) and tensors"),
    OpKind("compare", "transparent", _binary_shape, _no_pulls, free,
           doc="gt/lt/ge/le/eq/ne (param op): a boolean mask, no derivative"),
    OpKind("masked_fill", "linear", same_shape, _unary, free, layout="preserve",
           doc="x.masked_fill(mask, value): the mask broadcasts to x"),
    OpKind("identity", "transparent", same_shape, _elementwise(shape_only=True), free,
           layout="preserve", doc="contiguous, clone, detach, alias, type_as, a cast to a "
           "floating dtype or a device (to), nn.Identity"),
    OpKind("dropout", "linear", same_shape, _unary, free, layout="preserve",
           doc="dropout (param p): identity at inference"),
    OpKind("drop_path", "linear", same_shape, _unary, free,
           doc="stochastic depth (param p): identity in eval mode"),
    OpKind("mode_value", "transparent", _mode_value_shape, _no_pulls, free,
           doc="a ModeValue (param value, its eval value): a non-tensor constant"),
)


# ---- forms -----------------------------------------------------------------------------------
def _reversed(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    return {**bound, "reverse": True}  # rsub(x, y) = y - x


def _compare(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    return {**bound, "op": name}


call_form(CallForm("add", ("other", "alpha")), "add", "iadd", "add_")
call_form(CallForm("sub", ("other", "alpha")), "sub", "isub", "subtract", "sub_")
call_form(CallForm("sub", ("other", "alpha"), finish=_reversed), "rsub")
call_form(CallForm("mul", ("other",)), "mul", "imul", "multiply", "mul_")
call_form(CallForm("div", ("other", "rounding_mode")), "div", "truediv", "itruediv", "divide",
          "true_divide", "div_")
call_form(CallForm("neg"), "neg", "negative", "neg_")
call_form(CallForm("floordiv", ("other",)), "floordiv", "floor_divide", "ifloordiv",
          "floor_divide_")
call_form(CallForm("mod", ("other",)), "mod", "remainder", "imod", "remainder_")
call_form(CallForm("compare", ("other",), finish=_compare), "gt", "lt", "ge", "le", "eq", "ne")
call_form(CallForm("masked_fill", ("mask", "value")), "masked_fill", "masked_fill_")
call_form(CallForm("identity"), "contiguous", "clone", "detach", "alias")
call_form(CallForm("identity", ("other",)), "type_as")


def _float_cast(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    """``x.to(torch.float32)``, ``x.to("cpu")``, aten ``to.dtype``/``_to_copy``: the identity
    on the values when every dtype it names is a floating one (an integer cast is no identity:
    its derivative is zero; a cast to another tensor's dtype is not read here)."""
    values = [v for v in bound.values() if v is not None]
    if any(isinstance(v, Ref | tuple) for v in values):
        return None
    dtypes = [v for v in values if isinstance(v, str) and v.startswith("torch.")
              and v not in ("torch.strided", "torch.preserve_format", "torch.contiguous_format")]
    floats = ("torch.float", "torch.bfloat16", "torch.half", "torch.double")
    return {} if all(d.startswith(floats) for d in dtypes) else None


call_form(CallForm("identity", ("a1", "a2", "a3", "a4", "dtype", "device", "non_blocking",
                                "copy", "memory_format", "layout", "pin_memory"),
                   finish=_float_cast), "to", "_to_copy")
call_form(CallForm("dropout", ("p",), {"p": 0.5}), "dropout", "dropout1d", "dropout2d",
          "dropout3d", "alpha_dropout", "feature_alpha_dropout", "feature_dropout")


@module_form(nn.modules.dropout._DropoutNd)
def _dropout_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    return "dropout", {"p": m.p}


@module_form(nn.Identity)
def _identity_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    return "identity", {}


@module_form(ModeValue)
def _mode_value_module(m: ModeValue) -> tuple[str, dict[str, Any]]:
    value = m.eval_value
    return "mode_value", {"value": tuple(value) if isinstance(value, list) else value}


@module_form(nn.Module)
def _by_class_name(m: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """Modules known by class name only (leaves of the tracer from libraries not imported here):
    stochastic depth, identity in eval mode. Any other module stays unknown."""
    if type(m).__name__ in DROP_PATH_CLASSES:
        return "drop_path", {"p": getattr(m, "drop_prob", getattr(m, "p", None))}
    return None


__all__ = ["DROP_PATH_CLASSES"]


# ---- materialise ---------------------------------------------------------------------------------
def _binary(fn: Any) -> Any:
    rule = function(fn, "other", drop=("reverse",))

    def build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
        if spec.get("reverse"):
            raise NotMaterialisable(f"{spec.kind}: reversed operands (rsub) are not built")
        return rule(spec, shapes)

    return build


def _compare_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    return function(getattr(torch, spec.get("op")), "other", drop=("op",))(spec, shapes)


def _not_built(why: str) -> Any:
    def build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
        raise NotMaterialisable(f"{spec.kind}: {why}")

    return build


register_builds({
    "add": _binary(torch.add), "sub": _binary(torch.sub), "mul": _binary(torch.mul),
    "div": _binary(torch.div), "floordiv": _binary(torch.floor_divide),
    "mod": _binary(torch.remainder), "neg": function(torch.neg), "compare": _compare_build,
    "masked_fill": method("masked_fill", "mask", "value"),
    "identity": module(nn.Identity), "dropout": module(nn.Dropout, "p"),
    "drop_path": _not_built("its module class comes from a library (timm) the registry does "
                            "not import"),
    "mode_value": _not_built("the spec keeps only the eval value; the train value is lost"),
})
