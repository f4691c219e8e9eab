"""Helpers the op families share: operand access, elementwise rules, costs, extra operands."""

from __future__ import annotations

from typing import Any

import sympy

from alphac.passes.analysis.mixing_boxes import (
    NO_PULLS,
    Product,
    Pull,
    Rule,
    Whole,
    broadcast_dims,
)
from alphac.passes.analysis.registry.core import OpCost, OpSpec
from alphac.passes.analysis.shape_dims import TensorShape

__all__ = [
    "FREE",
    "NO_PULLS",
    "ZERO",
    "extras",
    "free",
    "is_shape",
    "numel",
    "per_element",
    "same_shape",
    "tensor",
    "unary_mixing",
    "wrap_dim",
]

ZERO = sympy.Integer(0)
FREE = OpCost(ZERO, ZERO, ZERO)


def tensor(ins: tuple[Any, ...], i: int = 0) -> TensorShape | None:
    """Operand ``i`` when it is a (symbolic) tensor, else None."""
    return ins[i] if i < len(ins) and isinstance(ins[i], TensorShape) else None


def numel(t: TensorShape) -> sympy.Expr:
    return sympy.Mul(*t.dims)


def same_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    """Shape rule of an op whose value has its input's shape and layout."""
    return tensor(ins)


def free(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    """Cost rule of an op that computes nothing (shape-only, identity at inference)."""
    return FREE


def per_element(flops: int):
    """Cost rule: ``flops`` other-FLOPs per output element."""

    def cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
        if not isinstance(out, TensorShape):
            return FREE
        return OpCost(ZERO, ZERO, flops * numel(out))

    return cost


def extras(ins: tuple[Any, ...], modelled: set[int] | frozenset[int]) -> list[Pull]:
    """Whole pulls for the float-tensor operands a rule does not model (a weight computed in the
    graph, say): the conservative answer for them. Constant operands (``get_attr``) are dropped
    by the driver, so pulling them costs nothing."""
    return [Whole(i, None, s) for i, s in enumerate(ins)
            if i not in modelled and is_shape(s)]


def is_shape(value: Any) -> bool:
    """A concrete float-tensor value of the mixing domain (a tuple of ints)."""
    return isinstance(value, tuple) and all(isinstance(v, int) for v in value)


def wrap_dim(d: int, rank: int) -> int:
    """``d`` as a non-negative dim of a tensor of ``rank`` (0 for a 0-d tensor)."""
    return d % rank if rank else 0


def unary_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Mixing rule of an elementwise op of one tensor operand (broadcast to the output)."""
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out):
        return NO_PULLS if not is_shape(out) else None
    dims = broadcast_dims(xs, out)
    return None if dims is None else Rule({None: [Product(0, None, dims), *extras(ins, {0})]})
