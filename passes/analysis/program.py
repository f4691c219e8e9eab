"""Candidate programs: small dataflow graphs as immutable values, analysed without building fx.

A :class:`Program` is what the synthesizer weighs: ops (an :class:`OpSpec` plus operand indices),
named inputs and outputs. Value ``i`` of a program is input ``i`` for ``i < len(inputs)``, else
the result of op ``i - len(inputs)``; an op's operands index earlier values, in the operand order
of the registry's rules (:mod:`alphac.passes.analysis.registry`). Widths are expressions in the
input's symbols (``out_channels=2*C``, ``C/4``), so one program instantiates in every instance of
a block: :meth:`Program.instantiate` substitutes a context's bindings, giving the concrete specs
the rules read. A :class:`ProgramOp` may name a ``source`` (the module or parameter it came from
when lifted from a traced graph), so splicing an unchanged op keeps its weights; synthesized ops
have none.

Example (a bottleneck at a quarter of the width)::

    C = dim("C")
    p = (Program.of_inputs("x")
         .append(OpSpec.of("conv", kernel=(1, 1), in_channels=C, out_channels=C / 4, ...), 0)
         .append(OpSpec.of("relu"), 1)
         .append(OpSpec.of("conv", kernel=(3, 3), in_channels=C / 4, out_channels=C, ...), 2)
         .with_outputs(3))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import sympy

from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.shape_dims import _walk

__all__ = ["Program", "ProgramOp", "substitute", "value_at"]


@dataclass(frozen=True)
class ProgramOp:
    """One op of a program: its spec, the values it reads, and where it came from (if lifted)."""

    spec: OpSpec
    operands: tuple[int, ...]
    source: str | None = None
    #: What :func:`~alphac.passes.analysis.program_infer.lift` read off the trace where the rules
    #: cannot tell: ``floats`` the float structure of the value (True/False, a tuple of those for
    #: a tuple value; None: derived from the operands), ``fallback`` the traced shape used as
    #: constants where the op has no shape rule (or it disagreed with the trace), ``fixed_params``
    #: a constant parameter count where the cost rule's formula does not count the op's weights
    #: (a shared module counted once, an unknown module). Hand-built ops leave them None.
    floats: Any = None
    fallback: Any = None
    fixed_params: int | None = None
    #: A synthesized op that starts from the parent's module at this path, its channels mapped
    #: (:mod:`alphac.passes.transform.keep_weights`); splice marks the module it makes.
    origin: str | None = None


@dataclass(frozen=True)
class Program:
    """An immutable, hashable small dataflow graph (see the module docstring).

    ``inputs`` name the program's inputs; ``outputs`` are value indices. Appending returns a new
    program that shares this one as its prefix (analyses memoise facts per prefix).
    """

    inputs: tuple[str, ...]
    ops: tuple[ProgramOp, ...] = ()
    outputs: tuple[int, ...] = ()

    @classmethod
    def of_inputs(cls, *names: str) -> Program:
        return cls(tuple(names))

    @property
    def size(self) -> int:
        """How many values: inputs plus op results."""
        return len(self.inputs) + len(self.ops)

    def append(self, spec: OpSpec, *operands: int, source: str | None = None) -> Program:
        """This program with one more op reading ``operands`` (earlier value indices)."""
        bad = [i for i in operands if not 0 <= i < self.size]
        if bad:
            raise ValueError(f"operands {bad} do not name values of a program with "
                             f"{self.size} values")
        return replace(self, ops=(*self.ops, ProgramOp(spec, tuple(operands), source)))

    def with_outputs(self, *values: int) -> Program:
        """This program returning ``values`` (value indices)."""
        bad = [i for i in values if not 0 <= i < self.size]
        if bad:
            raise ValueError(f"outputs {bad} do not name values of this program")
        return replace(self, outputs=tuple(values))

    def prefix(self, n_ops: int) -> Program:
        """The program made of the first ``n_ops`` ops (no outputs)."""
        return Program(self.inputs, self.ops[:n_ops])

    def instantiate(self, bindings: Mapping[sympy.Symbol, int]) -> tuple[OpSpec, ...]:
        """The concrete spec of every op: width expressions evaluated at ``bindings``."""
        return tuple(substitute(op.spec, bindings) for op in self.ops)


def substitute(spec: OpSpec, bindings: Mapping[sympy.Symbol, int]) -> OpSpec:
    """``spec`` with every sympy expression among its params evaluated at ``bindings`` (an
    integer where it evaluates to one). Example: ``out_channels=2*C`` at ``{C: 64}`` -> 128."""
    if not any(_symbolic(v) for _, v in spec.params):
        return spec
    return OpSpec(spec.kind, tuple((k, _value(v, bindings)) for k, v in spec.params))


def value_at(value: Any, bindings: Mapping[sympy.Symbol, int]) -> Any:
    """A param value (an expression, a tuple of them, a constant) evaluated at ``bindings``:
    an int where it evaluates to one. Example: ``value_at(C / 4, {C: 64}) == 16``."""
    return _value(value, bindings)


def _symbolic(value: Any) -> bool:
    if isinstance(value, sympy.Basic):
        return True
    return isinstance(value, tuple) and any(_symbolic(v) for v in value)


def _value(value: Any, bindings: Mapping[sympy.Symbol, int]) -> Any:
    if isinstance(value, sympy.Basic):
        try:  # the fast exact walk; an expression it cannot read goes through subs
            exact = Fraction(_walk(value, bindings))
            if exact.denominator == 1:
                return int(exact)
        except (KeyError, TypeError, ValueError):
            pass
        result = value.subs(bindings)
        return int(result) if result.is_Integer else result
    if isinstance(value, tuple):
        return tuple(_value(v, bindings) for v in value)
    return value
