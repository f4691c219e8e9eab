"""Frontends: turn a user's model file or a zoo name into a traced GraphModule with its blocks."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from alphac.errors import InvalidInputShapeError
from alphac.frontends.blocks import Block, find_blocks
from alphac.frontends.loader import ZOO_PREFIX, load_module
from alphac.frontends.trace import EXPORT, FX, annotate_shapes, trace

__all__ = [
    "EXPORT",
    "FX",
    "ZOO_PREFIX",
    "Block",
    "TracedModel",
    "find_blocks",
    "load",
    "load_module",
    "parse_shape",
    "trace",
]


@dataclass
class TracedModel:
    """A user's model captured as a graph: what every later stage starts from."""

    source: str
    module: nn.Module
    gm: fx.GraphModule
    frontend: str
    example_inputs: tuple[torch.Tensor, ...]
    blocks: list[Block] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.example_inputs[0].shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        out = next(n for n in self.gm.graph.nodes if n.op == "output").args[0]
        node = out[0] if isinstance(out, (tuple, list)) else out
        return tuple(node.meta["tensor_meta"].shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """``'2x3x32x32'`` or ``'2,3,32,32'`` -> ``(2, 3, 32, 32)``; a clear error otherwise."""
    parts = [p for p in re.split(r"[x,\s]+", text.strip().lower()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InvalidInputShapeError(
            f"cannot read the input shape {text!r}",
            hint="write positive integers separated by 'x', batch first, e.g. 2x3x32x32",
        )
    if len(parts) < 2:
        raise InvalidInputShapeError(
            f"input shape {text!r} has no batch dimension",
            hint="give the full shape, batch first, e.g. 2x3x32x32",
        )
    return tuple(int(p) for p in parts)


def load(
    spec: str,
    input_shape: Sequence[int],
    *,
    num_classes: int = 1000,
    seed: int = 0,
) -> TracedModel:
    """Load ``spec`` (``zoo:NAME`` or a .py path), trace it at ``input_shape`` (batch first).

    The model is built under ``torch.manual_seed(seed)`` (the global generator is restored after),
    so the same ``seed`` gives the same initial weights, for zoo models and for model files that
    draw their initialisation from torch's generator. The example input is seeded random data;
    every node gets ``meta['tensor_meta']``.
    """
    shape = tuple(int(s) for s in input_shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = load_module(spec, num_classes=num_classes, input_shape=shape[1:])
    generator = torch.Generator().manual_seed(seed)
    example = (torch.randn(shape, generator=generator),)
    gm, frontend = trace(module, example)
    annotate_shapes(gm, example)
    blocks = find_blocks(gm, module if frontend == FX else None)
    return TracedModel(spec, module, gm, frontend, example, blocks)
