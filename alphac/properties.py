"""The protocol of a program property: infer, distance, mutate (ALGORITHM.md section 2).

A property is inferred for a subgraph in context (``infer``), compared against a target
(``distance``: 0 when the candidate satisfies the target, :data:`INFEASIBLE` when no extension of
the candidate can ever satisfy it, so synthesis prunes it), and perturbed by ``mutate`` with an
explicit ``random.Random``. The values form a lattice (:mod:`alphac.lattice`) whose order is "at
least as strong".
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.lattice import Lattice

V = TypeVar("V")

#: The distance of a candidate that can never be extended to satisfy the target.
INFEASIBLE = math.inf


def is_infeasible(distance: float) -> bool:
    """Whether a distance says the candidate must be pruned."""
    return math.isinf(distance)


class Property(ABC, Generic[V]):
    """A program property over values ``V`` (which form the lattice ``lattice``)."""

    name: str
    lattice: Lattice[V]

    @abstractmethod
    def infer(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> V:
        """The property's value for ``subgraph`` of ``gm`` (cached through ``am``)."""

    @abstractmethod
    def distance(self, target: V, candidate: V) -> float:
        """0 iff ``candidate`` satisfies ``target``; :data:`INFEASIBLE` to prune; else > 0."""

    @abstractmethod
    def mutate(self, value: V, rng: random.Random, params: Mapping[str, Any]) -> V:
        """A perturbed copy of ``value``; deterministic for a given ``rng`` state."""
