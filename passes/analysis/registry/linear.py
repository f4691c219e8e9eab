"""Linear maps and attention: linear, matmul, einsum, scaled dot-product attention.

- ``linear`` (``nn.Linear``, ``F.linear``/aten ``linear``): ``in_features``, ``out_features``
  (a functional form reads them off its weight operand, held as the Ref ``weight``), ``bias`` (a
  bool for a module, a Ref or None for a call). Shape: the last dim scaled by ``out/in``;
  mixing: the last dim read in full; cost: ``2 * out * in`` FLOPs, a bias one other-FLOP per
  output element.
- ``matmul`` (``matmul``, ``mm``, ``bmm``, ``@``): operand 0 times param ``other`` (a Ref), with
  torch's broadcasting and 1-D promotion; ``2 * out * k`` FLOPs.
- ``einsum`` (``equation``, ``operands``: Refs): letters summed over are read in full;
  ``2 * prod(all letter sizes)`` FLOPs for two operands, as flop_counter counts it.
- ``sdpa`` (``F.scaled_dot_product_attention``): operand 0 is the query; ``key``, ``value``,
  ``attn_mask`` (Refs or None), ``dropout_p``, ``is_causal``, ``scale``, ``enable_gqa``, and
  ``mask_allowed``: a constant boolean mask's pattern (rows of bools, the union over its batch
  and head dims), which the rule cannot read from an operand value. Cost: the two products,
  ``2 * L * S * (E + Ev)`` FLOPs per batch and head, and 5 other-FLOPs per score (softmax).

Depth: linear (linear, matmul, einsum), nonlinear (sdpa). Layout: feature_last (linear),
attention (matmul, sdpa), none (einsum).
Example: ``F.linear(x, w)`` with ``w`` of shape (16, 8) is ``OpSpec.of("linear",
in_features=8, out_features=16, weight=%1, bias=None)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from alphac.passes.analysis.mixing_boxes import (
    DimMap,
    Product,
    Pull,
    Rule,
    TableMap,
    broadcast_dims,
    full,
    group_map,
)
from alphac.passes.analysis.registry.build import function, need
from alphac.passes.analysis.registry.common import (
    FREE,
    ZERO,
    extras,
    is_shape,
    numel,
    tensor,
)
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
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
    ONE,
    TensorShape,
    feature_last,
    fix_layout,
    scaled_width,
)
from alphac.passes.analysis.shape_dims import (
    broadcast_dims as broadcast_sizes,
)

Shape = tuple[int, ...]



def _has_bias(spec: OpSpec) -> bool:
    return spec.get("bias") not in (None, False)


# ---- linear --------------------------------------------------------------------------------------
def _linear_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, fin, fout = tensor(ins), spec.get("in_features"), spec.get("out_features")
    if x is None or fin is None or fout is None or x.rank == 0:
        return None
    if isinstance(fin, int) and isinstance(fout, int):
        width = scaled_width(x.dims[-1], fin, fout)
    else:  # a lifted program's widths are already expressions of the block's symbols (4*C)
        width = fout if isinstance(fout, sympy.Expr) else sympy.Integer(fout)
    return TensorShape((*x.dims[:-1], width), feature_last(x.layout))


def _linear_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not xs:
        return None
    dims: list[DimMap] = [(k, None) for k in range(len(xs) - 1)]
    return Rule({None: [Product(0, None, [*dims, (-1, full(xs[-1]))]), *extras(ins, {0})]})


def _linear_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    x = tensor(ins)
    if x is None or not isinstance(out, TensorShape) or not x.rank or not out.rank:
        return FREE
    fin, fout = x.dims[-1], out.dims[-1]
    bias = _has_bias(spec)
    return OpCost(fin * fout + (fout if bias else ZERO), 2 * numel(out) * fin,
                  numel(out) if bias else ZERO)


@module_form(nn.Linear)
def _linear_module(m: nn.Linear) -> tuple[str, dict[str, Any]]:
    return "linear", {"in_features": m.in_features, "out_features": m.out_features,
                      "bias": m.bias is not None}


def _linear_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                   name: str) -> dict[str, Any]:
    w = shape_of(bound.get("weight"))
    w = w if w is not None and len(w) == 2 else None
    return {"in_features": w[1] if w else None, "out_features": w[0] if w else None,
            "weight": bound.get("weight"), "bias": bound.get("bias")}


call_form(CallForm("linear", ("weight", "bias"), finish=_linear_finish), "linear")


# ---- matmul --------------------------------------------------------------------------------------
def _matmul_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    a, b = tensor(ins), spec.value("other", ins)
    if a is None or not isinstance(b, TensorShape):
        return None
    ad, al = (list(a.dims), a.layout) if a.rank > 1 else ([ONE, *a.dims], "?" + a.layout)
    bd, bl = (list(b.dims), b.layout) if b.rank > 1 else ([*b.dims, ONE], b.layout + "?")
    batch = broadcast_sizes([ad[:-2], bd[:-2]])
    longer = al if len(ad) >= len(bd) else bl
    dims = [*batch, ad[-2], bd[-1]]
    letters = [*longer[: len(batch)], al[-2], bl[-1]]
    drop = {len(dims) - 2} if a.rank == 1 else set()
    drop |= {len(dims) - 1} if b.rank == 1 else set()
    keep = [i for i in range(len(dims)) if i not in drop]
    return TensorShape(tuple(dims[i] for i in keep), fix_layout([letters[i] for i in keep]))


def _matmul_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    other = spec.get("other")
    ib = refs(other)[0] if refs(other) else None
    sa, sb = (ins[0] if ins else None), spec.value("other", ins)
    if not is_shape(sa) or not is_shape(sb) or not is_shape(out):
        return None
    ro = len(out)
    n_batch = ro - (len(sa) >= 2) - (len(sb) >= 2)
    batch = list(range(n_batch))
    pulls: list[Pull] = []
    if len(sa) >= 2:
        dims = broadcast_dims(sa[:-2], out, batch)
        if dims is None:
            return None
        pulls.append(Product(0, None, [*dims, (n_batch, None), (-1, full(sa[-1]))]))
    else:
        pulls.append(Product(0, None, [(-1, full(sa[0]))]))
    if len(sb) >= 2:
        dims = broadcast_dims(sb[:-2], out, batch)
        if dims is None:
            return None
        pulls.append(Product(ib, None, [*dims, (-1, full(sb[-2])), (ro - 1, None)]))
    else:
        pulls.append(Product(ib, None, [(-1, full(sb[0]))]))
    return Rule({None: [*pulls, *extras(ins, {0, ib})]})


def _matmul_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    a, b = tensor(ins), spec.value("other", ins)
    if a is None or not isinstance(b, TensorShape) or not isinstance(out, TensorShape):
        return FREE
    return OpCost(ZERO, 2 * numel(out) * a.dims[-1], ZERO)


call_form(CallForm("matmul", ("other",)), "matmul", "mm", "bmm")


# ---- einsum --------------------------------------------------------------------------------------
def _terms(equation: str) -> tuple[list[str], str] | None:
    """The input terms and the output term of an explicit-letter equation, None otherwise."""
    equation = equation.replace(" ", "")
    if not re.fullmatch(r"[a-zA-Z,]+(->[a-zA-Z]*)?", equation):
        return None
    lhs, _, rhs = equation.partition("->")
    if "->" not in equation:
        rhs = "".join(sorted(c for c in set(lhs) - {","} if lhs.count(c) == 1))
    return lhs.split(","), rhs


def _einsum_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    equation, operands = spec.get("equation"), spec.value("operands", ins)
    parsed = _terms(equation) if isinstance(equation, str) else None
    if parsed is None or not isinstance(operands, tuple) or not all(
            isinstance(o, TensorShape) for o in operands) or len(parsed[0]) != len(operands):
        return None
    terms, rhs = parsed
    sizes: dict[str, sympy.Expr] = {}
    roles: dict[str, str] = {}
    for term, op in zip(terms, operands, strict=True):
        for ch, d, role in zip(term, op.dims, op.layout, strict=True):
            if ch not in sizes or sizes[ch] is ONE:
                sizes[ch], roles[ch] = d, role
    return TensorShape(tuple(sizes[ch] for ch in rhs), fix_layout([roles[ch] for ch in rhs]))


def _einsum_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    equation, raw = spec.get("equation"), spec.get("operands")
    parsed = _terms(equation) if isinstance(equation, str) else None
    if parsed is None or not isinstance(raw, tuple) or len(parsed[0]) != len(raw) \
            or not is_shape(out):
        return None
    terms, rhs = parsed
    pulls: list[Pull] = []
    for term, ref, shape in zip(terms, raw, spec.value("operands", ins), strict=True):
        if not is_shape(shape) or not refs(ref):
            continue  # an integer operand has no derivative
        dims: list[DimMap] = []
        for letter, n in zip(term, shape, strict=True):
            k = rhs.find(letter)
            dims.append((-1, full(n)) if k < 0 else (-1, 1) if n == 1 < out[k] else (k, None))
        pulls.append(Product(refs(ref)[0], None, dims))
    return Rule({None: pulls})


def _einsum_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    """flop_counter's count for two operands: 2 * the product of every letter's size."""
    equation, operands = str(spec.get("equation", "")), spec.value("operands", ins)
    if not isinstance(out, TensorShape) or not isinstance(operands, tuple):
        return FREE
    tensors = [o for o in operands if isinstance(o, TensorShape)]
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(tensors) != 2 or len(terms) != 2 or "." in equation:
        return FREE
    sizes: dict[str, sympy.Expr] = {}
    for term, t in zip(terms, tensors, strict=True):
        sizes.update({ch: d for ch, d in zip(term, t.dims, strict=True) if ch not in sizes})
    return OpCost(ZERO, 2 * sympy.Mul(*sizes.values()), ZERO)


def _einsum_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                   name: str) -> dict[str, Any] | None:
    equation, operands = bound.get("equation"), bound.get("operands")
    if not isinstance(equation, str) or not isinstance(operands, tuple):
        return None  # the sublist form einsum(a, [0, 1], b, [1, 2]) is not modelled
    return {"equation": equation, "operands": operands}


call_form(CallForm("einsum", ("operands",), varargs="operands", finish=_einsum_finish,
                   first="equation"), "einsum")


# ---- scaled dot-product attention ---------------------------------------------------------------
def _sdpa_operands(spec: OpSpec, ins: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    return (ins[0] if ins else None), spec.value("key", ins), spec.value("value", ins)


def _sdpa_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    q, _, v = _sdpa_operands(spec, ins)
    if not isinstance(q, TensorShape) or not isinstance(v, TensorShape):
        return None
    return TensorShape((*q.dims[:-1], v.dims[-1]), feature_last(q.layout))


def _sdpa_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Attention in eval mode (``dropout_p`` only zeroes some derivatives on some draws;
    ``scale`` changes no pattern). Query ``l`` reads the values of the keys it may attend to:
    all, ``0..l`` when ``is_causal``, or those a constant boolean mask allows
    (``mask_allowed``); its query row and those keys only when there are at least two (a softmax
    over one key is 1). A float mask is an operand read along the keys. With ``enable_gqa`` query
    head ``h`` reads key/value head ``h // (Hq / Hkv)``."""
    shapes = _sdpa_operands(spec, ins)
    causal, mask = spec.get("is_causal"), spec.get("attn_mask")
    if not all(is_shape(s) for s in shapes) or not is_shape(out) or not isinstance(causal, bool) \
            or (mask is not None and causal):
        return None
    keys = shapes[1][-2]
    rows = _allowed_keys(spec.get("mask_allowed"), out[-2], keys, causal)
    tails = _sdpa_tails(rows, len(out), keys, shapes)
    where = [0, *(refs(spec.get(n))[0] for n in ("key", "value"))]
    pulls: list[Pull] = []
    for src, shape, tail in zip(where, shapes, tails, strict=True):
        dims = _head_dims(shape[:-2], out, bool(spec.get("enable_gqa")))
        if dims is None:
            return None
        if tail is not None:
            pulls.append(Product(src, None, [*dims, *tail]))
    mshape = spec.value("attn_mask", ins)
    if is_shape(mshape) and keys > 1:  # a float mask: read along the keys
        dims = broadcast_dims(mshape[:-1], out[:-1])
        if dims is None:
            return None
        pulls.append(Product(refs(mask)[0], None, [*dims, (-1, full(mshape[-1]))]))
    return Rule({None: pulls})


def _sdpa_tails(rows: list[int] | None, ro: int, keys: int,
                shapes: tuple[Shape, Shape, Shape]) -> list[list[DimMap] | None]:
    """The (query, feature) dims of the q, k and v pulls (None: no pull)."""
    qd = ro - 2
    if rows is None:  # every query reads every key
        seen: DimMap = (-1, full(keys))
        scored = seen if keys > 1 else None
        own = (qd, None) if keys > 1 else None
    else:
        seen = (qd, TableMap(rows))
        scored = (qd, TableMap(r if r & (r - 1) else 0 for r in rows))
        own = (qd, TableMap(1 << o if r & (r - 1) else 0 for o, r in enumerate(rows)))
    return [own and [own, (-1, full(shapes[0][-1]))],
            scored and [scored, (-1, full(shapes[1][-1]))], [seen, (ro - 1, None)]]


def _head_dims(lead: Shape, out: Shape, gqa: bool) -> list[DimMap] | None:
    """The leading (batch, head) dims of q, k or v against the output's."""
    dims = broadcast_dims(lead, out, list(range(len(out) - 2)))
    if dims is not None or not gqa or not lead:
        return dims
    heads, out_heads = lead[-1], out[len(out) - 3]
    if heads == 0 or out_heads % heads:
        return None
    rest = broadcast_dims(lead[:-1], out, list(range(len(out) - 3)))
    cmap = group_map(heads, out_heads, heads)
    return None if rest is None else [*rest, (len(out) - 3, cmap)]


def _allowed_keys(allowed: Any, length: int, keys: int, causal: bool) -> list[int] | None:
    """Per query position, the bitset of keys it attends to; None when every query reads every
    key. ``allowed`` (rows of bools) broadcasts to (length, keys) like the mask it came from."""
    if causal:
        return [full(min(o + 1, keys)) for o in range(length)]
    if allowed is None:
        return None
    rows = [allowed[o if len(allowed) > 1 else 0] for o in range(length)]
    return [sum(1 << j for j in range(keys) if row[j if len(row) > 1 else 0]) for row in rows]


def mask_pattern(mask: Any) -> tuple[tuple[bool, ...], ...] | None:
    """``mask_allowed`` of a constant boolean mask tensor: the union of its rows over the leading
    dims (sound, and exact when they agree); None for a float mask or anything else."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 1:
        return None
    m = mask if mask.dim() >= 2 else mask.unsqueeze(0)
    rows = m.reshape(-1, m.shape[-2], m.shape[-1]).any(0)
    return tuple(tuple(bool(v) for v in row) for row in rows.tolist())


def _sdpa_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    q, k, v = _sdpa_operands(spec, ins)
    if not all(isinstance(t, TensorShape) for t in (q, k, v)) or not isinstance(out, TensorShape):
        return FREE
    scores = sympy.Mul(*q.dims[:-1]) * k.dims[-2]
    return OpCost(ZERO, 2 * scores * (q.dims[-1] + v.dims[-1]), 5 * scores)


_SDPA_DEFAULTS = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None,
                  "enable_gqa": False}


def _sdpa_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                 name: str) -> dict[str, Any]:
    """Every param, defaults filled here (not as CallForm defaults, which would number a mask's
    Ref before the key's), and ``mask_allowed`` for a constant boolean mask where normalisation
    offers constant values (``shape_of.constant(ref)``: a ``get_attr`` operand's tensor)."""
    params = {**_SDPA_DEFAULTS, **bound}
    constant = getattr(shape_of, "constant", None)
    if constant is not None and params["attn_mask"] is not None:
        allowed = mask_pattern(constant(params["attn_mask"]))
        params.update({"mask_allowed": allowed} if allowed is not None else {})
    return params


call_form(CallForm("sdpa", ("key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
                            "enable_gqa"), finish=_sdpa_finish, first="query"),
          "scaled_dot_product_attention")


register(
    OpKind("linear", "linear", _linear_shape, _linear_mixing, _linear_cost, layout="feature_last",
           doc="x @ W.T + b over the last dim"),
    OpKind("matmul", "linear", _matmul_shape, _matmul_mixing, _matmul_cost, layout="attention",
           doc="batched matrix product of operand 0 and param other"),
    OpKind("einsum", "linear", _einsum_shape, _einsum_mixing, _einsum_cost,
           doc="einsum over explicit letters"),
    OpKind("sdpa", "nonlinear", _sdpa_shape, _sdpa_mixing, _sdpa_cost, layout="attention",
           doc="scaled dot-product attention, every signature"),
)


# ---- materialise ---------------------------------------------------------------------------------
def _linear_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    if isinstance(spec.get("weight"), Ref):
        return Built("call_function", F.linear, (Ref(0), spec.get("weight"), spec.get("bias")))
    c_in, c_out = need(spec, "in_features", "out_features")
    return Built("call_module", nn.Linear(c_in, c_out, bias=bool(spec.get("bias"))), (Ref(0),))


def _einsum_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    return Built("call_function", torch.einsum, (spec.get("equation"), *spec.get("operands")))


register_builds({
    "linear": _linear_build, "matmul": function(torch.matmul, "other"), "einsum": _einsum_build,
    "sdpa": function(F.scaled_dot_product_attention, "key", "value", drop=("mask_allowed",)),
})
