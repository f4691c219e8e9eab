"""Vector norms, normalisation and clamping.

- ``vector_norm`` (``torch.norm``, ``x.norm``, ``torch.linalg.vector_norm``, aten
  ``linalg_vector_norm``; params ``dim``, ``keepdim``, ``p``): the reduction's shape and mixing
  (reduced dims read whole, the others one to one), 2 other-FLOPs per input element; nonlinear.
- ``normalize`` (``F.normalize``; ``p``, ``dim``, ``eps``): ``x / max(norm(x, dim), eps)``; the
  input's shape; each output element reads the whole ``dim`` at its position; 3 other-FLOPs per
  element; nonlinear.
- ``clamp`` (``clamp``, ``clip``, ``clamp_min``, ``clamp_max``, in-place and aten forms, constant
  bounds only): elementwise, 1 other-FLOP per element; nonlinear.

torch.export spells ``F.normalize`` as ``linalg_vector_norm``, ``clamp_min``, ``expand_as`` and
``div``, all known. Example: ``F.normalize(q, dim=-1)`` is ``OpSpec.of("normalize", dim=-1,
eps=1e-12, p=2.0)``; ``q.norm(dim=-1, keepdim=True)`` is ``OpSpec.of("vector_norm", dim=-1,
keepdim=True, p=2)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from alphac.passes.analysis.mixing_boxes import Product, Rule, full
from alphac.passes.analysis.registry.build import function
from alphac.passes.analysis.registry.common import (
    extras,
    is_shape,
    per_element,
    same_shape,
    unary_mixing,
    wrap_dim,
)
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
from alphac.passes.analysis.registry.reductions import _reduce_mixing, _reduce_shape


def _normalize_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not xs or not isinstance(spec.get("dim"), int):
        return None
    d = wrap_dim(spec.get("dim"), len(xs))
    dims = [(-1, full(n)) if k == d else (k, None) for k, n in enumerate(xs)]
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


register(
    OpKind("vector_norm", "nonlinear", _reduce_shape, _reduce_mixing, per_element(2),
           doc="p-norm over param dim (keepdim)"),
    OpKind("normalize", "nonlinear", same_shape, _normalize_mixing, per_element(3),
           layout="preserve", doc="x / max(p-norm over dim, eps)"),
    OpKind("clamp", "nonlinear", same_shape, unary_mixing, per_element(1), layout="preserve",
           doc="clamp to constant bounds, elementwise"),
)


def _constant(value: Any) -> bool:
    return value is None or isinstance(value, int | float) and not isinstance(value, bool)


def _norm_finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    p = bound.get("p", bound.get("ord", 2))
    p = 2 if p in (None, "fro") else p
    params = {"dim": bound.get("dim"), "keepdim": bool(bound.get("keepdim", False)), "p": p}
    if isinstance(p, bool) or not isinstance(p, int | float) or p == 0:
        return None  # a matrix norm's name, or the 0-"norm" (a count: no derivative)
    if bound.get("dtype") is not None:
        return None
    return None if any(isinstance(v, Ref) for v in params.values()) else params


call_form(CallForm("vector_norm", ("p", "dim", "keepdim", "dtype"), finish=_norm_finish), "norm")
call_form(CallForm("vector_norm", ("ord", "dim", "keepdim", "dtype"), finish=_norm_finish),
          "vector_norm", "linalg_vector_norm")


def _normalize_finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    params = {"p": bound.get("p", 2.0), "dim": bound.get("dim", 1), "eps": bound.get("eps", 1e-12)}
    if bound.get("out") is not None or not all(_constant(v) for v in params.values()):
        return None
    return params


call_form(CallForm("normalize", ("p", "dim", "eps", "out"), finish=_normalize_finish),
          "normalize")


def _clamp_finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    low, high = bound.get("min"), bound.get("max")
    if not (_constant(low) and _constant(high)) or low is None and high is None:
        return None  # a tensor bound: not elementwise in one operand
    return {"min": low, "max": high}


call_form(CallForm("clamp", ("min", "max"), finish=_clamp_finish), "clamp", "clip", "clamp_",
          "clip_")
call_form(CallForm("clamp", ("min",), finish=_clamp_finish), "clamp_min", "clamp_min_")
call_form(CallForm("clamp", ("max",), finish=_clamp_finish), "clamp_max", "clamp_max_")


# ---- materialise ---------------------------------------------------------------------------------
def _norm_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    return Built("call_function", torch.linalg.vector_norm, (Ref(0),),
                 (("dim", spec.get("dim")), ("keepdim", spec.get("keepdim")),
                  ("ord", spec.get("p"))))


register_builds({"vector_norm": _norm_build, "normalize": function(F.normalize),
                 "clamp": function(torch.clamp)})
