"""The op registry's core: :class:`OpSpec`, :class:`Ref`, :class:`OpKind` and the form tables.

See the package docstring (:mod:`alphac.passes.analysis.registry`) for the design.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import sympy

__all__ = [
    "DEPTH_CLASSES",
    "LAYOUTS",
    "REGISTRY",
    "CallForm",
    "OpCost",
    "OpKind",
    "OpSpec",
    "Ref",
    "call_form",
    "kind_of",
    "module_form",
    "register",
]


@dataclass(frozen=True)
class Ref:
    """Operand ``index`` of an op, standing where an argument is another value of the program."""

    index: int

    def __repr__(self) -> str:
        return f"%{self.index}"


def resolve(value: Any, ins: tuple[Any, ...]) -> Any:
    """``value`` with every :class:`Ref` replaced by its operand's value (tuples recursively)."""
    if isinstance(value, Ref):
        return ins[value.index] if value.index < len(ins) else None
    if isinstance(value, tuple):
        return tuple(resolve(v, ins) for v in value)
    return value


def refs(value: Any) -> list[int]:
    """The operand indices ``value`` refers to, in order."""
    if isinstance(value, Ref):
        return [value.index]
    if isinstance(value, tuple):
        return [i for v in value for i in refs(v)]
    return []


@dataclass(frozen=True)
class OpSpec:
    """An op as a value: canonical ``kind`` and sorted ``params`` (hashable constants and Refs).

    Example: ``x.view(B, -1, 64)`` with ``B = x.size(0)`` is ``OpSpec("reshape",
    (("shape", (%1, -1, 64)),))`` with operands ``(x, B)``.
    """

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, kind: str, **params: Any) -> OpSpec:
        """``OpSpec.of("conv", kernel=(3, 3), ...)``: params sorted by name."""
        return cls(kind, tuple(sorted(params.items())))

    def get(self, key: str, default: Any = None) -> Any:
        """The raw param (Refs unresolved)."""
        for k, v in self.params:
            if k == key:
                return v
        return default

    def value(self, key: str, ins: tuple[Any, ...], default: Any = None) -> Any:
        """The param with its Refs resolved against the operand values ``ins``."""
        raw = self.get(key, _MISSING)
        return default if raw is _MISSING else resolve(raw, ins)

    @property
    def cls(self) -> str:
        """Depth class: ``linear``, ``nonlinear``, ``transparent``, or ``unknown``."""
        kind = REGISTRY.get(self.kind)
        return kind.depth if kind is not None else "unknown"


_MISSING = object()


class OpCost(NamedTuple):
    """Symbolic cost of one op: parameter elements, matrix FLOPs, other FLOPs."""

    params: sympy.Expr
    flops: sympy.Expr
    other: sympy.Expr


DEPTH_CLASSES = frozenset({"linear", "nonlinear", "transparent"})
#: How an op places features (``None``: it tells nothing): ``channel_first`` (conv, batch norm,
#: pools: NCHW), ``feature_last`` (linear, layer norm: features last), ``attention`` (matmul and
#: attention maps: (B, heads, N, d)), ``preserve`` (elementwise: the operand's layout), ``permute``
#: (the shape rule moves the layout letters).
LAYOUTS = frozenset({"channel_first", "feature_last", "attention", "preserve", "permute", None})

ShapeRule = Callable[[OpSpec, tuple[Any, ...]], Any]
MixingRule = Callable[[OpSpec, tuple[Any, ...], Any], Any]
CostRule = Callable[[OpSpec, tuple[Any, ...], Any], OpCost]


@dataclass(frozen=True)
class OpKind:
    """One op kind and all its rules (see the package docstring for the rule signatures)."""

    name: str
    depth: str
    shape: ShapeRule
    mixing: MixingRule
    cost: CostRule
    layout: str | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.depth not in DEPTH_CLASSES:
            raise ValueError(f"op kind {self.name!r}: depth class {self.depth!r} is not one of "
                             f"{sorted(DEPTH_CLASSES)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"op kind {self.name!r}: unknown layout effect {self.layout!r}")


REGISTRY: dict[str, OpKind] = {}


def register(*kinds: OpKind) -> None:
    """Add op kinds; a kind is defined once (a second definition is a bug)."""
    for kind in kinds:
        if kind.name in REGISTRY:
            raise ValueError(f"op kind {kind.name!r} is registered twice")
        REGISTRY[kind.name] = kind


def kind_of(spec: OpSpec) -> OpKind | None:
    """The registered kind of ``spec``, None for an unknown op."""
    return REGISTRY.get(spec.kind)


# ---- forms: how a traced program spells each op --------------------------------------------------
#: A module form: (module class, builder) where ``builder(module) -> (kind, params)``.
ModuleBuilder = Callable[[Any], tuple[str, dict[str, Any]]]
MODULE_FORMS: list[tuple[type, ModuleBuilder]] = []
#: Module class -> its form's builder, the latest registration winning (what normalisation looks
#: up along a module's MRO); kept beside ``MODULE_FORMS`` by :func:`module_form`.
MODULE_FORM_OF: dict[type, ModuleBuilder] = {}


def module_form(*classes: type) -> Callable[[ModuleBuilder], ModuleBuilder]:
    """Decorator: ``builder(module) -> (kind, params)`` for modules of ``classes`` (isinstance;
    the most recently registered subclass-specific form wins over a base-class form)."""

    def deco(builder: ModuleBuilder) -> ModuleBuilder:
        MODULE_FORMS.extend((cls, builder) for cls in classes)
        MODULE_FORM_OF.update((cls, builder) for cls in classes)
        return builder

    return deco


@dataclass(frozen=True)
class CallForm:
    """A function/method/aten spelling: its kind and its signature after the first operand.

    ``names`` are the parameter names of the arguments after the input (positional order);
    ``defaults`` fill missing ones; ``varargs`` names a parameter that collects extra positional
    arguments (``x.view(2, 3)`` == ``x.view((2, 3))``); ``finish(bound, shapes, name)`` turns the
    bound arguments (operands already Refs; ``shapes`` gives the concrete shape of each Ref's
    operand) into the spec's params, or returns None when it cannot (the op is then unknown).
    """

    kind: str
    names: tuple[str, ...] = ()
    defaults: Mapping[str, Any] | None = None
    varargs: str | None = None
    finish: Callable[[dict[str, Any], Callable[[Any], Any], str], dict[str, Any] | None] | None = None
    first: str = "input"


CALL_FORMS: dict[str, CallForm] = {}


def call_form(form: CallForm, *names: str) -> None:
    """Register ``form`` under each call name (a function's ``__name__``, a method name, or an aten
    overload packet name as :func:`target_name` gives it)."""
    for name in names:
        if name in CALL_FORMS:
            raise ValueError(f"call form {name!r} is registered twice")
        CALL_FORMS[name] = form


def all_forms() -> Iterable[str]:
    """Every call name with a form (for tests and docs)."""
    return CALL_FORMS.keys()


# ---- materialising: an op kind becomes fx again ---------------------------------------------------
@dataclass(frozen=True)
class Built:
    """How to spell a concrete spec in fx: ``op`` is ``call_module`` (``target`` a fresh
    ``nn.Module``), ``call_function`` (a callable) or ``call_method`` (a method name); ``args``
    and ``kwargs`` hold :class:`Ref` where an operand goes (tuples recursively)."""

    op: str
    target: Any
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


class NotMaterialisable(ValueError):
    """The spec cannot become fx again (say why: an unknown op, a library-only module, ...)."""


#: kind -> ``build(spec, shapes) -> Built``; ``shapes`` are the operands' concrete shapes (a
#: tuple of ints, or None where unknown), for modules whose class depends on the rank.
BuildRule = Callable[[OpSpec, tuple[Any, ...]], Built]
BUILDS: dict[str, BuildRule] = {}


def register_builds(builds: Mapping[str, BuildRule]) -> None:
    """Register each kind's materialise rule (a family file, next to its kinds' other rules)."""
    for kind, rule in builds.items():
        if kind not in REGISTRY or kind in BUILDS:
            raise ValueError(f"build for {kind!r}: not a registered kind, or built twice")
        BUILDS[kind] = rule


def materialise(spec: OpSpec, shapes: tuple[Any, ...] = ()) -> Built:
    """The fx spelling of the concrete ``spec`` (no sympy left in its params), such that
    normalising the built node gives ``spec`` back. Raises :class:`NotMaterialisable`.

    Example: ``OpSpec.of("relu")`` -> ``Built("call_module", nn.ReLU())``;
    ``OpSpec.of("add", other=Ref(1))`` -> ``Built("call_function", torch.add, (%0, %1))``.
    """
    rule = BUILDS.get(spec.kind)
    if rule is None:
        raise NotMaterialisable(f"op kind {spec.kind!r} has no materialise rule")
    bad = [k for k, v in spec.params if isinstance(v, sympy.Basic) and not v.is_Integer]
    if bad:
        raise NotMaterialisable(f"{spec.kind}: params {bad} are still symbolic; instantiate first")
    return rule(spec, shapes)
