"""The state of a running search: its trials, the seed's equal-training references and the jobs
in flight, with the questions the loop asks of them (:mod:`alphac.search.schedule` answers them
as pure functions) and the updates a finished job makes.

Nothing here touches the journal, the executor, a file or a clock: the driver journals each event
and then tells the population, and a resume rebuilds the population from the journal
(:meth:`Population.restore`). Example::

    pop = Population(rungs=1, eta=2)
    pop.add(Member(1, gm, blocks), seed=True)
    pop.trained(1, val_accuracy=0.80, weights="candidates/000001/trained.pt", seconds=12.0,
                cost=140_000.0)
    pop.referenced(0, 0.80, "candidates/000001/trained.pt")
    pop.next_promotion()    # None: fewer than eta trials have finished rung 0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alphac.search.schedule import Member, next_promotion, next_reference, score
from alphac.search.selection import Candidate, pareto_front

__all__ = ["Population"]


@dataclass
class Population:
    """The members by id, the seed, its references (generation -> (val accuracy, weights)) and
    the (id, rung) jobs in flight (rung > 0 a promotion, < 0 a seed reference)."""

    rungs: int = 0
    eta: int = 3
    members: dict[int, Member] = field(default_factory=dict)
    seed_id: int | None = None
    refs: dict[int, tuple[float, str]] = field(default_factory=dict)
    refs_stuck: bool = False  # a reference failed: later generations use the deepest one
    inflight: set[tuple[int, int]] = field(default_factory=set)

    # ---- questions ----------------------------------------------------------------------
    @property
    def seed(self) -> Member:
        return self.members[self.seed_id]

    def score(self, member: Member) -> float | None:
        """The member's score at equal training (:func:`alphac.search.schedule.score`)."""
        return score(member, self.seed, self.refs)

    def candidates(self) -> list[Candidate]:
        """The finished members as selection sees them: score at equal training and cost."""
        return [Candidate(m.id, self.score(m), m.cost, m.id) for m in self.members.values()
                if m.accs and m.cost is not None]

    def front(self) -> list[int]:
        """The ids the final retraining would train now: the Pareto front and the seed."""
        return sorted({c.id for c in pareto_front(self.candidates())} | {self.seed_id})

    def next_reference(self) -> int | None:
        """The seed reference due next (:func:`alphac.search.schedule.next_reference`)."""
        deepest = max((m.generation for m in self.members.values()), default=0)
        return next_reference(self.refs, self.refs_stuck, deepest, self.inflight)

    def next_promotion(self) -> tuple[int, int] | None:
        """The next (id, rung) to train longer (:func:`alphac.search.schedule.next_promotion`)."""
        return next_promotion(self.members, self.seed_id, self.rungs, self.eta, self.inflight)

    def final_fine_tunes(self, ident: int, deepest: int) -> int:
        """How many final fine-tunes ``ident`` gets so that every model of the front ends with
        as many fine-tunes as the deepest (``deepest`` generations): a child of generation g
        has had g, the seed as many as its deepest reference up to ``deepest``."""
        if ident == self.seed_id:
            done = max((g for g in self.refs if g <= deepest), default=0)
        else:
            done = self.members[ident].generation
        return max(1, deepest - done + 1)

    def final_units(self, scratch: bool = False) -> int:
        """The final retraining of the front and the seed now, in final recipes: one per model
        from scratch, else each model's :meth:`final_fine_tunes`."""
        front = self.front()
        if scratch:
            return len(front)
        deepest = max(self.members[i].generation for i in front)
        return sum(self.final_fine_tunes(i, deepest) for i in front)

    def child_seconds(self) -> list[float]:
        """Worker seconds of every finished member, all its rungs together."""
        return [m.seconds for m in self.members.values() if m.accs]

    def children_running(self) -> int:
        return sum(1 for ident, rung in self.inflight if rung == 0 and ident != self.seed_id)

    def promotions(self) -> int:
        return sum(len(m.accs) - 1 for m in self.members.values() if m.accs)

    # ---- updates ------------------------------------------------------------------------
    def add(self, member: Member, seed: bool = False) -> None:
        self.members[member.id] = member
        if seed:
            self.seed_id = member.id

    def trained(self, ident: int, val_accuracy: float, weights: str, seconds: float,
                cost: float | None) -> None:
        """``ident``'s first training finished (the seed's: it is reference 0)."""
        member = self.members[ident]
        member.accs, member.weights = [val_accuracy], [weights]
        member.seconds += seconds
        member.cost = cost
        if ident == self.seed_id:
            self.refs[0] = (val_accuracy, weights)

    def promoted(self, ident: int, val_accuracy: float | None, weights: str | None,
                 seconds: float = 0.0) -> None:
        """A promotion of ``ident`` finished (None: it failed, never promoted again)."""
        member = self.members[ident]
        if val_accuracy is None:
            member.stuck = True
            return
        member.accs.append(val_accuracy)
        member.weights.append(weights)
        member.seconds += seconds

    def referenced(self, generation: int, val_accuracy: float | None,
                   weights: str | None) -> None:
        """The seed's reference ``generation`` finished (None: it failed; no deeper ones)."""
        if val_accuracy is None:
            self.refs_stuck = True
        else:
            self.refs[generation] = (val_accuracy, weights)

    def restore(self, ind: Any, objective: str, trained: str) -> None:
        """Set a finished member's results from its journal row ``ind``
        (:class:`~alphac.search.journal.Individual`): its first training (weights ``trained``),
        its rungs up to the first failed one, and for the seed its references."""
        self.trained(ind.id, ind.val_accuracy, trained,
                     float(ind.extra.get("worker_seconds", ind.train_seconds or 0.0)),
                     ind.values.get(objective))
        for rung in ind.rungs:
            self.promoted(ind.id, rung.val_accuracy, rung.weights, rung.train_seconds)
            if rung.val_accuracy is None:
                break
        if ind.id == self.seed_id:
            for ref in ind.references:
                self.referenced(ref.rung, ref.val_accuracy, ref.weights)
                if ref.val_accuracy is None:
                    break
