"""Remove nodes whose values nobody uses, and the submodules only they called."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.pass_manager import PassResult, register_pass
from alphac.rewriter import Rewriter


@register_pass
@dataclass(frozen=True)
class EliminateDeadCode:
    """Erase pure nodes whose results are never used.

    Pre: any GraphModule. Post: every computing node has a user or is impure; ``changed`` says
    whether something was erased, so a second run reports ``changed=False``.

    Example: ``y = relu(x); z = conv(x); return z`` -> ``z = conv(x); return z``.
    """

    name: str = "eliminate_dead_code"

    def run(self, gm: fx.GraphModule, am: AnalysisManager) -> PassResult:
        dead = [
            n
            for n in gm.graph.nodes
            if n.op in ("call_module", "call_function", "call_method", "get_attr")
            and not n.users
            and not n.is_impure()
        ]
        if not dead:
            return PassResult(gm, changed=False)
        with Rewriter(gm).edit(eliminate_dead_code=True):
            pass
        return PassResult(gm, changed=True)
