"""Block-wise distillation: a child's new part learns to compute what its parent computed there.

A mutation replaces a region of a trained parent (a rewrite's spliced chain, a width mutation's
resized convs). Fresh or reordered ops make the child start far from its parent: before any
training the median rewrite child of ``zoo:small_cnn`` was near chance (issue #17). Here each
changed part of the child (an :class:`~alphac.ir.Boundary`) is trained alone, in the manner of
block-wise distillation (DNA, CVPR 2020): the parent runs on training images (eval mode, no
gradients), its values at the part's inputs are fed to the part (:func:`alphac.ir.extract`,
sharing the child's modules, train mode), and the part's parameters follow Adam on the
normalised squared error to the parent's values at the part's outputs. The rest of the child
is not touched. Cheap: the parent runs forward only, and only the parts run backward.

    result = distill(parent_gm, child.gm, child.record.boundaries, data, steps=200)
    result.error_before, result.error_after   # the parts' normalised error, per part

The error of a part is ``mean((y - t)^2) / mean(t^2)`` over its outputs, on a fixed probe batch
of training images in eval mode; 1.0 is as far as predicting zero. A part whose values cannot be
paired (a parent node missing, a shape that differs) is skipped and named in ``skipped``. If the
loss stops being finite, the parts get back the weights they started with.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import fx

from alphac.ir import Boundary, extract, node_map
from alphac.modes import training_mode
from alphac.runtime.pipeline import Normalizer, TaskData, train_batches

__all__ = ["DistillResult", "distill"]


@dataclass(frozen=True)
class DistillResult:
    """What :func:`distill` did: steps taken, training images the parent saw, seconds, each
    trained part's error before and after (same order), the parts skipped (and why), and
    whether it stopped on a non-finite loss (then the parts' weights were restored)."""

    steps: int
    images: int
    seconds: float
    error_before: tuple[float, ...]
    error_after: tuple[float, ...]
    skipped: tuple[str, ...] = ()
    diverged: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "images": self.images, "seconds": round(self.seconds, 3),
                "error_before": [round(e, 5) for e in self.error_before],
                "error_after": [round(e, 5) for e in self.error_after],
                "skipped": list(self.skipped), "diverged": self.diverged}


def distill(parent: fx.GraphModule, child: fx.GraphModule, boundaries: Sequence[Boundary],
            data: TaskData, *, steps: int = 300, batch_size: int = 64, lr: float = 3e-3,
            seed: int = 0, tolerance: float = 1e-4) -> DistillResult:
    """Train each part of ``child`` named by ``boundaries`` on ``parent``'s values at its
    boundary (see the module docstring); ``child``'s other weights and ``parent`` are left as
    they are. Stops after ``steps`` steps of ``batch_size`` training images (no augmentation),
    or once every part's batch error is below ``tolerance`` (none at all when every part starts
    below it on the probe batch). Both models are moved to
    ``data.device``. The same arguments give the same weights on CPU."""
    began = time.monotonic()
    if steps < 0 or batch_size < 1:
        raise ValueError("distill needs steps >= 0 and batch_size >= 1")
    parent.to(data.device)
    child.to(data.device)
    parts, skipped = _pairable(parent, child, boundaries)
    if not parts or steps == 0:
        return DistillResult(0, 0, time.monotonic() - began, (), (), tuple(skipped))
    recorder = _recorder(parent, sorted({n for b, _ in parts
                                         for n in (*b.parent_inputs, *b.parent_outputs)}))
    params = list(dict.fromkeys(p for _, sub in parts for p in sub.parameters()
                                if p.is_floating_point()))
    start = [{k: v.detach().clone() for k, v in sub.state_dict().items()} for _, sub in parts]
    batches = _batches(data, min(batch_size, len(data.train)), seed)
    probe = _record(recorder, next(batches))
    before = _errors(parts, probe)
    # parts that already compute their parent's values (an op kept as it was) need no steps
    optimizer = (torch.optim.Adam(params, lr=lr)
                 if params and not all(e < tolerance for e in before) else None)
    done = diverged = False
    step = 0
    with contextlib.ExitStack() as modes:
        for _, sub in parts:
            modes.enter_context(training_mode(sub, True))
        while optimizer is not None and step < steps and not done:
            values = _record(recorder, next(batches))
            losses = [_error(sub, b, values) for b, sub in parts]
            loss = torch.stack(losses).sum()
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            done = all(float(v.detach()) < tolerance for v in losses)
    after = _errors(parts, probe)
    for i, (_, sub) in enumerate(parts):  # a part that got no closer keeps its start
        if diverged or not after[i] < before[i]:
            with torch.no_grad():
                sub.load_state_dict(start[i])
    after = _errors(parts, probe)
    return DistillResult(step, (step + 1) * batch_size, time.monotonic() - began, before, after,
                         tuple(skipped), diverged)


def _pairable(parent: fx.GraphModule, child: fx.GraphModule, boundaries: Sequence[Boundary]
              ) -> tuple[list[tuple[Boundary, fx.GraphModule]], list[str]]:
    """The boundaries whose every value exists on both sides at the same shape, each with its
    part extracted from ``child`` (modules shared); the others, described."""
    pnodes, cnodes = node_map(parent), node_map(child)
    parts, skipped = [], []
    for b in boundaries:
        label = ",".join(b.part.outputs)
        pairs = list(zip(b.part.inputs, b.parent_inputs, strict=True)) + \
            list(zip(b.part.outputs, b.parent_outputs, strict=True))
        missing = [c for c, _ in pairs if c not in cnodes] + [p for _, p in pairs
                                                               if p not in pnodes]
        if missing or any(n not in cnodes for n in b.part.nodes):
            skipped.append(f"{label}: no node {missing[0] if missing else 'of the part'}")
            continue
        differ = [c for c, p in pairs if _shape(cnodes[c]) != _shape(pnodes[p])
                  or _shape(cnodes[c]) is None]
        if differ:
            skipped.append(f"{label}: {differ[0]}'s shape differs from the parent's or is unknown")
            continue
        sub = extract(child, b.part)
        if not any(p.requires_grad for p in sub.parameters()):
            skipped.append(f"{label}: no trainable parameters")
            continue
        parts.append((b, sub))
    return parts, skipped


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(int(s) for s in meta.shape)[1:] if hasattr(meta, "shape") else None


def _recorder(parent: fx.GraphModule, names: Sequence[str]) -> fx.GraphModule:
    """A fresh graph computing ``parent``'s named values and only what they need, each copied as
    soon as it is computed (a later in-place op cannot change it), returned by name."""
    by_name = node_map(parent)
    needed: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(n.name for n in by_name[name].all_input_nodes)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    copies: dict[str, fx.Node] = {}
    wanted = set(names)
    for node in parent.graph.nodes:
        if node.op == "placeholder" or node.name in needed:
            env[node.name] = graph.node_copy(node, lambda n: env[n.name])
            if node.name in wanted:
                copies[node.name] = graph.call_method("clone", (env[node.name],))
    graph.output({name: copies[name] for name in names})
    return fx.GraphModule(parent, graph, class_name="Recorder")


def _record(recorder: fx.GraphModule, images: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), training_mode(recorder, False):
        return recorder(images)


def _error(sub: fx.GraphModule, b: Boundary, values: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = [values[n].clone() for n in b.parent_inputs]  # a part's in-place op keeps them
    out = sub(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    terms = []
    for y, name in zip(outs, b.parent_outputs, strict=True):
        t = values[name]
        terms.append(((y.float() - t.float()) ** 2).mean() / (t.float().pow(2).mean() + 1e-8))
    return torch.stack(terms).mean()


def _errors(parts: Sequence[tuple[Boundary, fx.GraphModule]], values: dict[str, torch.Tensor]
            ) -> tuple[float, ...]:
    out = []
    with torch.no_grad():
        for b, sub in parts:
            with training_mode(sub, False):
                out.append(float(_error(sub, b, values)))
    return tuple(out)


def _batches(data: TaskData, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator(device=data.device).manual_seed(seed)
    normalize = Normalizer(data.target, data.device, False)
    while True:
        for images, _ in train_batches(data.train, batch_size=batch_size, target=data.target,
                                       augment=False, generator=generator, normalize=normalize):
            yield images
