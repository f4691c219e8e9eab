"""Keep the parent's trained weights in a rewritten chain: children that start near their parents.

Synthesis grows each chain from nothing, so without this every op of a spliced chain would be a
fresh module, even one the synthesizer wrote exactly as it was. :func:`aligned_chains` aligns
the new chain with the old one (a longest common subsequence of ops with the same kind, kernel,
stride and dilation, in order): an aligned op whose spec is the old op's *reuses* the old module
(its ``source``: the same name, so weights follow by name); one whose widths changed gets an
``origin``, and :func:`channel_plan` writes the :class:`~alphac.channels.ChannelStep` plan that
maps the old module's channels into it (the strongest ones when it narrows, zero-initialised
new inputs when it widens). Channels are only mapped while they are known: after a fresh
conv/linear that changes the width the order of channels is new, so later ops of that chain
start fresh.

A conv or linear with no parent module to start from would start at its default random init,
which shrinks its input (a few such convs in a row left a child's logits nearly constant, so
its fine-tune stayed at chance: issue #17). :func:`start_near_identity` starts it as the
identity on the channels it can pass through instead (Dirac: output channel ``j`` of a group
reads input channel ``j`` at the kernel's centre), so a fresh chain first computes about what
its nonlinearities make of its input, and channels stay known through a fresh conv that keeps
its width.

Example: old chain ``conv3x3(C->C) bn relu conv3x3(C->C) bn``, new chain ``conv3x3(C->C/2) bn
relu conv3x3(C/2->C) bn``: both convs and both norms map their channels from the old ones (the
hidden width is narrowed to the strongest C/2 filters); the output width is the parent's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from alphac.channels import ChannelStep
from alphac.passes.analysis.program import ProgramOp
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.shape_dims import dims_same

__all__ = ["aligned_chains", "channel_plan", "keeps_channels", "start_fresh_near_identity",
           "start_near_identity"]

_RESIZING = frozenset({"conv", "linear"})
_CHANNELWISE = frozenset({"batch_norm", "layer_norm", "group_norm"})
_WIDTHS = {"conv": ("in_channels", "out_channels"), "linear": ("in_features", "out_features")}


def _depthwise(spec: OpSpec) -> bool:
    return spec.kind == "conv" and spec.get("groups") not in (1, None) and \
        spec.get("groups") == spec.get("in_channels")


def _key(spec: OpSpec) -> tuple[Any, ...]:
    return (spec.kind, spec.get("kernel"), spec.get("stride"), spec.get("dilation"),
            _depthwise(spec), spec.get("transposed"))


def _lcs(old: Sequence[OpSpec], new: Sequence[OpSpec]) -> dict[int, int]:
    """new index -> old index of a longest common subsequence by :func:`_key` (ops with
    weights only: parameter-free ops need no weights)."""
    keyed = [(i, _key(s)) for i, s in enumerate(old) if _weighted(s)]
    table = [[0] * (len(keyed) + 1) for _ in range(len(new) + 1)]
    for a in range(len(new) - 1, -1, -1):
        for b in range(len(keyed) - 1, -1, -1):
            table[a][b] = (table[a + 1][b + 1] + 1 if _weighted(new[a]) and
                           _key(new[a]) == keyed[b][1] else max(table[a + 1][b], table[a][b + 1]))
    found, a, b = {}, 0, 0
    while a < len(new) and b < len(keyed):
        if _weighted(new[a]) and _key(new[a]) == keyed[b][1]:
            found[a] = keyed[b][0]
            a, b = a + 1, b + 1
        elif table[a + 1][b] >= table[a][b + 1]:
            a += 1
        else:
            b += 1
    return found


def _weighted(spec: OpSpec) -> bool:
    return spec.kind in _RESIZING or spec.kind in _CHANNELWISE


def aligned_chains(old_ops: Sequence[ProgramOp], specs: Sequence[OpSpec]) -> tuple[ProgramOp, ...]:
    """The new chain's ops (operands left for :func:`~.chains.with_chains` to set): aligned ops
    keep the old op's module (``source``) when their spec is the old one, else name it as
    their ``origin``. ``old_ops`` are the chain's ops as lifted (``source`` = module path)."""
    match = _lcs([op.spec for op in old_ops], specs)
    made = []
    for i, spec in enumerate(specs):
        old = old_ops[match[i]] if i in match else None
        if old is None or old.source is None:
            made.append(ProgramOp(spec, ()))
        elif old.spec == spec:
            made.append(ProgramOp(spec, (), source=old.source))
        else:
            made.append(ProgramOp(spec, (), origin=old.source))
    return tuple(made)


def channel_plan(ops: Sequence[ProgramOp], modules: Sequence[str | None], old_specs: dict[str, OpSpec],
                 first_group: int) -> tuple[tuple[ChannelStep, ...], int]:
    """The plan of one spliced chain: ``ops`` as :func:`aligned_chains` made them, ``modules``
    the child module each became (None: no module), ``old_specs`` the old spec by module path.
    Returns the steps and the next free group id."""
    steps: list[ChannelStep] = []
    group: int | None = None  # the channels of the value flowing: None = the parent's
    known, next_group = True, first_group
    for op, module in zip(ops, modules, strict=True):
        kind, resizing = op.spec.kind, op.spec.kind in _RESIZING and not _depthwise(op.spec)
        if op.source is not None and resizing:
            group, known = None, True
        elif op.origin is not None and module is not None and known:
            if resizing:
                old_out = old_specs[op.origin].get(_WIDTHS[kind][1])
                same_out = old_out == op.spec.get(_WIDTHS[kind][1])
                out = None if same_out else next_group
                next_group += 0 if same_out else 1
                steps.append(ChannelStep(module, op.origin, "resize", in_group=group,
                                         out_group=out))
                group = out
            else:
                steps.append(ChannelStep(module, op.origin, "channelwise", out_group=group))
        elif resizing and op.source is None and not keeps_channels(op.spec):
            known = False  # a fresh conv/linear: the channels after it are new
    return tuple(steps), next_group


def keeps_channels(spec: OpSpec) -> bool:
    """Whether a fresh op of ``spec`` started by :func:`start_near_identity` passes every
    channel through in place: a conv (not transposed) or linear whose widths are equal."""
    if spec.kind not in _WIDTHS or spec.get("transposed"):
        return False
    if spec.kind == "conv" and not _centred(spec.get("kernel"), spec.get("dilation"),
                                            spec.get("padding")):
        return False
    a, b = (spec.get(k) for k in _WIDTHS[spec.kind])
    return a is not None and b is not None and dims_same(a, b)


def _centred(kernel: Any, dilation: Any, padding: Any) -> bool:
    """Whether a conv's output position reads its input at the kernel's centre: an odd
    kernel and "same" padding."""
    if not isinstance(kernel, tuple) or not isinstance(dilation, tuple):
        return False
    if isinstance(padding, str):
        return padding == "same" and all(k % 2 for k in kernel)
    return isinstance(padding, tuple) and all(
        k % 2 and p == d * (k - 1) // 2 for k, d, p in zip(kernel, dilation, padding, strict=True))


_IDENTITY_CAPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def start_near_identity(module: nn.Module) -> bool:
    """Start a fresh conv or linear as the identity on the channels it can pass through.

    Pre: ``module`` holds its (seeded) default init. Post: in each group, output channel ``j <
    min(in, out)`` reads input channel ``j`` with weight 1 at the kernel's centre and 0
    elsewhere, bias 0 (``nn.init.dirac_`` on those rows); output channels beyond the group's
    inputs (a widening) keep their default init, so nothing is dead. Returns False, leaving it
    as it was, for other modules and for convs without an odd kernel and "same" padding (no
    centre to copy through). Example: ``Conv2d(32, 16, 3, padding=1, groups=16)`` passes
    input channels 0, 2, 4, ... through as outputs 0..15; ``Linear(8, 16)`` is ``[I; W]``.
    """
    if not isinstance(module, _IDENTITY_CAPABLE):
        return False
    weight = module.weight
    if not isinstance(module, nn.Linear) and not _centred(
            tuple(module.kernel_size), tuple(module.dilation), module.padding if isinstance(
                module.padding, str) else tuple(module.padding)):
        return False
    groups = getattr(module, "groups", 1)
    out_g, in_g = weight.shape[0] // groups, weight.shape[1]
    width = min(out_g, in_g)
    rows = (torch.arange(groups).unsqueeze(1) * out_g + torch.arange(width)).flatten()
    cols = torch.arange(width).repeat(groups)
    centre = tuple(torch.full_like(rows, s // 2) for s in weight.shape[2:])
    with torch.no_grad():
        weight[rows] = 0.0
        weight[(rows, cols, *centre)] = 1.0
        if module.bias is not None:
            module.bias[rows] = 0.0
    return True


def start_fresh_near_identity(child: nn.Module, parent: nn.Module) -> tuple[str, ...]:
    """:func:`start_near_identity` on every module of ``child`` whose path ``parent`` lacks
    (a rewrite's fresh ops; a channel plan applied afterwards overwrites what it maps); the
    paths it started."""
    old = {name for name, _ in parent.named_modules()}
    return tuple(name for name, module in child.named_modules()
                 if name not in old and start_near_identity(module))
