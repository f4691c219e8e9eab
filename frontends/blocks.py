"""Find the blocks of a traced model: the repeated module subtrees that mutations act on.

Blocks come from ``node.meta['nn_module_stack']``, which both torch.fx and torch.export record.
Each module *call* is one candidate: its key in the stack (``path``, ``path@1`` for a second call)
and its run of consecutive nodes. A module is a block candidate when it is called at exactly one
site (a module called twice, like a shared ``nn.ReLU``, is no block: its nodes are unrelated
calls), spans more than one op, its class occurs at least twice among the candidates, and it is
not a *stage*: a class whose instances' own ops all only wire their sub-modules together (timm's
``RegStage``, a transformers ``SwinStage``). Pure containers (Sequential, ModuleList, ModuleDict) are blocks only when a model has
no other candidates.

Blocks form a tree. :func:`find_blocks` returns the *outermost* level, each node in at most one
of them, so their parameters never double count; a class with an instance nested inside another
block (a ViT ``Attention`` inside its ``Block``, a ``BatchNormAct2d`` inside an MBConv) is an
inner level and appears only in ``Block.children``. A block's ``type`` is its class plus a hash of
its structure with widths abstracted away, so a stride-2 block and a stride-1 block differ while
the same block at two widths (two stages) shares a type.

Example (timm's vit_tiny, depth 2)::

    blocks.0  Block        children: blocks.0.attn (Attention), blocks.0.mlp (Mlp)
    blocks.1  Block        children: blocks.1.attn (Attention), blocks.1.mlp (Mlp)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import fx, nn

from alphac.ir import COMPUTE_OPS, Subgraph

_CONTAINERS = {
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
}
# Ops that only move or regroup values: a module owning nothing else is a stage, not a block.
_WIRING_OPS = {
    "getitem", "cat", "concat", "stack", "flatten", "unflatten", "reshape", "view", "_unsafe_view",
    "permute", "transpose", "contiguous", "size", "sym_size", "getattr", "squeeze", "unsqueeze",
    "chunk", "split", "clone", "alias", "dropout", "identity", "expand", "t",
}
_WIRING_MODULES = (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)


@dataclass(frozen=True)
class Block:
    """A block instance: its module ``path``, structural ``type``, node names, inner blocks."""

    path: str
    type: str
    nodes: tuple[str, ...]
    children: tuple[Block, ...] = ()

    @property
    def kind(self) -> str:
        """The block's class name, e.g. ``BasicBlock``."""
        return self.type.split("#", 1)[0]

    def subgraph(self, gm: fx.GraphModule) -> Subgraph:
        return Subgraph.from_nodes(gm, self.nodes)

    def walk(self) -> Iterator[Block]:
        """This block and every block nested in it, outer first, in graph order."""
        yield self
        for child in self.children:
            yield from child.walk()


def walk_blocks(blocks: Iterable[Block]) -> Iterator[Block]:
    """Every block of a tree (outermost blocks and their inner levels), outer first."""
    for block in blocks:
        yield from block.walk()


@dataclass(frozen=True)
class _Call:
    """One call of a module: its stack key, path, class and the nodes it ran (in graph order)."""

    key: str
    path: str
    cls: str
    nodes: tuple[fx.Node, ...]


def _class_name(entry) -> str:
    cls = entry[1]
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def _stack(node: fx.Node) -> dict:
    stack = node.meta.get("nn_module_stack") or {}
    # torch.export tags nodes it made up with a placeholder entry that names no module
    return {k: v for k, v in stack.items() if v[0] and not k.startswith("_empty_nn_module_stack")}


def module_calls(gm: fx.GraphModule) -> list[_Call]:
    """Every module call in ``gm``: one per stack key and run of consecutive computing nodes.

    torch.fx and torch.export key a module's second call ``path@1``; splitting a key's nodes into
    consecutive runs also separates calls an older tracer keyed alike.
    """
    runs: dict[str, list[list[fx.Node]]] = {}
    meta: dict[str, tuple[str, str]] = {}
    last: dict[str, int] = {}
    computing = [n for n in gm.graph.nodes if n.op in COMPUTE_OPS]
    for i, node in enumerate(computing):
        for key, entry in _stack(node).items():
            if key not in runs or last[key] != i - 1:
                runs.setdefault(key, []).append([])
            runs[key][-1].append(node)
            last[key] = i
            meta[key] = (entry[0], _class_name(entry))
    return [_Call(k, meta[k][0], meta[k][1], tuple(run)) for k, rs in runs.items() for run in rs]


def module_nodes(gm: fx.GraphModule) -> tuple[dict[str, list[fx.Node]], dict[str, str]]:
    """Module path -> computing nodes inside it (all its calls), and path -> class name."""
    members: dict[str, list[fx.Node]] = {}
    classes: dict[str, str] = {}
    for call in module_calls(gm):
        members.setdefault(call.path, []).extend(call.nodes)
        classes[call.path] = call.cls
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    return {p: sorted(ns, key=order.__getitem__) for p, ns in members.items()}, classes


def _is_wiring(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(str(node.target)), _WIRING_MODULES)
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        name = target.overloadpacket.__name__
    else:
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name.strip("_") in _WIRING_OPS


def _is_stage(call: _Call, calls: dict[str, _Call], modules: dict[str, nn.Module]) -> bool:
    """True when every op of ``call`` outside its multi-op sub-calls only wires values."""
    for node in call.nodes:
        keys = list(_stack(node))
        inner = keys[keys.index(call.key) + 1] if keys.index(call.key) + 1 < len(keys) else None
        if inner is not None and len(calls[inner].nodes) >= 2:
            continue
        if not _is_wiring(node, modules):
            return False
    return True


def _chosen_calls(gm: fx.GraphModule, modules: dict[str, nn.Module]) -> list[_Call]:
    calls = module_calls(gm)
    sites = Counter(c.path for c in calls)
    by_key = {c.key: c for c in calls}
    candidates = [c for c in calls if sites[c.path] == 1 and len(c.nodes) >= 2]
    # a module whose only content is one submodule of its own class (a Sequential ``stages``
    # around ``stages.0``) holds the same nodes: one instance, not two
    innermost: dict[tuple, _Call] = {}
    for c in candidates:
        held = innermost.get((c.cls, tuple(c.nodes)))
        if held is None or len(c.path.split(".")) > len(held.path.split(".")):
            innermost[(c.cls, tuple(c.nodes))] = c
    candidates = [c for c in candidates if innermost[(c.cls, tuple(c.nodes))] is c]
    counts = Counter(c.cls for c in candidates)
    # a class is a stage when every instance only wires: one torchvision InvertedResidual without
    # its residual add delegates all to a Sequential, yet the class is a block
    builders = {c.cls for c in candidates if not _is_stage(c, by_key, modules)}
    repeated = [c for c in candidates if counts[c.cls] >= 2 and c.cls in builders]
    chosen = [c for c in repeated if c.cls not in _CONTAINERS]
    return chosen or [c for c in repeated if c.cls in _CONTAINERS]


def find_blocks(gm: fx.GraphModule, root: nn.Module | None = None) -> list[Block]:
    """The outermost blocks of ``gm`` in graph order, inner levels as their ``children``."""
    # remove_duplicate=False: a module shared under two names must be found under both
    source = root if root is not None else gm
    modules = dict(source.named_modules(remove_duplicate=False))
    chosen = _chosen_calls(gm, modules)
    keys = {c.key for c in chosen}
    parent: dict[str, str | None] = {}
    for call in chosen:
        outer = [k for k in _stack(call.nodes[0]) if k in keys]
        parent[call.key] = outer[outer.index(call.key) - 1] if outer.index(call.key) else None
    by_key = {c.key: c for c in chosen}
    # a class nested in another class's block is an inner level everywhere (a stem's
    # BatchNormAct2d is no block); nesting in its own class (a recursive module) does not count
    inner_classes = {c.cls for c in chosen
                     if parent[c.key] is not None and by_key[parent[c.key]].cls != c.cls}
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}

    def build(call: _Call) -> Block:
        kids = sorted((build(c) for c in chosen if parent[c.key] == call.key),
                      key=lambda b: order[b.nodes[0]])
        short = call.cls.rsplit(".", 1)[-1]
        signature = structural_signature(list(call.nodes), modules)
        return Block(call.path, f"{short}#{signature}", tuple(n.name for n in call.nodes),
                     tuple(kids))

    outermost = [build(c) for c in chosen if parent[c.key] is None and c.cls not in inner_classes]
    return sorted(outermost, key=lambda b: (order[b.nodes[0]], -len(b.nodes)))
_LEADING_POSITIONAL = re.compile(r"^(\(?[\d, ]+\)?,\s*)+")
_WIDTH_KEYS = re.compile(
    r"\b(in_features|out_features|in_channels|out_channels|num_features|num_channels|"
    r"normalized_shape|embed_dim)=[^,]*,?\s*"
)


def _module_token(module: nn.Module | None) -> str:
    if module is None:
        return "?"
    text = module.extra_repr()
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = "dw" if module.groups == module.in_channels and module.groups > 1 else module.groups
        text = re.sub(r"groups=\d+", "", text) + f",g={groups}"
    text = _WIDTH_KEYS.sub("", _LEADING_POSITIONAL.sub("", text))
    return f"{type(module).__name__}({text})"


def _node_token(node: fx.Node, local: dict[str, int], modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        head = _module_token(modules.get(str(node.target)))
    else:
        head = getattr(node.target, "__name__", str(node.target))
    refs = [f"%{local[a.name]}" if a.name in local else "in" for a in node.all_input_nodes]
    consts = [repr(a) for a in node.args if isinstance(a, (bool, str, float, list, tuple))]
    return f"{node.op}:{head}({','.join(refs + consts)})"


def structural_signature(nodes: list[fx.Node], modules: dict[str, nn.Module]) -> str:
    """A short hash of the ops, their width-free hyperparameters and their wiring."""
    local: dict[str, int] = {}
    tokens = []
    for i, node in enumerate(nodes):
        tokens.append(_node_token(node, local, modules))
        local[node.name] = i
    return hashlib.sha1("\n".join(tokens).encode()).hexdigest()[:8]
