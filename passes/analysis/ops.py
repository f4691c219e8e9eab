"""Normalize an fx node into an :class:`OpSpec`: a canonical op kind plus concrete hyperparameters.

Every analysis keys its transfer rules on ``OpSpec``, so ``nn.Conv2d`` modules, ``F.conv2d`` calls
and torch.export's ``aten.conv2d.default`` all look the same (kind ``conv``, with the real kernel,
stride, padding, dilation and groups). An op this table does not know becomes kind ``unknown``;
analyses give it a conservative (top) answer rather than crashing.

Example: ``call_module`` of ``nn.Conv2d(64, 128, 3, stride=2, padding=1)`` ->
``OpSpec(kind='conv', cls='linear', params=(('bias', True), ('dilation', (1, 1)), ...,
('stride', (2, 2))), operands=('x',))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from alphac.modes import ModeValue, eval_value, is_mode_value

NONLINEAR = frozenset({
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "leaky_relu", "elu", "softmax", "log_softmax", "sdpa",
})
LINEAR = frozenset({
    "conv", "linear", "matmul", "einsum", "batch_norm", "layer_norm", "group_norm",
    "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "reduce",
    "add", "sub", "mul", "div", "neg", "cat", "stack", "flatten", "reshape", "permute",
    "transpose", "unsqueeze", "squeeze", "expand", "dropout", "drop_path", "getitem", "chunk",
    "split",
    "pad", "unbind", "tensor_split", "unflatten", "roll", "masked_fill", "index",
})
#: Ops that pass data through unchanged or carry none: constants made from sizes alone
#: (``arange``, ``zeros``) and comparisons (a boolean mask has no derivative).
TRANSPARENT = frozenset({"identity", "size", "mode_value", "arange", "full", "compare"})


@dataclass(frozen=True)
class OpSpec:
    """A node as an op: canonical ``kind``, depth class ``cls``, sorted ``params``, ``operands``.

    ``operands`` are the names of the data nodes the op reads, in argument order (weights read
    through ``get_attr`` are excluded); ``cls`` is ``nonlinear``, ``linear``, ``transparent`` or
    ``unknown``.
    """

    kind: str
    params: tuple[tuple[str, Any], ...]
    operands: tuple[str, ...]

    @property
    def cls(self) -> str:
        if self.kind in NONLINEAR:
            return "nonlinear"
        if self.kind in LINEAR:
            return "linear"
        if self.kind in TRANSPARENT:
            return "transparent"
        return "unknown"

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        return default


def _freeze(value: Any) -> Any:
    if isinstance(value, fx.Node):
        return ("node", value.name)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, slice):
        return ("slice", _freeze(value.start), _freeze(value.stop), _freeze(value.step))
    if isinstance(value, torch.dtype | torch.device | torch.memory_format):
        return str(value)
    if value is Ellipsis:
        return "..."
    return value


def _spec(kind: str, node: fx.Node, **params: Any) -> OpSpec:
    frozen = tuple(sorted((k, _freeze(v)) for k, v in params.items()))
    operands = tuple(
        dict.fromkeys(a.name for a in node.all_input_nodes
                      if a.op != "get_attr" and not is_mode_value(a))
    )
    return OpSpec(kind, frozen, operands)


def _tuple(value: Any, n: int) -> tuple:
    if isinstance(value, (list, tuple)):
        return tuple(value) if len(value) == n else tuple(value) * n if len(value) == 1 else tuple(value)
    return (value,) * n


def _conv_params(weight_shape, stride, padding, dilation, groups, transposed=False) -> dict:
    n = len(weight_shape) - 2
    kernel = tuple(int(k) for k in weight_shape[2:])
    dil = _tuple(dilation, n)
    if padding == "valid":
        padding = (0,) * n
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for d, k in zip(dil, kernel, strict=True))
    out_ch = weight_shape[1] * groups if transposed else weight_shape[0]
    in_ch = weight_shape[0] if transposed else weight_shape[1] * groups
    return dict(dims=n, kernel=kernel, stride=_tuple(stride, n), padding=_tuple(padding, n),
                dilation=dil, groups=int(groups), in_channels=int(in_ch),
                out_channels=int(out_ch), transposed=transposed)


def _pool_params(n: int, kernel, stride, padding, dilation=1, ceil_mode=False) -> dict:
    stride = kernel if stride in (None, [], ()) else stride
    return dict(dims=n, kernel=_tuple(kernel, n), stride=_tuple(stride, n),
                padding=_tuple(padding, n), dilation=_tuple(dilation, n),
                ceil_mode=bool(ceil_mode))


_ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.GELU: "gelu", nn.SiLU: "silu", nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
    nn.LeakyReLU: "leaky_relu", nn.ELU: "elu",
}


def _module_spec(node: fx.Node, module: nn.Module) -> OpSpec:
    m = module
    for cls, kind in _ACTIVATION_MODULES.items():
        if type(m) is cls:
            return _spec(kind, node)
    if isinstance(m, nn.modules.conv._ConvNd):
        p = _conv_params(tuple(m.weight.shape), m.stride, m.padding, m.dilation, m.groups,
                         m.transposed)
        return _spec("conv", node, bias=m.bias is not None, **p)
    if isinstance(m, nn.Linear):
        return _spec("linear", node, in_features=m.in_features, out_features=m.out_features,
                     bias=m.bias is not None)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return _spec("batch_norm", node, num_features=m.num_features, affine=m.affine,
                     running_stats=m.track_running_stats)
    if isinstance(m, nn.LayerNorm):
        return _spec("layer_norm", node, normalized_shape=tuple(m.normalized_shape),
                     affine=m.elementwise_affine)
    if isinstance(m, nn.GroupNorm):
        return _spec("group_norm", node, num_groups=m.num_groups, num_channels=m.num_channels,
                     affine=m.affine)
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return _spec("softmax" if isinstance(m, nn.Softmax) else "log_softmax", node, dim=m.dim)
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return _spec("dropout", node, p=m.p)
    if isinstance(m, nn.Identity):
        return _spec("identity", node)
    if isinstance(m, nn.Flatten):
        return _spec("flatten", node, start_dim=m.start_dim, end_dim=m.end_dim)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        n = int(type(m).__name__[-2])
        return _spec("max_pool", node, **_pool_params(n, m.kernel_size, m.stride,
                                                        m.padding, m.dilation, m.ceil_mode))
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        n = int(type(m).__name__[-2])
        return _spec("avg_pool", node, **_pool_params(n, m.kernel_size, m.stride,
                                                        m.padding, 1, m.ceil_mode))
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        n = int(type(m).__name__[-2])
        return _spec("adaptive_avg_pool", node, output_size=_tuple(m.output_size, n))
    if isinstance(m, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):
        n = int(type(m).__name__[-2])
        return _spec("adaptive_max_pool", node, output_size=_tuple(m.output_size, n))
    if isinstance(m, ModeValue):  # a mode-dependent constant (alphac.modes): its eval value
        return _spec("mode_value", node, value=m.eval_value)
    if type(m).__name__ in _DROP_PATH_CLASSES:  # a leaf of the tracer: identity in eval mode
        return _spec("drop_path", node, p=getattr(m, "drop_prob", getattr(m, "p", None)))
    return _spec("unknown", node, target=type(m).__qualname__)


#: Stochastic depth (timm DropPath/DropBlock2d, torchvision StochasticDepth), known by class name.
_DROP_PATH_CLASSES = frozenset({"DropPath", "DropBlock2d", "StochasticDepth"})


def _shape_of(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, fx.Node):
        meta = value.meta.get("tensor_meta")
        if meta is not None and hasattr(meta, "shape"):
            return tuple(meta.shape)
        val = value.meta.get("val")
        if isinstance(val, torch.Tensor):
            return tuple(val.shape)
    return None


# name -> (kind, parameter names after the input, defaults). One table serves torch functions,
# Tensor methods and aten overloads, whose argument orders agree for these ops.
_SIGNATURES: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "relu": ("relu", (), {}), "relu_": ("relu", (), {}), "relu6": ("relu6", (), {}),
    "gelu": ("gelu", (), {}), "silu": ("silu", (), {}), "sigmoid": ("sigmoid", (), {}),
    "tanh": ("tanh", (), {}), "hardswish": ("hardswish", (), {}),
    "hardsigmoid": ("hardsigmoid", (), {}), "leaky_relu": ("leaky_relu", (), {}),
    "elu": ("elu", (), {}), "hardtanh": ("relu6", (), {}),
    "softmax": ("softmax", ("dim",), {"dim": -1}), "_softmax": ("softmax", ("dim",), {}),
    "log_softmax": ("log_softmax", ("dim",), {"dim": -1}),
    "scaled_dot_product_attention": ("sdpa", ("key", "value", "attn_mask", "dropout_p",
                                              "is_causal", "scale", "enable_gqa"),
                                     {"attn_mask": None, "dropout_p": 0.0, "is_causal": False,
                                      "scale": None, "enable_gqa": False}),
    "conv1d": ("conv", ("weight", "bias", "stride", "padding", "dilation", "groups"),
               {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "conv2d": ("conv", ("weight", "bias", "stride", "padding", "dilation", "groups"),
               {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}),
    "convolution": ("conv", ("weight", "bias", "stride", "padding", "dilation", "transposed",
                             "output_padding", "groups"), {}),
    "linear": ("linear", ("weight", "bias"), {"bias": None}),
    "matmul": ("matmul", (), {}), "mm": ("matmul", (), {}), "bmm": ("matmul", (), {}),
    "einsum": ("einsum", ("operands",), {}),
    "batch_norm": ("batch_norm", (), {}),
    "_native_batch_norm_legit_no_training": ("batch_norm", (), {}),
    "_native_batch_norm_legit_functional": ("batch_norm", (), {}),
    "layer_norm": ("layer_norm", ("normalized_shape",), {}),
    "group_norm": ("group_norm", ("num_groups",), {}),
    "dropout": ("dropout", ("p",), {"p": 0.5}), "contiguous": ("identity", (), {}),
    "clone": ("identity", (), {}), "detach": ("identity", (), {}),
    "alias": ("identity", (), {}), "type_as": ("identity", (), {}),
    "max_pool1d": ("max_pool", ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                   {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}),
    "max_pool2d": ("max_pool", ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                   {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}),
    "avg_pool1d": ("avg_pool", ("kernel_size", "stride", "padding", "ceil_mode"),
                   {"stride": None, "padding": 0, "ceil_mode": False}),
    "avg_pool2d": ("avg_pool", ("kernel_size", "stride", "padding", "ceil_mode"),
                   {"stride": None, "padding": 0, "ceil_mode": False}),
    "adaptive_avg_pool1d": ("adaptive_avg_pool", ("output_size",), {}),
    "adaptive_avg_pool2d": ("adaptive_avg_pool", ("output_size",), {}),
    "_adaptive_avg_pool2d": ("adaptive_avg_pool", ("output_size",), {}),
    "adaptive_max_pool2d": ("adaptive_max_pool", ("output_size",), {}),
    "mean": ("reduce", ("dim", "keepdim"), {"dim": None, "keepdim": False}),
    "sum": ("reduce", ("dim", "keepdim"), {"dim": None, "keepdim": False}),
    "amax": ("reduce", ("dim", "keepdim"), {"dim": None, "keepdim": False}),
    "amin": ("reduce", ("dim", "keepdim"), {"dim": None, "keepdim": False}),
    "add": ("add", (), {}), "iadd": ("add", (), {}), "sub": ("sub", (), {}),
    "rsub": ("sub", (), {}), "mul": ("mul", (), {}), "imul": ("mul", (), {}),
    "truediv": ("div", (), {}), "div": ("div", (), {}), "neg": ("neg", (), {}),
    "cat": ("cat", ("dim",), {"dim": 0}), "concat": ("cat", ("dim",), {"dim": 0}),
    "stack": ("stack", ("dim",), {"dim": 0}),
    "flatten": ("flatten", ("start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1}),
    "transpose": ("transpose", ("dim0", "dim1"), {}), "t": ("transpose", (), {}),
    "unsqueeze": ("unsqueeze", ("dim",), {}), "squeeze": ("squeeze", ("dim",), {"dim": None}),
    "chunk": ("chunk", ("chunks", "dim"), {"dim": 0}),
    "split": ("split", ("split_size", "dim"), {"dim": 0}),
    "split_with_sizes": ("split", ("split_size", "dim"), {"dim": 0}),
    "tensor_split": ("tensor_split", ("sections", "dim"), {"dim": 0}),
    "unbind": ("unbind", ("dim",), {"dim": 0}),
    "unflatten": ("unflatten", ("dim", "sizes"), {}),
    "roll": ("roll", ("shifts", "dims"), {"dims": None}),
    "masked_fill": ("masked_fill", ("mask", "value"), {}),
    # Size arithmetic (``H // ws``, ``(ws - H % ws) % ws``); on tensors too, elementwise.
    "floordiv": ("floordiv", (), {}), "floor_divide": ("floordiv", (), {}),
    "mod": ("mod", (), {}), "remainder": ("mod", (), {}),
    **dict.fromkeys(["gt", "lt", "ge", "le", "eq", "ne"], ("compare", (), {})),
    "getitem": ("getitem", ("index",), {}), "index": ("index", ("indices",), {}),
    "select": ("getitem", ("dim", "index"), {}),
    "slice": ("getitem", ("dim", "start", "end", "step"), {}),
    "size": ("size", ("dim",), {"dim": None}), "dim": ("size", (), {}),
    "sym_size": ("size", ("dim",), {}), "getattr": ("size", ("attr",), {}),
    # Shape-only second operand: the result does not depend on ``other``'s values.
    "expand_as": ("expand", ("other",), {}), "view_as": ("reshape", ("other",), {}),
    "reshape_as": ("reshape", ("other",), {}),
    "conv_transpose1d": ("conv", ("weight", "bias", "stride", "padding", "output_padding",
                                  "groups", "dilation"),
                         {"stride": 1, "padding": 0, "groups": 1, "dilation": 1}),
    "conv_transpose2d": ("conv", ("weight", "bias", "stride", "padding", "output_padding",
                                  "groups", "dilation"),
                         {"stride": 1, "padding": 0, "groups": 1, "dilation": 1}),
    "pad": ("pad", ("pad", "mode", "value"), {"mode": "constant"}),
    "constant_pad_nd": ("pad", ("pad", "value"), {"mode": "constant"}),
    "reflection_pad1d": ("pad", ("pad",), {"mode": "reflect"}),
    "reflection_pad2d": ("pad", ("pad",), {"mode": "reflect"}),
    "replication_pad1d": ("pad", ("pad",), {"mode": "replicate"}),
    "replication_pad2d": ("pad", ("pad",), {"mode": "replicate"}),
    "_pad_circular": ("pad", ("pad",), {"mode": "circular"}),
    # Tensors made from sizes alone (their rules read the sizes from the arguments): constants.
    "arange": ("arange", (), {}),
    **dict.fromkeys(["zeros", "ones", "full", "empty"], ("full", (), {})),
}
# Ops whose extra positional arguments are one varargs list (x.view(2, 3) == x.view((2, 3))).
_VARARGS = {"view": "reshape", "reshape": "reshape", "_unsafe_view": "reshape",
            "permute": "permute", "expand": "expand", "repeat": "expand"}


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
    """``value``, or its default when it is a non-tensor placeholder with one (timm's
    ``forward(x, attn_mask=None, is_causal=False)``): the value it had when the graph was traced."""
    if (isinstance(value, fx.Node) and value.op == "placeholder" and value.args
            and value.meta.get("tensor_meta") is None):
        return value.args[0]
    return value


def _bind(names: tuple[str, ...], defaults: dict[str, Any], node: fx.Node) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, node.args[1:], strict=False))
    bound.update({k: v for k, v in node.kwargs.items() if k in names})
    return {k: placeholder_default(_eval_constant(v)) for k, v in bound.items()}


def _eval_constant(value: Any) -> Any:
    """A :class:`~alphac.modes.ModeValue` argument as its eval value: analyses mean eval mode."""
    return eval_value(value) if is_mode_value(value) else value


def op_spec(node: fx.Node, modules: dict[str, nn.Module] | None = None) -> OpSpec:
    """The :class:`OpSpec` of ``node``; ``modules`` maps ``call_module`` targets to modules."""
    if node.op == "call_module":
        module = (modules or {}).get(str(node.target))
        if module is None and is_mode_value(node):
            return _spec("mode_value", node, value=eval_value(node))
        return _module_spec(node, module) if module is not None else _spec(
            "unknown", node, target=str(node.target))
    if node.op not in ("call_function", "call_method"):
        return _spec(node.op, node)
    name = target_name(node)
    if name in _VARARGS:
        rest = node.args[1:]
        values = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        key = {"reshape": "shape", "permute": "dims", "expand": "sizes"}[_VARARGS[name]]
        return _spec(_VARARGS[name], node, **{key: tuple(values) or node.kwargs.get(key)})
    if name not in _SIGNATURES:
        return _spec("unknown", node, target=name)
    kind, names, defaults = _SIGNATURES[name]
    bound = _bind(names, defaults, node)
    if name == "t":
        bound = {"dim0": 0, "dim1": 1}
    if name == "select":
        bound = {"index": ("select", bound.get("dim"), bound.get("index"))}
    if name == "slice":
        bound = {"index": ("slice_dim", bound.get("dim"), bound.get("start"), bound.get("end"),
                           bound.get("step", 1))}
    if kind == "conv":
        bound["transposed"] = bound.get("transposed", name.startswith("conv_transpose"))
        return _conv_spec(node, name, bound)
    if kind in ("max_pool", "avg_pool"):
        n = 1 if name.endswith("1d") else 2
        kernel = bound.get("kernel_size")
        bound = _pool_params(n, kernel, bound.get("stride"), bound.get("padding", 0),
                             bound.get("dilation", 1), bound.get("ceil_mode", False))
    if kind == "adaptive_avg_pool" or kind == "adaptive_max_pool":
        n = 1 if name.endswith("1d") else 2
        bound = {"output_size": _tuple(bound.get("output_size"), n)}
    if kind == "linear":
        w = _shape_of(bound.get("weight"))
        bound = {"in_features": w[1] if w else None, "out_features": w[0] if w else None,
                 "bias": bound.get("bias") is not None}
    if kind == "layer_norm" and isinstance(bound.get("normalized_shape"), (list, int)):
        bound["normalized_shape"] = tuple(_tuple(bound["normalized_shape"], 1))
    if kind in ("softmax", "log_softmax", "reduce") and isinstance(bound.get("dim"), list):
        bound["dim"] = tuple(bound["dim"])
    if kind == "reduce":
        bound["op"] = name
    if kind == "einsum" and isinstance(node.args[0], str):
        bound = {"equation": node.args[0]}
    bound = {k: v for k, v in bound.items() if not isinstance(v, fx.Node) or kind == "getitem"}
    return _spec(kind, node, **bound)


def _conv_spec(node: fx.Node, name: str, bound: dict[str, Any]) -> OpSpec:
    weight = _shape_of(bound.get("weight"))
    if weight is None:
        return _spec("unknown", node, target=name)
    params = _conv_params(weight, bound.get("stride", 1), bound.get("padding", 0),
                          bound.get("dilation", 1), bound.get("groups", 1),
                          bool(bound.get("transposed", False)))
    return _spec("conv", node, bias=bound.get("bias") is not None, **params)


def graph_modules(gm: fx.GraphModule) -> dict[str, nn.Module]:
    """Qualified name -> submodule, the ``modules`` argument of :func:`op_spec`."""
    return dict(gm.named_modules(remove_duplicate=False))


__all__ = [
    "LINEAR", "NONLINEAR", "TRANSPARENT", "OpSpec", "graph_modules", "op_spec",
    "placeholder_default", "target_name",
]
