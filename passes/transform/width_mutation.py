"""Width mutations: narrow or widen an internal width, the boundary shapes kept exact.

An *internal width* is the channel count of a conv/linear output that reaches only other
conv/linear layers, through channel-wise ops (norms, activations, dropout, pooling, a depthwise
conv, a flatten or mean over 1x1 spatial dims): a ResNet block's hidden width, an MLP's hidden
size, a VGG stage's width between two convs, an inverted residual's expansion. Changing it
changes no shape outside the group and no depth or mixing pair (each op does the same thing on
fewer or more channels), so it is a property-preserving rewrite. This is what structured pruning
does; the channels kept inherit their weights by magnitude through the mutation's
:class:`~alphac.channels.ChannelStep` plan (:func:`alphac.codegen.inherit_weights`).

Only ``call_module`` layers of torch's own classes take part (a torch.export graph's functional
convs form no group); a module called at several sites never does.

Example (zoo:small_cnn)::

    groups = width_groups(gm)            # features.0.conv -> features.1.conv, ...
    plan = narrow(gm, groups[0], 16)     # features.0.conv 32 -> 16 channels, its bn too
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from alphac.channels import ChannelStep
from alphac.rewriter import Rewriter

__all__ = ["WidthGroup", "new_width", "resize_group", "same_role", "width_groups"]

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                        nn.Hardsigmoid, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Identity, nn.Dropout,
                        nn.Dropout2d)
_SPATIAL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_ELEMENTWISE_CALLS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, torch.sigmoid, torch.tanh,
                      F.hardswish, F.leaky_relu, F.dropout, "relu", "sigmoid", "tanh"}
_SPATIAL_CALLS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d}


@dataclass(frozen=True)
class WidthGroup:
    """One internal width: the ``producer`` node (a conv/linear module call), the channel-wise
    module calls it flows through (``channelwise``: norms and depthwise convs, in graph order),
    the ``consumers`` (conv/linear module calls reading it), every node of the group
    (``nodes``), the ``width`` and a ``role``: the producer's module path with its numbers
    wildcarded (``layer#.#.conv1``), shared by the same layer of every instance of a block."""

    producer: str
    channelwise: tuple[str, ...]
    consumers: tuple[str, ...]
    nodes: tuple[str, ...]
    width: int
    role: str


def _meta_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(int(s) for s in meta.shape) if hasattr(meta, "shape") else None


def _is_depthwise(m: nn.Module, width: int) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels == width)


def _step(node: fx.Node, modules: dict[str, nn.Module], axis: int, ndim: int, width: int
          ) -> tuple[str, int, int] | None:
    """How ``node`` treats a value whose channels are on ``axis`` (of ``ndim``): ``("pass",
    axis, ndim)`` for channel-wise ops, ``("norm"|"depthwise", ...)`` for those with weights,
    ``("consumer", ...)`` for a conv/linear reading all channels; None: it breaks the group."""
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, _ELEMENTWISE_MODULES) and type(m).__module__.startswith("torch."):
            return "pass", axis, ndim
        if isinstance(m, _SPATIAL_MODULES) and axis == 1 and ndim == 4:
            return "pass", axis, ndim
        shape = _meta_shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) \
            else None
        if (type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1 and axis == 1
                and shape is not None and all(s == 1 for s in shape[2:])):
            return "pass", 1, 2
        if type(m) in (nn.BatchNorm2d, nn.BatchNorm1d) and axis == 1 and m.num_features == width:
            return "norm", axis, ndim
        if (type(m) is nn.LayerNorm and axis == ndim - 1
                and tuple(m.normalized_shape) == (width,)):
            return "norm", axis, ndim
        if _is_depthwise(m, width) and axis == 1 and ndim == 4:
            return "depthwise", axis, ndim
        if type(m) is nn.Conv2d and m.groups == 1 and m.in_channels == width and axis == 1:
            return "consumer", axis, ndim
        if type(m) is nn.Linear and m.in_features == width and axis == ndim - 1:
            return "consumer", axis, ndim
        return None
    if node.op in ("call_function", "call_method") and node.args and node.args[0] is not None:
        if node.target in _ELEMENTWISE_CALLS:
            return "pass", axis, ndim
        if node.target in _SPATIAL_CALLS and axis == 1 and ndim == 4:
            return "pass", axis, ndim
        shape = _meta_shape(node.all_input_nodes[0]) if node.all_input_nodes else None
        if (node.target in (torch.flatten, "flatten") and shape is not None and axis == 1
                and all(s == 1 for s in shape[2:]) and _flat_from(node) == 1):
            return "pass", 1, 2
    return None


def _flat_from(node: fx.Node) -> int | None:
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
    end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
    return start if end == -1 and isinstance(start, int) else None


def _role(path: str) -> str:
    return re.sub(r"\d+", "#", path)


def _group_from(node: fx.Node, modules: dict[str, nn.Module], calls: Counter
                ) -> WidthGroup | None:
    m = modules[str(node.target)]
    shape = _meta_shape(node)
    if shape is None:
        return None
    if type(m) is nn.Conv2d and m.groups == 1 and len(shape) == 4:
        width, axis = m.out_channels, 1
    elif type(m) is nn.Linear:
        width, axis = m.out_features, len(shape) - 1
    else:
        return None
    channelwise, consumers, members = [], [], [node.name]
    frontier = [(node, axis, len(shape))]
    while frontier:
        value, ax, nd = frontier.pop()
        for user in value.users:
            if user.op == "call_module" and calls[str(user.target)] != 1:
                return None
            if any(a is not value for a in user.all_input_nodes):
                return None  # a second tensor operand (an add, a mul): channels are shared
            step = _step(user, modules, ax, nd, width)
            if step is None:
                return None
            kind, ax2, nd2 = step
            members.append(user.name)
            if kind == "consumer":
                consumers.append(user.name)
                continue
            if kind in ("norm", "depthwise"):
                channelwise.append(user.name)
            frontier.append((user, ax2, nd2))
    if not consumers:
        return None
    order = {n.name: i for i, n in enumerate(node.graph.nodes)}
    members = sorted(set(members), key=order.__getitem__)
    channelwise = sorted(channelwise, key=order.__getitem__)
    return WidthGroup(node.name, tuple(channelwise), tuple(sorted(consumers, key=order.__getitem__)),
                      tuple(members), width, _role(str(node.target)))


def width_groups(gm: fx.GraphModule) -> list[WidthGroup]:
    """Every internal width of ``gm`` (see the module docstring), in graph order.

    Pre: ``gm`` is shape-annotated. Post: each group's producer is called once, every user of
    its channels is in the group, and no module of a group is called anywhere else."""
    modules = dict(gm.named_modules())
    calls = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and calls[str(node.target)] == 1:
            group = _group_from(node, modules, calls)
            if group is not None:
                found.append(group)
    return found


def new_width(width: int, ratio: float) -> int | None:
    """``width * ratio`` rounded to a multiple of 8 (width >= 64), 4 (>= 16) or 1, at least 2;
    None when that is the width itself."""
    grain = 8 if width >= 64 else 4 if width >= 16 else 1
    made = max(2, grain, grain * round(width * ratio / grain))
    return None if made == width else made


def _resized(m: nn.Module, width: int, *, out: bool) -> nn.Module:
    """A fresh ``m`` with ``width`` output (``out``) or input channels."""
    if type(m) is nn.Conv2d:
        groups = width if m.groups > 1 else 1
        made = nn.Conv2d(width if (not out or groups > 1) else m.in_channels,
                         width if out else m.out_channels, m.kernel_size, m.stride, m.padding,
                         m.dilation, groups, m.bias is not None, m.padding_mode)
    elif type(m) is nn.Linear:
        made = nn.Linear(m.in_features if out else width, width if out else m.out_features,
                         m.bias is not None)
    elif type(m) in (nn.BatchNorm2d, nn.BatchNorm1d):
        made = type(m)(width, m.eps, m.momentum, m.affine, m.track_running_stats)
    elif type(m) is nn.LayerNorm:
        made = nn.LayerNorm((width,), m.eps, m.elementwise_affine, bias=m.bias is not None)
    else:
        raise ValueError(f"cannot resize a {type(m).__name__}")
    ref = next(m.parameters(), None)
    return made.to(ref.device, ref.dtype) if ref is not None else made


def resize_group(rw: Rewriter, group: WidthGroup, width: int, group_id: int = 0
                 ) -> tuple[ChannelStep, ...]:
    """Give ``group`` ``width`` channels: fresh modules (the caller seeds their init) at the
    same paths; the plan that maps the parent's channels into them."""
    nodes = {n.name: n for n in rw.gm.graph.nodes}
    plan = []
    for name in (group.producer, *group.channelwise, *group.consumers):
        target = str(nodes[name].target)
        old = rw.gm.get_submodule(target)
        is_consumer = name in group.consumers
        rw.replace_module(target, _resized(old, width, out=not is_consumer))
        kind = "channelwise" if name in group.channelwise else "resize"
        plan.append(ChannelStep(target, target, kind, in_group=group_id if is_consumer else None,
                                out_group=None if is_consumer else group_id))
    return tuple(plan)


def same_role(groups: Sequence[WidthGroup], group: WidthGroup) -> list[WidthGroup]:
    """The other groups playing ``group``'s role (the same layer in other block instances)."""
    return [g for g in groups if g.role == group.role and g.producer != group.producer]

