"""Constants made from sizes alone: ``arange`` and ``full`` (``zeros``, ``ones``, ``empty``,
``full``).

Shape: from the size params, symbolic when the sizes are operands computed from ``x.shape``
(``torch.arange(x.shape[0])`` has length ``B``). Mixing: no pulls (no operand is data). Cost:
free. Depth: transparent.

Example: ``torch.zeros(x.shape[0], 1, 4)`` is ``OpSpec.of("full", size=(%0, 1, 4), value=0)``
with operand 0 the size ``x.shape[0]``; ``torch.arange(1, 2 * n, 2)`` is ``OpSpec.of("arange",
start=1, end=%0, step=2)``.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch

from alphac.passes.analysis.mixing_boxes import NO_PULLS, Rule
from alphac.passes.analysis.registry.build import function, thaw
from alphac.passes.analysis.registry.common import free
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import TensorShape, as_expr, default_layout

_NO_VALUE = object()


def _arange_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    """``ceil((end - start) / step)`` values."""
    start, end, step = (as_expr(spec.value(k, ins)) for k in ("start", "end", "step"))
    if start is None or end is None or step is None or step.is_zero:
        return None
    if not (end - start).free_symbols:
        return TensorShape((sympy.Integer(max(0, -(-int(end - start) // int(step)))),), "?")
    length = end - start if step == 1 else sympy.ceiling((end - start) / step)
    return TensorShape((length,), "?")


def _full_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    """The sizes as given (one Ref may stand for a whole tuple value: ``zeros(x.shape)``)."""
    sizes = spec.value("size", ins)
    if isinstance(sizes, tuple) and len(sizes) == 1 and isinstance(sizes[0], tuple):
        sizes = sizes[0]
    sizes = sizes if isinstance(sizes, tuple) else (sizes,)
    dims = [as_expr(s) for s in sizes]
    if any(d is None for d in dims):
        return None
    return TensorShape(tuple(dims), default_layout(len(dims)))


def _no_pulls(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule:
    return NO_PULLS


register(
    OpKind("arange", "transparent", _arange_shape, _no_pulls, free,
           doc="start, start + step, ... below end"),
    OpKind("full", "transparent", _full_shape, _no_pulls, free,
           doc="a tensor of size filled with value (None: uninitialised, torch.empty)"),
)


def _first(bound: dict[str, Any], key: str) -> Any:
    """The first argument: a constant under ``key``, None when absent, else operand 0 (the
    normaliser makes a first argument that is a value of the program operand 0)."""
    return bound[key] if key in bound else Ref(0)


def _arange(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any] | None:
    """``arange(end)`` or ``arange(start, end[, step])``, positionally or by keyword."""
    first = _first(bound, "start")
    positional = [v for v in (first, bound.get("a1", _NO_VALUE), bound.get("a2", _NO_VALUE))
                  if v is not _NO_VALUE and v is not None]
    params = {"start": 0, "end": None, "step": 1}
    if len(positional) == 1:
        params["end"] = positional[0]
    else:
        params.update(zip(("start", "end", "step"), positional, strict=False))
    params.update({k: bound[k] for k in ("end", "step") if bound.get(k) is not None})
    return params if params["end"] is not None else None


def _sized(value: Any):
    """finish of zeros/ones/empty: sizes as one tuple or as varargs, ``value`` the fill."""

    def finish(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any]:
        first, rest = _first(bound, "size"), bound.get("rest", ())
        size = first if isinstance(first, tuple) else (first, *rest)
        return {"size": size, "value": value}

    return finish


def _full(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any]:
    size = _first(bound, "size")
    return {"size": size if isinstance(size, tuple) else (size,),
            "value": bound.get("fill_value")}


call_form(CallForm("arange", ("a1", "a2", "end", "step"), first="start", finish=_arange),
          "arange")
call_form(CallForm("full", ("rest",), varargs="rest", first="size", finish=_sized(0)), "zeros")
call_form(CallForm("full", ("rest",), varargs="rest", first="size", finish=_sized(1)), "ones")
call_form(CallForm("full", ("rest",), varargs="rest", first="size", finish=_sized(None)),
          "empty")
call_form(CallForm("full", ("fill_value",), first="size", finish=_full), "full")


# ---- materialise ---------------------------------------------------------------------------------
def _full_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    value = spec.get("value")
    fn = {0: torch.zeros, 1: torch.ones, None: torch.empty}.get(value) if not isinstance(
        value, float) or value in (0, 1) else None
    if fn is None:
        return Built("call_function", torch.full, (thaw(spec.get("size")), value))
    return Built("call_function", fn, (thaw(spec.get("size")),))


register_builds({"arange": function(torch.arange, "start", "end", "step", first=False),
                 "full": _full_build})
