"""Library modules the captured graph replaces by torch-only equivalents.

torchvision's ``StochasticDepth(p, "row")`` (ConvNeXt, EfficientNet, EfficientNetV2, Swin, MaxViT)
calls ``torchvision.ops.stochastic_depth``, a function ``torch.fx.wrap`` keeps as one node. Traced
through, the graph calls torchvision: no analysis has a rule for it and the child's ``model.py``
would import torchvision. Instead the tracer keeps the module as a leaf (:func:`is_library_leaf`)
and :func:`replace_library_leaves` puts a :class:`DropPath` of the same probability at its path:
the same function in both modes (identity in eval; in training each sample is zeroed with
probability ``p`` and the kept ones scaled by ``1 / (1 - p)``), which the analyses know as stochastic
depth and the code generator writes as its own ``DropPath`` class.

Example: torchvision ``convnext_tiny``'s ``features.1.0.stochastic_depth``
(``StochasticDepth(p=0.0, mode=row)``) becomes ``DropPath(drop_prob=0.0)`` called by one
``call_module`` node at the same path.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from alphac.rewriter import Rewriter


class DropPath(nn.Module):
    """Per-sample stochastic depth: identity in eval mode; in training each sample is zeroed with
    probability ``drop_prob`` and the kept ones scaled by ``1 / (1 - drop_prob)``."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        if self.scale_by_keep and keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _is_torchvision_row_stochastic_depth(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.__name__ == "StochasticDepth" and cls.__module__.startswith("torchvision.")
            and getattr(module, "mode", None) == "row"
            and isinstance(getattr(module, "p", None), (int, float)))


def is_library_leaf(module: nn.Module) -> bool:
    """Whether the tracer keeps ``module`` as one node, to be replaced after tracing."""
    return _is_torchvision_row_stochastic_depth(module)


def replace_library_leaves(gm: fx.GraphModule) -> bool:
    """Put a torch-only equivalent at the path of every library leaf ``gm`` calls; whether any
    was replaced. The model's own modules are untouched (``gm`` holds its own references)."""
    rw = Rewriter(gm, bump=False)  # capture: the graph is handed out at version 0
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    for target in sorted(targets):
        module = gm.get_submodule(target)
        if _is_torchvision_row_stochastic_depth(module):
            replacement = DropPath(float(module.p))
            replacement.train(module.training)
            rw.replace_module(target, replacement)
    changed = rw.changed
    rw.commit(eliminate_dead_code=False, keep_submodules=True)
    return changed
