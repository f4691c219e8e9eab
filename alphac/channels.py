"""Channel inheritance: a child module starts from a parent module of another width.

A mutation that changes widths (a narrower hidden layer, a synthesized chain whose conv kept its
kernel but not its channels) records a *plan*: one :class:`ChannelStep` per child module that
starts from a parent module, in dataflow order, each naming the *channel groups* of its input and
output axes. :func:`apply_channel_plan` resolves the groups on the parent's trained state, so the
choice of channels follows trained magnitudes while the child's structure (and its replay on
resume) does not depend on them:

- a resizing step (conv or linear, not depthwise) that *defines* its output group keeps the
  ``k`` output channels of largest L1 norm (in their original order) when it narrows to ``k``,
  and all of them plus fresh ones when it widens; a step whose output is the parent's (group
  ``None``) keeps every channel in place;
- a step reading a group takes its input channels from it; a channel that is new in that group
  reads zeros (so widening a hidden layer leaves the function unchanged: Net2Net-style);
- a channel-wise step (a norm, a depthwise conv) follows its group on axis 0; the first step of
  a group that is channel-wise defines it by magnitude too.

Tensors are matched by their name under the module (``weight``, ``bias``, ``running_mean``...);
a 0-d buffer (``num_batches_tracked``) is copied; anything else keeps the child's value.

Example: the parent's ``conv1`` (16 -> 32) and ``bn1`` (32) become 16 channels wide::

    plan = (ChannelStep("conv1", "conv1", "resize", out_group=0),
            ChannelStep("bn1", "bn1", "channelwise", out_group=0),
            ChannelStep("conv2", "conv2", "resize", in_group=0))
    apply_channel_plan(child, parent_state, plan)   # conv1 keeps its 16 strongest filters
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["ChannelStep", "apply_channel_plan", "plan_from_json"]

KINDS = ("resize", "channelwise")


@dataclass(frozen=True)
class ChannelStep:
    """Child module ``new`` starts from parent module ``old`` (dotted paths); ``kind`` is
    ``resize`` (conv/linear: axis 0 out, axis 1 in) or ``channelwise`` (norms, depthwise convs:
    axis 0 only). ``in_group``/``out_group`` name channel groups; ``None`` means the parent's
    channels unchanged (identity)."""

    new: str
    old: str
    kind: str
    in_group: int | None = None
    out_group: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ChannelStep kind must be one of {KINDS}, got {self.kind!r}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_from_json(rows: Sequence[Mapping[str, Any]] | None) -> tuple[ChannelStep, ...]:
    """The plan as :meth:`ChannelStep.as_dict` rows (a journal's mutation record) give it."""
    return tuple(ChannelStep(**dict(r)) for r in rows or ())


def _module_state(state: Mapping[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    prefix = f"{path}." if path else ""
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and "." not in k[len(prefix):]}


def _select(old: torch.Tensor, size: int) -> torch.Tensor:
    """Indices into axis 0 of ``old`` for a group of ``size``: the strongest (L1) rows in order
    when narrowing, every row then -1 (fresh) when widening."""
    n = old.shape[0]
    if size >= n:
        return torch.cat([torch.arange(n), torch.full((size - n,), -1, dtype=torch.long)])
    strength = old.detach().abs().reshape(n, -1).sum(1)
    return torch.sort(torch.topk(strength, size, sorted=False).indices).values


def _take(source: torch.Tensor, target: torch.Tensor, axis_index: Mapping[int, torch.Tensor],
          zero_new_inputs: bool) -> torch.Tensor:
    """``target`` with the entries ``axis_index`` maps to existing source positions copied."""
    out = target.detach().clone()
    index = [axis_index.get(a, torch.arange(min(source.shape[a], out.shape[a])))
             for a in range(out.dim())]
    if any(out.shape[a] != len(index[a]) and a in axis_index for a in range(out.dim())):
        return out
    if any(source.shape[a] != out.shape[a] for a in range(out.dim()) if a not in axis_index):
        return out  # another axis changed too (a kernel size): no channel map
    if 1 in axis_index and zero_new_inputs:
        fresh = (index[1] < 0).nonzero().flatten()
        out.index_fill_(1, fresh, 0.0)
    keep = [(i >= 0).nonzero().flatten() for i in index]
    src = source.to(out.dtype)
    for a in range(out.dim()):
        src = src.index_select(a, index[a][keep[a]])
    view = out
    grid = torch.meshgrid(*keep, indexing="ij") if out.dim() else ()
    view[grid] = src
    return out


def apply_channel_plan(child: nn.Module, parent_state: Mapping[str, torch.Tensor],
                       plan: Sequence[ChannelStep]) -> list[str]:
    """Copy into ``child`` the channels ``plan`` maps from ``parent_state``; the child tensor
    names it set. Steps whose modules or groups cannot be resolved are left as they are.

    A module may read one group and write another (the middle conv of a chain of narrowed
    widths): its steps are merged, so both of its channel axes follow their groups."""
    child_state = child.state_dict()
    groups = _group_channels(plan, parent_state, child_state)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for step in plan:  # one entry per module, in plan order
        entry = merged.setdefault((step.new, step.old), {"resize": False, "in": None,
                                                         "out": None})
        entry["resize"] |= step.kind == "resize"
        if step.in_group is not None and step.kind == "resize":
            entry["in"] = step.in_group
        if step.out_group is not None:
            entry["out"] = step.out_group
    written: list[str] = []
    with torch.no_grad():
        for (new_path, old_path), entry in merged.items():
            old = _module_state(parent_state, old_path)
            new = _module_state(child_state, new_path)
            weight = new.get("weight")
            if weight is None or old.get("weight") is None:
                continue
            axes: dict[int, torch.Tensor] = {}
            if entry["in"] in groups and weight.dim() >= 2:
                axes[1] = groups[entry["in"]]
            if entry["out"] in groups:
                axes[0] = groups[entry["out"]]
            for name, tensor in new.items():
                source = old.get(name)
                if source is None or tensor.dim() != source.dim():
                    continue
                if tensor.dim() == 0:
                    value = source.to(tensor.dtype)
                else:
                    value = _take(source, tensor, {a: i for a, i in axes.items()
                                                   if a < tensor.dim()},
                                  zero_new_inputs=entry["resize"])
                key = f"{new_path}.{name}" if new_path else name
                child_state[key].copy_(value.to(child_state[key].device))
                written.append(key)
    return written


def _group_channels(plan: Sequence[ChannelStep], parent_state: Mapping[str, torch.Tensor],
                    child_state: Mapping[str, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Each group's parent channels, chosen by its first producer's weight magnitude."""
    groups: dict[int, torch.Tensor] = {}
    for step in plan:
        if step.out_group is None or step.out_group in groups:
            continue
        old = _module_state(parent_state, step.old).get("weight")
        new = _module_state(child_state, step.new).get("weight")
        if old is not None and new is not None:
            groups[step.out_group] = _select(old, new.shape[0])
    return groups
