"""Indexing ops: getitem (tensors, tuple values, sizes), chunk, split, tensor_split, unbind and
size queries.

``getitem``'s param ``index`` is the frozen index: ints, ``("slice", start, stop, step)`` (bounds
may be Refs to computed sizes), ``None`` (a new dim), ``"..."`` and Refs to index tensors
(advanced indexing: swin's ``table[idx]``, levit's ``biases[:, idxs]``). aten's ``select``,
``slice`` and ``index.Tensor`` normalise to the same index (``x.select(1, 0)`` is ``x[:, 0]``).
On a tuple value (split's result, ``x.shape``) an int index picks the element. Shape: the indexed
dims; mixing: one 1-D map per dim (a position, a strided slice, a gather by a constant index
tensor whose values the driver supplies as a ``torch.Tensor``; an index tensor of unknown values
reads every position of the dims it indexes: sound, and exact for a table of constants, whose
pulls the driver drops); on a tuple value the element (``Product(0, elem, ...)``).
``size``: ``attr`` ``"shape"`` (``x.size()``, ``x.size(d)``, ``x.shape``, aten ``sym_size``)
with ``dim`` None for all dims, ``"ndim"`` (``x.dim()``, ``x.ndim``), or another attribute
(``x.dtype``: no rule). Cost: free. Depth: getitem and size are transparent, the splits linear.

Example: ``x[:, :H]`` with ``H = y.size(1)`` is ``OpSpec.of("getitem", index=(("slice", None,
None, None), ("slice", None, %1, None)))`` with operands ``(x, H)``.
"""

from __future__ import annotations

import operator
from typing import Any

import sympy
import torch

from alphac.passes.analysis.mixing_boxes import (
    NO_PULLS,
    Product,
    Rule,
    TableMap,
    Whole,
    full,
    shift_out,
    slice_map,
)
from alphac.passes.analysis.registry.build import function
from alphac.passes.analysis.registry.common import extras, free, is_shape, tensor, wrap_dim
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
from alphac.passes.analysis.shape_dims import (
    ONE,
    TensorShape,
    as_expr,
    broadcast_dims,
    div_floor,
    fix_layout,
    norm_dim,
)

Shape = tuple[int, ...]
FULL = ("slice", None, None, None)
_UNKNOWN = object()  # an index item whose value the rule cannot see


def _is_slice(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 4 and item[0] == "slice"


def _items(index: Any) -> list[Any]:
    return list(index) if isinstance(index, tuple) and not _is_slice(index) else [index]



def _resolved(item: Any, ins: tuple[Any, ...]) -> Any:
    """An index item with its Refs read from ``ins``; ``_UNKNOWN`` for a Ref to an unknown value
    (a literal ``None`` is a new dim; an unknown bound must not read as an open one)."""
    if isinstance(item, Ref):
        value = ins[item.index] if item.index < len(ins) else None
        return _UNKNOWN if value is None else value
    if _is_slice(item):
        return ("slice", *(_resolved(v, ins) for v in item[1:]))
    return item


# ---- getitem: shape ------------------------------------------------------------------------------
def _slice_length(n: sympy.Expr, sl: tuple) -> sympy.Expr | None:
    _, start, stop, step = sl
    step = 1 if step is None else step
    if _UNKNOWN in (start, stop, step):
        return None
    if isinstance(stop, sympy.Expr) and step == 1 and isinstance(start, int | type(None)):
        return stop - (start or 0)  # a symbolic bound, e.g. y[:, :x.size(1)]; checked by trace
    if isinstance(start, sympy.Expr) and step == 1 and stop is None:
        return n - start  # y[:, x.size(1):]
    if not all(isinstance(v, int | type(None)) for v in (start, stop, step)) or step < 1:
        return None
    start = start or 0
    if stop is None or (stop >= 2**62):
        if start < 0:
            return sympy.Integer(-start) if not n.free_symbols else None
        return div_floor(n - start + step - 1, step)
    if stop < 0:
        return div_floor(n + stop - start + step - 1, step) if start >= 0 else None
    if start < 0:
        return None
    return sympy.Integer(max(0, -(-(stop - start) // step)))


def _expand_ellipsis(items: list[Any], rank: int) -> list[Any]:
    if "..." in items:
        at = items.index("...")
        fill = rank - (len(items) - 1 - items.count(None))
        items[at:at + 1] = [FULL] * fill
    return items


def _index_tensor(x: TensorShape, items: list[Any]) -> TensorShape | None:
    items = _expand_ellipsis(items, x.rank)
    if any(isinstance(i, TensorShape) for i in items):
        return _advanced_index(x, items)
    dims, letters, pos = [], [], 0
    for item in items:
        if item is None:
            dims.append(ONE)
            letters.append("?")
            continue
        if pos >= x.rank or item is _UNKNOWN:
            return None
        if isinstance(item, int | sympy.Expr) and not isinstance(item, bool):
            pos += 1  # an int, or a computed one (a size): the dim is dropped
            continue
        length = _slice_length(x.dims[pos], item) if _is_slice(item) else None
        if length is None:
            return None
        dims.append(length)
        letters.append(x.layout[pos])
        pos += 1
    dims.extend(x.dims[pos:])
    letters.extend(x.layout[pos:])
    return TensorShape(tuple(dims), fix_layout(letters))


def _advanced_index(x: TensorShape, items: list[Any]) -> TensorShape | None:
    """``x[..., idx, ...]`` with integer index tensors: the indexed dims are replaced by the
    broadcast index shape, in place when the index tensors are adjacent, else in front. Other
    items must be plain ``:``; bool masks are data-dependent."""
    if len(items) > x.rank or any(not (isinstance(i, TensorShape) or i == FULL) for i in items):
        return None
    where = [k for k, i in enumerate(items) if isinstance(i, TensorShape)]
    index = broadcast_dims([items[k].dims for k in where])
    adjacent = where == list(range(where[0], where[-1] + 1))
    rest = [k for k in range(x.rank) if k not in where]
    before = [k for k in rest if k < where[0]] if adjacent else []
    after = [k for k in rest if k not in before]
    dims = [x.dims[k] for k in before] + list(index) + [x.dims[k] for k in after]
    letters = [x.layout[k] for k in before] + ["?"] * len(index) + [x.layout[k] for k in after]
    return TensorShape(tuple(dims), fix_layout(letters))


def _getitem_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    base = ins[0] if ins else None
    index = spec.get("index")
    if isinstance(base, TensorShape):
        return _index_tensor(base, [_resolved(i, ins) for i in _items(index)])
    if isinstance(base, tuple):
        if isinstance(index, int) and -len(base) <= index < len(base):
            return base[index]
        if _is_slice(index) and all(isinstance(v, int | type(None)) for v in index[1:]):
            return base[slice(*index[1:])]
    return None


# ---- getitem: mixing -----------------------------------------------------------------------------
def _tuple_value(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and not is_shape(value)


def _getitem_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs, index = ins[0] if ins else None, spec.get("index")
    if _tuple_value(xs):
        return _element_mixing(xs, index, out)
    if not is_shape(out) or not is_shape(xs):
        return NO_PULLS  # an integer tensor's or a size's item carries no derivative
    gathers = dict(spec.get("gathers") or ())
    items = [gathers.get(i.index) if isinstance(i, Ref) and i.index in gathers
             else _resolved(i, ins) for i in _items(index)]
    dims = _index_dims(items, xs, out)
    if dims is _UNKNOWN:  # an index tensor of unknown values: every position it may read
        return Rule({None: [Whole(0, None, xs), *extras(ins, {0})]})
    return None if dims is None else Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _element_mixing(xs: tuple, index: Any, out: Any) -> Rule | None:
    """``t[e]`` of a tuple value is its element ``e``; ``t[a:b]`` the elements in range."""
    if isinstance(index, int) and -len(xs) <= index < len(xs):
        return _copy({None: (index % len(xs), out)})
    if _is_slice(index) and all(isinstance(v, int | type(None)) for v in index[1:]):
        picked = range(len(xs))[slice(*index[1:])]
        if not isinstance(out, tuple) or len(out) != len(picked):
            return None
        return _copy({e: (src, shape) for e, (src, shape) in enumerate(zip(picked, out,
                                                                          strict=True))})
    return None


def _copy(elems: dict[int | None, tuple[int, Any]]) -> Rule:
    """Element ``k`` of the value is element ``src`` of operand 0 (float elements only)."""
    return Rule({k: [Product(0, src, [(d, None) for d in range(len(shape))])]
                 for k, (src, shape) in elems.items() if is_shape(shape)})


def _gather(value: Any) -> tuple[int, ...] | None:
    """The values of a constant 1-D integer index tensor, when the driver supplies them."""
    if (isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point()
            and value.dtype != torch.bool):
        return tuple(int(v) for v in value.tolist())
    return None


def _index_dims(items: list[Any], xs: Shape, out: Shape) -> Any:
    """Dims of ``x[items]`` for ints, slices, None, Ellipsis and one index tensor (a constant
    one's values gather; one of unknown values reads every position of the dim it indexes);
    None when not modelled, ``_UNKNOWN`` when only a Whole pull is sound (several index
    tensors, or one whose output rank the shapes do not tell: a bool mask, a 0-d index)."""
    items = [(_gather(i) or _UNKNOWN) if isinstance(i, torch.Tensor) else i for i in items]
    tensors = [i for i in items if i is _UNKNOWN or isinstance(i, tuple) and not _is_slice(i)]
    if len(tensors) > 1:
        return _UNKNOWN  # several index tensors index jointly: not a product of 1-D maps
    items = _expand_ellipsis(items, len(xs))
    items += [FULL] * (len(xs) - sum(1 for i in items if i is not None))
    opaque = len(out) - sum(1 for i in items if i is None or _is_slice(i))
    if _UNKNOWN in items and opaque < 1:
        return _UNKNOWN
    dims: list = []
    j = k = 0
    for item in items:
        if item is None:
            k += 1
            continue
        if j >= len(xs) or k > len(out):
            return None
        if item is _UNKNOWN:
            dims.append((-1, full(xs[j])))
            j, k = j + 1, k + opaque
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            dims.append((-1, 1 << (item % xs[j])))
            j += 1
            continue
        if k >= len(out):
            return None
        mapped = _dim_map(item, xs[j], out[k])
        if mapped is False:
            return None
        dims.append((k, mapped))
        j += 1
        k += 1
    return dims if j == len(xs) and k == len(out) else None


def _dim_map(item: Any, n: int, m: int) -> Any:
    """The 1-D map of a gather (a tuple of ints) or a slice along a dim of n -> m positions;
    None for the identity, False when not modelled."""
    if not _is_slice(item):
        if not isinstance(item, tuple) or len(item) != m or not all(-n <= v < n for v in item):
            return False
        return TableMap(1 << (v % n) for v in item)
    resolved = _resolve_slice(item, n, m)
    if resolved is None:
        return False
    start, _, step = resolved.indices(n)
    return None if start == 0 and step == 1 and m == n else slice_map(start, step, m)


def _resolve_slice(item: tuple, n: int, m: int) -> slice | None:
    """``item`` with integer bounds: a computed bound (``x[:, :H]`` with ``H`` a size) is read
    off the result's length ``m``."""
    _, start, stop, step = item
    step = 1 if step is None else step
    if not isinstance(step, int) or step < 1:
        return None
    plain = (int, type(None))
    if isinstance(start, plain) and isinstance(stop, plain):
        return slice(start, stop, step)
    if isinstance(start, plain):  # computed stop
        first = slice(start, None, step).indices(n)[0]
        return slice(first, first + (m - 1) * step + 1 if m else first, step)
    if isinstance(stop, plain) and step == 1:  # computed start
        end = slice(None, stop).indices(n)[1]
        return slice(end - m, end, 1)
    return None


# ---- splits --------------------------------------------------------------------------------------
def _pieces(x: TensorShape, d: int, spec: OpSpec, ins: tuple[Any, ...]) -> list | None:
    """The lengths of chunk/split's pieces along ``d``."""
    n = x.dims[d]
    if spec.kind == "chunk":
        return [n / spec.get("chunks")] * spec.get("chunks")
    size = spec.value("split_size", ins)
    if isinstance(size, tuple):
        return [as_expr(s) for s in size]
    ratio = n / size if as_expr(size) is not None else None
    if ratio is not None and ratio.is_Integer and ratio > 0:  # qkv.split(C, -1) on 3*C
        return [as_expr(size)] * int(ratio)
    if isinstance(size, int) and not n.free_symbols:
        total = int(n)
        return [sympy.Integer(min(size, total - i)) for i in range(0, total, size)]
    return None


def _split_shape(spec: OpSpec, ins: tuple[Any, ...]) -> tuple | None:
    x = tensor(ins)
    if x is None:
        return None
    d = norm_dim(spec.get("dim", 0), x.rank)
    pieces = _pieces(x, d, spec, ins)
    if pieces is None or any(p is None for p in pieces):
        return None
    return tuple(TensorShape((*x.dims[:d], p, *x.dims[d + 1:]), x.layout) for p in pieces)


def _tensor_split_shape(spec: OpSpec, ins: tuple[Any, ...]) -> tuple | None:
    x, sections = tensor(ins), spec.value("sections", ins)
    if x is None:
        return None
    d = norm_dim(spec.get("dim", 0), x.rank)
    n = x.dims[d]
    if isinstance(sections, int) and not isinstance(sections, bool):
        if not n.is_Integer:
            return None
        total = int(n)
        pieces = [sympy.Integer(total // sections + (i < total % sections))
                  for i in range(sections)]
    elif isinstance(sections, tuple):
        bounds = [sympy.Integer(0), *(as_expr(b) for b in sections), n]
        if any(b is None for b in bounds):
            return None
        pieces = [sympy.Max(0, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        return None
    return tuple(TensorShape((*x.dims[:d], p, *x.dims[d + 1:]), x.layout) for p in pieces)


def _unbind_shape(spec: OpSpec, ins: tuple[Any, ...]) -> tuple | None:
    x = tensor(ins)
    if x is None or x.rank == 0:
        return None
    d = norm_dim(spec.get("dim", 0), x.rank)
    if not x.dims[d].is_Integer:
        return None  # as many tensors as the symbolic size: only the trace can tell
    piece = TensorShape(x.dims[:d] + x.dims[d + 1:], x.layout[:d] + x.layout[d + 1:])
    return (piece,) * int(x.dims[d])


def _split_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Element ``e`` of a split is the run of positions along ``dim`` after the pieces before
    it (unbind: the single position ``e``, its dim dropped)."""
    xs = ins[0] if ins else None
    if not isinstance(out, tuple) or not out or is_shape(out):
        return None
    if not is_shape(xs):
        return Rule(default=extras(ins, {0}))
    if not all(is_shape(s) for s in out):
        return None
    d = wrap_dim(spec.get("dim", 0), len(xs))
    by_elem: dict[int | None, list] = {}
    offset = 0
    for e, shape in enumerate(out):
        if spec.kind == "unbind":
            dims = [(k - (k > d), None) if k != d else (-1, 1 << e) for k in range(len(xs))]
        else:
            dims = [(k, shift_out(offset) if k == d else None) for k in range(len(xs))]
            offset += shape[d]
        by_elem[e] = [Product(0, None, dims)]
    return Rule(by_elem)


# ---- size queries --------------------------------------------------------------------------------
def _size_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    x = tensor(ins)
    if x is None:
        return None
    attr = spec.get("attr", "shape")
    if attr == "ndim":
        return sympy.Integer(x.rank)
    if attr != "shape":
        return None
    d = spec.value("dim", ins)
    if d is None:
        return x.dims
    return x.dims[norm_dim(d, x.rank)] if isinstance(d, int) else None


def _size_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    return None if is_shape(out) else NO_PULLS  # a tensor-valued attribute (x.T): not modelled


register(
    OpKind("getitem", "transparent", _getitem_shape, _getitem_mixing, free,
           doc="x[index] on a tensor, a tuple value or a size"),
    OpKind("chunk", "linear", _split_shape, _split_mixing, free,
           doc="chunks equal pieces along dim"),
    OpKind("split", "linear", _split_shape, _split_mixing, free,
           doc="pieces of split_size (an int, a Ref to a size, or a tuple of sizes) along dim"),
    OpKind("tensor_split", "linear", _tensor_split_shape, _split_mixing, free,
           doc="sections equal-ish pieces, or pieces between sections indices, along dim"),
    OpKind("unbind", "linear", _unbind_shape, _split_mixing, free,
           doc="the slices along dim, that dim dropped"),
    OpKind("size", "transparent", _size_shape, _size_mixing, free,
           doc="attr 'shape' (dim None: all dims) or 'ndim' of operand 0 (another attr: no rule)"),
)


# ---- forms ---------------------------------------------------------------------------------------
def _rank(shapes: Any) -> int | None:
    shape = shapes(Ref(0))
    return None if shape is None else len(shape)


def _select(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any] | None:
    """aten ``x.select(dim, i)`` is ``x[:, ..., i]``."""
    rank, d = _rank(shapes), bound.get("dim", 0)
    if rank is None or not isinstance(d, int):
        return None
    return {"index": (FULL,) * wrap_dim(d, rank) + (bound.get("index"),)}


def _slice(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any] | None:
    """aten ``x.slice(dim, start, end, step)`` is ``x[:, ..., start:end:step]``."""
    rank, d = _rank(shapes), bound.get("dim", 0)
    if rank is None or not isinstance(d, int):
        return None
    item = ("slice", bound.get("start"), bound.get("end"), bound.get("step", 1))
    return {"index": (FULL,) * wrap_dim(d, rank) + (item,)}


def _index(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any] | None:
    """aten ``x.index([None, idx])`` is ``x[:, idx]``: a None index keeps its dim."""
    indices = bound.get("indices")
    if not isinstance(indices, tuple):
        return None
    return _with_gathers({"index": tuple(FULL if i is None else i for i in indices)}, shapes,
                         name)


def _with_gathers(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any]:
    """``gathers``: the values of the constant 1-D integer index tensors among the index items,
    ``((operand, values), ...)``, so mixing can map a gather exactly (swin's table lookups read
    constants; ``x[:, perm]`` with a constant ``perm`` buffer is exact)."""
    constant = getattr(shapes, "constant", None)
    found = []
    for item in _items(bound.get("index")):
        value = constant(item) if constant is not None and isinstance(item, Ref) else None
        values = _gather(value)
        if values is not None:
            found.append((item.index, values))
    return {**bound, "gathers": tuple(found)} if found else bound


def _aliases(key: str, *names: str):
    """finish: param ``key`` from whichever of ``names`` was given (torch's keyword spellings)."""

    def finish(bound: dict[str, Any], shapes: Any, name: str) -> dict[str, Any]:
        out = {k: v for k, v in bound.items() if k not in names}
        out[key] = next((bound[n] for n in (key, *names) if n in bound), None)
        return out

    return finish


call_form(CallForm("getitem", ("index",), finish=_with_gathers), "getitem")
call_form(CallForm("getitem", ("dim", "index"), {"dim": 0}, finish=_select), "select")
call_form(CallForm("getitem", ("dim", "start", "end", "step"),
                   {"dim": 0, "start": None, "end": None, "step": 1}, finish=_slice), "slice")
call_form(CallForm("getitem", ("indices",), finish=_index), "index")
call_form(CallForm("chunk", ("chunks", "dim"), {"dim": 0}), "chunk")
call_form(CallForm("split", ("split_size", "dim", "split_size_or_sections", "split_sizes"),
                   {"dim": 0}, finish=_aliases("split_size", "split_size_or_sections",
                                                "split_sizes")), "split", "split_with_sizes")
call_form(CallForm("tensor_split", ("sections", "dim", "indices_or_sections", "indices",
                                    "tensor_indices_or_sections"), {"dim": 0},
                   finish=_aliases("sections", "indices_or_sections", "indices",
                                   "tensor_indices_or_sections")), "tensor_split")
call_form(CallForm("unbind", ("dim",), {"dim": 0}), "unbind")
call_form(CallForm("size", ("dim",), {"dim": None, "attr": "shape"}), "size", "sym_size")
call_form(CallForm("size", (), {"dim": None, "attr": "ndim"}), "dim")
call_form(CallForm("size", ("attr",), {"dim": None}), "getattr")


# ---- materialise ---------------------------------------------------------------------------------
def _size_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    attr, dim = spec.get("attr"), spec.get("dim")
    if attr == "ndim":
        return Built("call_method", "dim", (Ref(0),))
    if attr != "shape":
        return Built("call_function", getattr, (Ref(0), attr))
    return Built("call_method", "size", (Ref(0),) if dim is None else (Ref(0), dim))


register_builds({
    "getitem": function(operator.getitem, "index", drop=("gathers",)),
    "chunk": function(torch.chunk), "split": function(torch.split, "split_size"),
    "tensor_split": function(torch.tensor_split, "sections"), "unbind": function(torch.unbind),
    "size": _size_build,
})
