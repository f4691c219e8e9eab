"""Block mutations (ALGORITHM.md section 3, "other mutations"): duplicate a block, delete a block.

Both need a block whose output has its input's shape: one float tensor in, one out, equal shapes
(a stride-1 residual block, a transformer block, an MBConv with its skip). Then a copy can follow
the block, reading its output, or the block can go, its users reading its input instead.

A block is duck-typed (anything with ``path``, ``type`` and ``nodes``, like
``alphac.frontends.blocks.Block``): passes never import the frontends.

Example (ResNet-18, fx)::

    eligible_blocks(gm, blocks)          # layer1.0, layer1.1, layer2.1, layer3.1, layer4.1
    duplicate_block(gm, layer1_1)        # layer1.1 -> layer1.1_dup0 -> layer2.0
    delete_block(gm, layer2_1)           # layer2.0 -> layer3.0
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.ir import COMPUTE_OPS, Subgraph
from alphac.passes.analysis.mixing_boxes import float_shape
from alphac.passes.analysis.shape import ShapeAnalysis, TensorShape
from alphac.passes.analysis.shape_dims import dims_same
from alphac.rewriter import Rewriter

__all__ = ["BlockIO", "BlockLike", "block_io", "copy_path", "delete_block", "duplicate_block",
           "eligible_blocks"]


class BlockLike(Protocol):
    """What the mutations read of a block: its module path, structural type and node names."""

    @property
    def path(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def nodes(self) -> Sequence[str]: ...


B = TypeVar("B", bound=BlockLike)


@dataclass(frozen=True)
class BlockIO:
    """The boundary of a shape-preserving block: its subgraph, its one input and one output
    (node names), their traced shape and the input's symbolic shape (the output's is equal)."""

    subgraph: Subgraph
    input: str
    output: str
    shape: tuple[int, ...]
    symbolic: TensorShape


def block_io(gm: fx.GraphModule, block: BlockLike,
             am: AnalysisManager | None = None) -> BlockIO | None:
    """The block's boundary when it can be duplicated or deleted, else None.

    Pre: ``gm`` is shape-annotated (``meta['tensor_meta']``) and holds the block's nodes.
    Post: not None iff the block's subgraph has exactly one input and one output, both float
    tensors, no other node of it is read outside it, and the output's shape equals the input's
    both as traced and symbolically (:class:`ShapeAnalysis`, dimension by dimension).
    Example: ResNet-18's ``layer1.1`` (64x16x16 -> 64x16x16) gives a BlockIO; ``layer2.0``
    (64x16x16 -> 128x8x8) gives None.
    """
    found = _boundary(gm, block, am)
    return found if isinstance(found, BlockIO) else None


def eligible_blocks(gm: fx.GraphModule, blocks: Sequence[B],
                    am: AnalysisManager | None = None) -> list[B]:
    """The blocks of ``blocks`` that :func:`block_io` accepts, in their order.

    Example: ResNet-18's eight blocks -> ``layer1.0, layer1.1, layer2.1, layer3.1, layer4.1``.
    """
    am = am or AnalysisManager()
    return [b for b in blocks if block_io(gm, b, am) is not None]


def _boundary(gm: fx.GraphModule, block: BlockLike, am: AnalysisManager | None) -> BlockIO | str:
    """The block's BlockIO, or why it has none."""
    sub = Subgraph.from_nodes(gm, block.nodes)
    if len(sub.inputs) != 1 or len(sub.outputs) != 1:
        return (f"it has {len(sub.inputs)} inputs ({', '.join(sub.inputs)}) and "
                f"{len(sub.outputs)} outputs ({', '.join(sub.outputs)}); it needs one of each")
    nodes = {n.name: n for n in gm.graph.nodes}
    src, out = nodes[sub.inputs[0]], nodes[sub.outputs[0]]
    shape_in, shape_out = float_shape(src), float_shape(out)
    if shape_in is None or shape_out is None:
        return "its input and output must both be float tensors"
    if shape_in != shape_out:
        return f"it maps shape {shape_in} to {shape_out}"
    fact = (am or AnalysisManager()).get(ShapeAnalysis(), gm, sub)
    if len(fact.inputs) != 1 or len(fact.outputs) != 1:
        return "the shape analysis finds no single float tensor input and output"
    a, b = fact.inputs[0], fact.outputs[0]
    if a.rank != b.rank or not all(dims_same(x, y) for x, y in zip(a.dims, b.dims, strict=True)):
        return f"it maps shape {a} to {b} (symbolically)"
    return BlockIO(sub, src.name, out.name, shape_in, a)


def _eligible(gm: fx.GraphModule, block: BlockLike, am: AnalysisManager | None,
              verb: str) -> BlockIO:
    found = _boundary(gm, block, am)
    if isinstance(found, str):
        raise ValueError(f"cannot {verb} block {block.path!r} ({block.type}): {found}; only a "
                         "block whose output has its input's shape can be (see eligible_blocks)")
    return found


def duplicate_block(gm: fx.GraphModule, block: BlockLike, am: AnalysisManager | None = None, *,
                    rewriter: Rewriter | None = None) -> Subgraph:
    """Insert a copy of ``block`` right after it, with its own modules and parameters.

    Pre: :func:`block_io` accepts the block (else ValueError). Post: the module subtree at
    ``block.path`` is deep-copied to :func:`copy_path` (``layer1.1`` -> ``layer1.1_dup0``); the
    copy's nodes read the block's output and call or fetch the copy's modules and parameters;
    every former user of the block's output reads the copy's output; copied nodes keep their
    meta (``tensor_meta`` stays valid), with ``nn_module_stack`` entries under the block renamed
    to the copy. The original's nodes keep their names. Committed once (unless ``rewriter`` is
    given: then its caller commits). Returns the copy as a Subgraph.
    Example: ``x -> layer1.1 -> layer2.0`` becomes ``x -> layer1.1 -> layer1.1_dup0 -> layer2.0``.
    """
    io = _eligible(gm, block, am, "duplicate")
    rw = rewriter or Rewriter(gm)
    new_path = copy_path(gm, block.path)
    if _find_attr(gm, block.path) is not None:
        gm.add_submodule(new_path, copy.deepcopy(gm.get_submodule(block.path)))
    nodes = {n.name: n for n in gm.graph.nodes}
    out = nodes[io.output]
    # The copy reads a stand-in for the output until the output's users have moved to the copy:
    # replace_all_uses moves every use, and the copy's own reads must stay.
    stand_in = rw.call_function(_stand_in, (), after=out)
    env: dict[str, fx.Node] = {io.input: stand_in}
    last = stand_in
    for name in io.subgraph.nodes:
        env[name] = _copy_node(rw, nodes[name], env, block.path, new_path, after=last)
        if env[name] is not nodes[name]:  # a shared fetch stays where it is: insert after copies
            last = env[name]
    rw.replace_all_uses(out, env[io.output])
    rw.replace_all_uses(stand_in, out)
    rw.erase(stand_in)
    created = [env[name].name for name in io.subgraph.nodes if env[name] is not nodes[name]]
    if rewriter is None:
        rw.commit()
    return Subgraph.from_nodes(gm, created)


def delete_block(gm: fx.GraphModule, block: BlockLike, am: AnalysisManager | None = None, *,
                 rewriter: Rewriter | None = None) -> None:
    """Remove ``block``: the users of its output read its input instead.

    Pre: :func:`block_io` accepts the block (else ValueError). Post: the block's computing nodes
    and its parameter fetches nobody else reads are erased; its modules go at commit (unused
    submodule deletion); committed once (unless ``rewriter`` is given: then its caller
    commits). The model computes what it would with the block replaced by ``nn.Identity``.
    Example: ``layer2.0 -> layer2.1 -> layer3.0`` becomes ``layer2.0 -> layer3.0``.
    """
    io = _eligible(gm, block, am, "delete")
    rw = rewriter or Rewriter(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    rw.replace_all_uses(nodes[io.output], nodes[io.input])
    members = [nodes[name] for name in io.subgraph.nodes]
    # Erased, not left to dead code elimination, which keeps impure (in-place) ops.
    rw.erase(*[n for n in members if n.op in COMPUTE_OPS])
    rw.erase(*[n for n in members if n.op == "get_attr" and not n.users])
    if rewriter is None:
        rw.commit()


def copy_path(gm: fx.GraphModule, path: str) -> str:
    """Where a copy of the module at ``path`` goes: ``{path}_dup{i}``, a sibling of it, with the
    smallest ``i`` that names no attribute of ``gm`` and no module in any ``nn_module_stack``.

    Example: ``layer1.1`` -> ``layer1.1_dup0``; once that exists, ``layer1.1_dup1``.
    """
    named = {entry[0] for n in gm.graph.nodes
             for entry in (n.meta.get("nn_module_stack") or {}).values()}
    i = 0
    while f"{path}_dup{i}" in named or _find_attr(gm, f"{path}_dup{i}") is not None:
        i += 1
    return f"{path}_dup{i}"


def _find_attr(gm: fx.GraphModule, path: str) -> Any:
    obj: Any = gm
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _moved(text: str, old: str, new: str) -> str:
    """``text`` (a dotted path) with the prefix ``old`` replaced by ``new``, if it has it."""
    return new + text[len(old):] if text == old or text.startswith(old + ".") else text


def _copy_node(rw: Rewriter, node: fx.Node, env: dict[str, fx.Node], old: str, new: str, *,
               after: fx.Node) -> fx.Node:
    """Insert a copy of ``node`` after ``after``, reading ``env``'s copies, targeting the copied
    modules. A fetch of a parameter outside the block is shared, not copied."""
    if node.op == "get_attr" and _moved(str(node.target), old, new) == node.target:
        return node
    target = (_moved(str(node.target), old, new) if node.op in ("call_module", "get_attr")
              else node.target)
    args = fx.node.map_arg(node.args, lambda n: env.get(n.name, n))
    kwargs = fx.node.map_arg(node.kwargs, lambda n: env.get(n.name, n))
    meta = dict(node.meta)
    if meta.get("nn_module_stack"):
        meta["nn_module_stack"] = _renamed_stack(meta["nn_module_stack"], old, new)
    return rw.insert(node.op, target, tuple(args), dict(kwargs), after=after, meta=meta)


def _renamed_stack(stack: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``nn_module_stack`` with the entries at or under module ``old`` moved to ``new``.

    Keys are renamed where they spell the path (torch.fx: ``layer1.1``, ``layer1.1@1``;
    torch.export: ``L__self__layer1.1``), else set to the new path, so the copy is its own call.
    """
    renamed: dict[str, Any] = {}
    for key, entry in stack.items():
        path = entry[0]
        moved = _moved(path, old, new)
        if moved != path:
            at = key.rfind(path) if path else -1
            key = key[:at] + moved + key[at + len(path):] if at >= 0 else moved
            entry = (moved, *entry[1:])
        renamed[key] = entry
    return type(stack)(renamed) if isinstance(stack, dict) else renamed


def _stand_in() -> None:
    raise RuntimeError("block_mutations: a stand-in node was left in the graph")
