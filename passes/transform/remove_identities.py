"""Bypass ops that return their input unchanged (nn.Identity, contiguous, clone, detach)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.pass_manager import PassResult, register_pass
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.registry import refs
from alphac.rewriter import Rewriter


@register_pass
@dataclass(frozen=True)
class RemoveIdentities:
    """Redirect the users of every identity op to its input and erase the op.

    Pre: any GraphModule. Post: no node of kind ``identity`` (see the op registry,
    ``passes/analysis/registry``) remains; the function computed is unchanged. With ``include_dropout`` (for inference graphs)
    dropout is removed too.

    Example: ``y = self.id(x); z = relu(y.contiguous())`` -> ``z = relu(x)``.
    """

    name: ClassVar[str] = "remove_identities"
    include_dropout: bool = False

    def run(self, gm: fx.GraphModule, am: AnalysisManager) -> PassResult:
        kinds = {"identity", "dropout"} if self.include_dropout else {"identity"}
        index = graph_index(gm, am)
        targets = [(n, _data_input(index, n)) for n in gm.graph.nodes
                   if n.op in ("call_module", "call_function", "call_method")
                   and _kind(index, n) in kinds]
        targets = [(n, x) for n, x in targets if x is not None]
        if not targets:
            return PassResult(gm, changed=False)
        replaced: dict[fx.Node, fx.Node] = {}
        with Rewriter(gm).session() as rw:
            for node, x in targets:  # in graph order: an identity of an identity is gone already
                replaced[node] = replaced.get(x, x)
                rw.replace_all_uses(node, replaced[node])
                rw.erase(node)
        return PassResult(gm, changed=True)


def _data_input(index: GraphIndex, node: fx.Node) -> fx.Node | None:
    """The op's input: its operand 0 when no param holds it (the first argument)."""
    op = index.op(node)
    held = refs(tuple(v for _, v in op.spec.params))
    return op.operands[0] if op.operands and 0 not in held else None


def _kind(index: GraphIndex, node: fx.Node) -> str:
    return index.op(node).spec.kind


