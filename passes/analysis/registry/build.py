"""Helpers for the per-kind materialise rules (:func:`~.core.materialise`) of the family files.

Example: ``module(nn.ReLU)`` is the rule of ``relu``; ``function(torch.add)`` passes operand 0
and then every param as a keyword (``torch.add(%0, other=%1)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from alphac.passes.analysis.registry.core import BuildRule, Built, NotMaterialisable, OpSpec, Ref

__all__ = ["function", "method", "module", "need", "params_except", "thaw"]


def thaw(value: Any) -> Any:
    """A frozen param as a call argument: ``("slice", a, b, c)`` -> slice, ``"..."`` -> ...,
    sympy integers -> int (Refs stay Refs, replaced by nodes where the node is made)."""
    if isinstance(value, tuple):
        if len(value) == 4 and value[0] == "slice":
            return slice(*(thaw(v) for v in value[1:]))
        return tuple(thaw(v) for v in value)
    if value == "..." and isinstance(value, str):
        return Ellipsis
    if hasattr(value, "is_Integer") and value.is_Integer:
        return int(value)
    return value


def params_except(spec: OpSpec, drop: Iterable[str] = ()) -> dict[str, Any]:
    dropped = set(drop)
    return {k: thaw(v) for k, v in spec.params if k not in dropped}


def need(spec: OpSpec, *keys: str) -> list[Any]:
    """The params ``keys`` (thawed); NotMaterialisable names the missing ones."""
    missing = [k for k in keys if spec.get(k) is None]
    if missing:
        raise NotMaterialisable(f"{spec.kind}: params {missing} are needed to build it "
                                f"(a functional form whose weights are operands?)")
    return [thaw(spec.get(k)) for k in keys]


def module(factory: Callable[..., Any], *keys: str, **fixed: Any) -> BuildRule:
    """A rule building ``factory(**{key: param}, **fixed)``, called on operand 0."""

    def build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
        kwargs = dict(zip(keys, need(spec, *keys), strict=True))
        return Built("call_module", factory(**kwargs, **fixed), (Ref(0),))

    return build


def function(fn: Callable[..., Any], *positional: str, drop: Iterable[str] = (),
             first: bool = True) -> BuildRule:
    """A rule calling ``fn(%0, *positional params, **other params)`` (``first=False``: no %0)."""
    return _call("call_function", fn, positional, drop, first)


def method(name: str, *positional: str, drop: Iterable[str] = ()) -> BuildRule:
    """A rule calling ``%0.name(*positional params, **other params)``."""
    return _call("call_method", name, positional, drop, True)


def _call(op: str, target: Any, positional: tuple[str, ...], drop: Iterable[str],
          first: bool) -> BuildRule:
    def build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
        args = [thaw(spec.get(k)) for k in positional]
        kwargs = params_except(spec, (*positional, *drop))
        return Built(op, target, ((Ref(0),) if first else ()) + tuple(args),
                     tuple(sorted(kwargs.items())))

    return build
