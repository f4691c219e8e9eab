"""Elementwise math: ``pow`` with a constant exponent, and ``sqrt``, ``rsqrt``, ``exp``, ``log``,
``sin``, ``cos``, ``abs``, ``erf``, ``reciprocal``.

Forms: the torch function, the Tensor method, the operator (``x ** 2``), the in-place method and
aten overload (``pow_``, ``rsqrt_``...). ``pow`` holds its ``exponent``; a tensor exponent or a
constant base (``2 ** x``) is not this kind (it stays unknown), nor are the exponents 0 and 1
(a constant, the identity). Shape: the input's. Mixing: elementwise. Cost: 1 other-FLOP per
element for ``pow``, ``abs`` and ``reciprocal``, 4 for the transcendental ones. Depth: nonlinear.

Example: ``x.pow(2)``, ``x ** 2`` and ``torch.pow(x, 2)`` are ``OpSpec.of("pow", exponent=2)``.
"""

from __future__ import annotations

from typing import Any

import torch

from alphac.passes.analysis.registry.build import function
from alphac.passes.analysis.registry.common import per_element, same_shape, unary_mixing
from alphac.passes.analysis.registry.core import (
    CallForm,
    OpKind,
    Ref,
    call_form,
    register,
    register_builds,
)

#: kind -> other-FLOPs per element.
_UNARY = {"sqrt": 4, "rsqrt": 4, "exp": 4, "log": 4, "sin": 4, "cos": 4, "abs": 1, "erf": 4,
          "reciprocal": 1}

register(OpKind("pow", "nonlinear", same_shape, unary_mixing, per_element(1),
                layout="preserve", doc="x ** exponent (a constant), elementwise"))
for _kind, _flops in _UNARY.items():
    register(OpKind(_kind, "nonlinear", same_shape, unary_mixing, per_element(_flops),
                    layout="preserve", doc=f"{_kind}, elementwise"))


def _pow_finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    exponent = bound.get("exponent")
    if "input" in bound or isinstance(exponent, Ref | tuple) or exponent in (None, 0, 1):
        return None  # a constant base, a tensor exponent, a constant or the identity
    if isinstance(exponent, bool) or not isinstance(exponent, int | float):
        return None
    return {"exponent": exponent}


call_form(CallForm("pow", ("exponent",), finish=_pow_finish), "pow", "ipow", "pow_",
          "float_power")
for _kind in _UNARY:
    call_form(CallForm(_kind), _kind, f"{_kind}_")
call_form(CallForm("abs"), "absolute")


# ---- materialise ---------------------------------------------------------------------------------
register_builds({"pow": function(torch.pow, "exponent"),
                 **{k: function(getattr(torch, k)) for k in _UNARY}})
