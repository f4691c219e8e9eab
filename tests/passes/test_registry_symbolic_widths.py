"""A lifted program's linear holds its widths as expressions of the block's symbols (timm
XCiT's ``4*C`` MLP): its shape rule gives that width instead of crashing in sympy.Rational."""

from __future__ import annotations

import pytest
import sympy

from alphac.passes.analysis.registry import REGISTRY, OpSpec
from alphac.passes.analysis.shape_dims import TensorShape
from alphac.symbols import BATCH, dim

C, N = dim("C"), dim("N")


@pytest.mark.parametrize(("fin", "fout", "want"), [
    (C, 4 * C, 4 * C),
    (C, 10, sympy.Integer(10)),
    (32, 128, 4 * C),  # concrete widths: the ratio scales the symbolic width
])
def test_linear_width_from_symbolic_or_concrete_features(fin, fout, want) -> None:
    spec = OpSpec.of("linear", in_features=fin, out_features=fout, bias=True)
    out = REGISTRY["linear"].shape(spec, (TensorShape((BATCH, N, C), "NLC"),))
    assert out.dims == (BATCH, N, want)
