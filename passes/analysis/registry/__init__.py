"""The op registry: every op kind the analyses know, defined once, with all its rules side by side.

An op kind (:class:`OpKind`) holds its depth class, its layout effect and its three transfer
rules (shape, mixing, cost); *forms* map the ways a program spells the op -- an ``nn.Module``
class, a torch function, a Tensor method, an aten overload -- to one canonical :class:`OpSpec`.
One file per op family registers its kinds and forms; importing this package imports them all:
``activations``, ``elementwise`` (arithmetic, comparisons, identity, dropout), ``norms``,
``reductions``, ``conv_pool`` (conv, pools, pad), ``linear`` (linear, matmul, einsum,
attention), ``layout`` (reshape, permute, cat, roll, ...), ``indexing`` (getitem, split, unbind,
size queries), ``constants`` (tensors made from sizes: arange, zeros, ...), ``resize``
(interpolate, upsample), ``math_ops`` (pow, sqrt, exp, sin, abs, ...), ``norm_ops``
(vector norms, F.normalize, clamp) and ``interleave`` (repeat_interleave).

Rules never see an ``fx.Node``. They read an :class:`OpSpec` -- the kind plus hyperparameters,
where an argument that is another value of the program is a :class:`Ref` to an operand; if the
op's first argument is such a value it is operand 0 and has no param -- and the values of the
operands (``ins``) in the abstract domain of the rule:

- ``shape(spec, ins)``: symbolic values (:class:`~alphac.passes.analysis.shape_dims.TensorShape`,
  sympy expressions for sizes, tuples of those; None where unknown) -> the op's symbolic value,
  or None (no rule: the analysis falls back to the traced shape and reports it);
- ``mixing(spec, ins, out)``: concrete shapes (a tuple of ints for a float tensor, a tuple of
  those for a tuple value, None for anything else) -> a
  :class:`~alphac.passes.analysis.mixing_boxes.Rule` whose pulls name operands by index, or None
  (not modelled: top, reported);
- ``cost(spec, ins, out)``: symbolic values -> :class:`OpCost` ``(params, flops, other)``.

:func:`normalize` turns an fx node into an :class:`Op` (spec + operand nodes); a program built by
hand (``OpSpec.of("conv", kernel=(3, 3), ...)``) uses the same rules. Example:
``F.conv2d(x, w, stride=2)`` and ``nn.Conv2d(3, 8, 3, stride=2, bias=False)`` both give kind
``conv`` with ``kernel=(3, 3)`` and ``stride=(2, 2)``, operand 0 = ``x``.
"""

from __future__ import annotations

from alphac.passes.analysis.registry import (  # noqa: F401 - each registers its op kinds
    activations,
    constants,
    conv_pool,
    elementwise,
    indexing,
    interleave,
    layout,
    linear,
    math_ops,
    norm_ops,
    norms,
    reductions,
    resize,
)
from alphac.passes.analysis.registry.core import (
    BUILDS,
    CALL_FORMS,
    MODULE_FORMS,
    REGISTRY,
    Built,
    CallForm,
    NotMaterialisable,
    OpCost,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    kind_of,
    materialise,
    module_form,
    refs,
    register,
    resolve,
)
from alphac.passes.analysis.registry.normalize import (
    Op,
    normalize,
    placeholder_default,
    target_name,
)

__all__ = [
    "BUILDS",
    "CALL_FORMS",
    "Built",
    "NotMaterialisable",
    "materialise",
    "MODULE_FORMS",
    "REGISTRY",
    "CallForm",
    "Op",
    "OpCost",
    "OpKind",
    "OpSpec",
    "Ref",
    "call_form",
    "kind_of",
    "module_form",
    "normalize",
    "placeholder_default",
    "refs",
    "register",
    "resolve",
    "target_name",
]
