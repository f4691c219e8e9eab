"""Resizing: ``resize`` (``nn.Upsample``, ``F.interpolate``, aten ``upsample_*``).

Params: ``size`` (an int, a tuple, Refs to computed sizes, or None), ``scale`` (a float or a
tuple, or None), ``mode`` (``nearest``, ``nearest-exact``, ``linear``, ``bilinear``,
``bicubic``, ``trilinear``, ``area``), ``align_corners``, ``recompute`` (recompute_scale_factor)
and ``antialias``. Every spatial dim after (batch, channels) is resized.

Shape: each spatial dim becomes its ``size``, else ``floor(dim * scale)``. Mixing: batch and
channels one-to-one; each spatial dim a 1-D map read off PyTorch's own kernel applied to one-hot
probes (output position ``o`` depends on input position ``i`` exactly when the interpolation
weight is nonzero), so every mode, ``align_corners``, scale and antialias choice is exact. The
kernels are separable, so the spatial dims' product is the relation. Cost: no matrix FLOPs;
``taps`` other-FLOPs per output element (nearest 0, a copy; linear ``2**k``, cubic ``4**k`` for
``k`` spatial dims). Depth: linear (a fixed linear map). Layout: channel_first.

Example: ``F.interpolate(x, scale_factor=2)`` on (B, C, H, W) is ``OpSpec.of("resize",
scale=2.0, mode="nearest", size=None, ...)``, of shape (B, C, 2*H, 2*W); output row 5 reads
input row 2.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from alphac.passes.analysis.mixing_boxes import DimMap, Product, Rule, TableMap
from alphac.passes.analysis.registry.build import thaw
from alphac.passes.analysis.registry.common import FREE, ZERO, extras, is_shape, numel, tensor
from alphac.passes.analysis.registry.core import (
    Built,
    CallForm,
    OpCost,
    OpKind,
    OpSpec,
    Ref,
    call_form,
    module_form,
    register,
    register_builds,
)
from alphac.passes.analysis.shape_dims import TensorShape, as_expr, channel_first

_TAPS = {"linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}


def _per_dim(value: Any, k: int) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return value if len(value) == k else None
    return (value,) * k


def _resize_shape(spec: OpSpec, ins: tuple[Any, ...]) -> TensorShape | None:
    x = tensor(ins)
    if x is None or x.rank < 3:
        return None
    k = x.rank - 2
    sizes = _per_dim(spec.value("size", ins), k)
    scales = _per_dim(spec.get("scale"), k)
    if sizes is not None:
        spatial = [as_expr(s) for s in sizes]
    elif scales is not None and all(isinstance(s, int | float) for s in scales):
        spatial = [d * int(s) if float(s).is_integer() else sympy.floor(d * sympy.Rational(s))
                   for d, s in zip(x.dims[2:], scales, strict=True)]
    else:
        return None
    if any(d is None for d in spatial):
        return None
    layout = channel_first(x.rank) if x.layout in (channel_first(x.rank), None) else x.layout
    return TensorShape((*x.dims[:2], *spatial), layout)


def _interpolate_kwargs(spec: OpSpec, out_spatial: tuple[int, ...]) -> dict[str, Any]:
    """F.interpolate's arguments for the spec at concrete sizes: a given size is the output's
    (the coordinate map then depends on the sizes only); a given scale is kept, as it sets the
    map."""
    kwargs: dict[str, Any] = {"mode": spec.get("mode", "nearest")}
    if spec.get("size") is not None or spec.get("scale") is None:
        kwargs["size"] = out_spatial
    else:
        scale = spec.get("scale")
        kwargs["scale_factor"] = tuple(scale) if isinstance(scale, tuple) else scale
        kwargs["recompute_scale_factor"] = spec.get("recompute")
    if spec.get("align_corners") is not None:
        kwargs["align_corners"] = spec.get("align_corners")
    if spec.get("antialias"):
        kwargs["antialias"] = True
    return kwargs


@lru_cache(maxsize=512)
def _maps(in_spatial: tuple[int, ...], out_spatial: tuple[int, ...],
          kwargs: tuple[tuple[str, Any], ...]) -> tuple[TableMap | None, ...] | None:
    """Per spatial dim, output position -> input positions with a nonzero weight, from one-hot
    probes (channel ``c`` is 1 at position ``c`` of that dim, constant along the others, whose
    weights sum to 1); None when the kernel's output sizes are not ``out_spatial``."""
    k = len(in_spatial)
    maps: list[TableMap | None] = []
    for d, n in enumerate(in_spatial):
        view = [1, n, *([1] * k)]
        view[2 + d] = n
        probe = torch.eye(n, dtype=torch.float64).reshape(view).expand(1, n, *in_spatial)
        with torch.no_grad():
            got = F.interpolate(probe.contiguous(), **dict(kwargs))
        if tuple(got.shape[2:]) != out_spatial:
            return None
        others = [2 + j for j in range(k) if j != d]
        weights = got[0].abs().amax(dim=[o - 1 for o in others]) if others else got[0].abs()
        nonzero = (weights > 0).T.tolist()  # [output position][input position]
        masks = [sum(1 << i for i, on in enumerate(row) if on) for row in nonzero]
        identity = n == out_spatial[d] and masks == [1 << o for o in range(n)]
        maps.append(None if identity else TableMap(masks))
    return tuple(maps)


def _resize_mixing(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> Rule | None:
    xs = ins[0] if ins else None
    if not is_shape(xs) or not is_shape(out) or len(xs) != len(out) or len(xs) < 3:
        return None
    kwargs = _interpolate_kwargs(spec, tuple(out[2:]))
    try:
        maps = _maps(tuple(xs[2:]), tuple(out[2:]), tuple(sorted(kwargs.items())))
    except (RuntimeError, ValueError, NotImplementedError):  # a mode PyTorch refuses here
        return None
    if maps is None:
        return None
    dims: list[DimMap] = [(0, None), (1, None)]
    dims += [(2 + j, m) for j, m in enumerate(maps)]
    return Rule({None: [Product(0, None, dims), *extras(ins, {0})]})


def _resize_cost(spec: OpSpec, ins: tuple[Any, ...], out: Any) -> OpCost:
    x = tensor(ins)
    if x is None or not isinstance(out, TensorShape):
        return FREE
    taps = _TAPS.get(spec.get("mode", "nearest"), 0) ** (x.rank - 2)
    return OpCost(ZERO, ZERO, taps * numel(out))


register(OpKind("resize", "linear", _resize_shape, _resize_mixing, _resize_cost,
                layout="channel_first", doc="nearest/linear/cubic resizing of the spatial dims"))


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _params(size: Any, scale: Any, mode: str, align_corners: Any, recompute: Any,
            antialias: Any) -> dict[str, Any] | None:
    if size is None and scale is None:
        return None
    return {"size": _frozen(size), "scale": _frozen(scale), "mode": mode,
            "align_corners": align_corners, "recompute": recompute,
            "antialias": bool(antialias)}


@module_form(nn.Upsample)
def _upsample_module(m: nn.Upsample) -> tuple[str, dict[str, Any]] | None:
    params = _params(m.size, m.scale_factor, m.mode, m.align_corners,
                     m.recompute_scale_factor, False)
    return None if params is None else ("resize", params)


def _interpolate_finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
                        name: str) -> dict[str, Any] | None:
    return _params(bound.get("size"), bound.get("scale_factor"), bound.get("mode", "nearest"),
                   bound.get("align_corners"), bound.get("recompute_scale_factor"),
                   bound.get("antialias", False))


call_form(CallForm("resize", ("size", "scale_factor", "mode", "align_corners",
                              "recompute_scale_factor", "antialias"),
                   finish=_interpolate_finish), "interpolate", "upsample")


def _aten_scales(rest: tuple[Any, ...]) -> Any:
    """aten's ``.vec`` overloads take ``scale_factors`` (one list), the others one optional
    float per dim (None: derived from the sizes)."""
    if len(rest) == 1 and isinstance(rest[0], tuple):
        return rest[0]
    if rest and all(isinstance(s, float | int) for s in rest):
        return tuple(rest)
    return None


def _aten_finish(mode: str, antialias: bool, linear: bool):
    def finish(bound: dict[str, Any], shape_of: Callable[[Any], Any],
               name: str) -> dict[str, Any] | None:
        rest = tuple(bound.get("rest", ()))
        scales = _aten_scales(rest)
        size = bound.get("output_size")
        if size is not None and scales is not None and not all(
                isinstance(v, int) and v == int(v) for v in scales):
            return None  # sizes and a fractional scale both set the map: not modelled
        return _params(size, scales if size is None else None, mode,
                       bound.get("align_corners") if linear else None, None, antialias)

    return finish


for _prefix, _mode in (("upsample_nearest", "nearest"), ("_upsample_nearest_exact",
                                                         "nearest-exact")):
    call_form(CallForm("resize", ("output_size", "rest"), varargs="rest",
                       finish=_aten_finish(_mode, False, False)),
              *(f"{_prefix}{k}d" for k in (1, 2, 3)))
for _name, _mode, _aa in (("upsample_linear1d", "linear", False),
                          ("upsample_bilinear2d", "bilinear", False),
                          ("upsample_trilinear3d", "trilinear", False),
                          ("upsample_bicubic2d", "bicubic", False),
                          ("_upsample_bilinear2d_aa", "bilinear", True),
                          ("_upsample_bicubic2d_aa", "bicubic", True)):
    call_form(CallForm("resize", ("output_size", "align_corners", "rest"), varargs="rest",
                       finish=_aten_finish(_mode, _aa, True)), _name)


# ---- materialise ---------------------------------------------------------------------------------
def _resize_build(spec: OpSpec, shapes: tuple[Any, ...]) -> Built:
    kwargs = {"size": thaw(spec.get("size")), "scale_factor": thaw(spec.get("scale")),
              "mode": spec.get("mode"), "align_corners": spec.get("align_corners"),
              "recompute_scale_factor": spec.get("recompute"),
              "antialias": spec.get("antialias")}
    return Built("call_function", F.interpolate, (Ref(0),), tuple(sorted(kwargs.items())))


register_builds({"resize": _resize_build})
