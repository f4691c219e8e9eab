"""Activations: elementwise nonlinearities, and softmax over one dim.

Shape: the input's. Mixing: elementwise (each output element reads its own input element);
softmax reads its whole ``dim`` (a size-1 dim has zero derivative: no pulls). Cost: 1 other-FLOP
per element for piecewise-linear activations, 4 for smooth ones, 5 for softmax. Depth: nonlinear.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from alphac.passes.analysis.mixing_boxes import Product, Rule, full
from alphac.passes.analysis.registry.build import module
from alphac.passes.analysis.registry.common import (
    NO_PULLS,
    extras,
    per_element,
    same_shape,
    unary_mixing,
)
from alphac.passes.analysis.registry.core import (
    CallForm,
    OpKind,
    OpSpec,
    call_form,
    module_form,
    register,
    register_builds,
)

#: kind -> other-FLOPs per element.
_ELEMENTWISE = {"relu": 1, "relu6": 1, "leaky_relu": 1, "hardswish": 4, "hardsigmoid": 4,
                "gelu": 4, "silu": 4, "sigmoid": 4, "tanh": 4, "elu": 4}
_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu",
            nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Hardswish: "hardswish",
            nn.Hardsigmoid: "hardsigmoid", nn.LeakyReLU: "leaky_relu", nn.ELU: "elu"}
#: kind -> other-FLOPs per element (the cost rule of each kind).
OTHER_FLOPS = {**_ELEMENTWISE, "softmax": 5, "log_softmax": 5}


def _softmax_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not isinstance(xs, tuple) or not xs:
        return None
    d = spec.get("dim") % len(xs)
    if xs[d] <= 1:
        return NO_PULLS
    dims = [(-1, full(n)) if k == d else (k, None) for k, n in enumerate(xs)]
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


for _kind, _flops in _ELEMENTWISE.items():
    register(OpKind(_kind, "nonlinear", same_shape, unary_mixing, per_element(_flops),
                    layout="preserve", doc=f"{_kind}, elementwise"))
for _kind in ("softmax", "log_softmax"):
    register(OpKind(_kind, "nonlinear", same_shape, _softmax_mixing, per_element(OTHER_FLOPS[_kind]),
                    layout="preserve", doc=f"{_kind} over param dim"))


@module_form(*_MODULES)
def _activation_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    kind = _MODULES[type(m)] if type(m) in _MODULES else _base_kind(m)
    return kind, ({"approximate": m.approximate} if kind == "gelu" else {})


def _base_kind(m: nn.Module) -> str:
    return next(kind for cls, kind in _MODULES.items() if isinstance(m, cls))


@module_form(nn.Softmax, nn.LogSoftmax)
def _softmax_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    kind = "log_softmax" if isinstance(m, nn.LogSoftmax) else "softmax"
    return kind, {"dim": -1 if m.dim is None else m.dim}


call_form(CallForm("relu"), "relu", "relu_")
call_form(CallForm("relu6"), "relu6", "hardtanh")
call_form(CallForm("gelu", ("approximate",), {"approximate": "none"}), "gelu")
for _kind in ("silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu"):
    call_form(CallForm(_kind), _kind, f"{_kind}_")  # aten's in-place overloads (export)
call_form(CallForm("softmax", ("dim",), {"dim": -1}), "softmax", "_softmax")
call_form(CallForm("log_softmax", ("dim",), {"dim": -1}), "log_softmax", "_log_softmax")


# ---- materialise ---------------------------------------------------------------------------------
register_builds({
    "relu": module(nn.ReLU), "relu6": module(nn.ReLU6), "silu": module(nn.SiLU),
    "sigmoid": module(nn.Sigmoid), "tanh": module(nn.Tanh), "hardswish": module(nn.Hardswish),
    "hardsigmoid": module(nn.Hardsigmoid), "leaky_relu": module(nn.LeakyReLU),
    "elu": module(nn.ELU), "gelu": module(nn.GELU, "approximate"),
    "softmax": module(nn.Softmax, "dim"), "log_softmax": module(nn.LogSoftmax, "dim"),
})
