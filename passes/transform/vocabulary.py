"""The synthesizer's vocabulary: op templates whose widths follow the value they read.

A :class:`Template` is one op of ALGORITHM.md section 4's search grid before widths are known:
``conv(kernel 3, x2)`` becomes ``conv_spec(3, C, 2*C)`` when it reads a value of width ``C``.
:func:`chain_specs` turns a chain of templates into registry :class:`OpSpec` values, widths as
expressions in the block's symbols, so one chain instantiates in every instance of a block; it
refuses (None) a chain whose widths are not positive integers, or whose groups do not divide
them, in some context. :func:`vocabulary` lists the templates that apply to a value's layout,
grouped by op type (the synthesizer picks a type first, then an op).

Example::

    chain_specs((Template("conv", kernel=1, ratio=Fraction(1, 4)), Template("relu"),
                 Template("conv", kernel=3, width=C)), C, "NCHW", [{C: 64}])
    # -> conv 1x1 C -> C/4, relu, conv 3x3 C/4 -> C
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import sympy

from alphac.passes.analysis.program import value_at
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.registry.conv_pool import conv_spec, pool_params

__all__ = ["FAMILIES", "Template", "chain_specs", "family_of", "fit_width", "layout_kind",
           "vocabulary"]

#: Op type of each template kind (the first level of the weighted choice).
FAMILIES = {
    "conv": "conv", "linear": "linear", "batch_norm": "norm", "layer_norm": "norm",
    "group_norm": "norm", "relu": "activation", "gelu": "activation", "silu": "activation",
    "sigmoid": "activation", "softmax": "softmax", "avg_pool": "pool", "max_pool": "pool",
    "global_avg_pool": "pool", "dropout": "dropout", "scale": "scale",
}
_RESIZING = frozenset({"conv", "linear"})
_ACTIVATION_KINDS = frozenset({"relu6", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu",
                               "mish"})


def family_of(kind: str) -> str:
    """The op type of a registry kind (a lifted op's), for the synthesizer's prior: the
    template families, any activation as ``activation``, a drop path as ``dropout``."""
    if kind in FAMILIES:
        return FAMILIES[kind]
    if kind in _ACTIVATION_KINDS:
        return "activation"
    return {"adaptive_avg_pool": "pool", "drop_path": "dropout", "mul": "scale"}.get(kind, kind)


@dataclass(frozen=True)
class Template:
    """A vocabulary op: ``kind`` (a key of :data:`FAMILIES`) and its grid arguments.

    ``ratio`` is the output width over the input width (conv, linear); ``width``, when set, is the
    exact output width (the synthesizer's final adjustment) and wins over ``ratio``; ``groups`` is
    an int or ``"depthwise"`` (conv) or the number of groups (group norm); ``window`` the pool
    window (2: stride 2, 3: stride 1 with padding 1); ``scale`` the constant of a scale op.
    """

    kind: str
    kernel: int = 1
    stride: int = 1
    groups: int | str = 1
    dilation: int = 1
    ratio: Fraction = Fraction(1)
    width: Any = None
    window: int = 2
    scale: float = 1.0

    @property
    def family(self) -> str:
        return FAMILIES[self.kind]

    @property
    def resizes(self) -> bool:
        return self.kind in _RESIZING

    def label(self) -> str:
        """A short readable name: ``conv3x3 x2``, ``relu``, ``avg_pool2``, ``linear ->C``."""
        width = _ratio_text(self.ratio) if self.width is None else f"->{self.width}"
        if self.kind == "conv":
            extra = "" if self.groups == 1 else f" g={self.groups}"
            extra += "" if self.stride == 1 else f" s={self.stride}"
            extra += "" if self.dilation == 1 else f" d={self.dilation}"
            return f"conv{self.kernel}x{self.kernel}{extra} {width}"
        if self.kind == "linear":
            return f"linear {width}"
        if self.kind in ("avg_pool", "max_pool"):
            return f"{self.kind}{self.window}" + ("" if self.stride == 1 else f" s={self.stride}")
        if self.kind == "group_norm":
            return f"group_norm{self.groups}"
        return self.kind


def _ratio_text(r: Fraction) -> str:
    return f"x{r.numerator}" if r.denominator == 1 else f"/{r.denominator}"


def layout_kind(layout: str, rank: int) -> str:
    """``channel_first`` (NCHW-like), ``feature_last`` (tokens, features) or ``other``."""
    if rank >= 3 and len(layout) > 1 and layout[1] == "C":
        return "channel_first"
    if rank >= 2 and layout.endswith("C"):
        return "feature_last"
    return "other"


_RATIOS = (Fraction(1), Fraction(2), Fraction(4), Fraction(1, 2), Fraction(1, 4))
_ACTIVATIONS = ("relu", "gelu", "silu", "sigmoid")


def vocabulary(layout: str, rank: int, width_value: int | None, *,
               downsample: bool = False) -> tuple[Template, ...]:
    """The templates of ALGORITHM.md section 4 that apply to a value of this layout and rank
    (``width_value``: its width in the primary context, for the 1/sqrt(C) scale).

    ``downsample``: the chain must shrink the spatial dims (a stride-2 stage entry), so strided
    convs and pools join the grid: a stride-2 conv or a 3-window pool at stride 2 with padding 1
    gives ``floor((H - 1)/2) + 1``, the size a strided 1x1 or 3x3 conv of the original gives,
    for every input size (a 2-window pool gives ``floor(H/2)``, which differs at odd sizes).
    """
    where = layout_kind(layout, rank)
    scale = 1.0 / math.sqrt(width_value) if width_value else 1.0
    common = [Template(k) for k in _ACTIVATIONS] + [Template("dropout")]
    if where == "channel_first":  # no 1/sqrt(C) scale or channel softmax in a conv chain
        return (*_conv_vocabulary(rank, downsample), *common)
    common.append(Template("scale", scale=round(scale, 6)))
    if where == "feature_last":
        out = [Template("linear", ratio=r) for r in _RATIOS] + [Template("layer_norm")]
        if rank == 2:
            out.append(Template("batch_norm"))
        return (*out, *common, Template("softmax"))
    return (*common, Template("softmax"))


def _conv_vocabulary(rank: int, downsample: bool) -> list[Template]:
    """Convs (kernel 1 and 3 at every width ratio, strided too when the chain downsamples),
    norms and pools for a channel-first value of ``rank``."""
    strides = (1, 2) if downsample else (1,)
    out = [Template("conv", kernel=k, ratio=r, stride=s)
           for s in strides for k in (1, 3) for r in _RATIOS]
    out += [Template("batch_norm"), Template("group_norm", groups=4)]
    if rank != 4:
        return [t for t in out if t.kind != "conv"]
    out += [Template(p, window=w) for p in ("avg_pool", "max_pool") for w in (2, 3)]
    out += [Template("global_avg_pool")]
    if downsample:
        out += [Template(p, window=3, stride=2) for p in ("avg_pool", "max_pool")]
    return out


# ---- templates to specs --------------------------------------------------------------------------
Bindings = Mapping[sympy.Symbol, int]


def _is_width(expr: Any, contexts: Sequence[Bindings]) -> bool:
    """Whether ``expr`` is a positive integer in every context."""
    return all(isinstance(v, int) and v >= 1 for v in (_at(expr, b) for b in contexts))


def _divides(groups: Any, widths: Sequence[Any], contexts: Sequence[Bindings]) -> bool:
    for bindings in contexts:
        g = _at(groups, bindings)
        if not isinstance(g, int) or g < 1 or any(_at(w, bindings) % g for w in widths):
            return False
    return True


def _at(expr: Any, bindings: Bindings) -> Any:
    return value_at(expr, bindings)


def _spec(t: Template, width: Any, layout: str, contexts: Sequence[Bindings]
          ) -> tuple[OpSpec, Any] | None:
    """The spec of ``t`` reading a value of ``width``, and the width it produces."""
    if t.resizes and width is None and t.width is None:
        return None  # a value without a width axis (attention maps): nothing to resize
    ratio = sympy.Rational(t.ratio.numerator, t.ratio.denominator)
    out = t.width if t.width is not None else (width * ratio if t.resizes else width)
    if t.resizes and not _is_width(out, contexts):
        return None
    if t.kind == "conv":
        groups = width if t.groups == "depthwise" else t.groups
        if not _divides(groups, (width, out), contexts):
            return None
        return conv_spec(t.kernel, width, out, stride=t.stride, groups=groups,
                         dilation=t.dilation), out
    if t.kind == "linear":
        return OpSpec.of("linear", in_features=width, out_features=out, bias=True), out
    return _fixed_width_spec(t, width, layout, contexts), width


def _fixed_width_spec(t: Template, width: Any, layout: str,
                      contexts: Sequence[Bindings]) -> OpSpec | None:
    if t.kind == "batch_norm":
        return OpSpec.of("batch_norm", num_features=width, affine=True, bias=True,
                         running_stats=True, batch_stats=False, eps=1e-5, momentum=0.1)
    if t.kind == "layer_norm":
        return OpSpec.of("layer_norm", normalized_shape=(width,), affine=True, bias=True,
                         eps=1e-5)
    if t.kind == "group_norm":
        if not _divides(t.groups, (width,), contexts):
            return None
        return OpSpec.of("group_norm", num_groups=t.groups, num_channels=width, affine=True,
                         bias=True, eps=1e-5)
    if t.kind in ("avg_pool", "max_pool"):
        stride, pad = (2, 0) if t.window == 2 else (t.stride, t.window // 2)
        return OpSpec.of(t.kind, **pool_params(2, t.window, stride, pad))
    if t.kind == "global_avg_pool":
        return OpSpec.of("adaptive_avg_pool", output_size=(1, 1))
    if t.kind == "gelu":
        return OpSpec.of("gelu", approximate="none")
    if t.kind == "softmax":
        return OpSpec.of("softmax", dim=1 if layout_kind(layout, len(layout)) == "channel_first" else -1)
    if t.kind == "dropout":
        return OpSpec.of("dropout", p=0.1)
    if t.kind == "scale":
        return OpSpec.of("mul", other=t.scale)
    return OpSpec.of(t.kind)


def chain_specs(templates: Sequence[Template], width: Any, layout: str,
                contexts: Sequence[Bindings]) -> tuple[OpSpec, ...] | None:
    """The specs of a chain reading a value of ``width`` (an expression in the block's
    symbols) and ``layout``; None when a width or group count is invalid in some context."""
    specs = []
    for t in templates:
        made = _spec(t, width, layout, contexts)
        if made is None or made[0] is None:
            return None
        spec, width = made
        specs.append(spec)
    return tuple(specs)


def fit_width(templates: Sequence[Template], width: Any) -> tuple[Template, ...]:
    """The chain with its last conv/linear resized to output exactly ``width`` (the target's
    output width); unchanged when it has none."""
    last = next((i for i in range(len(templates) - 1, -1, -1) if templates[i].resizes), None)
    if last is None:
        return tuple(templates)
    return (*templates[:last], replace(templates[last], width=width), *templates[last + 1:])
