"""A reshape of window-partition sizes (nested floors and mods, as timm DaViT and Hiera pad
and split): the shape rule answers without simplifying the big expressions, keeping the layout
letters of the dims it keeps structurally."""

from __future__ import annotations

import sympy

from alphac.passes.analysis.registry import REGISTRY, OpSpec, Ref
from alphac.passes.analysis.shape_dims import TensorShape
from alphac.symbols import BATCH, dim


def _padded_windows(size: sympy.Expr, levels: int) -> sympy.Expr:
    """The number of 7-wide windows after padding, ``levels`` times (a stage per level)."""
    for _ in range(levels):
        size = sympy.floor((size + sympy.Mod(7 - sympy.Mod(size, 7), 7)) / 7) * 7 // 2
    return size


def test_reshape_of_big_sizes_keeps_the_dims_it_keeps():
    h, c = dim("H"), dim("C")
    n = _padded_windows(h, 4) ** 2
    assert sympy.count_ops(n) > 40
    x = TensorShape((BATCH, n, c), "NLC")
    spec = OpSpec.of("reshape", shape=(Ref(1), Ref(2), 4, Ref(3)))
    out = REGISTRY["reshape"].shape(spec, (x, BATCH, n, c / 4))
    assert out.dims[:2] == (BATCH, n) and sympy.simplify(out.dims[3] - c / 4) == 0
    assert out.layout[:2] == "NL"
