"""What the search does next, as pure functions of its state: which parent to mutate (the
proposers), which trial trains longer (asynchronous successive halving, as in ASHA), which
equal-training reference of the seed is due, and how a trial scores against the seed.

Nothing here touches the journal, the executor or a model: the driver keeps a
:class:`Member` per trial and asks. Example::

    members = {1: Member(1, gm, blocks, cost=100.0, accs=[0.80]), 2: Member(2, ..., accs=[0.82])}
    next_promotion(members, seed_id=1, rungs=1, eta=2, inflight=set())   # (1, 1): the seed first
    score(members[2], members[1], refs={0: (0.80, "w0")})                   # 0.82
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from alphac.search.selection import Candidate, select_parent

__all__ = ["PROPOSERS", "Member", "generation_gain", "next_promotion", "next_reference",
           "score"]


@dataclass
class Member:
    """A trial as the running search holds it (rebuilt from the journal on resume)."""

    id: int
    gm: Any
    blocks: list
    cost: float | None = None
    accs: list[float] = field(default_factory=list)  # validation accuracy per rung, 0 first
    weights: list[str] = field(default_factory=list)  # the trained state per rung (relative)
    stuck: bool = False  # a promotion failed: never promoted again
    code: str = ""  # generated from ``gm`` in this process, never read back from the run dir
    seconds: float = 0.0  # worker time over all rungs
    generation: int = 0  # fine-tunes since the seed's training (the seed: 0)
    plan: tuple = ()  # how its weights start from its parent's (the mutation's weight_plan)
    boundaries: tuple = ()  # where its changed parts meet its parent (what distillation trains)
    distill: Any = None  # the DistillPlan its first training carries (alphac.search.starts)

    @property
    def val_accuracy(self) -> float | None:
        return self.accs[0] if self.accs else None


#: A reference: the seed fine-tuned ``generation`` times: (validation accuracy, weights path).
Refs = Mapping[int, tuple[float, str]]


def generation_gain(refs: Refs, generation: int) -> float:
    """What ``generation`` fine-tunes added to the seed's validation accuracy (0 before its
    references are trained; the deepest known one stands in for deeper generations)."""
    known = [g for g in refs if g <= generation]
    return refs[max(known)][0] - refs[0][0] if known and 0 in refs else 0.0


def score(member: Member, seed: Member, refs: Refs) -> float | None:
    """Validation accuracy on the seed's scale at equal training: the member's accuracy at its
    highest rung the seed also reached, shifted by the seed's gain from rung 0 to that rung,
    minus the seed's gain from ``generation`` fine-tunes. None before both have trained."""
    if not member.accs or not seed.accs:
        return None
    rung = min(len(member.accs), len(seed.accs)) - 1
    return member.accs[rung] - seed.accs[rung] + seed.accs[0] - generation_gain(
        refs, member.generation)


def next_reference(refs: Refs, stuck: bool, deepest: int, inflight: set[tuple[int, int]]
                   ) -> int | None:
    """The generation whose reference should be trained next: one past the deepest trained,
    when some trial is that deep (``deepest``) and no reference is in flight (each starts
    from the previous one); None after a reference failed (``stuck``)."""
    if stuck or 0 not in refs:
        return None
    g = max(refs) + 1
    if g > deepest or any(r < 0 for _, r in inflight):
        return None
    return g


def next_promotion(members: Mapping[int, Member], seed_id: int, rungs: int, eta: int,
                   inflight: set[tuple[int, int]]) -> tuple[int, int] | None:
    """The next (id, rung) to train longer, highest rung first: a member in the best
    ``1/eta`` of its rung; the seed goes first at every rung (the reference of that rung)."""
    if rungs < 1:
        return None
    seed = members[seed_id]
    for rung in range(rungs, 0, -1):
        ranked = sorted((m for m in members.values() if len(m.accs) >= rung
                         and m.cost is not None), key=lambda m: (-m.accs[rung - 1], m.id))
        top = ranked[:len(ranked) // eta]
        due = [m for m in top if len(m.accs) == rung and not m.stuck
               and (m.id, rung) not in inflight]
        if not due:
            continue
        if len(seed.accs) == rung and not seed.stuck:
            return None if (seed.id, rung) in inflight else (seed.id, rung)
        return due[0].id, rung
    return None


def _evolution(done: list[Candidate], seed: Candidate, rng: random.Random,
               population: int | None) -> int:
    return select_parent(done, seed, rng, population=population).id


def _random_search(done: list[Candidate], seed: Candidate, rng: random.Random,
                   population: int | None) -> int:
    # random chains of mutations from the seed: any finished trial, no selection pressure
    return rng.choice(done).id


#: The proposers, by ``--strategy``: (finished candidates, the seed, rng, population) -> parent.
PROPOSERS: dict[str, Callable[[list[Candidate], Candidate, random.Random, int | None], int]] = {
    "evolution": _evolution, "random-search": _random_search}
