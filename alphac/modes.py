"""Train/eval mode for any model, including torch.export GraphModules that refuse ``.eval()``.

An exported GraphModule bakes the mode into its graph: ``aten.batch_norm`` and the dropout ops
carry a ``training`` flag (torch.export traces in train mode, so the flag is ``True``).
:func:`set_training` sets the ``training`` attribute of every submodule and flips those flags in
every GraphModule it contains, through :class:`~alphac.rewriter.Rewriter` (so a flip that changes a
flag bumps that graph's version); :func:`training_mode` puts back, on exit, every attribute and
flag exactly as it was. A batch norm without running statistics has no eval form
(it always normalizes with batch statistics, as ``nn.BatchNorm2d(track_running_stats=False)``
does), so its flag is left alone. Batch-norm's ``num_batches_tracked`` counter still increments in
an exported eval graph; it only matters when momentum is None.

Example: ``with training_mode(torch.export.export(m, (x,)).module(), False) as gm: gm(x)`` runs
the exported ``m`` as ``m.eval()(x)`` would; afterwards the graph is train-mode again.

Graphs captured by :func:`alphac.frontends.trace` need none of this: a mode-dependent constant
(a ``training`` flag, a dropout probability) reads the mode at run time through a
:class:`ModeValue` submodule, so ``.train()``/``.eval()`` just work. Such a flag is not baked:
:func:`set_training` leaves it alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from alphac.rewriter import Rewriter

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
_RUNNING_MEAN = 3  # aten.batch_norm(input, weight, bias, running_mean, running_var, training, ...)
#: Submodule path under which captured graphs keep their :class:`ModeValue` modules.
MODE_VALUES = "alphac_modes"


class ModeValue(nn.Module):
    """A constant that follows the mode: ``train_value`` in training mode, else ``eval_value``.

    Called without arguments (``call_module``) where a traced op had a mode-dependent constant,
    e.g. ``F.batch_norm(..., training=modes_0())`` with ``ModeValue(False, True)``. Stateless, so
    ``.train()``, deepcopy and ``state_dict`` need nothing special.
    """

    def __init__(self, eval_value: Any, train_value: Any) -> None:
        super().__init__()
        self.eval_value = eval_value
        self.train_value = train_value

    def forward(self) -> Any:
        return self.train_value if self.training else self.eval_value

    def extra_repr(self) -> str:
        return f"eval={self.eval_value!r}, train={self.train_value!r}"


def is_mode_value(node: Any) -> bool:
    """Whether ``node`` is the call of a :class:`ModeValue` (by its target path)."""
    return (isinstance(node, fx.Node) and node.op == "call_module"
            and str(node.target).startswith(MODE_VALUES + "."))


def eval_value(node: fx.Node, modules: dict[str, nn.Module] | None = None) -> Any:
    """The eval-mode value of a :class:`ModeValue` node (its module, else its ``meta``)."""
    module = (modules or {}).get(str(node.target))
    if isinstance(module, ModeValue):
        return module.eval_value
    return node.meta["alphac.mode_value"][0]


def follows_mode(node: fx.Node) -> bool:
    """Whether ``node``'s training flag is the module's mode (what :func:`set_training` flips),
    rather than part of the function: an aten dropout or a batch norm with running statistics."""
    if node.op != "call_function" or node.target not in MODE_FLAGS:
        return False
    if node.target is _aten.batch_norm.default:
        return len(node.args) > _RUNNING_MEAN and node.args[_RUNNING_MEAN] is not None
    return len(node.args) > MODE_FLAGS[node.target]


def _mode_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes whose training flag is baked in (a constant, not a :class:`ModeValue`)."""
    return [n for n in gm.graph.nodes
            if follows_mode(n) and isinstance(n.args[MODE_FLAGS[n.target]], bool)]


def _graphs(model: nn.Module) -> list[fx.GraphModule]:
    return [m for m in model.modules() if isinstance(m, fx.GraphModule)]


def is_training(model: nn.Module) -> bool:
    """The model's mode; for an exported graph, the flag of its first mode-dependent op."""
    for gm in _graphs(model):
        nodes = _mode_nodes(gm)
        if nodes:
            return bool(nodes[0].args[MODE_FLAGS[nodes[0].target]])
    return model.training


def _set_flags(gm: fx.GraphModule, flags: dict[fx.Node, bool]) -> None:
    # A flag flip is a real edit of the graph's code, so it goes through the Rewriter and bumps
    # the version (cached facts of a baked-mode export are recomputed; a captured graph has no
    # baked flags, so nothing changes and nothing bumps). Only constants change, so neither
    # dead-code elimination nor a lint (the training loop switches modes often) can find anything.
    rw = Rewriter(gm, lint=False)
    for node, flag in flags.items():
        rw.set_arg(node, MODE_FLAGS[node.target], flag)
    rw.commit(eliminate_dead_code=False)


def set_training(model: nn.Module, training: bool) -> None:
    """Put ``model`` in training (or eval) mode, whatever kind of module it is."""
    try:
        model.train(training)
    except NotImplementedError:  # ExportedProgram.module() refuses train()/eval()
        for module in model.modules():
            object.__setattr__(module, "training", training)
    for gm in _graphs(model):
        _set_flags(gm, dict.fromkeys(_mode_nodes(gm), training))


@contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run a block with ``model`` in the given mode; every submodule's ``training`` attribute
    and every graph flag is restored exactly after (submodules shared with other models too)."""
    attributes = [(m, m.training) for m in model.modules()]
    flags = [(gm, {n: bool(n.args[MODE_FLAGS[n.target]]) for n in _mode_nodes(gm)})
             for gm in _graphs(model)]
    set_training(model, training)
    try:
        yield model
    finally:
        for module, flag in attributes:
            object.__setattr__(module, "training", flag)
        for gm, before in flags:
            _set_flags(gm, before)
