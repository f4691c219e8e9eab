from __future__ import annotations

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

from alphac.lattice import Lattice, check_laws
from alphac.symbols import BATCH, canonical, dim, evaluate, same


class IntMax(Lattice[int]):
    """Integers 0..9 ordered by <=."""

    def bottom(self):
        return 0

    def top(self):
        return 9

    def join(self, a, b):
        return max(a, b)

    def meet(self, a, b):
        return min(a, b)


class BrokenMeet(IntMax):
    def meet(self, a, b):
        return max(a, b)


small = st.integers(0, 9)


@given(small, small, small)
def test_laws_hold_for_a_lattice(a, b, c):
    check_laws(IntMax(), a, b, c)


def test_laws_catch_a_broken_lattice():
    with pytest.raises(AssertionError, match="absorption"):
        check_laws(BrokenMeet(), 1, 2, 3)


def test_join_all_and_meet_all():
    lat = IntMax()
    assert lat.join_all([1, 5, 3]) == 5
    assert lat.meet_all([4, 2, 7]) == 2
    assert lat.join_all([]) == 0 and lat.meet_all([]) == 9


def test_symbols_are_shared_and_integer():
    assert dim("H") is dim("H")
    assert dim("H").is_integer and dim("H").is_positive
    assert BATCH is dim("B")
    with pytest.raises(ValueError):
        dim("1x")


def test_conv_output_size_simplifies_with_integer_symbols():
    h = dim("H")
    out = sympy.floor((h + 2 * 1 - 1 * (3 - 1) - 1) / 1) + 1
    assert same(out, h)
    assert canonical(out) == h
    assert evaluate(sympy.floor((h - 1) / 2) + 1, {h: 32}) == 16
    with pytest.raises(ValueError, match="no value for W"):
        evaluate(h + dim("W"), {h: 1})
