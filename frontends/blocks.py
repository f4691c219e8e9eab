"""Find the blocks of a traced model: the repeated module subtrees that mutations act on.

Blocks come from ``node.meta['nn_module_stack']``, which both torch.fx and torch.export record.
A module is a block candidate when it is not a leaf (its nodes span more than one op) and its
class occurs at least twice in the model. Pure containers (Sequential, ModuleList, ModuleDict) are
blocks only when a model has no other candidates. A block's ``type`` is its class plus a hash of
its structure with widths abstracted away, so a stride-2 block and a stride-1 block differ while
the same block at two widths (two stages) shares a type.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from torch import fx, nn

from alphac.ir import COMPUTE_OPS, Subgraph

_CONTAINERS = {
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
}


@dataclass(frozen=True)
class Block:
    """A block instance: its module ``path``, its structural ``type`` and its node names."""

    path: str
    type: str
    nodes: tuple[str, ...]

    @property
    def kind(self) -> str:
        """The block's class name, e.g. ``BasicBlock``."""
        return self.type.split("#", 1)[0]

    def subgraph(self, gm: fx.GraphModule) -> Subgraph:
        return Subgraph.from_nodes(gm, self.nodes)


def _class_name(entry) -> str:
    cls = entry[1]
    return cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"


def module_nodes(gm: fx.GraphModule) -> tuple[dict[str, list[fx.Node]], dict[str, str]]:
    """Module path -> computing nodes inside it, and module path -> qualified class name."""
    members: dict[str, list[fx.Node]] = defaultdict(list)
    classes: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op not in COMPUTE_OPS:
            continue
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            path = entry[0]
            if not path:
                continue
            classes[path] = _class_name(entry)
            members[path].append(node)
    return dict(members), classes


def find_blocks(gm: fx.GraphModule, root: nn.Module | None = None) -> list[Block]:
    """The blocks of ``gm`` in graph order (see the module docstring for the rule)."""
    members, classes = module_nodes(gm)
    candidates = [p for p, nodes in members.items() if len(nodes) >= 2]
    counts = Counter(classes[p] for p in candidates)
    repeated = [p for p in candidates if counts[classes[p]] >= 2]
    chosen = [p for p in repeated if classes[p] not in _CONTAINERS]
    if not chosen:
        chosen = [p for p in repeated if classes[p] in _CONTAINERS]
    # remove_duplicate=False: a module shared under two names must be found under both
    source = root if root is not None else gm
    modules = dict(source.named_modules(remove_duplicate=False))
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    blocks = []
    for path in chosen:
        nodes = members[path]
        signature = structural_signature(nodes, modules)
        short = classes[path].rsplit(".", 1)[-1]
        blocks.append(Block(path, f"{short}#{signature}", tuple(n.name for n in nodes)))
    blocks.sort(key=lambda b: (order[b.nodes[0]], -len(b.nodes)))
    return blocks


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
