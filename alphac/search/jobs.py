"""The jobs of a search, as :class:`~alphac.search.candidate.CandidateTask` values a worker can
run: a trial's first training, a promotion to a higher rung, a reference of the seed, a final
retraining. Each carries the trial's code, generated here from its graph (a resumed run never
executes code read from the run directory), the weights it starts from and where it saves.
Example::

    jobs = Jobs(settings, layout, population, search_seed=0)
    jobs.job(7, 0)      # child 7's proxy fine-tune from candidates/000007/weights.pt
    jobs.job(1, -2)     # the seed fine-tuned once more from its reference 1
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alphac.codegen import generate_code
from alphac.runtime.recipe import Recipe
from alphac.search.budget import scaled
from alphac.search.candidate import CandidateTask
from alphac.search.layout import RunLayout
from alphac.search.objectives import get_objective
from alphac.search.population import Population

__all__ = ["Jobs"]


@dataclass
class Jobs:
    """Builds the tasks of the run with ``settings`` (a SearchSettings) over ``pop``."""

    settings: Any
    layout: RunLayout
    pop: Population
    search_seed: int

    def code_of(self, ident: int) -> str:
        """The trial's model.py text (generated once per process from its graph)."""
        member = self.pop.members[ident]
        if not member.code:
            member.code = generate_code(member.gm)
        return member.code

    def write(self, ident: int) -> None:
        """``ident``'s model.py and starting weights, in its folder."""
        self.layout.write(ident, self.code_of(ident), self.pop.members[ident].gm)

    def task(self, ident: int, test: bool = False, recipe: Recipe | None = None,
             save_to: Path | None = None, weights: Path | None = None,
             rung: int = 0) -> CandidateTask:
        """The job that trains ``ident`` (by default its first training: the seed's recipe for
        the seed, the proxy for a child) from ``weights`` (its ``weights.pt``) to ``save_to``
        (its ``trained.pt``); ``rung`` > 0 continues a promotion, < 0 a seed reference."""
        s = self.settings
        folder, seeded = self.layout.candidate(ident), ident == self.pop.seed_id
        return CandidateTask(
            ident, self.code_of(ident), str(weights or folder / "weights.pt"), s.target,
            (recipe or (s.seed_recipe if seeded and rung == 0 else s.proxy)).to_dict(),
            seed=(s.seed if seeded else self.search_seed) + ident + 7919 * rung,
            device=s.device, data_dir=s.data_dir, test=test,
            latency=get_objective(s.objective).in_worker and rung == 0,
            save_to=str(save_to or folder / "trained.pt"), rung=rung)

    def job(self, ident: int, rung: int) -> CandidateTask:
        """The task of job (``ident``, ``rung``): a first training, a promotion from rung
        ``rung - 1`` to ``eta ** rung`` proxies, or (``rung`` = -g) the seed fine-tuned once
        more from its reference g - 1."""
        if rung == 0:
            plan = self.pop.members[ident].distill
            return replace(self.task(ident), distill=None if plan is None else plan.to_dict())
        if rung < 0:
            start, save = self.pop.refs[-rung - 1][1], self.layout.reference(ident, -rung)
            return self.task(ident, weights=self.layout.path(start),
                             save_to=self.layout.path(save), rung=rung)
        eta = self.settings.eta
        return self.task(ident, recipe=scaled(self.settings.proxy, eta ** rung - eta ** (rung - 1)),
                         weights=self.layout.path(self.pop.members[ident].weights[-1]),
                         save_to=self.layout.path(self.layout.trained(ident, rung)), rung=rung)
