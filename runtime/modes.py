"""Train/eval mode for any model, including torch.export GraphModules that refuse ``.eval()``.

An exported GraphModule bakes the mode into its graph: ``aten.batch_norm`` and the dropout ops
carry a ``training`` flag. :func:`set_training` flips those flags (and recompiles) when
``Module.train`` raises NotImplementedError; :func:`training_mode` restores the previous mode on
exit, so the graph the caller handed in comes back as it was. Batch-norm's ``num_batches_tracked``
counter still increments in an exported eval graph; it only matters when momentum is None.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import fx, nn

_aten = torch.ops.aten
#: op -> position of its training flag.
MODE_FLAGS = {
    _aten.batch_norm.default: 5,
    _aten.dropout.default: 2,
    _aten.feature_dropout.default: 2,
    _aten.alpha_dropout.default: 2,
    _aten.feature_alpha_dropout.default: 2,
    _aten.native_dropout.default: 2,
}


def _mode_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in MODE_FLAGS]


def is_training(model: nn.Module) -> bool:
    """The model's mode; for an exported graph, the flag of its first mode-dependent op."""
    if isinstance(model, fx.GraphModule):
        nodes = _mode_nodes(model)
        if nodes:
            node = nodes[0]
            return bool(node.args[MODE_FLAGS[node.target]])
    return model.training


def set_training(model: nn.Module, training: bool) -> None:
    """Put ``model`` in training (or eval) mode, whatever kind of module it is."""
    try:
        model.train(training)
        return
    except NotImplementedError:
        if not isinstance(model, fx.GraphModule):
            raise
    changed = False
    for node in _mode_nodes(model):
        position = MODE_FLAGS[node.target]
        if len(node.args) > position and node.args[position] != training:
            node.update_arg(position, training)
            changed = True
    if changed:
        model.recompile()
    for module in model.modules():
        object.__setattr__(module, "training", training)


@contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run a block with ``model`` in the given mode; the previous mode is restored after."""
    before = is_training(model)
    set_training(model, training)
    try:
        yield model
    finally:
        set_training(model, before)


@contextmanager
def any_batch_size(model: nn.Module) -> Iterator[nn.Module]:
    """Let an exported GraphModule run at batch sizes other than the one it was exported at.

    ``ExportedProgram.module()`` installs a pre-forward hook that rejects inputs whose shapes differ
    from the export example (batch 2 for alphac's frontends), although the graph itself is usually
    batch-agnostic. The hook is removed for the block and put back after; a graph that really bakes
    in its batch size still fails, inside the graph.
    """
    hooks = model._forward_pre_hooks
    removed = {k: h for k, h in hooks.items()
               if getattr(h, "__name__", "") == "_check_input_constraints_pre_hook"}
    for key in removed:
        del hooks[key]
    try:
        yield model
    finally:
        hooks.update(removed)
