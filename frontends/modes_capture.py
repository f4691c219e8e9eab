"""Capture a model's train and eval modes in one torch.fx graph.

A module whose forward reads ``self.training`` (timm's ``BatchNormAct2d``, ``F.dropout(x, p,
training=self.training)``, stochastic depth) is traced *through*, so one trace freezes one mode.
:func:`capture_fx` traces twice, in eval and in train mode, and compares the two graphs node by
node (after dead-code elimination; tensor-constant numbering ignored):

- where they differ only in constant arguments (``training=False`` / ``True``, a dropout ``p`` of
  0.0 / 0.1), the eval graph reads that argument from a :class:`~alphac.modes.ModeValue` call
  instead, so ``.train()``/``.eval()`` switch it at run time;
- where a submodule's own nodes differ (timm's ``DropPath`` draws a mask only in training), that
  submodule becomes a leaf of the tracer (one ``call_module`` node, which runs its real forward)
  and both modes are traced again, a few rounds at most;
- where the root's own forward differs, the eval graph is kept and :class:`CaptureWarning` says
  that training the captured graph uses eval-mode structure.

Trace-time side effects are undone: every module's attributes (and the contents of plain-dict
caches such as timm LeViT's ``attention_bias_cache``, which would keep a Proxy), its mode and
every buffer's value (a traced-through ``num_batches_tracked.add_(1)`` runs at trace time).

Example: timm ``efficientnet_b0`` gives ``F.batch_norm(x, ..., training=alphac_modes_0(),
momentum=alphac_modes_1())`` with ``ModeValue(False, True)`` and ``ModeValue(0.0, 0.1)``.
"""

from __future__ import annotations

import difflib
import inspect
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from alphac.errors import CaptureWarning
from alphac.frontends.library_modules import is_library_leaf, replace_library_leaves
from alphac.modes import MODE_FLAGS, MODE_VALUES, ModeValue, follows_mode
from alphac.rewriter import Rewriter

_ROUNDS = 4
_SCALARS = (bool, int, float, type(None))
_ASSERTS = ("_assert_is_none", "_assert", "eq")


class _LeafTracer(fx.Tracer):
    """The default tracer, plus leaves chosen by qualified name and the library modules that
    :mod:`alphac.frontends.library_modules` replaces after tracing."""

    def __init__(self, leaves: frozenset[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (module_qualified_name in self.leaves or is_library_leaf(m)
                or super().is_leaf_module(m, module_qualified_name))


def concrete_args(model: nn.Module) -> dict[str, Any]:
    """Forward parameters after the first with a non-tensor default, bound to that default.

    Example: timm ViT's ``forward(x, attn_mask=None, is_causal=False)`` -> ``{'attn_mask': None,
    'is_causal': False}``; ``forward(x, y)`` -> ``{}``.
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.kind in kinds
            and p.default is not inspect.Parameter.empty
            and not isinstance(p.default, torch.Tensor)}


@contextmanager
def undone_side_effects(model: nn.Module) -> Iterator[None]:
    """Restore every module's attributes, plain-dict caches and buffer values on exit."""
    saved = [(m, dict(vars(m)), {k: dict(v) for k, v in vars(m).items()
                                 if type(v) is dict and not k.startswith("_")})
             for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for module, attributes, caches in saved:
            module.__dict__.clear()
            module.__dict__.update(attributes)
            for key, content in caches.items():
                attributes[key].clear()
                attributes[key].update(content)
        with torch.no_grad():
            for buffer, value in buffers:
                buffer.copy_(value)


def _trace(model: nn.Module, training: bool, leaves: frozenset[str]) -> fx.GraphModule:
    with undone_side_effects(model):
        model.train(training)
        tracer = _LeafTracer(leaves)
        graph = tracer.trace(model, concrete_args=concrete_args(model) or None)
        gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    replace_library_leaves(gm)
    rw = Rewriter(gm, bump=False)  # capture: the graph is handed out at version 0
    _drop_concrete_placeholders(rw)
    # A submodule whose result is unused stays, as fx copied it (its parameters are the model's).
    rw.commit(eliminate_dead_code=True, keep_submodules=True)
    return gm


def _drop_concrete_placeholders(rw: Rewriter) -> None:
    """Erase the placeholders fx keeps for bound arguments, with the asserts that check them."""
    placeholders = [n for n in rw.gm.graph.nodes if n.op == "placeholder"]
    for node in placeholders[1:]:
        if not node.users and node.args:  # a placeholder with a default, unused
            rw.erase(node)
            continue
        chain = _assert_chain(node)
        if chain is not None and node.args:
            rw.erase(*chain, node)


def _assert_chain(node: fx.Node) -> list[fx.Node] | None:
    """``node``'s transitive users in graph order if they only check its value, else None."""
    seen: dict[fx.Node, None] = {}
    todo = list(node.users)
    while todo:
        user = todo.pop()
        name = getattr(user.target, "__name__", str(user.target))
        if user.op != "call_function" or name not in _ASSERTS:
            return None
        seen[user] = None
        todo.extend(user.users)
    order = {n: i for i, n in enumerate(node.graph.nodes)}
    return sorted(seen, key=order.__getitem__)


def _target_key(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(
        node.target, "__qualname__", repr(node.target))
    return re.sub(r"_tensor_constant\d+", "_tensor_constant", str(target))


def _proxy_free(text: str) -> str:
    """A string constant without the node names of proxies formatted into it: timm's
    ``_assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")`` embeds
    ``Proxy(getattr_40)``, numbered differently in the eval and the train trace."""
    return re.sub(r"Proxy\([^()]*\)", "Proxy()", text)


def _shape_key(node: fx.Node) -> str:
    """The node without its constant arguments: what must agree for a structural match."""
    def strip(value: Any) -> Any:
        if isinstance(value, fx.Node):
            return "%"
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, *map(strip, value))
        if isinstance(value, dict):
            return tuple((k, strip(v)) for k, v in value.items())
        if isinstance(value, slice):
            return ("slice", strip(value.start), strip(value.stop), strip(value.step))
        if isinstance(value, torch.Tensor):
            return "tensor"
        if isinstance(value, str):
            return repr(_proxy_free(value))
        return "c" if isinstance(value, _SCALARS) else repr(value)
    return repr((node.op, _target_key(node), strip(node.args), strip(node.kwargs)))


def _constant_diffs(a: Any, b: Any, match: dict[fx.Node, fx.Node], path: tuple,
                    out: list[tuple[tuple, Any, Any]]) -> bool:
    """Compare arguments ``a`` (eval) and ``b`` (train); collect differing scalar constants.

    False when they differ structurally (other nodes, lengths, non-scalar constants)."""
    if isinstance(a, fx.Node) or isinstance(b, fx.Node):
        return isinstance(a, fx.Node) and isinstance(b, fx.Node) and match.get(b) is a
    if isinstance(a, (list, tuple)) and type(a) is type(b) and len(a) == len(b):
        return all(_constant_diffs(x, y, match, (*path, i), out)
                   for i, (x, y) in enumerate(zip(a, b, strict=True)))
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return all(_constant_diffs(a[k], b[k], match, (*path, k), out) for k in a)
    if isinstance(a, slice) and isinstance(b, slice):
        bounds: list[tuple[tuple, Any, Any]] = []  # a slice bound never follows the mode
        same = _constant_diffs((a.start, a.stop, a.step), (b.start, b.stop, b.step), match,
                               path, bounds)
        return same and not bounds
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    if type(a) is type(b) and (a == b or a != a and b != b):  # NaN == NaN here
        return True
    if isinstance(a, str) and isinstance(b, str):
        return _proxy_free(a) == _proxy_free(b)
    if isinstance(a, _SCALARS) and isinstance(b, _SCALARS):
        out.append((path, a, b))
        return True
    return False


def _node_paths(node: fx.Node) -> list[str]:
    """The module paths the node was traced in, outermost first."""
    return list((node.meta.get("nn_module_stack") or {}).keys())


def _differing_modules(eval_gm: fx.GraphModule, train_gm: fx.GraphModule) -> set[str] | None:
    """Innermost modules of the nodes that differ structurally; None if one is the root's own."""
    eval_nodes, train_nodes = list(eval_gm.graph.nodes), list(train_gm.graph.nodes)
    matcher = difflib.SequenceMatcher(None, [_shape_key(n) for n in eval_nodes],
                                      [_shape_key(n) for n in train_nodes], autojunk=False)
    modules: set[str] = set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for node in eval_nodes[i1:i2] + train_nodes[j1:j2]:
            paths = [p for p in _node_paths(node) if node.op != "call_module" or p != node.target]
            if not paths or node.op in ("placeholder", "output"):
                return None
            modules.add(paths[-1])
    return modules


def _match(eval_gm: fx.GraphModule, train_gm: fx.GraphModule) -> list | None:
    """Per eval node, its differing constants ``[(path, eval, train)]``; None if the graphs
    differ structurally (nodes pair up in order, the same op on the same inputs)."""
    eval_nodes, train_nodes = list(eval_gm.graph.nodes), list(train_gm.graph.nodes)
    if len(eval_nodes) != len(train_nodes):
        return None
    match: dict[fx.Node, fx.Node] = {}
    diffs = []
    for a, b in zip(eval_nodes, train_nodes, strict=True):
        if (a.op, _target_key(a)) != (b.op, _target_key(b)):
            return None
        found: list[tuple[tuple, Any, Any]] = []
        if not _constant_diffs((a.args, a.kwargs), (b.args, b.kwargs), match, (), found):
            return None
        match[b] = a
        diffs.append((a, found))
    return diffs


def _replace_at(value: Any, path: tuple, new: fx.Node) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replace_at(v, rest, new) if k == head else v for k, v in value.items()}
    items = [_replace_at(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return type(value)(items)


def _merge(gm: fx.GraphModule, diffs: list) -> fx.GraphModule:
    """``gm`` (the eval trace) with each differing constant read from a ModeValue call, one call
    per use, inside the consumer's module (so a block's subgraph contains its own)."""
    rw = Rewriter(gm, bump=False)  # capture: the graph is handed out at version 0
    targets: dict[tuple, str] = {}
    for node, found in diffs:
        for path, eval_value, train_value in found:
            key = (type(eval_value), eval_value, type(train_value), train_value)
            if key not in targets:
                targets[key] = f"{MODE_VALUES}.{len(targets)}"
                gm.add_submodule(targets[key], ModeValue(eval_value, train_value))
            meta: dict[str, Any] = {"alphac.mode_value": (eval_value, train_value)}
            if "nn_module_stack" in node.meta:
                meta["nn_module_stack"] = dict(node.meta["nn_module_stack"])
            value = rw.insert("call_module", targets[key], before=node, meta=meta)
            # path: (0, index, ...) into the args or (1, key, ...) into the kwargs
            where, key_or_index, rest = path[0], path[1], path[2:]
            current = (node.args, node.kwargs)[where][key_or_index]
            rw.set_arg(node, key_or_index, _replace_at(current, rest, value))
    rw.commit(eliminate_dead_code=False)
    return gm


def capture_fx(model: nn.Module) -> fx.GraphModule:
    """One graph that computes ``model`` in eval and in train mode; see the module docstring.

    Raises what ``torch.fx`` raises when the model cannot be traced at all.
    """
    leaves: frozenset[str] = frozenset()
    for _ in range(_ROUNDS):
        eval_gm = _trace(model, False, leaves)
        train_gm = _trace(model, True, leaves)
        diffs = _match(eval_gm, train_gm)
        if diffs is not None:
            return _merge(eval_gm, diffs)
        differing = _differing_modules(eval_gm, train_gm)
        if differing is None or differing <= leaves:
            break
        leaves |= differing
    where = ", ".join(sorted(differing)) if differing else "its own forward"
    warnings.warn(
        f"{type(model).__name__} runs different operations in train mode than in eval mode "
        f"({where}); alphac captured its eval-mode graph, so training the captured graph uses "
        "eval-mode structure there (running statistics and dropout flags still follow the mode "
        "only where the two traces agree)", CaptureWarning, stacklevel=3)
    return eval_gm


def follow_mode_in_export(gm: fx.GraphModule) -> fx.GraphModule:
    """An eval-mode ``torch.export`` module whose baked training flags read the mode at run
    time (ModeValue), and whose ``.train()``/``.eval()`` work (``ExportedProgram.module()``
    replaces them by methods that raise NotImplementedError)."""
    diffs = [(n, [((0, MODE_FLAGS[n.target]), False, True)]) for n in gm.graph.nodes
             if follows_mode(n) and n.args[MODE_FLAGS[n.target]] is False]
    for name in ("train", "eval"):
        gm.__dict__.pop(name, None)
    return _merge(gm, diffs)


def _counts_batches(node: fx.Node) -> bool:
    """A train-mode export's ``num_batches_tracked += 1`` (not counted by the captured graph)."""
    return (node.op == "call_function" and "add_" in str(node.target) and bool(node.args)
            and isinstance(node.args[0], fx.Node)
            and str(node.args[0].target).endswith("num_batches_tracked"))


def export_structure_differs(eval_gm: fx.GraphModule, train_gm: fx.GraphModule) -> bool:
    """Whether two exports of one model run different ops (constants and batch counting aside)."""
    def keys(gm: fx.GraphModule) -> list[str]:
        return [_shape_key(n) for n in gm.graph.nodes
                if n.op not in ("get_attr", "placeholder") and not _counts_batches(n)]
    return keys(eval_gm) != keys(train_gm)
