"""The per-op transfer table of the mixing analysis: one rule builder per :class:`OpSpec` kind.

A builder turns a node (its OpSpec, real argument values and the concrete shapes of its operands
and result) into a :class:`Rule`: for each element of the node's value (``None`` for a plain
tensor, ``j`` for element ``j`` of a tuple such as ``split``'s result) the :class:`Pull` objects
that map a box of output indices to the boxes of operand indices with a nonzero derivative.
Weights read through ``get_attr`` are constants, not operands. An op the table does not know, or
arguments a builder cannot model (a computed index, an ellipsis einsum), become *top* (every
operand position reaches every output position) with one warning per op kind, never a crash.

Example: ``build_rule(conv_node, op_spec(conv_node, modules), modules).pulls(None)`` for a 1x1
stride-2 conv on (2, 8, 4, 4) is one Product pull with dims ``[(0, copy), (-1, all 8 channels),
(2, window), (3, window)]`` whose window maps output row {1} to input row {2}.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from math import prod
from typing import Any

import torch
from torch import fx, nn

from alphac.diagnostics import report
from alphac.modes import follows_mode
from alphac.passes.analysis.mixing_boxes import (
    DimMap,
    Product,
    Pull,
    Reshape,
    TableMap,
    Whole,
    adaptive_map,
    broadcast_dims,
    element_shapes,
    float_shape,
    full,
    group_map,
    roll_map,
    shift_in,
    shift_out,
    slice_map,
    stencil_map,
    transposed_stencil_map,
)
from alphac.passes.analysis.ops import OpSpec, placeholder_default

Shape = tuple[int, ...]


class Rule:
    """The pulls of one node, per element of its value (``None``: a plain tensor)."""

    __slots__ = ("by_elem", "default")

    def __init__(self, by_elem: dict[int | None, Sequence[Pull]] | None = None,
                 default: Sequence[Pull] = ()) -> None:
        self.by_elem = {k: tuple(v) for k, v in (by_elem or {}).items()}
        self.default = tuple(default)

    def pulls(self, elem: int | None) -> tuple[Pull, ...]:
        return self.by_elem.get(elem, self.default)


NO_PULLS = Rule()
_WARNED: set[str] = set()


def warn_unknown(what: str) -> None:
    """Report (warn once per op kind without a collector) that mixing treats ``what`` as top."""
    report("mixing", what, f"mixing analysis does not know the op {what!r}; assuming every input "
           "dim mixes into every output dim (top)", seen=_WARNED, stacklevel=4)


def _data(node: fx.Node) -> Any:
    if node.args:
        return node.args[0]
    return next((node.kwargs[k] for k in ("input", "self", "x") if k in node.kwargs), None)


def _tensor_nodes(values: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(values, out.append)
    return [n for n in out if n.op != "get_attr" and float_shape(n) is not None]


def _extras(node: fx.Node, done: Sequence[Any]) -> list[Pull]:
    """Whole pulls for float operands a rule does not model (weights passed as computed values)."""
    skip = {id(d) for d in done}
    return [Whole(n.name, None, float_shape(n)) for n in _tensor_nodes((node.args, node.kwargs))
            if id(n) not in skip]


def top_rule(node: fx.Node, what: str) -> Rule:
    """Every float operand position reaches every output position; warns once per ``what``."""
    warn_unknown(what)
    return Rule(default=_extras(node, ()))


def _product(node: fx.Node, x: fx.Node, dims: Sequence[DimMap] | None) -> Rule | None:
    if dims is None:
        return None
    return Rule({None: [Product(x.name, None, dims), *_extras(node, [x])]})


def _norm(d: int, rank: int) -> int:
    return d % rank if rank else 0


def _unary(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    return _product(node, x, broadcast_dims(xs, out))


def _binary(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    operands = [a for a in (*node.args[:2], node.kwargs.get("other"))
                if float_shape(a) and a.op != "get_attr"]
    pulls: list[Pull] = []
    for a in operands:
        dims = broadcast_dims(float_shape(a), out)
        if dims is None:
            return None
        pulls.append(Product(a.name, None, dims))
    return Rule({None: [*pulls, *_extras(node, operands)]})


def _conv(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape,
          modules: dict[str, nn.Module]) -> Rule | None:
    nd, g = spec.get("dims"), spec.get("groups")
    lead = len(xs) - nd - 1
    module = modules.get(str(node.target)) if node.op == "call_module" else None
    mode = getattr(module, "padding_mode", "zeros")
    cmap = group_map(xs[lead], out[lead], g)
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    dims.append((-1, full(xs[lead])) if g == 1 else (lead, cmap))
    for t in range(nd):
        j = lead + 1 + t
        args = (xs[j], out[j], spec.get("kernel")[t], spec.get("stride")[t],
                spec.get("padding")[t], spec.get("dilation")[t])
        f = transposed_stencil_map(*args) if spec.get("transposed") else stencil_map(*args, mode)
        dims.append((j, f))
    return _product(node, x, dims)


def _pool(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    nd = spec.get("dims")
    lead = len(xs) - nd
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    for t in range(nd):
        j = lead + t
        dims.append((j, stencil_map(xs[j], out[j], spec.get("kernel")[t], spec.get("stride")[t],
                                    spec.get("padding")[t], spec.get("dilation")[t])))
    return _product(node, x, dims)


def _adaptive(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    lead = len(xs) - len(spec.get("output_size"))
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    dims += [(j, adaptive_map(xs[j], out[j])) for j in range(lead, len(xs))]
    return _product(node, x, dims)


def _leading_full(node: fx.Node, x: fx.Node, xs: Shape, n_last: int) -> Rule | None:
    """Last ``n_last`` dims read in full; a single-element reduction has zero derivative."""
    if prod(xs[len(xs) - n_last:]) <= 1:
        return NO_PULLS
    dims = [(k, None) for k in range(len(xs) - n_last)]
    return _product(node, x, dims + [(-1, full(n)) for n in xs[len(xs) - n_last:]])


def _linear(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    dims = [(k, None) for k in range(len(xs) - 1)]
    return _product(node, x, dims + [(-1, full(xs[-1]))])


def _layer_norm(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    return _leading_full(node, x, xs, len(spec.get("normalized_shape") or ()))


def _group_norm(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    groups, channels = spec.get("num_groups"), xs[1]
    if channels // groups * prod(xs[2:]) <= 1:
        return NO_PULLS
    cmap = group_map(channels, channels, groups)
    dims: list[DimMap] = [(0, None), (-1, full(channels)) if groups == 1 else (1, cmap)]
    return _product(node, x, dims + [(-1, full(n)) for n in xs[2:]])


def _softmax(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    d = _norm(spec.get("dim"), len(xs))
    if xs[d] <= 1:
        return NO_PULLS
    return _product(node, x, [(-1, full(n)) if k == d else (k, None) for k, n in enumerate(xs)])


def _reduce(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    dim = spec.get("dim")
    dims_r = range(len(xs)) if dim is None or dim == () else (dim,) if isinstance(dim, int) else dim
    reduced = {_norm(d, len(xs)) for d in dims_r}
    keep = bool(spec.get("keepdim"))
    dims: list[DimMap] = []
    k = 0
    for j, n in enumerate(xs):
        if j in reduced:
            dims.append((-1, full(n)))
            k += keep
        else:
            dims.append((k, None))
            k += 1
    return _product(node, x, dims)


def _reshape(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    return Rule({None: [Reshape(x.name, None, xs, out)]})


def _permute(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    r = len(xs)
    if spec.kind == "transpose":
        d0, d1 = _norm(spec.get("dim0"), r), _norm(spec.get("dim1"), r)
        perm = list(range(r))
        perm[d0], perm[d1] = perm[d1], perm[d0]
    else:
        raw = spec.get("dims")
        if not all(isinstance(d, int) for d in raw):
            return None
        perm = [_norm(d, r) for d in raw]
    return _product(node, x, [(perm.index(j), None) for j in range(r)])


def _expand(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    dims = broadcast_dims(xs, out)  # expand_as's ``other`` only lends its shape: no pull
    return None if dims is None else Rule({None: [Product(x.name, None, dims)]})


def _pad(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    """F.pad: output o reads input ``o - left`` (constant), or its reflected/clamped/wrapped
    index; negative pads crop."""
    pads, mode = _pad_amounts(node, xs, out), spec.get("mode") or "constant"
    if pads is None:
        return None
    dims: list[DimMap] = [(k, None) for k in range(len(xs))]
    for t in range(len(pads) // 2):
        d = len(xs) - 1 - t
        f = stencil_map(xs[d], out[d], 1, 1, pads[2 * t], 1, "zeros" if mode == "constant" else mode)
        dims[d] = (d, f)
    return Rule({None: [Product(x.name, None, dims)]})


def _pad_amounts(node: fx.Node, xs: Shape, out: Shape) -> list[int] | None:
    """F.pad's amounts as ints; one computed amount per pair (swin's ``(ws - H % ws) % ws``)
    is read off the shapes: ``out = in + left + right``."""
    raw = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    if not isinstance(raw, (list, tuple)):
        return None
    pads = list(raw)
    for t in range(len(pads) // 2):
        d = len(xs) - 1 - t
        pair = pads[2 * t:2 * t + 2]
        known = [isinstance(p, int) for p in pair]
        if known == [False, True]:
            pads[2 * t] = out[d] - xs[d] - pair[1]
        elif known == [True, False]:
            pads[2 * t + 1] = out[d] - xs[d] - pair[0]
        elif known != [True, True]:
            return None
    return pads


def _roll(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    """torch.roll: output ``o`` along a rolled dim reads input ``(o - shift) mod n``; without
    ``dims`` the flattened tensor is rolled."""
    shifts, which = spec.get("shifts"), spec.get("dims")
    shifts = shifts if isinstance(shifts, tuple) else (shifts,)
    if which is None or which == ():
        flat = len(xs) == 1 or sum(n > 1 for n in xs) <= 1
        if not flat:
            return None
        which = (next((k for k, n in enumerate(xs) if n > 1), 0),)
    which = which if isinstance(which, tuple) else (which,)
    if len(which) != len(shifts) or not all(isinstance(v, int) for v in (*which, *shifts)):
        return None
    dims: list[DimMap] = [(k, None) for k in range(len(xs))]
    for d, shift in zip(which, shifts, strict=True):
        d = _norm(d, len(xs))
        dims[d] = (d, roll_map(xs[d], shift))
    return _product(node, x, dims)


def _unbind(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Any) -> Rule | None:
    """Element ``e`` of ``x.unbind(d)`` is the slice ``e`` along ``d``."""
    if element_shapes(node) is None:
        return None
    d = _norm(spec.get("dim"), len(xs))
    by_elem: dict[int | None, list[Pull]] = {}
    for e in range(xs[d]):
        dims = [(k - (k > d), None) if k != d else (-1, 1 << e) for k in range(len(xs))]
        by_elem[e] = [Product(x.name, None, dims)]
    return Rule(by_elem)


def _cat(node: fx.Node, spec: OpSpec, x: Any, xs: Shape | None, out: Shape) -> Rule | None:
    items = node.args[0] if node.args else node.kwargs.get("tensors")
    d, stack = _norm(spec.get("dim"), len(out)), spec.kind == "stack"
    pulls: list[Pull] = []
    offset = 0
    for j, item in enumerate(items):
        meta = item.meta.get("tensor_meta") if isinstance(item, fx.Node) else None
        size = tuple(meta.shape) if meta is not None else ()
        if not stack and prod(size) == 0:
            continue
        shape = float_shape(item)
        if shape is not None and item.op != "get_attr":
            if stack:
                dims = [(k + (k >= d), None) for k in range(len(shape))]
                pulls.append(Product(item.name, None, dims, guards=[(d, 1 << j)]))
            else:
                dims = [(k, shift_in(offset, n) if k == d else None) for k, n in enumerate(shape)]
                pulls.append(Product(item.name, None, dims))
        offset += 1 if stack else int(size[d])
    return Rule({None: pulls})


def _split(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Any) -> Rule | None:
    shapes = element_shapes(node)
    if shapes is None:
        return None
    d = _norm(spec.get("dim"), len(xs))
    by_elem: dict[int | None, list[Pull]] = {}
    offset = 0
    for e, meta in enumerate(node.meta["tensor_meta"]):
        if shapes[e] is not None:
            dims = [(k, shift_out(offset) if k == d else None) for k in range(len(xs))]
            by_elem[e] = [Product(x.name, None, dims)]
        offset += int(meta.shape[d])
    return Rule(by_elem)




def _matmul(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Shape) -> Rule | None:
    a, b = node.args[0], node.args[1]
    sa, sb = float_shape(a), float_shape(b)
    if sa is None or sb is None:
        return None
    ro = len(out)
    n_batch = ro - (len(sa) >= 2) - (len(sb) >= 2)
    batch = list(range(n_batch))
    pulls: list[Pull] = []
    if len(sa) >= 2:
        dims = broadcast_dims(sa[:-2], out, batch)
        if dims is None:
            return None
        pulls.append(Product(a.name, None, [*dims, (n_batch, None), (-1, full(sa[-1]))]))
    else:
        pulls.append(Product(a.name, None, [(-1, full(sa[0]))]))
    if len(sb) >= 2:
        dims = broadcast_dims(sb[:-2], out, batch)
        if dims is None:
            return None
        pulls.append(Product(b.name, None, [*dims, (-1, full(sb[-2])), (ro - 1, None)]))
    else:
        pulls.append(Product(b.name, None, [(-1, full(sb[0]))]))
    return Rule({None: [*pulls, *_extras(node, [a, b])]})


def _einsum(node: fx.Node, spec: OpSpec, x: Any, xs: Any, out: Shape) -> Rule | None:
    equation = str(spec.get("equation") or "").replace(" ", "")
    operands = list(node.args[1] if isinstance(node.args[1], (list, tuple)) else node.args[1:])
    if "..." in equation or not re.fullmatch(r"[a-zA-Z,]+(->[a-zA-Z]*)?", equation):
        return None
    lhs, _, rhs = equation.partition("->")
    terms = lhs.split(",")
    if "->" not in equation:
        rhs = "".join(sorted(c for c in set(lhs) - {","} if lhs.count(c) == 1))
    if len(terms) != len(operands):
        return None
    pulls: list[Pull] = []
    for term, operand in zip(terms, operands, strict=True):
        shape = float_shape(operand)
        if shape is None or operand.op == "get_attr":
            continue
        dims: list[DimMap] = []
        for letter, n in zip(term, shape, strict=True):
            k = rhs.find(letter)
            dims.append((-1, full(n)) if k < 0 else (-1, 1) if n == 1 < out[k] else (k, None))
        pulls.append(Product(operand.name, None, dims))
    return Rule({None: pulls})


def _sdpa(node: fx.Node, spec: OpSpec, x: Any, xs: Any, out: Shape) -> Rule | None:
    """F.scaled_dot_product_attention in eval mode (``dropout_p`` only zeroes some derivatives
    on some draws; ``scale`` changes no pattern). Query ``l`` reads the values of the keys it may
    attend to: all, ``0..l`` when ``is_causal``, or those a constant boolean mask allows; its
    query row and those keys only when there are at least two (a softmax over one key is 1). A
    float mask is an operand read along the keys. With ``enable_gqa`` query head ``h`` reads
    key/value head ``h // (Hq / Hkv)``."""
    args = list(node.args) + [None] * 8
    q, k, v = (node.kwargs.get(n, args[i]) for i, n in enumerate(("query", "key", "value")))
    mask = placeholder_default(node.kwargs.get("attn_mask", args[3]))
    causal, gqa = spec.get("is_causal"), spec.get("enable_gqa")
    shapes = [float_shape(t) for t in (q, k, v)]
    if any(s is None for s in shapes) or not isinstance(causal, bool) or mask is not None and causal:
        return None
    ro, keys = len(out), shapes[1][-2]
    rows = _allowed_keys(mask, out[-2], keys, causal)
    if rows is False:
        return None
    qd = ro - 2
    if rows is None:  # every query reads every key
        seen = (-1, full(keys))
        scored = seen if keys > 1 else None
        own = (qd, None) if keys > 1 else None
    else:
        seen = (qd, TableMap(rows))
        scored = (qd, TableMap(r if r & (r - 1) else 0 for r in rows))
        own = (qd, TableMap(1 << o if r & (r - 1) else 0 for o, r in enumerate(rows)))
    tails = [own and [own, (-1, full(shapes[0][-1]))],
             scored and [scored, (-1, full(shapes[1][-1]))], [seen, (ro - 1, None)]]
    pulls: list[Pull] = []
    for t, shape, tail in zip((q, k, v), shapes, tails, strict=True):
        dims = _head_dims(shape[:-2], out, bool(gqa))
        if dims is None:
            return None
        if t.op != "get_attr" and tail is not None:
            pulls.append(Product(t.name, None, [*dims, *tail]))
    mshape = float_shape(mask)
    if mshape is not None and mask.op != "get_attr" and keys > 1:
        dims = broadcast_dims(mshape[:-1], out[:-1])
        if dims is None:
            return None
        pulls.append(Product(mask.name, None, [*dims, (-1, full(mshape[-1]))]))
    return Rule({None: pulls})


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


def _allowed_keys(mask: Any, length: int, keys: int, causal: bool) -> list[int] | None | bool:
    """Per query position, the bitset of keys it attends to; None when every query reads every
    key, False when a mask cannot be read. A constant mask that differs across batch or heads
    gives the union of its rows (sound, not exact)."""
    if causal:
        return [full(min(o + 1, keys)) for o in range(length)]
    allowed = _constant_mask(mask)
    if allowed is None or allowed is False:
        return allowed
    rows = allowed.reshape(-1, allowed.shape[-2], allowed.shape[-1]).any(0).expand(length, keys)
    return [sum(1 << j for j, ok in enumerate(row) if ok) for row in rows.tolist()]


def _constant_mask(mask: Any) -> Any:
    """A boolean mask held as a constant (``get_attr``): where attention is allowed; None when
    it is absent, computed or float (every key may be read), False when unreadable."""
    if not isinstance(mask, fx.Node) or mask.op != "get_attr":
        return None
    value = _attribute(mask)
    if not isinstance(value, torch.Tensor) or value.dim() < 1:
        return False
    if value.dtype != torch.bool:
        return None  # a float mask's values are parameters (the ground truth redraws them)
    return value if value.dim() >= 2 else value.unsqueeze(0)


def _attribute(node: fx.Node) -> Any:
    obj: Any = node.graph.owning_module
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
    return obj


def _index_dims(index: Any, xs: Shape, out: Shape) -> list[DimMap] | None:
    """Dims of ``x[index]`` for ints, slices, None and Ellipsis; None for anything else."""
    items = list(index) if isinstance(index, tuple) else [index]
    items = [_constant_index(i) if isinstance(i, fx.Node) else i for i in items]
    if not all(isinstance(i, (int, slice, _Gather)) or i is None or i is Ellipsis
               for i in items):
        return None
    if sum(isinstance(i, _Gather) for i in items) > 1:
        return None  # several index tensors index jointly: not a product of 1-D maps
    if Ellipsis in items:
        at = items.index(Ellipsis)
        used = sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(xs) - used)
    items += [slice(None)] * (len(xs) - sum(1 for i in items if i is not None))
    dims: list[DimMap] = []
    j = k = 0
    for item in items:
        if item is None:
            k += 1
        elif isinstance(item, int):
            dims.append((-1, 1 << (item % xs[j])))
            j += 1
        elif isinstance(item, _Gather):
            if len(item) != out[k] or not all(-xs[j] <= v < xs[j] for v in item):
                return None
            dims.append((k, TableMap(1 << (v % xs[j]) for v in item)))
            j += 1
            k += 1
        else:
            item = _resolve_slice(item, xs[j], out[k])
            if item is None:
                return None
            start, _, step = item.indices(xs[j])
            same = start == 0 and step == 1 and out[k] == xs[j]
            dims.append((k, None if same else slice_map(start, step, out[k])))
            j += 1
            k += 1
    return dims if j == len(xs) and k == len(out) else None


def _resolve_slice(item: slice, n: int, m: int) -> slice | None:
    """``item`` with integer bounds: a computed bound (``x[:, :H]`` with ``H`` a size) is read
    off the result's length ``m``."""
    start, stop, step = item.start, item.stop, 1 if item.step is None else item.step
    if not isinstance(step, int) or step < 1:
        return None
    if isinstance(start, (int, type(None))) and isinstance(stop, (int, type(None))):
        return slice(start, stop, step)
    if isinstance(start, (int, type(None))):  # computed stop
        first = slice(start, None, step).indices(n)[0]
        return slice(first, first + (m - 1) * step + 1 if m else first, step)
    if isinstance(stop, (int, type(None))) and step == 1:  # computed start
        end = slice(None, stop).indices(n)[1]
        return slice(end - m, end, 1)
    return None


class _Gather(tuple):
    """The values of a constant 1-D integer index tensor: output position o reads ``self[o]``."""


def _constant_index(node: fx.Node) -> _Gather | None:
    value = _attribute(node) if node.op == "get_attr" else None
    if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.is_floating_point() \
            or value.dtype == torch.bool:
        return None
    return _Gather(int(v) for v in value.tolist())


def _getitem(node: fx.Node, spec: OpSpec, x: Any, xs: Shape | None, out: Shape) -> Rule | None:
    src, index = node.args[0], node.args[1] if len(node.args) > 1 else None
    if isinstance(src, fx.Node) and src.op == "get_attr":
        return NO_PULLS  # a table of parameters or constants (swin's relative position bias)
    if isinstance(src, fx.Node) and element_shapes(src) is not None:
        if not isinstance(index, int):
            return None
        return Rule({None: [Product(src.name, index, [(k, None) for k in range(len(out))])]})
    if xs is None:
        return NO_PULLS
    tagged = spec.get("index")
    if isinstance(tagged, tuple) and tagged and tagged[0] in ("select", "slice_dim"):
        d = _norm(tagged[1], len(xs))
        pick = tagged[2] if tagged[0] == "select" else slice(*tagged[2:5])
        index = (slice(None),) * d + (pick,)
    return _product(node, x, _index_dims(index, xs, out))


def _index(node: fx.Node, spec: OpSpec, x: Any, xs: Shape | None, out: Shape) -> Rule | None:
    """aten's ``x[i0, i1, ...]``: a ``None`` index keeps its dim (``x[:, idx]``); a constant
    index tensor gathers (as :func:`_getitem`); a table of parameters has no data operand."""
    if (isinstance(x, fx.Node) and x.op == "get_attr") or xs is None:
        return NO_PULLS
    indices = node.args[1] if len(node.args) > 1 else node.kwargs.get("indices", ())
    index = tuple(slice(None) if i is None else i for i in indices)
    return _product(node, x, _index_dims(index, xs, out))


def _constant(node: fx.Node, spec: OpSpec, x: Any, xs: Any, out: Any) -> Rule | None:
    return NO_PULLS  # made from sizes alone (arange, zeros, full): no operand to pull from


def _batch_norm(node: fx.Node, spec: OpSpec, x: fx.Node, xs: Shape, out: Any) -> Rule | None:
    """Batch norm in eval mode, the mode the property means: with running statistics a
    per-channel affine map, whatever flag torch.export baked in (it traces in train mode; see
    :func:`alphac.modes.follows_mode`). A functional call that hard-codes ``training=True``
    itself, or has no running statistics (a module with ``track_running_stats=False`` too),
    normalizes with batch statistics in eval mode too:
    every (batch, spatial) position of the channel. aten's tuple form keeps element 0."""
    if node.op == "call_module":  # without running statistics eval mode uses batch statistics
        training = spec.get("running_stats") is False
    else:
        training = not follows_mode(node) and node.kwargs.get(
            "training", node.args[5] if len(node.args) > 5 else False) is True
    if training:
        if prod(xs) // xs[1] <= 1:
            return NO_PULLS
        dims = [(1, None) if k == 1 else (-1, full(n)) for k, n in enumerate(xs)]
    else:
        dims = [(k, None) for k in range(len(xs))]
    stats = Product(x.name, None, dims)
    if element_shapes(node) is None:
        return Rule({None: [stats]})
    return Rule({0: [stats]}, default=[Whole(x.name, None, xs)])


def _size(node: fx.Node, spec: OpSpec, x: Any, xs: Any, out: Any) -> Rule | None:
    return NO_PULLS if out is None else None  # a tensor-valued attribute (x.T) is not modelled


_UNARY_KINDS = (
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu",
    "elu", "dropout", "identity", "neg", "drop_path",
)
_BUILDERS: dict[str, Callable[..., Rule | None]] = {
    **dict.fromkeys(_UNARY_KINDS, _unary), **dict.fromkeys(("add", "sub", "mul", "div"), _binary),
    "conv": _conv, "max_pool": _pool, "avg_pool": _pool, "adaptive_avg_pool": _adaptive,
    "adaptive_max_pool": _adaptive, "linear": _linear, "layer_norm": _layer_norm,
    "group_norm": _group_norm, "batch_norm": _batch_norm, "softmax": _softmax,
    "log_softmax": _softmax, "reduce": _reduce, "matmul": _matmul, "einsum": _einsum,
    "sdpa": _sdpa, "cat": _cat, "stack": _cat, "chunk": _split, "split": _split,
    "tensor_split": _split, "unbind": _unbind, "roll": _roll, "masked_fill": _unary,
    "compare": _unary,  # a boolean result: no derivative (no pulls)
    **dict.fromkeys(("flatten", "reshape", "unsqueeze", "squeeze", "unflatten"), _reshape),
    "permute": _permute, "transpose": _permute, "expand": _expand, "getitem": _getitem,
    "pad": _pad,
    "size": _size, "index": _index, "arange": _constant, "full": _constant,
}
#: Builders that work without a float data operand (they read their operands themselves).
_FREE_OPERANDS = {"matmul", "einsum", "sdpa", "cat", "stack", "getitem", "size", "add", "sub",
                  "mul", "div", "index", "arange", "full"}


def build_rule(node: fx.Node, spec: OpSpec, modules: dict[str, nn.Module]) -> Rule:
    """The :class:`Rule` of ``node``; top (with one warning per kind) when it cannot be modelled.

    Pre: ``node`` and its operands carry ``meta['tensor_meta']`` (concrete shapes).
    Post: every pull's source is a float-tensor operand of ``node`` (get_attr excluded).
    """
    builder = _BUILDERS.get(spec.kind)
    what = spec.kind if spec.kind != "unknown" else str(spec.get("target"))
    if builder is None:
        return top_rule(node, what)
    out = float_shape(node)
    if out is None and element_shapes(node) is None and spec.kind != "size":
        return NO_PULLS  # a non-float result (shape arithmetic, masks) carries no derivative
    x = _data(node)
    xs = float_shape(x)
    if xs is None and spec.kind not in _FREE_OPERANDS:
        return Rule(default=_extras(node, ()))
    try:
        args = (node, spec, x, xs, out) + ((modules,) if spec.kind == "conv" else ())
        rule = builder(*args)
    except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError, AttributeError):
        rule = None
    return rule if rule is not None else top_rule(node, f"{what} with these arguments")
