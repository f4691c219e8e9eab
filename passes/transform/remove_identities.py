"""Bypass ops that return their input unchanged (nn.Identity, contiguous, clone, detach)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.pass_manager import PassResult, register_pass
from alphac.passes.analysis.ops import graph_modules, op_spec
from alphac.rewriter import Rewriter


@register_pass
@dataclass(frozen=True)
class RemoveIdentities:
    """Redirect the users of every identity op to its input and erase the op.

    Pre: any GraphModule. Post: no node of kind ``identity`` (see ``passes/analysis/ops.py``)
    remains; the function computed is unchanged. With ``include_dropout`` (for inference graphs)
    dropout is removed too.

    Example: ``y = self.id(x); z = relu(y.contiguous())`` -> ``z = relu(x)``.
    """

    name: str = "remove_identities"
    include_dropout: bool = False

    def run(self, gm: fx.GraphModule, am: AnalysisManager) -> PassResult:
        kinds = {"identity", "dropout"} if self.include_dropout else {"identity"}
        modules = graph_modules(gm)
        targets = [
            n
            for n in gm.graph.nodes
            if n.op in ("call_module", "call_function", "call_method")
            and op_spec(n, modules).kind in kinds
            and isinstance(n.args[0] if n.args else None, fx.Node)
        ]
        if not targets:
            return PassResult(gm, changed=False)
        with Rewriter(gm).edit(eliminate_dead_code=True) as graph:
            for node in targets:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
        return PassResult(gm, changed=True)
