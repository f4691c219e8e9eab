"""Reductions: mean, sum, amax, amin over dims (kind ``reduce``, param ``op``).

Shape: the reduced dims removed (kept as 1 with ``keepdim``); ``dim`` None or ``()`` reduces
every dim. Mixing: each output element reads its reduced dims whole and the others one to one.
Cost: one other-FLOP per input element. Depth: linear (as the analyses have always counted it,
amax and amin included). Example: ``x.mean((2, 3))``, ``torch.mean(x, dim=[2, 3])`` and
``aten.mean.dim(x, [2, 3])`` all give ``OpSpec.of("reduce", dim=(2, 3), keepdim=False,
op="mean")``.
"""

from __future__ import annotations

from typing import Any

import torch

from alphac.passes.analysis.mixing_boxes import Product, Rule, full
from alphac.passes.analysis.registry.build import function
from alphac.passes.analysis.registry.common import FREE, NO_PULLS, ZERO, extras, numel, tensor
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
    OpCost,
    OpKind,
    OpSpec,
    call_form,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import ONE, TensorShape, norm_dim


def _reduced(spec: OpSpec, rank: int) -> set[int] | None:
    """The reduced dims, normalised; None when ``dim`` is not constant ints."""
    dim = spec.get("dim")
    dims = range(rank) if dim is None or dim == () else dim if isinstance(dim, tuple) else (dim,)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        return None
    return {norm_dim(d, rank) if rank else 0 for d in dims}


def _reduce_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    x = tensor(ins)
    which = None if x is None else _reduced(spec, x.rank)
    if which is None:
        return None
    if spec.get("keepdim"):
        return TensorShape(tuple(ONE if i in which else d for i, d in enumerate(x.dims)),
                           x.layout)
    keep = [i for i in range(x.rank) if i not in which]
    return TensorShape(tuple(x.dims[i] for i in keep), "".join(x.layout[i] for i in keep))


def _reduce_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Reduced dims read whole, the others copied to their output position."""
    if out is None:
        return NO_PULLS
    xs = ins[0] if ins else None
    if not (isinstance(xs, tuple) and all(isinstance(n, int) for n in xs)):
        return Rule(default=extras(ins, set()))
    reduced = _reduced(spec, len(xs))
    if reduced is None:
        return None
    keep = bool(spec.get("keepdim"))
    dims, k = [], 0
    for j, n in enumerate(xs):
        if j in reduced:
            dims.append((-1, full(n)))
            k += keep
        else:
            dims.append((k, None))
            k += 1
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _reduce_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    x = tensor(ins)
    if x is None or not isinstance(out, TensorShape):
        return FREE
    return OpCost(ZERO, ZERO, numel(x))


def _with_op(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    return {**bound, "op": name}


register(OpKind("reduce", "linear", _reduce_shape, _reduce_mixing, _reduce_cost,
                doc="mean/sum/amax/amin (param op) over param dim, keepdim"))
call_form(CallForm("reduce", ("dim", "keepdim"), {"dim": None, "keepdim": False},
                   finish=_with_op), "mean", "sum", "amax", "amin")


# ---- materialise ---------------------------------------------------------------------------------
def _reduce_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    return function(getattr(torch, spec.get("op")), drop=("op",))(spec, shapes)


register_builds({"reduce": _reduce_build})
