"""Shared fixtures for the analysis-pass tests: zoo models loaded once, small traced modules,
and seeded random connected subgraphs (ALGORITHM.md section 3.1)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import torch
from torch import fx, nn

from alphac.frontends import TracedModel, load
from alphac.frontends.trace import annotate_shapes
from alphac.ir import COMPUTE_OPS, Subgraph, consumers, producers

#: Small zoo inputs: every model traces at 16x16 and the suite stays fast on 2 CPU cores.
SMALL = (2, 3, 16, 16)


_ZOO: dict[tuple[str, tuple[int, ...]], TracedModel] = {}


@pytest.fixture(scope="session")
def zoo_model() -> Callable[..., TracedModel]:
    """``zoo_model(name, shape=SMALL)``: the traced zoo model, loaded once per session."""

    def get(name: str, shape: tuple[int, ...] = SMALL) -> TracedModel:
        key = (name, tuple(shape))
        if key not in _ZOO:
            _ZOO[key] = load(f"zoo:{name}", shape, num_classes=10)
        return _ZOO[key]

    return get


def trace_module(module: nn.Module, *shapes: tuple[int, ...], seed: int = 0) -> fx.GraphModule:
    """``module`` traced by torch.fx and shape-annotated at random inputs of ``shapes``."""
    gm = fx.symbolic_trace(module.eval())
    gen = torch.Generator().manual_seed(seed)
    annotate_shapes(gm, [torch.randn(s, generator=gen) for s in shapes])
    return gm


def random_subgraph(gm: fx.GraphModule, pool: set[str], rng: random.Random, *, p: float = 0.85,
                    max_perc: float = 0.8) -> Subgraph:
    """Grow a connected node set inside ``pool`` from a random node by adding random neighbours
    (producers or consumers); stop with probability 1-p after each addition or at max_perc."""
    nodes = [n for n in gm.graph.nodes if n.name in pool and n.op in COMPUTE_OPS]
    chosen = [rng.choice(nodes)]
    names = {chosen[0].name}
    limit = max(1, int(max_perc * len(nodes)))
    while len(chosen) < limit:
        around = {m.name: m for n in chosen for m in (*producers(n), *consumers(n))
                  if m.name in pool and m.op in COMPUTE_OPS and m.name not in names}
        if not around:
            break
        pick = around[rng.choice(sorted(around))]
        chosen.append(pick)
        names.add(pick.name)
        if rng.random() > p:
            break
    return Subgraph.from_nodes(gm, names)


@pytest.fixture(scope="session")
def traced() -> Callable[..., fx.GraphModule]:
    """:func:`trace_module` as a fixture."""
    return trace_module


@pytest.fixture(scope="session")
def grow_subgraph() -> Callable[..., Subgraph]:
    """:func:`random_subgraph` as a fixture."""
    return random_subgraph

