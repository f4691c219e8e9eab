"""From an fx node to an :class:`Op`: its canonical :class:`OpSpec` and the nodes its Refs index.

The only place that reads ``node.args``/``node.kwargs``/``node.target`` for the analyses. Every
fx node argument becomes an operand (numbered by first appearance, repeats share a Ref), so a rule
sees values, never nodes: the data input, tensors passed as weights or masks, sizes computed from
``x.shape``, tuples from ``split``. Constants are normalised (lists -> tuples, slices ->
``("slice", start, stop, step)``, ``...`` -> ``"..."``, dtypes -> strings); a non-tensor
placeholder bound to its default (timm's ``forward(x, attn_mask=None)``) reads as that default,
and a :class:`~alphac.modes.ModeValue` as its eval value (analyses mean eval mode).

Example: ``x.view(x.size(0), -1)`` -> ``Op(OpSpec("reshape", (("shape", (%1, -1)),)),
operands=(x, size_node))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from alphac.modes import eval_value, is_mode_value
from alphac.passes.analysis.registry.core import (
    CALL_FORMS,
    MODULE_FORM_OF,
    CallForm,
    OpSpec,
    Ref,
)

__all__ = ["Op", "module_spec", "normalize", "target_name"]


@dataclass(frozen=True)
class Op:
    """An op of a traced graph: its spec and the nodes its operand Refs index."""

    spec: OpSpec
    operands: tuple[fx.Node, ...]


def target_name(node: fx.Node) -> str:
    """The op name of a call: method name, aten overload packet, or function name."""
    target = node.target
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    name = getattr(target, "__name__", str(target))
    return name.rstrip("_") if name.endswith("_") and name != "__getitem__" else name.strip("_")


def placeholder_default(value: Any) -> Any:
    """``value``, or its default when it is a non-tensor placeholder with one."""
    if (isinstance(value, fx.Node) and value.op == "placeholder" and value.args
            and value.meta.get("tensor_meta") is None):
        return value.args[0]
    return value


class _Operands:
    """Assigns Refs to argument nodes by first appearance."""

    def __init__(self) -> None:
        self.nodes: list[fx.Node] = []
        self.index: dict[fx.Node, int] = {}

    def ref(self, node: fx.Node) -> Ref:
        if node not in self.index:
            self.index[node] = len(self.nodes)
            self.nodes.append(node)
        return Ref(self.index[node])

    def freeze(self, value: Any) -> Any:
        """A constant, hashable form of an argument, with nodes as Refs."""
        value = placeholder_default(value)
        if is_mode_value(value):
            return eval_value(value)
        if isinstance(value, fx.Node):
            return self.ref(value)
        if isinstance(value, list | tuple):
            return tuple(self.freeze(v) for v in value)
        if isinstance(value, slice):
            return ("slice", self.freeze(value.start), self.freeze(value.stop),
                    self.freeze(value.step))
        if value is Ellipsis:
            return "..."
        if isinstance(value, torch.dtype | torch.device | torch.memory_format):
            return str(value)
        if isinstance(value, dict):
            return tuple(sorted((k, self.freeze(v)) for k, v in value.items()))
        return value


class _Operand:
    """What a CallForm's ``finish`` may know of its operands at normalisation: ``shapes(ref)``
    is a Ref's concrete shape; ``shapes.constant(ref)`` the tensor of a constant operand (a
    parameter, buffer or constant read through ``get_attr``), so values that define the op (a
    constant mask, a gather's index) go into the spec, and the spec stays self-contained."""

    def __init__(self, operands: _Operands) -> None:
        self.operands = operands

    def __call__(self, ref: Any) -> tuple[int, ...] | None:
        if not isinstance(ref, Ref):
            return None
        meta = self.operands.nodes[ref.index].meta.get("tensor_meta")
        return tuple(int(s) for s in meta.shape) if hasattr(meta, "shape") else None

    def constant(self, ref: Any) -> torch.Tensor | None:
        if not isinstance(ref, Ref):
            return None
        node = self.operands.nodes[ref.index]
        if node.op != "get_attr" or node.graph.owning_module is None:
            return None
        value: Any = node.graph.owning_module
        for part in str(node.target).split("."):
            value = getattr(value, part, None)
        return value if isinstance(value, torch.Tensor) else None


def _shape_of(operands: _Operands) -> Callable[[Any], tuple[int, ...] | None]:
    return _Operand(operands)


def _unknown(what: str, operands: _Operands, node: fx.Node) -> Op:
    for arg in node.all_input_nodes:
        if not is_mode_value(arg):
            operands.ref(arg)
    return Op(OpSpec.of("unknown", target=what), tuple(operands.nodes))


def _module_op(node: fx.Node, module: nn.Module | None) -> Op:
    operands = _Operands()
    if module is None:
        if is_mode_value(node):
            return Op(OpSpec.of("mode_value", value=eval_value(node)), ())
        return _unknown(str(node.target), operands, node)
    builder = _module_builder(type(module))
    if builder is None:
        return _unknown(type(module).__qualname__, operands, node)
    built = builder(module)
    for arg in (*node.args, *node.kwargs.values()):
        operands.freeze(arg)
    if built is None:
        return _unknown(type(module).__qualname__, operands, node)
    kind, params = built
    return Op(OpSpec.of(kind, **params), tuple(operands.nodes))


def _module_builder(cls: type) -> Any:
    """The form of the nearest class in ``cls``'s MRO (a subclass form beats its base's); None
    when no form knows it. A lookup per MRO entry in the registry's own table: no memo to keep."""
    return next((MODULE_FORM_OF[b] for b in cls.__mro__ if b in MODULE_FORM_OF), None)


def module_spec(module: nn.Module) -> OpSpec | None:
    """The spec a call of ``module`` normalises to (its operands aside), None when no form
    knows it: the splice compares it with a program op's spec to keep the module's weights."""
    builder = _module_builder(type(module))
    built = builder(module) if builder is not None else None
    return OpSpec.of(built[0], **built[1]) if built is not None else None


def _bind(form: CallForm, node: fx.Node) -> dict[str, Any]:
    args, kwargs = list(node.args), dict(node.kwargs)
    bound: dict[str, Any] = dict(form.defaults or {})
    if args:
        bound[form.first] = args.pop(0)
    for alias in (form.first, "input", "self"):
        if alias in kwargs and form.first not in bound:
            bound[form.first] = kwargs.pop(alias)
    if form.varargs is not None:
        fixed = [n for n in form.names if n != form.varargs]
        if len(args) == 1 and isinstance(args[0], list | tuple) and not fixed:
            args = list(args[0])
        bound.update(zip(fixed, args[:len(fixed)], strict=False))
        extra = args[len(fixed):]
        if extra or form.varargs not in bound:
            bound[form.varargs] = tuple(extra) if extra else kwargs.pop(form.varargs, ())
    else:
        bound.update(zip(form.names, args, strict=False))
    bound.update({k: v for k, v in kwargs.items() if k in form.names})
    return bound


def _call_op(node: fx.Node) -> Op:
    name = target_name(node)
    form = CALL_FORMS.get(name)
    operands = _Operands()
    if form is None:
        return _unknown(name, operands, node)
    bound = _bind(form, node)
    first = bound.pop(form.first, None)
    if isinstance(placeholder_default(first), fx.Node) and not is_mode_value(first):
        operands.ref(placeholder_default(first))  # operand 0: the input
    else:
        bound[form.first] = first
    frozen = {k: operands.freeze(v) for k, v in bound.items()}
    params = form.finish(frozen, _shape_of(operands), name) if form.finish else frozen
    if params is None:
        return _unknown(name, operands, node)
    return Op(OpSpec.of(form.kind, **params), tuple(operands.nodes))


def normalize(node: fx.Node, modules: dict[str, nn.Module] | None = None) -> Op:
    """The :class:`Op` of ``node``; ``modules`` maps ``call_module`` targets to modules.

    Placeholders, ``get_attr`` and ``output`` nodes get their node op as kind (``placeholder``,
    ``get_attr``, ``output``), which no rule handles; a call no form knows gets kind ``unknown``
    with its name as param ``target`` (analyses answer top and report it once).
    """
    if node.op == "call_module":
        return _module_op(node, (modules or {}).get(str(node.target)))
    if node.op in ("call_function", "call_method"):
        return _call_op(node)
    return Op(OpSpec(node.op), ())
