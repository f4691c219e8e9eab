"""The one factory for sympy symbols, and the one boundary where expressions are canonicalized.

All dimension symbols are integer and positive, so sympy can simplify ``floor((H + 2 - 3) / 1 + 1)``
to ``H``. Make symbols here and nowhere else: two ``sympy.Symbol("H")`` with different assumptions
are different symbols and would silently never compare equal.
"""

from __future__ import annotations

from functools import cache

import sympy

Expr = sympy.Expr


@cache
def dim(name: str) -> sympy.Symbol:
    """The dimension symbol called ``name`` (integer, positive); the same object on every call."""
    if not name or not name[0].isalpha():
        raise ValueError(f"a dimension symbol needs a name that starts with a letter, got {name!r}")
    return sympy.Symbol(name, integer=True, positive=True)


BATCH = dim("B")


def canonical(expr: int | Expr) -> Expr:
    """Canonical form of a dimension expression (integers become ``sympy.Integer``)."""
    return sympy.simplify(sympy.sympify(expr))


def same(a: int | Expr, b: int | Expr) -> bool:
    """Whether two dimension expressions are equal for every value of their symbols."""
    return sympy.simplify(sympy.sympify(a) - sympy.sympify(b)) == 0


def evaluate(expr: int | Expr, values: dict[sympy.Symbol, int]) -> int:
    """The integer value of ``expr`` with the given symbol values; every symbol must be bound."""
    out = sympy.sympify(expr).subs(values)
    if out.free_symbols:
        names = ", ".join(sorted(str(s) for s in out.free_symbols))
        raise ValueError(f"cannot evaluate {expr}: no value for {names}")
    return int(out)
