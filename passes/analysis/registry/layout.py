"""Layout ops: reshape, flatten, unflatten, permute, transpose, unsqueeze, squeeze, expand,
repeat, roll, cat and stack.

Shape: the moved, merged or split dims (sizes may be symbolic: ``x.view(B_, N, 3, heads, C //
heads)`` with ``B_`` a size operand; one ``-1`` hole is solved from the element count). Mixing:
a :class:`~alphac.passes.analysis.mixing_boxes.Reshape` pull for the ops that only regroup
elements (reshape, flatten, unflatten, squeeze, unsqueeze), a permutation of dims, broadcasting
(expand) or tiling (repeat), a cyclic shift (roll), shifted copies (cat) or guarded copies
(stack). ``view_as``/``reshape_as``/``expand_as``'s ``other`` only lends its shape: no pull.
Cost: free. Depth: linear.

Example: ``x.view(x.size(0), -1)`` is ``OpSpec.of("reshape", shape=(%1, -1))`` with operands
``(x, size)``; on (B, C, H, W) its shape is ``(B, C*H*W)``.
"""

from __future__ import annotations

from typing import Any

import sympy
import torch
from torch import nn

from alphac.passes.analysis.mixing_boxes import (
    NO_PULLS,
    Product,
    Pull,
    Reshape,
    Rule,
    broadcast_dims,
    roll_map,
    shift_in,
)
from alphac.passes.analysis.registry.build import function, method
from alphac.passes.analysis.registry.common import (
    extras,
    free,
    is_shape,
    same_shape,
    tensor,
    wrap_dim,
)
from alphac.passes.analysis.registry.core import (
    CallForm,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    module_form,
    register,
    register_builds,
    resolve,
)
from alphac.passes.analysis.shape_dims import (
    ONE,
    TensorShape,
    as_expr,
    dims_same,
    fix_layout,
    merge_letters,
    norm_dim,
)

Shape = tuple[int, ...]



def _minus_one(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == -1


def _missing(values: Any) -> bool:
    return any(v is None for v in values)  # `None in values` would compare expressions with ==



#: Above this many operations a size expression is compared structurally only: ``same`` would
#: simplify it, which takes minutes for the nested floors of padded window partitions (timm
#: DaViT, Hiera), and the comparison only decides which layout letters a reshape keeps.
_SIMPLIFY_OPS = 40


def _kept(a: Any, b: Any) -> bool:
    """Whether a reshape keeps a dim: :func:`dims_same` for small expressions, equality else."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    small = all(sympy.count_ops(sympy.sympify(e)) <= _SIMPLIFY_OPS for e in (a, b))
    return small and dims_same(a, b)


def _sizes(value: Any) -> tuple | None:
    """A size list: a tuple of sizes, one tuple value (``x.view(y.shape)``) or a tensor whose
    shape it takes (``view_as``, ``expand_as``)."""
    if isinstance(value, TensorShape):
        return value.dims
    if isinstance(value, tuple) and len(value) == 1 and isinstance(value[0], tuple | TensorShape):
        return _sizes(value[0])
    if isinstance(value, tuple):
        return value or None
    return None if value is None else (value,)


# ---- shape rules ---------------------------------------------------------------------------------
def _reshape_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, sizes = tensor(ins), _sizes(spec.value("shape", ins))
    if x is None or sizes is None:
        return None
    dims = [None if _minus_one(s) else as_expr(s) for s in sizes]
    known = [d for d in dims if d is not None]
    if len(known) < len(sizes) - 1:
        return None
    if len(known) != len(sizes):
        dims[dims.index(None)] = sympy.Mul(*x.dims) / sympy.Mul(*known)
    letters = ["?"] * len(dims)
    for i in range(min(len(dims), x.rank)):  # unchanged leading dims keep their role
        if not _kept(dims[i], x.dims[i]):
            break
        letters[i] = x.layout[i]
    for i in range(1, min(len(dims), x.rank) + 1):  # and so do unchanged trailing dims
        if not _kept(dims[-i], x.dims[-i]):
            break
        letters[-i] = x.layout[-i]
    return TensorShape(tuple(dims), fix_layout(letters))


def _flatten_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x = tensor(ins)
    if x is None:
        return None
    if x.rank == 0:
        return TensorShape((ONE,), "?")
    start = norm_dim(spec.get("start_dim", 0), x.rank)
    end = norm_dim(spec.get("end_dim", -1), x.rank)
    merged = sympy.Mul(*x.dims[start:end + 1])
    letters = x.layout[:start] + merge_letters(x.layout[start:end + 1]) + x.layout[end + 1:]
    return TensorShape((*x.dims[:start], merged, *x.dims[end + 1:]), fix_layout(letters))


def _unflatten_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, sizes = tensor(ins), spec.value("sizes", ins)
    if x is None or not isinstance(sizes, tuple):
        return None
    d = norm_dim(spec.get("dim"), x.rank)
    dims = [None if _minus_one(s) else as_expr(s) for s in sizes]
    known = [e for e in dims if e is not None]
    if len(known) < len(dims) - 1:
        return None
    if len(known) != len(dims):
        dims[dims.index(None)] = x.dims[d] / sympy.Mul(*known)
    letters = [x.layout[d] if _kept(e, x.dims[d]) else "?" for e in dims]
    layout = fix_layout(list(x.layout[:d]) + letters + list(x.layout[d + 1:]))
    return TensorShape((*x.dims[:d], *dims, *x.dims[d + 1:]), layout)


def _order(spec: OpSpec, rank: int) -> list[int] | None:
    """The permutation of a permute/transpose: output dim k is input dim ``order[k]``."""
    if spec.kind == "transpose":
        order = list(range(rank))
        if rank:
            a, b = wrap_dim(spec.get("dim0", 0), rank), wrap_dim(spec.get("dim1", 1), rank)
            order[a], order[b] = order[b], order[a]
        return order
    dims = spec.get("dims")
    if not isinstance(dims, tuple) or not all(isinstance(d, int) for d in dims):
        return None
    return [wrap_dim(d, rank) for d in dims]


def _permute_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x = tensor(ins)
    if x is None:
        return None
    if spec.kind == "transpose" and x.rank < 2:
        return x
    order = _order(spec, x.rank)
    if order is None or len(order) != x.rank:
        return None
    return TensorShape(tuple(x.dims[d] for d in order), "".join(x.layout[d] for d in order))


def _unsqueeze_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x = tensor(ins)
    if x is None:
        return None
    d = norm_dim(spec.get("dim"), x.rank + 1)
    return TensorShape((*x.dims[:d], ONE, *x.dims[d:]), x.layout[:d] + "?" + x.layout[d:])


def _squeeze_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, which = tensor(ins), spec.get("dim")
    if x is None:
        return None
    if which is None:
        which = [i for i, d in enumerate(x.dims) if d is ONE]
    which = {norm_dim(d, x.rank) for d in (which if isinstance(which, tuple | list) else [which])}
    if any(x.dims[d] is not ONE and x.dims[d].free_symbols for d in which):
        return None  # squeezing a symbolic dimension: only the traced size can tell
    keep = [i for i in range(x.rank) if i not in which or x.dims[i] is not ONE]
    return TensorShape(tuple(x.dims[i] for i in keep), "".join(x.layout[i] for i in keep))


def _expand_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, sizes = tensor(ins), _sizes(spec.value("sizes", ins))
    if x is None or sizes is None or len(sizes) < x.rank:
        return None
    new = len(sizes) - x.rank
    dims = [x.dims[i - new] if _minus_one(s) and i >= new else as_expr(s)
            for i, s in enumerate(sizes)]
    if _missing(dims):
        return None
    return TensorShape(tuple(dims), "?" * new + x.layout if new else x.layout)


def _repeat_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, sizes = tensor(ins), _sizes(spec.value("repeats", ins))
    if x is None or sizes is None or len(sizes) < x.rank:
        return None
    new = len(sizes) - x.rank
    reps = [as_expr(s) for s in sizes]
    if _missing(reps):
        return None
    dims = [*reps[:new], *(d * r for d, r in zip(x.dims, reps[new:], strict=True))]
    return TensorShape(tuple(dims), "?" * new + x.layout if new else x.layout)


def _cat_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    parts = spec.value("tensors", ins)
    parts = [p for p in parts if isinstance(p, TensorShape) and p.rank > 0] \
        if isinstance(parts, tuple) else []
    if not parts:
        return None
    first = parts[0]
    d = norm_dim(spec.get("dim", 0), first.rank)
    if spec.kind == "stack":
        dims = (*first.dims[:d], sympy.Integer(len(parts)), *first.dims[d:])
        return TensorShape(dims, fix_layout(first.layout[:d] + "?" + first.layout[d:]))
    total = sympy.Add(*(p.dims[d] for p in parts))
    return TensorShape((*first.dims[:d], total, *first.dims[d + 1:]), first.layout)


# ---- mixing rules --------------------------------------------------------------------------------
def _data(ins: tuple[Any, ...], out: Any) -> tuple[Shape | None, Rule | None]:
    """Operand 0's float shape, or the rule when the op carries no derivative: a non-float value
    (an integer tensor's reshape) has none; a float value of a non-float input reads only the
    float operands the rule does not model."""
    if not is_shape(out):
        return None, NO_PULLS
    xs = ins[0] if ins else None
    if not is_shape(xs):
        return None, Rule(default=extras(ins, {0}))
    return xs, None


def _reshape_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs, early = _data(ins, out)
    return early or Rule({None: [Reshape(0, None, xs, out)]})


def _permute_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs, early = _data(ins, out)
    if early:
        return early
    perm = _order(spec, len(xs))
    if perm is None or sorted(perm) != list(range(len(xs))):
        return None
    return Rule({None: [Product(0, None, [(perm.index(j), None) for j in range(len(xs))]),
                        *extras(ins, {0})]})


def _expand_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Broadcast (expand) or tiling (repeat) of operand 0; ``expand_as``'s ``other`` only lends
    its shape: no pull."""
    xs, early = _data(ins, out)
    if early:
        return early
    dims = broadcast_dims(xs, out)
    return None if dims is None else Rule({None: [Product(0, None, dims)]})


def _roll_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """torch.roll: output ``o`` along a rolled dim reads input ``(o - shift) mod n``; without
    ``dims`` the flattened tensor is rolled (modelled when at most one dim exceeds 1)."""
    xs, early = _data(ins, out)
    if early:
        return early
    shifts, which = spec.get("shifts"), spec.get("dims")
    shifts = shifts if isinstance(shifts, tuple) else (shifts,)
    if which is None or which == ():
        if len(xs) != 1 and sum(n > 1 for n in xs) > 1:
            return None
        which = (next((k for k, n in enumerate(xs) if n > 1), 0),)
    which = which if isinstance(which, tuple) else (which,)
    if len(which) != len(shifts) or not all(isinstance(v, int) for v in (*which, *shifts)):
        return None
    dims: list = [(k, None) for k in range(len(xs))]
    for d, shift in zip(which, shifts, strict=True):
        d = wrap_dim(d, len(xs))
        dims[d] = (d, roll_map(xs[d], shift))
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _cat_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """cat: item j's positions along ``dim`` are shifted by the sizes before it; stack: item j
    is the slice ``j`` of the new dim (a guard)."""
    items = spec.get("tensors")
    if not is_shape(out):
        return NO_PULLS
    if not isinstance(items, tuple):
        return None
    d, stack = wrap_dim(spec.get("dim", 0), len(out)), spec.kind == "stack"
    shapes = [resolve(r, ins) if isinstance(r, Ref) else None for r in items]
    sizes = _cat_sizes(shapes, out, d) if not stack else [1] * len(items)
    if sizes is None:
        return None
    pulls: list[Pull] = []
    offset = 0
    for j, (ref, shape) in enumerate(zip(items, shapes, strict=True)):
        if is_shape(shape) and (stack or sizes[j]):
            if stack:
                dims = [(k + (k >= d), None) for k in range(len(shape))]
                pulls.append(Product(ref.index, None, dims, guards=[(d, 1 << j)]))
            else:
                dims = [(k, shift_in(offset, n) if k == d else None) for k, n in enumerate(shape)]
                pulls.append(Product(ref.index, None, dims))
        offset += sizes[j]
    return Rule({None: pulls})


def _cat_sizes(shapes: list[Any], out: Shape, d: int) -> list[int] | None:
    """Each item's length along ``d``; one item that is not a float tensor (an integer tensor,
    an empty 1-D ``torch.tensor([])``) gets the rest of the output's length."""
    sizes = [s[d] if is_shape(s) and len(s) == len(out) else None for s in shapes]
    unknown = [j for j, s in enumerate(sizes) if s is None]
    if len(unknown) > 1:
        return None
    if unknown:
        sizes[unknown[0]] = out[d] - sum(s for s in sizes if s is not None)
    return sizes


# ---- kinds ---------------------------------------------------------------------------------------
register(
    OpKind("reshape", "linear", _reshape_shape, _reshape_mixing, free,
           doc="view/reshape to param shape (Refs to sizes, one -1 hole, or a tensor's shape)"),
    OpKind("flatten", "linear", _flatten_shape, _reshape_mixing, free, layout="permute",
           doc="merge dims start_dim..end_dim"),
    OpKind("unflatten", "linear", _unflatten_shape, _reshape_mixing, free,
           doc="split dim into sizes (one -1 hole)"),
    OpKind("unsqueeze", "linear", _unsqueeze_shape, _reshape_mixing, free,
           doc="insert a size-1 dim at dim"),
    OpKind("squeeze", "linear", _squeeze_shape, _reshape_mixing, free,
           doc="drop size-1 dims (dim: one, several, or None for all)"),
    OpKind("permute", "linear", _permute_shape, _permute_mixing, free, layout="permute",
           doc="output dim k is input dim dims[k]"),
    OpKind("transpose", "linear", _permute_shape, _permute_mixing, free, layout="permute",
           doc="swap dim0 and dim1"),
    OpKind("expand", "linear", _expand_shape, _expand_mixing, free,
           doc="broadcast to sizes (-1 keeps a dim; or a tensor's shape)"),
    OpKind("repeat", "linear", _repeat_shape, _expand_mixing, free,
           doc="tile by repeats (leading repeats add dims)"),
    OpKind("roll", "linear", same_shape, _roll_mixing, free, layout="preserve",
           doc="cyclic shift by shifts along dims (None: the flattened tensor)"),
    OpKind("cat", "linear", _cat_shape, _cat_mixing, free, layout="preserve",
           doc="concatenate tensors (Refs) along dim"),
    OpKind("stack", "linear", _cat_shape, _cat_mixing, free,
           doc="stack tensors (Refs) along a new dim"),
)


@module_form(nn.Flatten)
def _flatten_module(m: nn.Flatten) -> tuple[str, dict[str, Any]]:
    return "flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}


@module_form(nn.Unflatten)
def _unflatten_module(m: nn.Unflatten) -> tuple[str, dict[str, Any]]:
    return "unflatten", {"dim": m.dim, "sizes": tuple(m.unflattened_size)}


def _transpose_t(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any]:
    return {"dim0": 0, "dim1": 1}


call_form(CallForm("reshape", ("shape",), varargs="shape"), "view", "reshape", "_unsafe_view")
call_form(CallForm("reshape", ("shape",)), "view_as", "reshape_as")
call_form(CallForm("flatten", ("start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1}),
          "flatten")
call_form(CallForm("unflatten", ("dim", "sizes")), "unflatten")
call_form(CallForm("permute", ("dims",), varargs="dims"), "permute")
call_form(CallForm("transpose", ("dim0", "dim1")), "transpose", "swapaxes", "swapdims")
call_form(CallForm("transpose", finish=_transpose_t), "t")
call_form(CallForm("unsqueeze", ("dim",)), "unsqueeze")
call_form(CallForm("squeeze", ("dim",), {"dim": None}), "squeeze")
call_form(CallForm("expand", ("sizes",), varargs="sizes"), "expand")
call_form(CallForm("expand", ("sizes",)), "expand_as")
call_form(CallForm("repeat", ("repeats",), varargs="repeats"), "repeat")
call_form(CallForm("roll", ("shifts", "dims"), {"dims": None}), "roll")
call_form(CallForm("cat", ("dim",), {"dim": 0}, first="tensors"), "cat", "concat", "concatenate")
call_form(CallForm("stack", ("dim",), {"dim": 0}, first="tensors"), "stack")


# ---- materialise ---------------------------------------------------------------------------------
register_builds({
    "reshape": method("reshape", "shape"), "flatten": function(torch.flatten),
    "unflatten": function(torch.unflatten, "dim", "sizes"),
    "unsqueeze": function(torch.unsqueeze, "dim"), "squeeze": method("squeeze"),
    "permute": method("permute", "dims"), "transpose": function(torch.transpose),
    "expand": method("expand", "sizes"), "repeat": method("repeat", "repeats"),
    "roll": function(torch.roll), "cat": function(torch.cat, first=False),
    "stack": function(torch.stack, first=False),
})
