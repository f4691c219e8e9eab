"""Remove nodes whose values nobody uses, and the submodules only they called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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

    name: ClassVar[str] = "eliminate_dead_code"

    def run(self, gm: fx.GraphModule, am: AnalysisManager) -> PassResult:
        return PassResult(gm, changed=Rewriter(gm).commit(eliminate_dead_code=True))
