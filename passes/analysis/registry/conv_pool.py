"""Convolutions, pools and padding: the windowed ops.

- ``conv`` (``nn.Conv*d``/``nn.ConvTranspose*d``, ``F.conv*d``/``F.conv_transpose*d``, aten
  ``conv*d``/``conv_transpose*d``/``convolution``): params ``dims``, ``kernel``, ``stride``,
  ``padding``, ``dilation``, ``groups``, ``in_channels``, ``out_channels``, ``transposed``,
  ``output_padding``, ``padding_mode`` and ``bias``; a functional form takes kernel and channels
  from its weight operand's shape, and holds the weight (and bias) as Refs (``bias`` is then a Ref
  or None; a module's ``bias`` is a bool). Shape: the window formula, width scaled by
  ``out/in`` channels. Mixing: channels within a group read in full, each spatial dim a window
  (padding per ``padding_mode``). Cost: ``2 * out * in/groups * k`` FLOPs (transposed: ``2 * in *
  out/groups * k``, as flop_counter counts it), a bias adds one other-FLOP per output element.
- ``max_pool``, ``avg_pool`` (``kernel``, ``stride``, ``padding``, ``dilation``, ``ceil_mode``):
  windows over the last ``dims`` dims; ``prod(kernel)`` other-FLOPs per output element.
- ``adaptive_avg_pool``, ``adaptive_max_pool`` (``output_size``, None entries keep the size;
  ``with_indices``: aten's (values, indices) pair): PyTorch's floor/ceil windows; one
  other-FLOP per input element.
- ``pad`` (``F.pad``, ``nn.*Pad*d``, aten ``constant_pad_nd``/``reflection_pad*``/
  ``replication_pad*``/``_pad_circular``): ``pad`` amounts (ints, or Refs to computed sizes such
  as swin's ``(ws - H % ws) % ws``), ``mode``, ``value``. Free; the layout is kept.

Depth: linear. Layout: channel_first (conv, pools), preserve (pad).
Example: ``nn.Conv2d(3, 8, 3, stride=2, bias=False)`` and ``F.conv2d(x, w, stride=2)`` with ``w``
of shape (8, 3, 3, 3) both give kind ``conv``, ``kernel=(3, 3)``, ``stride=(2, 2)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import sympy
import torch.nn.functional as F
from torch import nn

from alphac.passes.analysis.mixing_boxes import (
    DimMap,
    Product,
    Rule,
    adaptive_map,
    full,
    group_map,
    stencil_map,
    transposed_stencil_map,
)
from alphac.passes.analysis.registry.build import function, need, thaw
from alphac.passes.analysis.registry.common import (
    FREE,
    ZERO,
    extras,
    free,
    is_shape,
    numel,
    tensor,
)
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
    NotMaterialisable,
    OpCost,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    module_form,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import (
    TensorShape,
    as_expr,
    channel_first,
    scaled_width,
    window,
)


def _tuple(value: Any, n: int) -> tuple:
    """``value`` as an n-tuple (a scalar repeated, a 1-tuple broadcast)."""
    if isinstance(value, list | tuple):
        return tuple(value) * n if len(value) == 1 and n != 1 else tuple(value)
    return (value,) * n



# ---- conv ----------------------------------------------------------------------------------------
def conv_params(weight_shape: tuple[int, ...], stride: Any = 1, padding: Any = 0,
                dilation: Any = 1, groups: int = 1, transposed: bool = False,
                output_padding: Any = 0) -> dict[str, Any]:
    """The geometry params of a conv from its weight's shape:
    ``padding="valid"`` pads nothing; ``"same"`` (param ``same``: every size kept) pads
    ``d * (k - 1) // 2`` on the left."""
    n = len(weight_shape) - 2
    kernel = tuple(int(k) for k in weight_shape[2:])
    dil = _tuple(dilation, n)
    same = padding == "same"
    if padding == "valid":
        padding = (0,) * n
    elif same:  # the left pad; torch puts the odd one on the right, keeping every size
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dil, kernel, strict=True))
    out_ch = weight_shape[1] * groups if transposed else weight_shape[0]
    in_ch = weight_shape[0] if transposed else weight_shape[1] * groups
    return dict(dims=n, kernel=kernel, stride=_tuple(stride, n), padding=_tuple(padding, n),
                dilation=dil, groups=int(groups), in_channels=int(in_ch),
                out_channels=int(out_ch), transposed=bool(transposed),
                output_padding=_tuple(output_padding, n), **({"same": True} if same else {}))


def conv_spec(kernel: int, in_channels: Any, out_channels: Any, *, stride: int = 1,
              groups: Any = 1, dilation: int = 1, bias: bool = False) -> OpSpec:
    """A 2-d conv with "same" padding at stride 1, as a program states it: widths may be
    expressions in the block's symbols. Example: ``conv_spec(1, C, C / 4)`` is a 1x1 conv to a
    quarter of the width; ``conv_spec(3, C, C, groups=C)`` a depthwise 3x3."""
    pad = dilation * (kernel - 1) // 2
    return OpSpec.of("conv", dims=2, kernel=(kernel, kernel), stride=(stride, stride),
                     padding=(pad, pad), dilation=(dilation, dilation), groups=groups,
                     in_channels=in_channels, out_channels=out_channels, transposed=False,
                     output_padding=(0, 0), bias=bias, padding_mode="zeros")


def _has_bias(spec: OpSpec) -> bool:
    return spec.get("bias") not in (None, False)


def _conv_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, n = tensor(ins), spec.get("dims")
    if x is None or x.rank != n + 2:
        return None
    width = scaled_width(x.dims[1], spec.get("in_channels"), spec.get("out_channels"))
    extra = spec.get("output_padding") or (0,) * n
    geometry = zip(x.dims[2:], spec.get("kernel"), spec.get("stride"), spec.get("padding"),
                   spec.get("dilation"), extra, strict=True)
    if spec.get("transposed"):
        spatial = [(h - 1) * s - 2 * p + d * (k - 1) + 1 + e for h, k, s, p, d, e in geometry]
    elif spec.get("same"):
        spatial = list(x.dims[2:])
    else:
        spatial = [window(h, k, s, p, d) for h, k, s, p, d, _ in geometry]
    return TensorShape((x.dims[0], width, *spatial), channel_first(n + 2))


def _conv_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out):
        return None
    nd, g = spec.get("dims"), spec.get("groups")
    lead = len(xs) - nd - 1
    mode = spec.get("padding_mode") or "zeros"
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    dims.append((-1, full(xs[lead])) if g == 1 else (lead, group_map(xs[lead], out[lead], g)))
    for t in range(nd):
        j = lead + 1 + t
        args = (xs[j], out[j], spec.get("kernel")[t], spec.get("stride")[t],
                spec.get("padding")[t], spec.get("dilation")[t])
        f = transposed_stencil_map(*args) if spec.get("transposed") else stencil_map(*args, mode)
        dims.append((j, f))
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _conv_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    x = tensor(ins)
    if x is None or not isinstance(out, TensorShape) or x.rank != out.rank:
        return FREE
    groups, cin = spec.get("groups"), spec.get("in_channels")
    per_group = sympy.Integer(1) if groups == cin else x.dims[1] / groups
    kernel = math.prod(spec.get("kernel"))
    weight = out.dims[1] * per_group * kernel
    bias = out.dims[1] if _has_bias(spec) else ZERO
    if spec.get("transposed"):  # flop_counter: every input position meets the whole kernel
        flops = 2 * numel(x) * (out.dims[1] / groups) * kernel
    else:
        flops = 2 * numel(out) * per_group * kernel
    return OpCost(weight + bias, flops, numel(out) if _has_bias(spec) else ZERO)


@module_form(nn.modules.conv._ConvNd)
def _conv_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    params = conv_params(tuple(m.weight.shape), m.stride, m.padding, m.dilation, m.groups,
                         m.transposed, m.output_padding)
    return "conv", {**params, "bias": m.bias is not None, "padding_mode": m.padding_mode}


def _conv_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                 name: str) -> dict[str, Any] | None:
    weight = shape_of(bound.get("weight"))
    if weight is None or len(weight) < 3:
        return None
    transposed = bound.get("transposed", name.startswith("conv_transpose"))
    params = conv_params(weight, bound.get("stride", 1), bound.get("padding", 0),
                         bound.get("dilation", 1), bound.get("groups", 1), bool(transposed),
                         bound.get("output_padding", 0) if transposed else 0)
    return {**params, "weight": bound["weight"], "bias": bound.get("bias"),
            "padding_mode": "zeros"}


#: No default for weight or bias: Refs are numbered by first appearance, defaults come first.
_CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
call_form(CallForm("conv", ("weight", "bias", "stride", "padding", "dilation", "groups"),
                   _CONV_DEFAULTS, finish=_conv_finish), "conv1d", "conv2d", "conv3d")
call_form(CallForm("conv", ("weight", "bias", "stride", "padding", "output_padding", "groups",
                            "dilation"), {**_CONV_DEFAULTS, "output_padding": 0},
                   finish=_conv_finish),
          "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
call_form(CallForm("conv", ("weight", "bias", "stride", "padding", "dilation", "transposed",
                            "output_padding", "groups"), {**_CONV_DEFAULTS, "output_padding": 0},
                   finish=_conv_finish), "convolution", "_convolution")


# ---- pools ---------------------------------------------------------------------------------------
def pool_params(n: int, kernel: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                ceil_mode: bool = False) -> dict[str, Any]:
    """The params of an n-d max/avg pool; a missing stride is the kernel."""
    stride = kernel if stride in (None, [], ()) else stride
    return dict(dims=n, kernel=_tuple(kernel, n), stride=_tuple(stride, n),
                padding=_tuple(padding, n), dilation=_tuple(dilation, n),
                ceil_mode=bool(ceil_mode))


def _pool_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, n = tensor(ins), spec.get("dims")
    if x is None or x.rank < n + 1:
        return None
    geometry = zip(x.dims[-n:], spec.get("kernel"), spec.get("stride"), spec.get("padding"),
                   spec.get("dilation"), strict=True)
    spatial = [window(h, k, s, p, d, spec.get("ceil_mode")) for h, k, s, p, d in geometry]
    layout = channel_first(x.rank) if x.rank == n + 2 else x.layout
    return TensorShape((*x.dims[:-n], *spatial), layout)


def _pool_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out):
        return None
    nd = spec.get("dims")
    lead = len(xs) - nd
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    for t in range(nd):
        j = lead + t
        dims.append((j, stencil_map(xs[j], out[j], spec.get("kernel")[t], spec.get("stride")[t],
                                    spec.get("padding")[t], spec.get("dilation")[t])))
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _pool_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    if tensor(ins) is None or not isinstance(out, TensorShape):
        return FREE
    return OpCost(ZERO, ZERO, math.prod(spec.get("kernel")) * numel(out))


def _adaptive_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, size = tensor(ins), spec.get("output_size")
    if x is None or x.rank < len(size) + 1:
        return None
    n = len(size)
    spatial = [h if o is None else sympy.Integer(o) for h, o in zip(x.dims[-n:], size, strict=True)]
    layout = channel_first(x.rank) if x.rank == n + 2 else x.layout
    out = TensorShape((*x.dims[:-n], *spatial), layout)
    return (out, out) if spec.get("with_indices") else out


def _adaptive_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Adaptive windows; aten's ``adaptive_max_pool2d`` returns (values, indices): element 0."""
    xs = ins[0] if ins else None
    values = out[0] if isinstance(out, tuple) and out and isinstance(out[0], tuple) else out
    if not is_shape(xs) or not is_shape(values):
        return None
    lead = len(xs) - len(spec.get("output_size"))
    dims: list[DimMap] = [(k, None) for k in range(lead)]
    dims += [(j, adaptive_map(xs[j], values[j])) for j in range(lead, len(xs))]
    pulls = [Product(0, None, dims), *extras(ins, {0})]
    return Rule({None: pulls}) if values is out else Rule({0: pulls})


def _adaptive_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    x, out = tensor(ins), out[0] if isinstance(out, tuple) and out else out
    if x is None or not isinstance(out, TensorShape):
        return FREE
    return OpCost(ZERO, ZERO, numel(x))


_POOL_MODULES = {nn.MaxPool1d: ("max_pool", 1), nn.MaxPool2d: ("max_pool", 2),
                 nn.MaxPool3d: ("max_pool", 3), nn.AvgPool1d: ("avg_pool", 1),
                 nn.AvgPool2d: ("avg_pool", 2), nn.AvgPool3d: ("avg_pool", 3)}
_ADAPTIVE_MODULES = {
    nn.AdaptiveAvgPool1d: ("adaptive_avg_pool", 1), nn.AdaptiveAvgPool2d: ("adaptive_avg_pool", 2),
    nn.AdaptiveAvgPool3d: ("adaptive_avg_pool", 3), nn.AdaptiveMaxPool1d: ("adaptive_max_pool", 1),
    nn.AdaptiveMaxPool2d: ("adaptive_max_pool", 2), nn.AdaptiveMaxPool3d: ("adaptive_max_pool", 3)}


def _lookup(table: dict[type, Any], m: nn.Module) -> Any:
    return next(v for cls, v in table.items() if isinstance(m, cls))


@module_form(*_POOL_MODULES)
def _pool_module(m: nn.Module) -> tuple[str, dict[str, Any]] | None:
    if getattr(m, "return_indices", False):
        return None  # a (values, indices) pair: not modelled
    kind, n = _lookup(_POOL_MODULES, m)
    return kind, pool_params(n, m.kernel_size, m.stride, m.padding,
                             getattr(m, "dilation", 1), m.ceil_mode)


@module_form(*_ADAPTIVE_MODULES)
def _adaptive_module(m: nn.Module) -> tuple[str, dict[str, Any]] | None:
    if getattr(m, "return_indices", False):
        return None
    kind, n = _lookup(_ADAPTIVE_MODULES, m)
    return kind, {"output_size": _tuple(m.output_size, n)}


def _rank_of(name: str) -> int:
    return int(name[-2]) if name[-2:-1].isdigit() else 2


def _pool_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                 name: str) -> dict[str, Any] | None:
    if bound.get("return_indices"):
        return None
    return pool_params(_rank_of(name), bound.get("kernel_size"), bound.get("stride"),
                       bound.get("padding", 0), bound.get("dilation", 1),
                       bound.get("ceil_mode", False))


def _adaptive_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                     name: str) -> dict[str, Any] | None:
    """aten's and torch's ``adaptive_max_pool*d`` (no ``return_indices`` argument, which ``F.``
    always records) return (values, indices): param ``with_indices``."""
    if bound.get("return_indices"):
        return None
    params = {"output_size": _tuple(bound.get("output_size"), _rank_of(name))}
    if name.startswith("adaptive_max") and "return_indices" not in bound:
        params["with_indices"] = True
    return params


_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
call_form(CallForm("max_pool", ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                "return_indices"), _POOL_DEFAULTS, finish=_pool_finish),
          "max_pool1d", "max_pool2d", "max_pool3d")
call_form(CallForm("avg_pool", ("kernel_size", "stride", "padding", "ceil_mode"),
                   _POOL_DEFAULTS, finish=_pool_finish), "avg_pool1d", "avg_pool2d", "avg_pool3d")
call_form(CallForm("adaptive_avg_pool", ("output_size",), finish=_adaptive_finish),
          "adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d",
          "adaptive_avg_pool3d")
call_form(CallForm("adaptive_max_pool", ("output_size", "return_indices"),
                   finish=_adaptive_finish),
          "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d")


# ---- pad -----------------------------------------------------------------------------------------
def _pad_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x, pad = tensor(ins), spec.value("pad", ins)  # computed amounts resolve to their sizes
    if x is None or not isinstance(pad, tuple) or len(pad) > 2 * x.rank:
        return None
    dims = list(x.dims)
    for i in range(len(pad) // 2):  # pairs run from the last dimension backwards
        amount = [as_expr(p) for p in pad[2 * i:2 * i + 2]]
        if any(a is None for a in amount):
            return None
        dims[-1 - i] = dims[-1 - i] + amount[0] + amount[1]
    return TensorShape(tuple(dims), x.layout)


def _pad_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    """Output o reads input ``o - left`` (constant), or its reflected/clamped/wrapped index;
    negative pads crop."""
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out):
        return None
    pads, mode = _pad_amounts(spec.get("pad"), xs, out), spec.get("mode") or "constant"
    if pads is None:
        return None
    dims: list[DimMap] = [(k, None) for k in range(len(xs))]
    for t in range(len(pads) // 2):
        d = len(xs) - 1 - t
        f = stencil_map(xs[d], out[d], 1, 1, pads[2 * t], 1, "zeros" if mode == "constant" else mode)
        dims[d] = (d, f)
    return Rule({None: [Product(0, None, dims)]})


def _pad_amounts(raw: Any, xs: tuple[int, ...], out: tuple[int, ...]) -> list[int] | None:
    """The amounts as ints; one computed amount (a Ref) per pair is read off the shapes:
    ``out = in + left + right``."""
    if not isinstance(raw, tuple) or len(raw) > 2 * len(xs):
        return None
    pads = list(raw)
    for t in range(len(pads) // 2):
        d = len(xs) - 1 - t
        pair = pads[2 * t:2 * t + 2]
        known = [isinstance(p, int) for p in pair]  # a Ref is a computed amount
        if known == [False, True]:
            pads[2 * t] = out[d] - xs[d] - pair[1]
        elif known == [True, False]:
            pads[2 * t + 1] = out[d] - xs[d] - pair[0]
        elif known != [True, True]:
            return None
    return pads


_PAD_MODULES = {nn.modules.padding._ReflectionPadNd: "reflect",
                nn.modules.padding._ReplicationPadNd: "replicate",
                nn.modules.padding._CircularPadNd: "circular",
                nn.modules.padding._ConstantPadNd: "constant"}


@module_form(*_PAD_MODULES)
def _pad_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    mode = _lookup(_PAD_MODULES, m)
    return "pad", {"pad": tuple(m.padding), "mode": mode, "value": getattr(m, "value", None)}


def _pad_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                name: str) -> dict[str, Any] | None:
    pad = bound.get("pad")
    if not isinstance(pad, tuple):
        return None
    return {"pad": pad, "mode": bound.get("mode") or "constant", "value": bound.get("value")}


call_form(CallForm("pad", ("pad", "mode", "value"), {"mode": "constant", "value": None},
                   finish=_pad_finish), "pad")
call_form(CallForm("pad", ("pad", "value"), {"mode": "constant", "value": 0},
                   finish=_pad_finish), "constant_pad_nd")
for _mode, _names in (("reflect", ("reflection_pad1d", "reflection_pad2d", "reflection_pad3d")),
                      ("replicate", ("replication_pad1d", "replication_pad2d",
                                     "replication_pad3d")),
                      ("circular", ("_pad_circular",))):
    call_form(CallForm("pad", ("pad",), {"mode": _mode}, finish=_pad_finish), *_names)


register(
    OpKind("conv", "linear", _conv_shape, _conv_mixing, _conv_cost, layout="channel_first",
           doc="convolution (transposed too), weight from the module or a weight operand"),
    OpKind("max_pool", "linear", _pool_shape, _pool_mixing, _pool_cost, layout="channel_first",
           doc="max pool over the last dims"),
    OpKind("avg_pool", "linear", _pool_shape, _pool_mixing, _pool_cost, layout="channel_first",
           doc="average pool over the last dims"),
    OpKind("adaptive_avg_pool", "linear", _adaptive_shape, _adaptive_mixing, _adaptive_cost,
           layout="channel_first", doc="adaptive average pool to output_size"),
    OpKind("adaptive_max_pool", "linear", _adaptive_shape, _adaptive_mixing, _adaptive_cost,
           layout="channel_first", doc="adaptive max pool to output_size"),
    OpKind("pad", "linear", _pad_shape, _pad_mixing, free, layout="preserve",
           doc="constant/reflect/replicate/circular padding; amounts may be computed sizes"),
)


# ---- materialise ---------------------------------------------------------------------------------
def _nd(prefix: str, n: int) -> Any:
    return getattr(nn, f"{prefix}{n}d")


def _conv_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    n, transposed = spec.get("dims"), spec.get("transposed")
    padding = "same" if spec.get("same") else thaw(spec.get("padding"))
    if isinstance(spec.get("weight"), Ref):  # functional: the weight is an operand
        if transposed:
            raise NotMaterialisable("conv: a functional transposed conv is not built")
        fn = getattr(F, f"conv{n}d")
        args = (Ref(0), spec.get("weight"), spec.get("bias"), thaw(spec.get("stride")), padding,
                thaw(spec.get("dilation")), spec.get("groups"))
        return Built("call_function", fn, args)
    c_in, c_out, kernel, groups = need(spec, "in_channels", "out_channels", "kernel", "groups")
    common = dict(stride=thaw(spec.get("stride")), groups=groups, bias=bool(spec.get("bias")),
                  dilation=thaw(spec.get("dilation")), padding_mode=spec.get("padding_mode"))
    if transposed:
        m = _nd("ConvTranspose", n)(c_in, c_out, kernel, padding=padding,
                                    output_padding=thaw(spec.get("output_padding")), **common)
    else:
        m = _nd("Conv", n)(c_in, c_out, kernel, padding=padding, **common)
    return Built("call_module", m, (Ref(0),))


def _pool_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    n, kernel, stride, padding = need(spec, "dims", "kernel", "stride", "padding")
    if spec.kind == "max_pool":
        m = _nd("MaxPool", n)(kernel, stride, padding, thaw(spec.get("dilation")),
                              ceil_mode=spec.get("ceil_mode"))
    elif set(thaw(spec.get("dilation"))) != {1}:
        raise NotMaterialisable("avg_pool: torch's average pools have no dilation")
    else:
        m = _nd("AvgPool", n)(kernel, stride, padding, ceil_mode=spec.get("ceil_mode"))
    return Built("call_module", m, (Ref(0),))


def _adaptive_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    (size,) = need(spec, "output_size")
    if spec.get("with_indices"):
        raise NotMaterialisable(f"{spec.kind}: the (values, indices) form is not built")
    prefix = "AdaptiveAvgPool" if spec.kind == "adaptive_avg_pool" else "AdaptiveMaxPool"
    return Built("call_module", _nd(prefix, len(size))(size), (Ref(0),))


register_builds({
    "conv": _conv_build, "max_pool": _pool_build, "avg_pool": _pool_build,
    "adaptive_avg_pool": _adaptive_build, "adaptive_max_pool": _adaptive_build,
    "pad": function(F.pad, "pad"),
})
