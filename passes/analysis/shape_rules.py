"""Per-op symbolic shape rules for :mod:`alphac.passes.analysis.shape`, keyed on ``OpSpec.kind``.

A rule maps the op's normalized spec and its arguments -- fx nodes already replaced by their
symbolic values (:class:`TensorShape`, a dimension expression, a tuple of those) -- to the value of
the node, or ``None`` when it cannot tell (the analysis then falls back to the traced shape).
Rules are pure functions of their key, so results are memoized across blocks and graphs.
Layouts and dimension arithmetic live in :mod:`alphac.passes.analysis.shape_dims`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sympy

from alphac.passes.analysis.ops import OpSpec
from alphac.passes.analysis.shape_dims import (
    ONE,
    TensorShape,
    as_expr,
    broadcast_dims,
    channel_first,
    default_layout,
    dims_same,
    div_floor,
    feature_last,
    fix_layout,
    merge_letters,
    norm_dim,
    scaled_width,
    window,
)

# ---- rules ---------------------------------------------------------------------------------------
Value = Any  # TensorShape | sympy.Expr | tuple[Value, ...] | None
Rule = Callable[[OpSpec, tuple, dict, str], Value]


def _tensors(args: Sequence[Any]) -> list[TensorShape]:
    return [a for a in args if isinstance(a, TensorShape)]


def _missing(values: Sequence[Any]) -> bool:
    return any(v is None for v in values)  # `None in values` would compare expressions with ==


def _x(args: Sequence[Any]) -> TensorShape | None:
    return args[0] if args and isinstance(args[0], TensorShape) else None


def _same_shape(spec, args, kwargs, target):
    return _x(args)


def _channel_first_same(spec, args, kwargs, target):
    x = _x(args)
    return x and TensorShape(x.dims, channel_first(x.rank))


def _layer_norm(spec, args, kwargs, target):
    x = _x(args)
    return x and TensorShape(x.dims, feature_last(x.layout))


def _conv(spec, args, kwargs, target):
    x, n = _x(args), spec.get("dims")
    if x is None or x.rank != n + 2:
        return None
    width = scaled_width(x.dims[1], spec.get("in_channels"), spec.get("out_channels"))
    geometry = zip(x.dims[2:], spec.get("kernel"), spec.get("stride"), spec.get("padding"),
                   spec.get("dilation"), strict=True)
    if spec.get("transposed"):  # output_padding is not in the spec; the traced check catches it
        spatial = [(h - 1) * s - 2 * p + d * (k - 1) + 1 for h, k, s, p, d in geometry]
    else:
        spatial = [window(h, k, s, p, d) for h, k, s, p, d in geometry]
    return TensorShape((x.dims[0], width, *spatial), channel_first(n + 2))


def _pool(spec, args, kwargs, target):
    x, n = _x(args), spec.get("dims")
    if x is None or x.rank < n + 1:
        return None
    geometry = zip(x.dims[-n:], spec.get("kernel"), spec.get("stride"), spec.get("padding"),
                   spec.get("dilation"), strict=True)
    spatial = [window(h, k, s, p, d, spec.get("ceil_mode")) for h, k, s, p, d in geometry]
    layout = channel_first(x.rank) if x.rank == n + 2 else x.layout
    return TensorShape((*x.dims[:-n], *spatial), layout)


def _adaptive_pool(spec, args, kwargs, target):
    x, size = _x(args), spec.get("output_size")
    if x is None or x.rank < len(size) + 1:
        return None
    n = len(size)
    spatial = [h if o is None else sympy.Integer(o) for h, o in zip(x.dims[-n:], size, strict=True)]
    layout = channel_first(x.rank) if x.rank == n + 2 else x.layout
    return TensorShape((*x.dims[:-n], *spatial), layout)


def _linear(spec, args, kwargs, target):
    x, fin, fout = _x(args), spec.get("in_features"), spec.get("out_features")
    if x is None or fin is None or fout is None:
        return None
    width = scaled_width(x.dims[-1], fin, fout)
    return TensorShape((*x.dims[:-1], width), feature_last(x.layout))


def _size_arith(kind: str, a: sympy.Expr, b: sympy.Expr) -> sympy.Expr | None:
    """``a <op> b`` on sizes: ``H * W``, ``B_ // nW``, ``(ws - H % ws) % ws``, ``C / heads``."""
    if kind in ("add", "sub", "mul"):
        return {"add": a + b, "sub": a - b, "mul": a * b}[kind]
    if kind == "div":
        return a / b
    if b.is_zero:
        return None
    if kind == "floordiv":
        return div_floor(a, int(b)) if b.is_Integer and b > 0 else sympy.floor(a / b)
    if kind == "mod":
        return sympy.Mod(a, b)
    return None


def _arith(spec, args, kwargs, target):
    tensors = _tensors(args)
    if not tensors:  # arithmetic on sizes, e.g. x.shape[1] * 2
        values = [as_expr(a) for a in args]
        if len(values) != 2 or _missing(values):
            return None
        return _size_arith(spec.kind, *values)
    if spec.kind == "masked_fill":
        tensors = tensors[:1]  # the mask broadcasts to the input, never the other way round
    dims = broadcast_dims([t.dims for t in tensors])
    best = max(tensors, key=lambda t: (t.rank, -t.layout.count("?")))
    layout = best.layout if best.rank == len(dims) else default_layout(len(dims))
    return TensorShape(dims, layout)


def _matmul(spec, args, kwargs, target):
    a, b = (args + (None, None))[:2]
    if not isinstance(a, TensorShape) or not isinstance(b, TensorShape):
        return None
    ad, al = (list(a.dims), a.layout) if a.rank > 1 else ([ONE, *a.dims], "?" + a.layout)
    bd, bl = (list(b.dims), b.layout) if b.rank > 1 else ([*b.dims, ONE], b.layout + "?")
    batch = broadcast_dims([ad[:-2], bd[:-2]])
    longer = al if len(ad) >= len(bd) else bl
    dims = [*batch, ad[-2], bd[-1]]
    letters = [*longer[: len(batch)], al[-2], bl[-1]]
    drop = {len(dims) - 2} if a.rank == 1 else set()
    drop |= {len(dims) - 1} if b.rank == 1 else set()
    keep = [i for i in range(len(dims)) if i not in drop]
    return TensorShape(tuple(dims[i] for i in keep), fix_layout([letters[i] for i in keep]))


def _einsum(spec, args, kwargs, target):
    equation = spec.get("equation")
    operands = list(args[1][0] if len(args) == 2 and isinstance(args[1], tuple) else args[1:])
    if not isinstance(equation, str) or "..." in equation or not all(
        isinstance(o, TensorShape) for o in operands
    ):
        return None
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    sizes: dict[str, sympy.Expr] = {}
    roles: dict[str, str] = {}
    for term, op in zip(terms, operands, strict=True):
        for ch, d, role in zip(term, op.dims, op.layout, strict=True):
            if ch not in sizes or sizes[ch] is ONE:
                sizes[ch], roles[ch] = d, role
    if "->" not in equation:
        rhs = "".join(sorted(ch for ch in sizes if lhs.count(ch) == 1))
    return TensorShape(tuple(sizes[ch] for ch in rhs), fix_layout([roles[ch] for ch in rhs]))


def _sdpa_shape(spec, args, kwargs, target):
    q = args[0] if args else kwargs.get("query")
    v = args[2] if len(args) >= 3 else kwargs.get("value")
    if not isinstance(q, TensorShape) or not isinstance(v, TensorShape):
        return None
    return TensorShape((*q.dims[:-1], v.dims[-1]), feature_last(q.layout))


def _cat(spec, args, kwargs, target):
    parts = args[0] if args and isinstance(args[0], tuple) else kwargs.get("tensors", ())
    parts = [p for p in parts if isinstance(p, TensorShape) and p.rank > 0]
    if not parts:
        return None
    first = parts[0]
    d = norm_dim(spec.get("dim", 0), first.rank)
    if spec.kind == "stack":
        dims = (*first.dims[:d], sympy.Integer(len(parts)), *first.dims[d:])
        return TensorShape(dims, fix_layout(first.layout[:d] + "?" + first.layout[d:]))
    total = sympy.Add(*(p.dims[d] for p in parts))
    return TensorShape((*first.dims[:d], total, *first.dims[d + 1:]), first.layout)


def _flatten(spec, args, kwargs, target):
    x = _x(args)
    if x is None:
        return None
    if x.rank == 0:
        return TensorShape((ONE,), "?")
    start = norm_dim(spec.get("start_dim", 0), x.rank)
    end = norm_dim(spec.get("end_dim", -1), x.rank)
    merged = sympy.Mul(*x.dims[start:end + 1])
    letters = x.layout[:start] + merge_letters(x.layout[start:end + 1]) + x.layout[end + 1:]
    return TensorShape((*x.dims[:start], merged, *x.dims[end + 1:]), fix_layout(letters))


def _sizes(args: tuple, kwargs: dict, key: str) -> tuple | None:
    rest = args[1:] or tuple(v for k, v in kwargs.items() if k in (key, "other"))
    if len(rest) == 1 and isinstance(rest[0], TensorShape):  # view_as, expand_as
        return rest[0].dims
    sizes = rest[0] if len(rest) == 1 and isinstance(rest[0], tuple) else rest
    return sizes or None


def _is_minus_one(value: Any) -> bool:
    return isinstance(value, int) and value == -1


def _reshape(spec, args, kwargs, target):
    x, sizes = _x(args), _sizes(args, kwargs, "shape")
    if x is None or sizes is None:
        return None
    dims = [None if _is_minus_one(s) else as_expr(s) for s in sizes]
    known = [d for d in dims if d is not None]
    if len(known) != len(sizes) and len(known) != len(sizes) - 1:
        return None
    if len(known) != len(sizes):
        hole = next(i for i, d in enumerate(dims) if d is None)
        dims[hole] = sympy.Mul(*x.dims) / sympy.Mul(*known)
    letters = ["?"] * len(dims)
    for i in range(min(len(dims), x.rank)):  # unchanged leading dims keep their role
        if not dims_same(dims[i], x.dims[i]):
            break
        letters[i] = x.layout[i]
    for i in range(1, min(len(dims), x.rank) + 1):  # and so do unchanged trailing dims
        if not dims_same(dims[-i], x.dims[-i]):
            break
        letters[-i] = x.layout[-i]
    return TensorShape(tuple(dims), fix_layout(letters))


def _permute(spec, args, kwargs, target):
    x, order = _x(args), spec.get("dims")
    if x is None or order is None or len(order) != x.rank:
        return None
    order = [norm_dim(d, x.rank) for d in order]
    return TensorShape(tuple(x.dims[d] for d in order), "".join(x.layout[d] for d in order))


def _transpose(spec, args, kwargs, target):
    x = _x(args)
    if x is None:
        return None
    if x.rank < 2:
        return x
    a, b = norm_dim(spec.get("dim0", 0), x.rank), norm_dim(spec.get("dim1", 1), x.rank)
    order = list(range(x.rank))
    order[a], order[b] = order[b], order[a]
    return TensorShape(tuple(x.dims[d] for d in order), "".join(x.layout[d] for d in order))


def _unsqueeze(spec, args, kwargs, target):
    x = _x(args)
    if x is None:
        return None
    d = norm_dim(spec.get("dim"), x.rank + 1)
    return TensorShape((*x.dims[:d], ONE, *x.dims[d:]), x.layout[:d] + "?" + x.layout[d:])


def _squeeze(spec, args, kwargs, target):
    x, which = _x(args), spec.get("dim")
    if x is None:
        return None
    if which is None:
        which = [i for i, d in enumerate(x.dims) if d is ONE]
    which = {norm_dim(d, x.rank) for d in (which if isinstance(which, tuple | list) else [which])}
    if any(x.dims[d] is not ONE and x.dims[d].free_symbols for d in which):
        return None  # squeezing a symbolic dimension: only the traced size can tell
    keep = [i for i in range(x.rank) if i not in which or x.dims[i] is not ONE]
    return TensorShape(tuple(x.dims[i] for i in keep), "".join(x.layout[i] for i in keep))


def _expand(spec, args, kwargs, target):
    x, sizes = _x(args), _sizes(args, kwargs, "sizes")
    if x is None or sizes is None or len(sizes) < x.rank:
        return None
    new = len(sizes) - x.rank
    if target == "repeat":
        reps = [as_expr(s) for s in sizes]
        if _missing(reps):
            return None
        dims = [*reps[:new], *(d * r for d, r in zip(x.dims, reps[new:], strict=True))]
    else:
        dims = [x.dims[i - new] if _is_minus_one(s) and i >= new else as_expr(s)
                for i, s in enumerate(sizes)]
        if _missing(dims):
            return None
    return TensorShape(tuple(dims), "?" * new + x.layout if new else x.layout)


def _slice_length(n: sympy.Expr, sl: tuple) -> sympy.Expr | None:
    _, start, stop, step = sl
    step = 1 if step is None else step
    if isinstance(stop, sympy.Expr) and step == 1 and isinstance(start, int | type(None)):
        return stop - (start or 0)  # a symbolic bound, e.g. y[:, :x.size(1)]; checked by trace
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


def _index_tensor(x: TensorShape, index: Any) -> TensorShape | None:
    items = list(index) if isinstance(index, tuple) and not _is_slice(index) else [index]
    if "..." in items:
        at = items.index("...")
        fill = x.rank - (len(items) - 1 - items.count(None))
        items[at:at + 1] = [("slice", None, None, None)] * fill
    dims, letters, pos = [], [], 0
    for item in items:
        if item is None:
            dims.append(ONE)
            letters.append("?")
            continue
        if pos >= x.rank:
            return None
        if isinstance(item, int) and not isinstance(item, bool):
            pos += 1
            continue
        if isinstance(item, TensorShape):
            return _advanced_index(x, items)
        if not _is_slice(item):
            return None
        length = _slice_length(x.dims[pos], item)
        if length is None:
            return None
        dims.append(length)
        letters.append(x.layout[pos])
        pos += 1
    dims.extend(x.dims[pos:])
    letters.extend(x.layout[pos:])
    return TensorShape(tuple(dims), fix_layout(letters))


def _advanced_index(x: TensorShape, items: list) -> TensorShape | None:
    """``x[..., idx, ...]`` with integer index tensors (torch's advanced indexing): the indexed
    dims are replaced by the broadcast index shape, in place when the index tensors are adjacent,
    else in front. Slices and ``None`` must be plain (``:``); bool masks are data-dependent."""
    if len(items) > x.rank or any(not (isinstance(i, TensorShape) or _is_full_slice(i))
                                  for i in items):
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


def _is_full_slice(item: Any) -> bool:
    return _is_slice(item) and item[1:] == (None, None, None)


def _is_slice(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 4 and item[0] == "slice"


def _getitem(spec, args, kwargs, target):
    base = args[0] if args else None
    if target in ("select", "slice"):  # aten's x.select(dim, i), x.slice(dim, start, end, step)
        return _aten_index(base, _dim_index(target, args, kwargs))
    index = args[1] if len(args) > 1 else spec.get("index")
    if isinstance(index, tuple) and index and index[0] in ("select", "slice_dim"):
        return _aten_index(base, index)
    if isinstance(base, TensorShape):
        return _index_tensor(base, index)
    if isinstance(base, tuple):
        if isinstance(index, int) and -len(base) <= index < len(base):
            return base[index]
        if _is_slice(index):
            return base[slice(*index[1:])]
    return None


def _dim_index(target: str, args: tuple, kwargs: dict) -> tuple:
    """The spec's ``("select", dim, i)`` / ``("slice_dim", dim, start, end, step)`` index, read
    from the frozen arguments so that symbolic bounds (``x[:, :H]``) stay symbolic."""
    names = ("dim", "index") if target == "select" else ("dim", "start", "end", "step")
    bound = {"dim": 0, "start": None, "end": None, "step": 1}
    bound.update(zip(names, args[1:], strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in names})
    if target == "select":
        return ("select", bound["dim"], bound.get("index"))
    return ("slice_dim", bound["dim"], bound["start"], bound["end"], bound["step"])


def _index(spec, args, kwargs, target):
    """aten's ``x[i0, i1, ...]`` (``aten.index.Tensor``): ``None`` indices keep their dim."""
    x = _x(args)
    indices = args[1] if len(args) > 1 else kwargs.get("indices")
    if x is None or not isinstance(indices, tuple):
        return None
    items = [("slice", None, None, None) if i is None else i for i in indices]
    if not any(isinstance(i, TensorShape) for i in items):
        return None
    return _advanced_index(x, items)


def _arange(spec, args, kwargs, target):
    """``arange(end)``, ``arange(start, end[, step])``: ``ceil((end - start) / step)`` values."""
    names = ("end",) if len(args) == 1 else ("start", "end", "step")
    bound = {"start": 0, "step": 1, **dict(zip(names, args, strict=False))}
    bound.update({k: v for k, v in kwargs.items() if k in ("start", "end", "step")})
    start, end, step = (as_expr(bound.get(k)) for k in ("start", "end", "step"))
    if _missing([start, end, step]) or step.is_zero:
        return None
    if not (end - start).free_symbols:
        return TensorShape((sympy.Integer(max(0, -(-int(end - start) // int(step)))),), "?")
    length = end - start if step == 1 else sympy.ceiling((end - start) / step)
    return TensorShape((length,), "?")


def _full(spec, args, kwargs, target):
    """``zeros(size)``, ``ones(size)``, ``empty(size)``, ``full(size, value)``: sizes as given."""
    sizes = args[0] if args else kwargs.get("size")
    if target != "full" and len(args) > 1:  # torch.zeros(2, 3): the sizes as varargs
        sizes = args
    sizes = tuple(sizes) if isinstance(sizes, tuple | list) else (sizes,)
    dims = [as_expr(s) for s in sizes]
    if _missing(dims):
        return None
    return TensorShape(tuple(dims), default_layout(len(dims)))


def _aten_index(x: Any, index: tuple) -> Value:
    if not isinstance(x, TensorShape):
        return None
    d = norm_dim(index[1] if index[1] is not None else 0, x.rank)
    if index[0] == "select":
        return TensorShape(x.dims[:d] + x.dims[d + 1:], x.layout[:d] + x.layout[d + 1:])
    _, _, start, stop, step = index
    length = _slice_length(x.dims[d], ("slice", start, stop, step))
    return length and TensorShape((*x.dims[:d], length, *x.dims[d + 1:]), x.layout)


def _chunk(spec, args, kwargs, target):
    x = _x(args)
    if x is None:
        return None
    d = norm_dim(spec.get("dim", 0), x.rank)
    n = x.dims[d]
    if spec.kind == "chunk":
        pieces = [n / spec.get("chunks")] * spec.get("chunks")
    else:
        size = args[1] if len(args) > 1 else kwargs.get("split_size", spec.get("split_size"))
        ratio = n / size if as_expr(size) is not None else None
        if isinstance(size, tuple):
            pieces = [as_expr(s) for s in size]
        elif ratio is not None and ratio.is_Integer and ratio > 0:  # qkv.split(C, -1) on 3*C
            pieces = [as_expr(size)] * int(ratio)
        elif isinstance(size, int) and not n.free_symbols:
            total = int(n)
            pieces = [sympy.Integer(min(size, total - i)) for i in range(0, total, size)]
        else:
            return None
    if _missing(pieces):
        return None
    return tuple(TensorShape((*x.dims[:d], p, *x.dims[d + 1:]), x.layout) for p in pieces)


def _unbind(spec, args, kwargs, target):
    x = _x(args)
    if x is None or x.rank == 0:
        return None
    d = norm_dim(spec.get("dim", 0), x.rank)
    if not x.dims[d].is_Integer:
        return None  # as many tensors as the symbolic size: only the trace can tell
    piece = TensorShape(x.dims[:d] + x.dims[d + 1:], x.layout[:d] + x.layout[d + 1:])
    return (piece,) * int(x.dims[d])


def _tensor_split(spec, args, kwargs, target):
    x, sections = _x(args), spec.get("sections")
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
        if _missing(bounds):
            return None
        pieces = [sympy.Max(0, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]
    else:
        return None
    return tuple(TensorShape((*x.dims[:d], p, *x.dims[d + 1:]), x.layout) for p in pieces)


def _unflatten(spec, args, kwargs, target):
    x, sizes = _x(args), spec.get("sizes")
    if x is None or not isinstance(sizes, tuple):
        return None
    d = norm_dim(spec.get("dim"), x.rank)
    dims = [None if _is_minus_one(s) else as_expr(s) for s in sizes]
    known = [e for e in dims if e is not None]
    if len(known) < len(dims) - 1 or _missing([as_expr(s) for s in sizes if not _is_minus_one(s)]):
        return None
    if len(known) != len(dims):
        dims[dims.index(None)] = x.dims[d] / sympy.Mul(*known)
    role = x.layout[d]
    letters = [role if dims_same(e, x.dims[d]) else "?" for e in dims]
    layout = fix_layout(list(x.layout[:d]) + letters + list(x.layout[d + 1:]))
    return TensorShape((*x.dims[:d], *dims, *x.dims[d + 1:]), layout)


def _pad(spec, args, kwargs, target):
    x = _x(args)
    pad = args[1] if len(args) > 1 else kwargs.get("pad", spec.get("pad"))  # sizes may be symbolic
    if x is None or not isinstance(pad, tuple) or len(pad) > 2 * x.rank:
        return None
    dims = list(x.dims)
    for i in range(len(pad) // 2):  # pairs run from the last dimension backwards
        amount = [as_expr(p) for p in pad[2 * i:2 * i + 2]]
        if _missing(amount):
            return None
        dims[-1 - i] = dims[-1 - i] + amount[0] + amount[1]
    return TensorShape(tuple(dims), x.layout)


def _size(spec, args, kwargs, target):
    x = _x(args)
    if x is None:
        return None
    if target == "dim" or spec.get("attr") == "ndim":
        return sympy.Integer(x.rank)
    if spec.get("attr", "shape") != "shape":
        return None
    d = spec.get("dim")
    return x.dims if d is None else x.dims[norm_dim(d, x.rank)]


def _reduce(spec, args, kwargs, target):
    x, which, keep = _x(args), spec.get("dim"), spec.get("keepdim", False)
    if x is None:
        return None
    which = range(x.rank) if which is None else which if isinstance(which, tuple) else (which,)
    which = {norm_dim(d, x.rank) for d in which}
    if keep:
        dims = tuple(ONE if i in which else d for i, d in enumerate(x.dims))
        return TensorShape(dims, x.layout)
    keepers = [i for i in range(x.rank) if i not in which]
    return TensorShape(tuple(x.dims[i] for i in keepers), "".join(x.layout[i] for i in keepers))


RULES: dict[str, Rule] = {
    **dict.fromkeys(
        ["relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
         "leaky_relu", "elu", "softmax", "log_softmax", "dropout", "identity", "neg",
         "drop_path"],
        _same_shape),
    "batch_norm": _channel_first_same, "group_norm": _channel_first_same,
    "layer_norm": _layer_norm, "conv": _conv, "linear": _linear,
    "max_pool": _pool, "avg_pool": _pool,
    "adaptive_avg_pool": _adaptive_pool, "adaptive_max_pool": _adaptive_pool,
    "add": _arith, "sub": _arith, "mul": _arith, "div": _arith, "floordiv": _arith,
    "mod": _arith, "masked_fill": _arith, "compare": _arith, "roll": _same_shape,
    "matmul": _matmul, "einsum": _einsum, "sdpa": _sdpa_shape, "cat": _cat, "stack": _cat,
    "flatten": _flatten, "reshape": _reshape, "permute": _permute, "transpose": _transpose,
    "unsqueeze": _unsqueeze, "squeeze": _squeeze, "expand": _expand, "getitem": _getitem,
    "chunk": _chunk, "split": _chunk, "size": _size, "reduce": _reduce, "pad": _pad,
    "unbind": _unbind, "tensor_split": _tensor_split, "unflatten": _unflatten,
    "index": _index, "arange": _arange, "full": _full,
}
#: Kinds whose rule reads the raw call target (``x.dim()`` vs ``x.size()``, repeat vs expand,
#: aten's select/slice vs ``x[i]``, full vs zeros).
_TARGET_SENSITIVE = frozenset({"size", "expand", "getitem", "full"})

_CACHE: dict[Any, Value] = {}


def clear_rule_memo() -> None:
    """Forget every memoized rule result."""
    _CACHE.clear()


def _key(value: Any) -> Any:
    # Memo keys are structural (identical expressions), never semantic: a cache, not a comparison.
    if isinstance(value, TensorShape):
        return ("T", value.dims, value.layout)
    if isinstance(value, tuple | list):
        return tuple(_key(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return (type(value).__name__, value)


def apply_rule(spec: OpSpec, args: tuple, kwargs: dict, target: str) -> Value:
    """The node's symbolic value by the rule for ``spec.kind``; None for an op without a rule."""
    rule = RULES.get(spec.kind)
    if rule is None:
        return None
    params = tuple((k, v) for k, v in spec.params if not _refers_to_node(v))
    key = (spec.kind, params, _key(args), _key(kwargs),
           target if spec.kind in _TARGET_SENSITIVE else None)
    if key not in _CACHE:
        if len(_CACHE) > 200_000:
            _CACHE.clear()
        _CACHE[key] = rule(spec, args, kwargs, target)
    return _CACHE[key]


def _refers_to_node(value: Any) -> bool:
    if isinstance(value, tuple):
        return (len(value) == 2 and value[0] == "node") or any(map(_refers_to_node, value))
    return False

