"""``repeat_interleave`` with one repeat count for every position (an int, or a size computed
in the graph such as GCViT's ``B // q.shape[0]``) along a dim: timm's grouped-query attention
(``k.repeat_interleave(groups, dim=1)``), rotary embeddings (``repeat_interleave(2, -1)``),
GCViT's global query.

Shape: that dim times ``repeats``. Mixing: output position ``o`` along ``dim`` reads input
position ``o // repeats`` (the count read off the concrete shapes), the other dims one to one.
Cost: free. Depth: linear (a copy, like ``repeat``). A tensor of per-position counts, or no
``dim`` (the flattened form), is not this kind.

Example: ``x.repeat_interleave(2, dim=-1)`` on (B, N, C) is ``OpSpec.of("repeat_interleave",
repeats=2, dim=-1)`` of shape (B, N, 2*C); output column 5 reads input column 2.
"""

from __future__ import annotations

from typing import Any

from alphac.passes.analysis.mixing_boxes import Product, Rule, TableMap
from alphac.passes.analysis.registry.build import method
from alphac.passes.analysis.registry.common import extras, free, is_shape, tensor, wrap_dim
from alphac.passes.analysis.registry.core import (
    CallForm,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import TensorShape, as_expr


def _interleave_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, repeats = tensor(ins), as_expr(spec.value("repeats", ins))
    if x is None or repeats is None or x.rank == 0:
        return None
    d = wrap_dim(spec.get("dim"), x.rank)
    dims = list(x.dims)
    dims[d] = dims[d] * repeats
    return TensorShape(tuple(dims), x.layout)


def _interleave_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out) or len(xs) != len(out) or not xs:
        return None
    d = wrap_dim(spec.get("dim"), len(xs))
    if xs[d] == 0 or out[d] % xs[d]:
        return None
    r = out[d] // xs[d]
    dims = [(k, None) for k in range(len(xs))]
    if r != 1:
        dims[d] = (d, TableMap(1 << (o // r) for o in range(out[d])))
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


register(OpKind("repeat_interleave", "linear", _interleave_shape, _interleave_mixing, free,
                layout="preserve", doc="repeat each position repeats times along dim"))


def _finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any] | None:
    repeats, dim = bound.get("repeats"), bound.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool):
        return None  # the flattened form
    if isinstance(repeats, Ref) and shape_of(repeats) is not None:
        return None  # a tensor of counts, one per position
    if not isinstance(repeats, int | Ref) or isinstance(repeats, bool):
        return None
    return {"repeats": repeats, "dim": dim}


call_form(CallForm("repeat_interleave", ("repeats", "dim", "output_size"), finish=_finish),
          "repeat_interleave")
register_builds({"repeat_interleave": method("repeat_interleave", "repeats", "dim")})
