"""The lattice protocol shared by every program property.

A lattice is an object (it may carry parameters, e.g. the rank of a tensor) with ``bottom``,
``top``, ``join`` (least upper bound), ``meet`` (greatest lower bound) and ``leq`` (the partial
order). In alphac the order always reads "``a <= b``: b is at least as strong a requirement / as
much behaviour as a". For example, in the mixing lattice NONE <= ONE_TO_ONE <= MANY_TO_ONE <=
ALL_TO_ONE, so ``join(ONE_TO_ONE, MANY_TO_ONE) == MANY_TO_ONE``; in a depth lattice over integers
``join(2, 5) == 5`` and ``meet(2, 5) == 2``.

:func:`check_laws` states the laws every lattice must satisfy; property-based tests feed it
random elements.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from functools import reduce
from typing import Generic, TypeVar

T = TypeVar("T")


class Lattice(ABC, Generic[T]):
    """A bounded lattice over values of type ``T``."""

    @abstractmethod
    def bottom(self) -> T:
        """The least element: ``leq(bottom(), x)`` for every x."""

    @abstractmethod
    def top(self) -> T:
        """The greatest element: ``leq(x, top())`` for every x."""

    @abstractmethod
    def join(self, a: T, b: T) -> T:
        """The least upper bound of ``a`` and ``b``."""

    @abstractmethod
    def meet(self, a: T, b: T) -> T:
        """The greatest lower bound of ``a`` and ``b``."""

    def leq(self, a: T, b: T) -> bool:
        """``a <= b`` in the lattice order; by default derived as ``join(a, b) == b``."""
        return self.join(a, b) == b

    def join_all(self, values: Iterable[T]) -> T:
        """The join of any number of values (``bottom()`` for none)."""
        return reduce(self.join, values, self.bottom())

    def meet_all(self, values: Iterable[T]) -> T:
        """The meet of any number of values (``top()`` for none)."""
        return reduce(self.meet, values, self.top())


def check_laws(lattice: Lattice[T], a: T, b: T, c: T) -> None:
    """Assert the lattice laws on three elements; raises AssertionError naming the broken law."""
    j, m, le = lattice.join, lattice.meet, lattice.leq
    laws = {
        "join commutative": j(a, b) == j(b, a),
        "meet commutative": m(a, b) == m(b, a),
        "join associative": j(j(a, b), c) == j(a, j(b, c)),
        "meet associative": m(m(a, b), c) == m(a, m(b, c)),
        "join idempotent": j(a, a) == a,
        "meet idempotent": m(a, a) == a,
        "absorption join-meet": j(a, m(a, b)) == a,
        "absorption meet-join": m(a, j(a, b)) == a,
        "leq consistent with join": le(a, b) == (j(a, b) == b),
        "leq consistent with meet": le(a, b) == (m(a, b) == a),
        "bottom is least": le(lattice.bottom(), a),
        "top is greatest": le(a, lattice.top()),
    }
    broken = [name for name, ok in laws.items() if not ok]
    assert not broken, f"{type(lattice).__name__} breaks {broken} on {a!r}, {b!r}, {c!r}"
