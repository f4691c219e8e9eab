"""Gates a child must pass before a mutation is accepted (STYLE.md, synthesis and rewriting).

Each gate is a named function returning a :class:`Gate` (passed or not, and why):

* :func:`gate_properties` (a): the properties re-inferred on the spliced child's subgraphs, by the
  fx analyses and not the program path, meet each instance's targets;
* :func:`gate_runs` (b): the child's graph lints and it runs forward and backward in train mode,
  with the parent's output shape in eval mode;
* :func:`gate_fingerprint` (c): the child's structural fingerprint differs from the parent's.

Example::

    gate_runs(child, example_inputs, (2, 10))   # Gate("runs", True, "")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.modes import training_mode
from alphac.passes.analysis.depth import DepthAnalysis
from alphac.passes.analysis.fingerprint import FingerprintAnalysis
from alphac.passes.analysis.mixing import MixingAnalysis
from alphac.passes.analysis.shape import ShapeAnalysis
from alphac.passes.transform.mutate_properties import Targets, distances

__all__ = ["Gate", "annotated_output_shape", "gate_fingerprint", "gate_properties", "gate_runs", "model_fingerprint"]


@dataclass(frozen=True)
class Gate:
    """A gate's verdict: its ``name``, whether it ``passed``, and ``detail`` when it did not."""

    name: str
    passed: bool
    detail: str = ""


def gate_properties(child: fx.GraphModule, parts: Sequence[Subgraph],
                    targets: Sequence[Targets], am: AnalysisManager | None = None) -> Gate:
    """(a) Every spliced part of ``child`` meets its instance's targets.

    Pre: ``child`` is shape-annotated; ``parts[i]`` is the replacement in instance i, numbered
    like the replaced subgraph (:func:`~alphac.passes.transform.splice.spliced_part`).
    Post: passed iff shape, depth and mixing distances are all 0 in every instance.
    """
    am = am or AnalysisManager()
    for i, (part, target) in enumerate(zip(parts, targets, strict=True)):
        facts = SimpleNamespace(shape=am.get(ShapeAnalysis(), child, part),
                                depth=am.get(DepthAnalysis(), child, part),
                                mixing=am.get(MixingAnalysis(), child, part))
        off = {k: v for k, v in distances(target, facts).items() if v != 0}
        if off:
            text = ", ".join(f"{k} {v:.3g}" for k, v in sorted(off.items()))
            return Gate("properties", False, f"instance {i} misses its targets: {text}")
    return Gate("properties", True)


def gate_runs(child: fx.GraphModule, example_inputs: Sequence[torch.Tensor],
              output_shape: Sequence[int]) -> Gate:
    """(b) ``child`` lints, runs forward (eval) with ``output_shape``, and backward (train).

    The eval forward is the one ``annotate_shapes`` ran when ``child`` is annotated at
    ``example_inputs`` (its output shape is read from the trace). Post: the child's buffers
    (norm statistics) and gradients are as before; its mode too.
    """
    buffers = {name: b.detach().clone() for name, b in child.named_buffers()}
    grads = {name: p.grad for name, p in child.named_parameters()}
    try:
        child.graph.lint()
        got = annotated_output_shape(child)
        if got is None:  # not annotated at these inputs: run it
            with training_mode(child, False), torch.no_grad():
                got = tuple(_first(child(*example_inputs)).shape)
        if got != tuple(output_shape):
            return Gate("runs", False, f"output shape {got}, the parent's is {tuple(output_shape)}")
        with training_mode(child, True):
            loss = _first(child(*example_inputs)).float().square().mean()
        if not torch.isfinite(loss):
            return Gate("runs", False, "the forward pass gives a non-finite value")
        loss.backward()
    except Exception as exc:  # noqa: BLE001 - any failure of the child is the gate's verdict
        text = str(exc).strip().splitlines()
        return Gate("runs", False, f"{type(exc).__name__}: {text[0][:200]}" if text
                    else type(exc).__name__)
    finally:
        with torch.no_grad():
            for name, b in child.named_buffers():
                b.copy_(buffers[name])
        for name, p in child.named_parameters():
            p.grad = grads.get(name)
    return Gate("runs", True)


def annotated_output_shape(gm: fx.GraphModule) -> tuple[int, ...] | None:
    """The output's shape as the last ``annotate_shapes`` traced it (None if not annotated)."""
    out = next(n for n in reversed(gm.graph.nodes) if n.op == "output").args[0]
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    meta = out.meta.get("tensor_meta") if isinstance(out, fx.Node) else None
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _first(out: object) -> torch.Tensor:
    while isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returns {type(out).__name__}, not a tensor")
    return out


def model_fingerprint(gm: fx.GraphModule, am: AnalysisManager | None = None) -> str:
    """The structural fingerprint of the whole model."""
    return (am or AnalysisManager()).get(FingerprintAnalysis(), gm, Subgraph.whole(gm))


def gate_fingerprint(parent_fingerprint: str, child: fx.GraphModule,
                     am: AnalysisManager | None = None) -> Gate:
    """(c) The child is structurally different from its parent."""
    if model_fingerprint(child, am) == parent_fingerprint:
        return Gate("fingerprint", False, "the child computes the same structure as its parent")
    return Gate("fingerprint", True)
