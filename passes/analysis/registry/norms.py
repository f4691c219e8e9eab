"""Normalisations: batch norm, layer norm, group norm (eval mode, the mode the analyses mean).

Shape: the input's (layout channel-first for batch and group norm, features last for layer norm;
aten's tuple forms of batch norm give ``(y, stats...)``). Mixing: batch norm with running
statistics is a per-channel affine map (elementwise); with batch statistics (param
``batch_stats``: no running statistics, or a functional call hard-coding ``training=True`` that
is not mode-following, see :func:`alphac.modes.follows_mode`) each output reads every (batch,
spatial) position of its channel; layer norm reads its whole normalised trailing dims, group norm
its group of channels and every spatial position; a normalisation over one element is constant
(no pulls). Cost: 2 other-FLOPs per element for batch norm (a scale and shift), 5 for layer and
group norm; ``2 * width`` parameters when affine (``width`` parameters without the bias).
Example: ``nn.BatchNorm2d(8)`` and ``aten.batch_norm(x, w, b, rm, rv, False, ...)`` both give
``OpSpec.of("batch_norm", affine=True, batch_stats=False, eps=1e-05, ...)``; the functional form
also names its tensor operands, ``tensors=(%1, %2, %3, %4)`` (weight, bias, running mean and
variance), so it materialises back as the same call on the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from alphac.passes.analysis.mixing_boxes import Product, Rule, Whole, full, group_map
from alphac.passes.analysis.registry.build import need, thaw
from alphac.passes.analysis.registry.common import (
    FREE,
    NO_PULLS,
    ZERO,
    extras,
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
    channel_first,
    default_layout,
    feature_last,
)

#: Other-FLOPs per output element.
OTHER_FLOPS = {"batch_norm": 2, "layer_norm": 5, "group_norm": 5}



# ---- shape -----------------------------------------------------------------------------------
def _channel_first_same(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    x = tensor(ins)
    return x and TensorShape(x.dims, channel_first(x.rank))


def _batch_norm_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    """The normalised tensor; aten's tuple forms add their statistics: empty in eval mode,
    per channel when computed from the batch, and the updated running statistics."""
    y, form = _channel_first_same(spec, ins), spec.get("tuple_form")
    if y is None or form is None:
        return y
    stats = TensorShape((y.dims[1] if spec.get("batch_stats") else sympy.Integer(0),),
                        default_layout(1))
    running = TensorShape((y.dims[1],), default_layout(1))
    return (y, stats, stats) if form == "no_training" else (y, stats, stats, running, running)


def _layer_norm_shape(spec: OpSpec, ins: tuple[Any, ...]) -> Any:
    x = tensor(ins)
    return x and TensorShape(x.dims, feature_last(x.layout))


# ---- mixing ----------------------------------------------------------------------------------
def _norm_mixing(dims_of: Callable[[OpSpec, tuple[int, ...]], Any]):
    """A mixing rule from ``dims_of(spec, xs)``: the dim maps of operand 0, NO_PULLS for a
    constant result, None when not modelled. A non-float result has no derivative; without a
    float input every float operand is read whole."""

    def mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
        if out is None:
            return NO_PULLS
        xs = ins[0] if ins else None
        if not is_shape(xs):
            return Rule(default=extras(ins, set()))
        dims = dims_of(spec, xs)
        if dims is None or dims is NO_PULLS:
            return dims
        pulls = [Product(0, None, dims), *extras(ins, {0})]
        if is_shape(out):
            return Rule({None: pulls})
        return Rule({0: pulls}, default=[Whole(0, None, xs)])  # aten's tuple form: element 0

    return mixing


def _batch_norm_dims(spec: OpSpec, xs: tuple[int, ...]) -> Any:
    """Running statistics: elementwise; batch statistics: every (batch, spatial) position of
    the channel (a channel of one element normalises to a constant)."""
    if not spec.get("batch_stats"):
        return [(k, None) for k in range(len(xs))]
    if prod(xs) // xs[1] <= 1:
        return NO_PULLS
    return [(1, None) if k == 1 else (-1, full(n)) for k, n in enumerate(xs)]


def _layer_norm_dims(spec: OpSpec, xs: tuple[int, ...]) -> Any:
    shape = spec.get("normalized_shape")
    if not isinstance(shape, tuple):
        return None  # a computed normalized_shape: its length is not known here
    n = len(shape)
    if prod(xs[len(xs) - n:]) <= 1:
        return NO_PULLS
    return [(k, None) for k in range(len(xs) - n)] + [(-1, full(m)) for m in xs[len(xs) - n:]]


def _group_norm_dims(spec: OpSpec, xs: tuple[int, ...]) -> Any:
    groups, channels = spec.get("num_groups"), xs[1]
    if not isinstance(groups, int) or not groups:
        return None
    if channels // groups * prod(xs[2:]) <= 1:
        return NO_PULLS
    cmap = group_map(channels, channels, groups)
    dims = [(0, None), (-1, full(channels)) if groups == 1 else (1, cmap)]
    return dims + [(-1, full(n)) for n in xs[2:]]


# ---- cost ------------------------------------------------------------------------------------
def _norm_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    """Other-FLOPs per element; parameters ``width`` per affine tensor (weight, bias)."""
    x, y = tensor(ins), out[0] if isinstance(out, tuple) and out else out
    if x is None or not isinstance(y, TensorShape):
        return FREE
    if spec.kind == "layer_norm":
        shape = spec.value("normalized_shape", ins)
        n = len(shape) if isinstance(shape, tuple) else 0
        width = sympy.Mul(*x.dims[x.rank - n:]) if n else ZERO
    else:
        width = x.dims[1] if x.rank > 1 else ZERO
    affine = spec.get("affine", True)
    tensors = int(bool(affine)) + int(bool(spec.get("bias", affine)))
    return OpCost(tensors * width, ZERO, OTHER_FLOPS[spec.kind] * numel(y))


register(
    OpKind("batch_norm", "linear", _batch_norm_shape, _norm_mixing(_batch_norm_dims), _norm_cost,
           layout="channel_first", doc="batch norm in eval mode (param batch_stats)"),
    OpKind("layer_norm", "linear", _layer_norm_shape, _norm_mixing(_layer_norm_dims), _norm_cost,
           layout="feature_last", doc="layer norm over param normalized_shape (trailing dims)"),
    OpKind("group_norm", "linear", _channel_first_same, _norm_mixing(_group_norm_dims),
           _norm_cost, layout="channel_first", doc="group norm, param num_groups"),
)


# ---- forms -----------------------------------------------------------------------------------
@module_form(nn.modules.batchnorm._BatchNorm)
def _batch_norm_module(m: nn.Module) -> tuple[str, dict[str, Any]]:
    """Subclasses too (timm's BatchNormAct2d as a leaf: only its batch-norm part)."""
    return "batch_norm", {"num_features": m.num_features, "affine": m.affine, "bias": m.affine,
                          "running_stats": m.track_running_stats,
                          "batch_stats": not m.track_running_stats, "eps": m.eps,
                          "momentum": m.momentum}


@module_form(nn.LayerNorm)
def _layer_norm_module(m: nn.LayerNorm) -> tuple[str, dict[str, Any]]:
    affine = m.elementwise_affine
    return "layer_norm", {"normalized_shape": tuple(m.normalized_shape), "affine": affine,
                          "bias": affine and m.bias is not None, "eps": m.eps}


@module_form(nn.GroupNorm)
def _group_norm_module(m: nn.GroupNorm) -> tuple[str, dict[str, Any]]:
    return "group_norm", {"num_groups": m.num_groups, "num_channels": m.num_channels,
                          "affine": m.affine, "bias": m.affine, "eps": m.eps}


#: F.batch_norm and aten.batch_norm share a name but not an argument order: positional
#: arguments bind to slots, sorted out by count (aten's schema has 8 after the input, all given).
_SLOTS = tuple(f"arg{i}" for i in range(1, 9))
_F_ORDER = ("running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_ATEN_ORDER = ("weight", "bias", "running_mean", "running_var", "training", "momentum", "eps",
               "cudnn_enabled")


def _batch_norm_call(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    """Batch statistics when hard-coded ``training=True`` is part of the function: always for
    F.batch_norm, for aten.batch_norm only without running statistics (with them its flag
    follows the mode, :func:`alphac.modes.follows_mode`, and eval mode uses them)."""
    aten = _SLOTS[-1] in bound
    order = _ATEN_ORDER if aten else _F_ORDER
    args = {n: bound[s] for s, n in zip(_SLOTS, order, strict=False) if s in bound}
    args.update({k: v for k, v in bound.items() if k not in _SLOTS})
    running = args.get("running_mean") is not None
    training = args.get("training", False) is True
    return {"affine": args.get("weight") is not None, "bias": args.get("bias") is not None,
            "running_stats": running, "batch_stats": training and not (aten and running),
            **_functional(args, "weight", "bias", "running_mean", "running_var"),
            "momentum": args.get("momentum", 0.1)}


def _functional(bound: dict[str, Any], *names: str) -> dict[str, Any]:
    """A functional norm's tensor operands (Refs or None, in ``names`` order) and eps: what its
    materialise rule passes back (a module form has neither operands nor ``tensors``)."""
    return {"tensors": tuple(bound.get(n) for n in names), "eps": bound.get("eps", 1e-5)}


def _legit_call(form: str) -> Callable[[dict[str, Any], Any, str], dict[str, Any]]:
    """aten's ``_native_batch_norm_legit_*`` (tuple results): no_training uses the running
    statistics; functional follows its ``training`` flag."""

    def finish(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
        return {"affine": bound.get("weight") is not None, "bias": bound.get("bias") is not None,
                "running_stats": True, "batch_stats": bound.get("training") is True,
                "tuple_form": form, "momentum": bound.get("momentum"),
                **_functional(bound, *_LEGIT)}

    return finish


def _layer_norm_call(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    shape = bound.get("normalized_shape")
    return {"normalized_shape": (shape,) if isinstance(shape, int) else shape,
            "affine": bound.get("weight") is not None, "bias": bound.get("bias") is not None,
            **_functional(bound, "weight", "bias")}


def _group_norm_call(bound: dict[str, Any], shape_of: Any, name: str) -> dict[str, Any]:
    return {"num_groups": bound.get("num_groups"), "affine": bound.get("weight") is not None,
            "bias": bound.get("bias") is not None, **_functional(bound, "weight", "bias")}


_LEGIT = ("weight", "bias", "running_mean", "running_var")
call_form(CallForm("batch_norm", (*_SLOTS, *_ATEN_ORDER), finish=_batch_norm_call), "batch_norm")
call_form(CallForm("batch_norm", (*_LEGIT, "momentum", "eps"), finish=_legit_call("no_training")),
          "_native_batch_norm_legit_no_training")
call_form(CallForm("batch_norm", (*_LEGIT, "training", "momentum", "eps"),
                   finish=_legit_call("functional")), "_native_batch_norm_legit_functional")
call_form(CallForm("layer_norm", ("normalized_shape", "weight", "bias", "eps", "cudnn_enable"),
                   finish=_layer_norm_call), "layer_norm")
call_form(CallForm("group_norm", ("num_groups", "weight", "bias", "eps", "cudnn_enabled"),
                   finish=_group_norm_call), "group_norm")


# ---- materialise ---------------------------------------------------------------------------------
def _functional_build(spec: OpSpec) -> Built | None:
    """A functional norm as the torch function, reading its own tensor operands."""
    tensors, eps = spec.get("tensors"), spec.get("eps")
    if tensors is None:
        return None
    if spec.kind == "layer_norm":
        args = (Ref(0), thaw(spec.get("normalized_shape")), *tensors, eps)
        return Built("call_function", F.layer_norm, args)
    if spec.kind == "group_norm":
        return Built("call_function", F.group_norm, (Ref(0), spec.get("num_groups"), *tensors, eps))
    weight, bias, mean, var = tensors
    if spec.get("tuple_form") == "no_training":
        return Built("call_function", torch.ops.aten._native_batch_norm_legit_no_training.default,
                     (Ref(0), weight, bias, mean, var, spec.get("momentum"), eps))
    if spec.get("tuple_form"):
        raise NotMaterialisable("batch_norm: aten's training-mode tuple form is not built")
    training = bool(spec.get("batch_stats")) or mean is None
    return Built("call_function", F.batch_norm, (Ref(0), mean, var, weight, bias, training,
                                                 spec.get("momentum"), eps))


def _batch_norm_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    functional = _functional_build(spec)
    if functional is not None:
        return functional
    (features,) = need(spec, "num_features")
    if spec.get("tuple_form") or spec.get("batch_stats") == spec.get("running_stats"):
        raise NotMaterialisable("batch_norm: only nn.BatchNorm's forms are built")
    rank = len(shapes[0]) if shapes and shapes[0] is not None else 4
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 5: nn.BatchNorm3d}.get(rank, nn.BatchNorm2d)
    m = cls(features, affine=spec.get("affine"), track_running_stats=spec.get("running_stats"),
            **_eps_momentum(spec))
    return Built("call_module", m, (Ref(0),))


def _eps_momentum(spec: OpSpec) -> dict[str, Any]:
    """The module's eps (and batch norm's momentum) where the spec gives them."""
    keys = ("eps", "momentum") if spec.kind == "batch_norm" else ("eps",)
    return {k: spec.get(k) for k in keys if spec.get(k, _NONE) is not _NONE}


_NONE = object()


def _layer_norm_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    functional = _functional_build(spec)
    if functional is not None:
        return functional
    (normalized,) = need(spec, "normalized_shape")
    m = nn.LayerNorm(normalized, elementwise_affine=spec.get("affine"), bias=spec.get("bias"),
                     **_eps_momentum(spec))
    return Built("call_module", m, (Ref(0),))


def _group_norm_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    functional = _functional_build(spec)
    if functional is not None:
        return functional
    groups, channels = spec.get("num_groups"), spec.get("num_channels")
    if channels is None or not isinstance(groups, int) or spec.get("affine") != spec.get("bias"):
        raise NotMaterialisable("group_norm: needs num_groups, num_channels, affine == bias")
    m = nn.GroupNorm(groups, int(channels), affine=spec.get("affine"), **_eps_momentum(spec))
    return Built("call_module", m, (Ref(0),))


register_builds({"batch_norm": _batch_norm_build, "layer_norm": _layer_norm_build,
                 "group_norm": _group_norm_build})
