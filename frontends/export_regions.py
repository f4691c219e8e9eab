"""Inline the no-op regions torch.export keeps as higher-order ops.

timm's EfficientViT (MIT) and LowFormer compute their linear attention under
``torch.autocast(device_type, enabled=False)``; torch.export keeps that region as one
``wrap_with_autocast(device, dtype, enabled, cache_enabled, body, *operands)`` call of a nested
graph, which no analysis can look into and no generated ``model.py`` can construct. With
``enabled=False`` the region only says "do not autocast here", which is what the captured graph
(float32, never under autocast) does anyway, so its body's nodes are copied in place of the call.
A region that enables autocast changes dtypes and stays as it is.

Example: ``getitem(wrap_with_autocast('cpu', bfloat16, False, False, submod_9, q, k, v), 0)``
becomes the body's ``to``, ``transpose``, ``matmul``, ... on ``q, k, v``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from alphac.rewriter import Rewriter


def _disabled_autocast(node: fx.Node) -> bool:
    wrap = getattr(torch.ops.higher_order, "wrap_with_autocast", None)
    return (node.op == "call_function" and wrap is not None and node.target is wrap
            and len(node.args) >= 5 and node.args[2] is False
            and isinstance(node.args[4], fx.Node) and node.args[4].op == "get_attr")


def _inline(rw: Rewriter, node: fx.Node) -> bool:
    """Copy the region's body before ``node``; False (nothing changed) if its shape is not the
    simple one (tuple output read by getitem, no attributes of its own)."""
    gm = rw.gm
    body = gm.get_submodule(str(node.args[4].target))
    if not isinstance(body, fx.GraphModule):
        return False
    nodes = list(body.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    output = next(n for n in nodes if n.op == "output")
    results = output.args[0] if isinstance(output.args[0], tuple | list) else (output.args[0],)
    operands = node.args[5:]
    users = list(node.users)
    if (len(placeholders) != len(operands) or any(n.op == "get_attr" for n in nodes)
            or not all(u.target.__name__ == "getitem" for u in users if callable(u.target))
            or any(u.op != "call_function" for u in users)):
        return False
    env: dict[fx.Node, Any] = dict(zip(placeholders, operands, strict=True))
    stack = node.meta.get("nn_module_stack")
    for inner in nodes:
        if inner.op in ("placeholder", "output"):
            continue
        meta = dict(inner.meta)
        if stack is not None and "nn_module_stack" not in meta:
            meta["nn_module_stack"] = dict(stack)  # the region belongs to its caller's module
        args = fx.node.map_arg(inner.args, env.__getitem__)
        kwargs = fx.node.map_arg(inner.kwargs, env.__getitem__)
        env[inner] = rw.insert(inner.op, inner.target, args, kwargs, before=node, meta=meta)
    for user in users:
        rw.replace_all_uses(user, env[results[user.args[1]]])
    rw.erase(*users, node)
    return True


def inline_disabled_autocast(gm: fx.GraphModule) -> bool:
    """Inline every ``wrap_with_autocast`` region of ``gm`` that disables autocast; whether
    any was (the bodies left uncalled are deleted)."""
    rw = Rewriter(gm, bump=False)  # capture: the graph is handed out at version 0
    regions = [(n, str(n.args[4].target)) for n in gm.graph.nodes if _disabled_autocast(n)]
    bodies = {target for node, target in regions if _inline(rw, node)}  # erases the node
    if not bodies:
        return False
    for getter in [n for n in gm.graph.nodes if n.op == "get_attr" and str(n.target) in bodies]:
        if not getter.users:
            rw.erase(getter)
    rw.commit(eliminate_dead_code=False)
    for target in bodies:
        if not any(n.op == "get_attr" and str(n.target) == target for n in gm.graph.nodes):
            delattr(gm, target)
    return True
