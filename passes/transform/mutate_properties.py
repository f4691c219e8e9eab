"""mutate_properties: perturb a subgraph's depth and mixing once, into the targets of synthesis.

ALGORITHM.md sections 2.2, 2.3 and 3: shape stays exact; each depth pair moves by a drawn delta
[p 0.5, delta_max 2]; each mixing pair is dropped with probability p [0.5] (relaxes only). The
draw is a :class:`Perturbation`, made once for the selected subgraph; :meth:`Perturbation.apply`
turns the facts of each block instance (each *context*) into that instance's :class:`Targets`,
so every instance gets the same change and the spliced child is checked against exactly these
targets (the reference re-drew per segment and never checked the whole).

Example: depth {0->0: 4}, mixing {0->0: M}; a draw of delta +1 that keeps the mixing pair gives
targets depth {0->0: 5}, mixing {0->0: M}, shape unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alphac.passes.analysis.depth import DepthFact, DepthProperty, depth_delta
from alphac.passes.analysis.mixing import MixingFact, MixingProperty
from alphac.passes.analysis.program_infer import ProgramFacts
from alphac.passes.analysis.shape import ShapeFact, ShapeProperty

__all__ = ["Perturbation", "Targets", "distances", "mutate_properties", "total_distance"]

_SHAPE, _DEPTH, _MIXING = ShapeProperty(), DepthProperty(), MixingProperty()


@dataclass(frozen=True)
class Targets:
    """What a replacement must satisfy in one context: exact shape, depth and mixing bounds."""

    shape: ShapeFact
    depth: DepthFact
    mixing: MixingFact

    def summary(self) -> dict[str, Any]:
        """JSON-ready: depth per pair, mixing matrices per pair (labels)."""
        return {"depth": self.depth.as_dict(),
                "mixing": {f"{i}->{o}": [[v.label for v in row] for row in m]
                           for (i, o), m in self.mixing.pairs}}


@dataclass(frozen=True)
class Perturbation:
    """One draw: a depth delta per (input, output) pair, and the mixing pairs dropped."""

    depth_deltas: tuple[tuple[tuple[int, int], int], ...]
    dropped: frozenset[tuple[int, int]]

    def apply(self, facts: ProgramFacts) -> Targets:
        """The targets of one context whose unperturbed properties are ``facts``."""
        deltas = dict(self.depth_deltas)
        depth = DepthFact(tuple((k, max(0, d + deltas.get(k, 0))) for k, d in facts.depth.pairs))
        mixing = facts.mixing
        kept = tuple(p for p in mixing.pairs if p[0] not in self.dropped)
        return Targets(facts.shape, depth, MixingFact(kept, mixing.in_ranks, mixing.out_ranks))


def mutate_properties(facts: ProgramFacts, rng: random.Random, *, depth_p: float = 0.5,
                      delta_max: int = 2, mixing_p: float = 0.5) -> Perturbation:
    """Draw the perturbation of a subgraph whose properties (in its primary context) are
    ``facts``. Pre: ``rng`` is the mutation's seeded generator. Post: deterministic in the
    rng's state; ``perturbation.apply(facts)`` are the targets."""
    deltas = tuple((key, depth_delta(rng, depth_p, delta_max)) for key, _ in facts.depth.pairs)
    dropped = frozenset(key for key, _ in facts.mixing.pairs if rng.random() < mixing_p)
    return Perturbation(deltas, dropped)


def distances(targets: Targets, facts: ProgramFacts) -> dict[str, float]:
    """Each property's distance from ``targets`` (0: satisfied; inf: infeasible)."""
    return {"shape": _SHAPE.distance(targets.shape, facts.shape),
            "depth": _DEPTH.distance(targets.depth, facts.depth),
            "mixing": _MIXING.distance(targets.mixing, facts.mixing)}


def total_distance(parts: Mapping[str, float]) -> float:
    """The summed distance the synthesizer minimises."""
    return sum(parts.values())
