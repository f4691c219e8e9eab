"""Index boxes and 1-D maps: the exact set algebra under the mixing analysis.

The mixing analysis (:mod:`alphac.passes.analysis.mixing`) runs *backwards*: from a set of output
indices it asks which input indices reach them with a nonzero derivative. A set of indices of a
tensor is a union of *boxes*; a box is a tuple with one bitset (a Python ``int``) per dimension,
bit ``p`` of entry ``d`` meaning "position ``p`` along dim ``d``". Each op's dependency relation
is a product of per-dimension relations (1-D maps: windows, groups, tiling, shifts) or a reshape
(regrouped by mixed-radix decomposition), so the preimage of a box is again an exact union of
boxes. the mixing rules of the op registry (:mod:`alphac.passes.analysis.registry`) build a :class:`Pull` per op operand.

Example: ``stencil_map(4, 4, 3, 1, 1, 1)`` (3x3 conv, stride 1, pad 1, size 4) maps the output
position set ``{2}`` (``0b100``) to ``{1, 2, 3}`` (``0b1110``); ``decompose(0b0110, (2, 2))`` is
``[(0b01, 0b10), (0b10, 0b01)]``: flat indices 1 and 2 of a 2x2 tensor are (0, 1) and (1, 0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache, reduce
from itertools import product
from math import prod
from operator import or_

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

Box = tuple[int, ...]
#: One input dim of a product pull: (output dim, map) copies/maps that output dim's bitset;
#: (-1, constant) puts a constant bitset there.
DimMap = tuple[int, "Callable[[int], int] | int | None"]


def full(n: int) -> int:
    """The bitset of every position ``0..n-1``."""
    return (1 << n) - 1


class TableMap:
    """A 1-D relation as a table: output position ``o`` -> bitset of input positions."""

    __slots__ = ("masks", "out_full", "union")

    def __init__(self, masks: Iterable[int]) -> None:
        self.masks = tuple(masks)
        self.out_full = full(len(self.masks))
        self.union = reduce(or_, self.masks, 0)

    def __call__(self, s: int) -> int:
        if s == self.out_full:
            return self.union
        masks, r = self.masks, 0
        while s:
            low = s & -s
            r |= masks[low.bit_length() - 1]
            s ^= low
        return r


def _pad_index(i: int, n: int, mode: str) -> int | None:
    if 0 <= i < n:
        return i
    if mode == "circular":
        return i % n
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    if mode == "reflect" and n > 1:
        i = -i if i < 0 else 2 * (n - 1) - i
        return i if 0 <= i < n else None
    return None


@lru_cache(maxsize=4096)
def stencil_map(n: int, m: int, k: int, s: int, p: int, d: int, mode: str = "zeros") -> TableMap | None:
    """Window of a conv/pool along one dim (input n, output m); None when it is the identity."""
    if k == 1 and s == 1 and p == 0 and n == m:
        return None
    masks = []
    for o in range(m):
        idx = (_pad_index(o * s - p + d * t, n, mode) for t in range(k))
        masks.append(reduce(or_, (1 << i for i in idx if i is not None), 0))
    return TableMap(masks)


@lru_cache(maxsize=1024)
def transposed_stencil_map(n: int, m: int, k: int, s: int, p: int, d: int) -> TableMap:
    """Inputs ``i`` feeding output ``o`` of a transposed conv: ``o = i*s - p + d*t``."""
    masks = []
    for o in range(m):
        r = 0
        for t in range(k):
            num = o + p - d * t
            if num % s == 0 and 0 <= num // s < n:
                r |= 1 << (num // s)
        masks.append(r)
    return TableMap(masks)


@lru_cache(maxsize=1024)
def adaptive_map(n: int, m: int) -> TableMap | None:
    """Windows of an adaptive pool from n to m positions (PyTorch's floor/ceil rule)."""
    if n == m:
        return None
    return TableMap(full(-(-(o + 1) * n // m) - o * n // m) << (o * n // m) for o in range(m))


@lru_cache(maxsize=1024)
def group_map(c_in: int, c_out: int, groups: int) -> TableMap | None:
    """Channels of a grouped op: output channel o reads every input channel of its group."""
    if groups == c_in == c_out:
        return None
    gi, go = c_in // groups, c_out // groups
    return TableMap(full(gi) << ((o // go) * gi) for o in range(c_out))


@lru_cache(maxsize=1024)
def fold_map(n: int, m: int) -> TableMap:
    """Tiling (repeat) of n positions to m: output o reads input ``o mod n``."""
    return TableMap(1 << (o % n) for o in range(m))


@lru_cache(maxsize=1024)
def causal_map(length: int, keys: int) -> TableMap:
    """Causal attention: query l sees keys ``0..l``."""
    return TableMap(full(min(o + 1, keys)) for o in range(length))


@lru_cache(maxsize=1024)
def roll_map(n: int, shift: int) -> TableMap | None:
    """``torch.roll`` by ``shift`` along n positions: output o reads input ``(o - shift) mod n``."""
    if shift % n == 0:
        return None
    return TableMap(1 << ((o - shift) % n) for o in range(n))


@lru_cache(maxsize=1024)
def slice_map(start: int, step: int, m: int) -> TableMap:
    """``x[start::step]`` along one dim: output o reads ``start + o*step``."""
    return TableMap(1 << (start + o * step) for o in range(m))


def shift_in(offset: int, n: int) -> Callable[[int], int]:
    """Output positions ``offset..offset+n-1`` come from input ``0..n-1`` (cat)."""
    mask = full(n)
    return lambda s: (s >> offset) & mask


def shift_out(offset: int) -> Callable[[int], int]:
    """Output ``0..`` comes from input ``offset..`` (chunk/split)."""
    return lambda s: s << offset


class Pull:
    """Maps a box of this node's value to boxes of ``(src, elem)`` (elem: tuple element or None)."""

    __slots__ = ("src", "elem")

    def __init__(self, src: str, elem: int | None) -> None:
        self.src, self.elem = src, elem

    def apply(self, box: Box) -> tuple[Box, ...]:
        raise NotImplementedError


class Product(Pull):
    """A product of per-dim maps; ``guards`` are (output dim, mask) that must intersect."""

    __slots__ = ("dims", "guards")

    def __init__(self, src: str, elem: int | None, dims: Iterable[DimMap],
                 guards: Iterable[tuple[int, int]] = ()) -> None:
        super().__init__(src, elem)
        self.dims, self.guards = tuple(dims), tuple(guards)

    def apply(self, box: Box) -> tuple[Box, ...]:
        for od, mask in self.guards:
            if not box[od] & mask:
                return ()
        out = []
        for od, f in self.dims:
            if od < 0:
                out.append(f)
                continue
            v = box[od] if f is None else f(box[od])
            if not v:
                return ()
            out.append(v)
        return (tuple(out),)


class Whole(Pull):
    """Every position of a tensor of ``shape`` (the conservative answer)."""

    __slots__ = ("box",)

    def __init__(self, src: str, elem: int | None, shape: tuple[int, ...]) -> None:
        super().__init__(src, elem)
        self.box = tuple(full(n) for n in shape)

    def apply(self, box: Box) -> tuple[Box, ...]:
        return (self.box,) if all(self.box) else ()


def compose(sets: list[int], sizes: list[int]) -> int:
    """The flat (row-major) bitset of the product of ``sets`` over dims ``sizes``."""
    flat, numel = sets[0], sizes[0]
    for s, m in zip(sets[1:], sizes[1:], strict=True):
        if flat == full(numel) and s == full(m):
            flat = full(numel * m)
        else:
            new, f = 0, flat
            while f:
                low = f & -f
                new |= s << ((low.bit_length() - 1) * m)
                f ^= low
            flat = new
        numel *= m
    return flat


def decompose(flat: int, sizes: tuple[int, ...]) -> list[Box]:
    """The flat bitset ``flat`` over dims ``sizes`` as an exact union of boxes."""
    if len(sizes) == 1:
        return [(flat,)]
    rest = prod(sizes[1:])
    if flat == full(rest * sizes[0]):
        return [tuple(full(n) for n in sizes)]
    mask, groups, i = full(rest), {}, 0
    while flat:
        chunk = flat & mask
        if chunk:
            groups[chunk] = groups.get(chunk, 0) | (1 << i)
        flat >>= rest
        i += 1
    return [(firsts, *sub) for chunk, firsts in groups.items() for sub in decompose(chunk, sizes[1:])]


class Reshape(Pull):
    """reshape/view/flatten/squeeze/unsqueeze: regroup dims by matching row-major segments."""

    __slots__ = ("segments", "in_shape", "out_shape")

    def __init__(self, src: str, elem: int | None, in_shape: tuple[int, ...],
                 out_shape: tuple[int, ...]) -> None:
        super().__init__(src, elem)
        self.in_shape, self.out_shape = in_shape, out_shape
        ins = [j for j, n in enumerate(in_shape) if n != 1]
        outs = [k for k, m in enumerate(out_shape) if m != 1]
        self.segments: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        ci: list[int] = []
        co: list[int] = []
        pi = po = 1
        while ins or outs:
            if ins and (pi <= po or not outs):
                ci.append(ins.pop(0))
                pi *= in_shape[ci[-1]]
            else:
                co.append(outs.pop(0))
                po *= out_shape[co[-1]]
            if pi == po:
                self.segments.append((tuple(ci), tuple(co)))
                ci, co, pi, po = [], [], 1, 1

    def apply(self, box: Box) -> tuple[Box, ...]:
        parts = []
        for ci, co in self.segments:
            if len(ci) == 1 and len(co) == 1:
                parts.append([(box[co[0]],)])
                continue
            flat = compose([box[k] for k in co], [self.out_shape[k] for k in co])
            parts.append(decompose(flat, tuple(self.in_shape[j] for j in ci)))
        result = []
        for combo in product(*parts):
            out = [1] * len(self.in_shape)
            for (ci, _), sub in zip(self.segments, combo, strict=True):
                for j, v in zip(ci, sub, strict=True):
                    out[j] = v
            result.append(tuple(out))
        return tuple(result)


def float_shape(value: object) -> tuple[int, ...] | None:
    """The shape of a node whose value is a floating-point tensor, else None."""
    if not isinstance(value, fx.Node):
        return None
    meta = value.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata) and meta.dtype.is_floating_point:
        return tuple(int(s) for s in meta.shape)
    return None


def element_shapes(value: fx.Node) -> list[tuple[int, ...] | None] | None:
    """Per-element float shapes of a tuple-valued node (chunk, split, ...), else None."""
    meta = value.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata) or not isinstance(meta, (tuple, list)):
        return None  # TensorMetadata is itself a NamedTuple
    return [tuple(int(s) for s in m.shape) if isinstance(m, TensorMetadata)
            and m.dtype.is_floating_point else None for m in meta]


def broadcast_dims(in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                   out_dims: list[int] | None = None) -> list[DimMap] | None:
    """Dims of an operand broadcast (right-aligned) or tiled to ``out_shape``; None if neither."""
    out_dims = list(range(len(out_shape))) if out_dims is None else out_dims
    off = len(out_dims) - len(in_shape)
    if off < 0:
        return None
    dims: list[DimMap] = []
    for j, n in enumerate(in_shape):
        k = out_dims[j + off]
        m = out_shape[k]
        if n == m:
            dims.append((k, None))
        elif n == 1:
            dims.append((-1, 1))
        elif n and m % n == 0:
            dims.append((k, fold_map(n, m)))
        else:
            return None
    return dims


def _merge(x: Box, y: Box) -> Box | None:
    """One box equal to ``x | y`` when there is one (nested, or differing in one dim)."""
    diff, x_in_y, y_in_x = -1, True, True
    for d, (u, v) in enumerate(zip(x, y, strict=True)):
        if u != v:
            x_in_y &= not u & ~v
            y_in_x &= not v & ~u
            diff = d if diff == -1 else -2
    if x_in_y or y_in_x:
        return y if x_in_y else x
    if diff >= 0:
        return x[:diff] + (x[diff] | y[diff],) + x[diff + 1:]
    return None


def simplify(boxes: list[Box]) -> list[Box]:
    """The same union of boxes with duplicates, nested boxes and one-dim neighbours merged."""
    out = list(dict.fromkeys(boxes))
    i = 0
    while i < len(out):
        for j in range(i + 1, len(out)):
            merged = _merge(out[i], out[j])
            if merged is not None:
                out[i] = merged
                del out[j]
                i = -1
                break
        i += 1
    return out


class Rule:
    """The pulls of one op, per element of its value (``None``: a plain tensor). A registry rule
    names its sources by operand index; the mixing driver maps them to values of the graph."""

    __slots__ = ("by_elem", "default")

    def __init__(self, by_elem: dict[int | None, Iterable[Pull]] | None = None,
                 default: Iterable[Pull] = ()) -> None:
        self.by_elem = {k: tuple(v) for k, v in (by_elem or {}).items()}
        self.default = tuple(default)

    def pulls(self, elem: int | None) -> tuple[Pull, ...]:
        return self.by_elem.get(elem, self.default)


#: The rule of an op whose value has no derivative with respect to any operand.
NO_PULLS = Rule()
