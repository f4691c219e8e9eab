"""The evolutionary search end to end: seed, mutate, train, select, journal, retrain the front.

:func:`optimize` traces the user's model, trains it with the proxy recipe as the baseline, then
keeps every worker busy: a parent is chosen among the finished individuals
(:func:`~alphac.search.selection.select_parent`, on validation accuracy and the chosen cost), a
child is made by one mutation (:func:`alphac.passes.transform.mutate.mutate`), starts from its
parent's trained weights, is written as code plus weights, journalled, and trained by an
executor, whose worker first distils its changed parts on the parent's values
(:mod:`alphac.search.starts`). Successive halving (asynchronous, as in ASHA): when a worker is free, an
individual in the best ``1/eta`` of its rung first continues training to ``eta`` times that
rung's budget; the seed is promoted first, and selection compares every individual with the seed
at the highest rung both reached (:meth:`_Search.score`). ``budget_s`` bounds the wall time of
the whole run, the final retraining included (estimated from the seed's own training time).

Every event is one journal transaction, so a run killed at any moment resumes (``resume=True``):
running candidates are re-queued, unfinished promotions are issued again, and the individuals are
rebuilt by replaying their recorded mutations from the seed (mutations are deterministic), so
nothing from the run directory is executed. At the end the Pareto-optimal individuals
(validation accuracy against cost) and the seed are fine-tuned once more (or retrained from
scratch) with the final recipe and evaluated once on the test split; ``best`` is the cheapest
within ``max_accuracy_drop`` points of the seed.

The pieces around the loop live apart: the trials and references in
:mod:`alphac.search.population`, the tasks in :mod:`alphac.search.jobs`, the run directory's
paths in :mod:`alphac.search.layout`, what to train next in :mod:`alphac.search.schedule`, time in
:mod:`alphac.search.budget`, the watcher's typed events in :mod:`alphac.search.events`, the final
retraining and the report in :mod:`alphac.search.final`, how a child starts in
:mod:`alphac.search.starts`.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.codegen import generate_code
from alphac.errors import SynthesisFailed, TrainingError, UserError
from alphac.frontends import TracedModel, find_blocks, load
from alphac.passes.analysis.cost import model_cost
from alphac.passes.transform.gates import model_fingerprint
from alphac.passes.transform.mutate import MUTATORS, mutate
from alphac.runtime.device import resolve_device
from alphac.runtime.recipe import Recipe
from alphac.runtime.targets import get_target
from alphac.search import faults
from alphac.search.budget import Budget, as_recipe
from alphac.search.candidate import CandidateResult
from alphac.search.events import (
    Event,
    FailedEvent,
    Point,
    Progress,
    Promoted,
    ReferenceTrained,
    Retried,
    Started,
    Trained,
    listener,
)
from alphac.search.executors import LOST, Executor, InlineExecutor, LocalExecutor
from alphac.search.final import finish
from alphac.search.jobs import Jobs
from alphac.search.journal import Journal
from alphac.search.layout import RunLayout
from alphac.search.objectives import OBJECTIVES, Measured
from alphac.search.options import defaults, names
from alphac.search.population import Population
from alphac.search.results import RunResult
from alphac.search.schedule import PROPOSERS, Member
from alphac.search.selection import best_within, pareto_front
from alphac.search.starts import Starter

__all__ = ["OBJECTIVES", "STRATEGIES", "SearchResult", "SearchSettings", "optimize"]

STRATEGIES = tuple(PROPOSERS)
FINAL_INITS = ("inherited", "scratch")
#: The settings that say when a search stops, and where it runs: given anew by every session
#: (a run started on one machine resumes on another, with other workers); the rest define the
#: run and are stored in its journal.
WHEN_TO_STOP = ("candidates", "budget_s")
WHERE_IT_RUNS = names("where")
_DEFAULT = defaults()
#: A gentle fine-tune (children start from their parent's trained weights): no warm-up, a cosine
#: decay from a low peak, no augmentation; the re-warm to the seed's peak rate collapsed children.
FINETUNE: dict[str, Any] = {"batch_size": 64, "lr": 0.01, "warmup": 0.0, "schedule": "cosine",
                            "augment": False, "subset": 6000}


@dataclass(frozen=True)
class SearchSettings:
    """What a search does; stored in the journal. A resumed run keeps what defines it (the
    target, objective, recipes, seeds, mutator, strategy, halving) and takes when to stop
    (:data:`WHEN_TO_STOP`) and where it runs (:data:`WHERE_IT_RUNS`) from the resume.

    ``candidates`` children are trained (the seed not counted) and/or the search stops starting
    work when ``budget_s`` seconds of wall time (over all sessions, the final retraining
    included) would be exceeded; at least one of the two is set. Successive halving: with
    ``rungs`` >= 1, a finished individual in the best ``1/eta`` of its rung continues training to
    ``eta`` times the budget of that rung (asynchronously, as in ASHA), up to ``eta ** rungs``
    times the proxy; the seed is promoted first at every rung, so each individual is compared
    with the seed at the same rung. ``rungs=0`` (the default) turns it off.

    Equal training: the seed is trained once with ``seed_recipe``; every child starts from its
    parent's trained weights (channels mapped by the mutation's plan) and is fine-tuned with
    ``proxy``. A child of generation ``g`` has had ``g`` fine-tunes, so it is compared with the
    seed fine-tuned ``g`` times with the same recipe (the generation references, trained as
    they become needed). At the end the front is fine-tuned once more with ``final`` from its
    search weights (``final_init="inherited"``), the seed from its deepest reference, or every
    model is trained from scratch with ``final`` (``"scratch"``, the paper's protocol)."""

    target: str = _DEFAULT["target"]
    candidates: int | None = 20
    objective: str = _DEFAULT["objective"]
    max_accuracy_drop: float = _DEFAULT["max_accuracy_drop"]
    mutator: str = _DEFAULT["mutator"]
    strategy: str = _DEFAULT["strategy"]
    proxy: Recipe = field(default_factory=lambda: Recipe(**FINETUNE, epochs=1.0))
    final: Recipe = field(default_factory=lambda: Recipe(**FINETUNE, epochs=1.0))
    seed_recipe: Recipe = field(default_factory=lambda: Recipe(
        epochs=3.0, batch_size=64, lr=0.05, subset=6000))
    final_init: str = _DEFAULT["final_init"]
    seed: int = _DEFAULT["seed"]
    search_seed: int | None = None
    workers: int = 1
    executor: str = _DEFAULT["executor"]
    device: str = _DEFAULT["device"]
    data_dir: str | None = None
    population: int | None = None
    ray_address: str | None = None
    budget_s: float | None = None
    rungs: int = _DEFAULT["rungs"]
    eta: int = _DEFAULT["eta"]
    distill_steps: int | None = _DEFAULT["distill_steps"]

    def __post_init__(self) -> None:
        for name in ("proxy", "final", "seed_recipe"):  # a stored run gives its recipes as dicts
            object.__setattr__(self, name, as_recipe(getattr(self, name)))
        checks = [(self.candidates is not None or self.budget_s is not None,
                   "give --candidates N or --budget TIME (or both)"),
                  (self.candidates is None or self.candidates >= 1,
                   f"--candidates must be at least 1, got {self.candidates}"),
                  (self.budget_s is None or (math.isfinite(self.budget_s) and self.budget_s > 0),
                   f"--budget must be a positive time, got {self.budget_s} s"),
                  (self.objective in OBJECTIVES, f"--objective must be one of "
                   f"{', '.join(OBJECTIVES)}, got {self.objective!r}"),
                  (math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100,
                   "--max-accuracy-drop must be between 0 and 100 (percentage points), got "
                   f"{self.max_accuracy_drop}"),
                  (self.mutator in MUTATORS, f"--mutator must be one of {', '.join(MUTATORS)}, "
                   f"got {self.mutator!r}"),
                  (self.strategy in STRATEGIES, "--strategy must be evolution or random-search, "
                   f"got {self.strategy!r}"),
                  (self.executor in ("local", "inline", "ray"),
                   f"--executor must be local, inline or ray, got {self.executor!r}"),
                  (self.workers >= 1, f"--workers must be at least 1, got {self.workers}"),
                  (self.rungs >= 0, f"--rungs must be 0 (off) or more, got {self.rungs}"),
                  (self.final_init in FINAL_INITS, "--final-init must be inherited or scratch, "
                   f"got {self.final_init!r}"),
                  (self.eta >= 2, f"--eta must be at least 2, got {self.eta}"),
                  (self.distill_steps is None or self.distill_steps >= 0,
                   "--distill-steps must be 0 (off) or more, got "
                   f"{self.distill_steps}")]
        for ok, message in checks:
            if not ok:
                raise UserError(message, hint="see `alphac optimize --help`")


#: What :func:`optimize` returns: the finished run, as ``alphac report`` reads it.
SearchResult = RunResult


class _Search:
    """One session of a search: the loop that keeps every worker busy. What it holds is a
    :class:`~alphac.search.population.Population` (the trials, the seed's references, the jobs
    in flight), asked what to do next (:mod:`alphac.search.schedule`); files are named by
    :class:`~alphac.search.layout.RunLayout`, time by :class:`~alphac.search.budget.Budget`,
    and every step is journalled, then told to the population and, as a typed event
    (:mod:`alphac.search.events`), to the watcher."""

    def __init__(self, traced: TracedModel, journal: Journal, settings: SearchSettings,
                 run_dir: Path, on_event: Callable[..., Any] | None) -> None:
        self.traced, self.journal, self.s = traced, journal, settings
        self.layout = RunLayout(Path(run_dir))
        self.tell = listener(on_event)
        self.pop = Population(rungs=settings.rungs, eta=settings.eta)
        #: One manager for every mutation of the search: members' facts and the memo tables
        #: are reused from one child to the next (mutate's results never depend on them).
        self.am = AnalysisManager()
        self.retries: dict[tuple[int, int], int] = {}
        self.session = journal.begin_session()
        self.budget = Budget(settings.budget_s, journal.elapsed_seconds(), settings.proxy,
                             settings.final)
        self.overhead_s = 0.0  # driver seconds for children outside training (this session)
        self.overhead_children = 0
        self.synthesis_failures = 0
        self.executor: Executor | None = None
        #: a child's weights: inherited, then distilled (in the worker where it can be)
        self.starter = Starter(settings, self.layout, traced.example_inputs)
        self.jobs = Jobs(settings, self.layout, self.pop, self.search_seed)

    @property
    def search_seed(self) -> int:
        """Seeds selection, mutation and the children's training (``seed`` unless
        ``search_seed`` is set; ``seed`` alone decides the seed model, its data split and its
        training, so searches with other search seeds share one seed model)."""
        return self.s.seed if self.s.search_seed is None else self.s.search_seed

    def say(self, event: Event) -> None:
        self.tell(replace(event, progress=self.progress()))

    # ---- individuals ------------------------------------------------------------------------
    def add_seed(self) -> int:
        gm = self.traced.gm
        ident = self.journal.add(None, None, self.s.seed, model_fingerprint(gm),
                                 self.layout.rel("model.py", 1), self.layout.rel("weights.pt", 1))
        self.pop.add(Member(ident, gm, self.traced.blocks), seed=True)
        self.jobs.write(ident)
        return ident

    def child(self, parent: Member, seed: int) -> tuple[Member, Any]:
        """``parent``'s child by the mutation of ``seed`` (deterministic), not yet numbered."""
        child = mutate(parent.gm, parent.blocks, self.traced.example_inputs, seed=seed,
                       mutator=self.s.mutator, am=self.am)
        return Member(0, child.gm, find_blocks(child.gm, None), generation=parent.generation + 1,
                      plan=child.record.weight_plan, boundaries=child.record.boundaries), child

    def spawn(self) -> int | None:
        """A new child of a chosen parent, written and journalled; None if mutation failed."""
        began = time.monotonic()
        ident = self.journal.next_id()
        parent = self.pop.members[self._choose_parent(
            random.Random(f"alphac-select-{self.search_seed}-{ident}"))]
        seed = self.search_seed * 1_000_003 + ident
        try:
            if faults.injected("synthesis", ident):
                raise SynthesisFailed("synthesis timed out (injected by ALPHAC_FAULT)")
            member, child = self.child(parent, seed)
        except SynthesisFailed as exc:
            failed = self.journal.add(parent.id, {"failed": exc.reason}, seed, "")
            self.journal.fail(failed, f"synthesis: {exc.reason}")
            self.synthesis_failures += 1
            self.overhead_s += time.monotonic() - began
            self.say(FailedEvent(id=failed, reason=f"synthesis: {exc.reason}"))
            return None
        member.code = generate_code(member.gm)
        started = self.starter.start(member.gm, parent, member.plan, member.boundaries, seed,
                                     codes=(self.jobs.code_of(parent.id), member.code))
        record = {**child.record.as_dict(),
                  **({"distill": started.record} if started.record else {})}
        made = self.journal.add(parent.id, record, seed,
                                child.record.fingerprint_child, self.layout.rel("model.py", ident),
                                self.layout.rel("weights.pt", ident))
        assert made == ident, "journal ids follow insertion order"
        self.pop.add(replace(member, id=ident, distill=started.plan))
        self.jobs.write(ident)
        self.overhead_s += time.monotonic() - began
        return ident

    def _choose_parent(self, rng: random.Random) -> int:
        done = self.pop.candidates()
        seed = next((c for c in done if c.id == self.pop.seed_id), None)
        if seed is None:
            return self.pop.seed_id
        return PROPOSERS[self.s.strategy](done, seed, rng, self.s.population)

    # ---- results ----------------------------------------------------------------------------
    def submit(self, ident: int, rung: int = 0) -> None:
        if rung == 0:
            self.journal.start(ident, self.s.executor)
        task = self.jobs.job(ident, rung)
        self.pop.inflight.add((ident, rung))
        self.executor.submit(task)
        self.say(Started(id=ident, rung=rung))

    def record(self, result: CandidateResult) -> None:
        began = time.monotonic()
        key = (result.id, result.rung)
        self.pop.inflight.discard(key)
        if result.status == LOST and self.retries.get(key, 0) < 1:
            self.retries[key] = self.retries.get(key, 0) + 1
            self.say(Retried(id=result.id, rung=result.rung, reason=result.reason))
            if result.rung > 0:
                self.submit(result.id, result.rung)
            elif self.journal.requeue(result.id):
                self.submit(result.id)
            else:  # the journal failed it: its worker died twice
                self.say(FailedEvent(id=result.id, reason="worker died twice"))
            return
        if result.status == LOST:  # its second attempt died too
            result = replace(result, reason="worker died twice")
        if result.rung != 0:
            self._record_rung(result)
        elif result.status != "done":
            self._record_failed(result)
        else:
            self._record_trained(result, began)

    def _record_failed(self, result: CandidateResult) -> None:
        """A trial's first training failed (the seed's: the search cannot go on)."""
        self.journal.fail(result.id, result.reason or result.status)
        if result.id == self.pop.seed_id:
            raise TrainingError(
                f"the seed model could not be trained with the proxy recipe: "
                f"{result.reason or result.status}",
                hint="check that the model trains with `alphac train MODEL --target "
                     f"{self.s.target} --steps 20`, or lower --lr")
        self.say(FailedEvent(id=result.id, reason=result.reason))

    def _record_trained(self, result: CandidateResult, began: float) -> None:
        """A trial's first training (its proxy; the seed's own recipe) finished."""
        member, seeded = self.pop.members[result.id], result.id == self.pop.seed_id
        cost = model_cost(member.gm, self.traced.example_inputs)
        values = _measure(Measured(member.gm, cost, result))
        self.journal.finish(result.id, params=cost.params, flops=cost.flops_per_sample,
                            latency_ms=result.latency_ms, val_accuracy=result.val_accuracy,
                            train_seconds=result.train_seconds or 0.0,
                            extra={"worker_seconds": result.seconds,
                                   "images": self._images(result),
                                   "generation": member.generation,
                                   "images_per_second": result.metrics.get("images_per_second"),
                                   **({"distill": result.metrics["distill"]}
                                      if "distill" in result.metrics else {})},
                            values=values)
        self.pop.trained(result.id, result.val_accuracy, self.layout.trained(result.id),
                         result.seconds, values.get(self.s.objective))
        if not seeded:
            self.budget.child_seconds.append(result.seconds)
            self.overhead_children += 1
            self.overhead_s += time.monotonic() - began
        self.say(Trained(id=result.id, val_accuracy=result.val_accuracy, params=cost.params,
                         flops=cost.flops_per_sample, latency_ms=result.latency_ms,
                         seconds=result.seconds, seed=seeded))

    def _images(self, result: CandidateResult) -> int:
        """Training images of a finished job; its seconds per image join the estimate."""
        recipe = self.s.seed_recipe if result.id == self.pop.seed_id and result.rung == 0 \
            else self.s.proxy
        images = int(result.metrics.get("steps") or 0) * recipe.batch_size
        self.budget.observe(result.seconds, images)
        return images

    def _record_rung(self, result: CandidateResult) -> None:
        """A promotion (rung > 0) or a seed reference (rung -g) finished or failed."""
        done, rung = result.status == "done", result.rung
        reference = rung < 0
        if reference:
            self._images(result)
        rel = ((self.layout.reference(result.id, -rung) if reference
                else self.layout.trained(result.id, rung)) if done else None)
        acc = result.val_accuracy if done else None
        (self.journal.reference if reference else self.journal.promote)(
            result.id, abs(rung), val_accuracy=acc, train_seconds=result.train_seconds or 0.0,
            weights_path=rel, reason=None if done else result.reason or result.status)
        if reference:
            self.pop.referenced(-rung, acc, rel)
        else:
            self.pop.promoted(result.id, acc, rel, result.seconds)
        if not done:
            self.say(FailedEvent(id=result.id, rung=rung, reason=result.reason))
        elif reference:
            self.say(ReferenceTrained(generation=-rung, val_accuracy=acc,
                                      seconds=result.seconds))
        else:
            self.say(Promoted(id=result.id, rung=rung, val_accuracy=acc,
                              seconds=result.seconds))

    # ---- time -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.budget.elapsed()

    def mean_child_seconds(self) -> float:
        return self.budget.mean_child_seconds(self.pop.child_seconds())

    def final_estimate(self, extra: int = 0) -> float:
        """Seconds the final retraining of the current front and the seed (and ``extra`` more
        final recipes) will take, at the measured speed (:class:`~alphac.search.budget.Budget`):
        every model is brought to the front's deepest generation of fine-tunes."""
        return self.budget.final_estimate(
            self.pop.final_units(self.s.final_init == "scratch") + extra)

    def budget_allows(self, seconds: float) -> bool:
        """Whether work of ``seconds`` still fits the budget with the final retraining (the
        new work may join the front: its final retraining is reserved too)."""
        return self.budget.allows(seconds,
                                  self.pop.final_units(self.s.final_init == "scratch") + 1)

    def progress(self) -> Progress:
        """A snapshot for the live view: counts, the best so far, the front, an ETA."""
        inds = self.journal.individuals()  # one read per event
        cands = self.pop.candidates()
        seed = next((c for c in cands if c.id == self.pop.seed_id), None)
        best = (best_within(cands, seed, self.s.max_accuracy_drop / 100) if seed is not None
                else None)
        trained, mean = self.trained_count(inds), self.mean_child_seconds()
        eta_s = None
        if mean:
            left = self.s.candidates - trained if self.s.candidates is not None else math.inf
            workers = max(1, getattr(self.executor, "workers", 1) or 1)
            eta_s = max(0.0, left) * mean / workers + self.final_estimate()
            if self.budget.time_left() is not None:
                eta_s = min(eta_s, self.budget.time_left())
        return Progress(
            trained=trained, total=self.s.candidates, running=len(self.pop.inflight),
            failed=sum(i.status == "failed" for i in inds),
            synthesis_failed=self.synthesis_failures, promotions=self.pop.promotions(),
            pareto=len(pareto_front(cands)), elapsed_s=self.elapsed(),
            budget_s=self.s.budget_s, eta_s=eta_s, objective=self.s.objective,
            seed=None if seed is None else Point(seed.val_accuracy, seed.cost),
            best=None if best is None else Point(best.val_accuracy, best.cost, best.id))

    # ---- the loop ---------------------------------------------------------------------------
    def trained_count(self, inds: list | None = None) -> int:
        """Children trained (done, or failed in training): the seed and synthesis not counted."""
        return sum(1 for i in (self.journal.individuals() if inds is None else inds)
                   if i.parent is not None and (i.status == "done" or (
                       i.status == "failed" and not (i.reason or "").startswith("synthesis:"))))

    def _next_job(self) -> tuple[int, int] | None:
        """A seed reference or a promotion for a free worker, if one is due and fits the
        budget (:mod:`alphac.search.schedule`); None: spawn a child instead."""
        mean = self.mean_child_seconds()
        generation = self.pop.next_reference()
        if generation is not None and self.budget_allows(mean):
            return self.pop.seed_id, -generation
        job = self.pop.next_promotion()
        if job is not None and self.budget_allows(
                mean * (self.s.eta ** job[1] - self.s.eta ** (job[1] - 1))):
            return job
        return None

    def _may_spawn(self) -> bool:
        """Whether a new child may start: the seed is trained and the candidates allow one
        more besides those running."""
        return bool(self.pop.seed.accs) and (
            self.s.candidates is None
            or self.trained_count() + self.pop.children_running() < self.s.candidates)

    def run(self, executor: Executor, queued: list[int]) -> None:
        """Keep every worker busy until the candidates or the budget are spent."""
        self.executor = executor
        for ident in queued:
            self.submit(ident)
        attempts, spawning, limit = 0, True, 4 * (self.s.candidates or 10_000) + 8
        while True:
            self.journal.heartbeat(self.session)
            if executor.workers > executor.running:
                job = self._next_job()
                if job is not None:
                    self.submit(*job)
                    continue
                spawning = spawning and attempts < limit and self.budget_allows(
                    self.mean_child_seconds())
                if spawning and self._may_spawn():
                    attempts += 1
                    ident = self.spawn()
                    if ident is not None:
                        self.submit(ident)
                    continue
            if executor.running == 0:
                return
            for result in executor.results(timeout=5.0):
                self.record(result)


# One grammar for every --budget (optimize, train, the API): kept importable from here.
from alphac.units import parse_duration as parse_duration  # noqa: E402


def _identity(traced: TracedModel, model: Any, target: str) -> dict[str, Any]:
    identity = {"source": model, "target": target, "input_shape": list(traced.input_shape)}
    if isinstance(model, nn.Module):  # a module object: identified by its class and structure
        identity["source"] = f"python:{type(model).__module__}.{type(model).__qualname__}"
        identity["sha256"] = model_fingerprint(traced.gm)
        return identity
    path = Path(model)
    if not model.startswith("zoo:") and path.is_file():
        identity["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return identity


def _executor(settings: SearchSettings) -> Executor:
    kwargs = dict(target=settings.target, recipe=settings.proxy.to_dict(), seed=settings.seed,
                  data_dir=settings.data_dir, device=settings.device)
    if settings.executor == "inline":
        return InlineExecutor(**kwargs)
    if settings.executor == "ray":
        from alphac.search.ray_executor import RayExecutor

        return RayExecutor(workers=settings.workers, address=settings.ray_address, **kwargs)
    return LocalExecutor(workers=settings.workers, **kwargs)


def _replay(search: _Search) -> list[int]:
    """Rebuild the individuals from the journal by replaying their mutations; the queued ones.

    Nothing from the run directory is executed: children are rebuilt from the seed model by their
    recorded (deterministic) mutations and must reproduce their recorded fingerprints."""
    queued, pop = [], search.pop
    search.journal.requeue_running()
    for ind in search.journal.individuals():
        if ind.parent is None:
            pop.add(Member(ind.id, search.traced.gm, search.traced.blocks), seed=True)
        elif ind.status != "failed" or not (ind.reason or "").startswith("synthesis:"):
            member, child = search.child(pop.members[ind.parent], ind.seed)
            if child.record.fingerprint_child != ind.fingerprint:
                raise UserError(f"cannot resume: individual {ind.id} no longer replays to the "
                                "recorded child (alphac or the model changed since the run began)",
                                hint="start a new run with another --out")
            pop.add(replace(member, id=ind.id))
        if ind.id in pop.members and ind.status == "done":
            pop.restore(ind, search.s.objective, search.layout.trained(ind.id))
            member = pop.members[ind.id]
            if ind.parent is not None:
                search.budget.child_seconds.append(member.seconds / len(member.accs))
            if ind.extra.get("images") and ind.extra.get("worker_seconds"):
                search.budget.rates.append(ind.extra["worker_seconds"] / ind.extra["images"])
        if ind.status == "queued":
            _restart(search, ind)
            queued.append(ind.id)
    return queued


def _restart(search: _Search, ind: Any) -> None:
    """A queued child's start again: its weights where the run was killed before writing
    them, and the distillation its worker is to do (rebuilt: plans are not journalled)."""
    pop, member = search.pop, search.pop.members[ind.id]
    parent = pop.members.get(ind.parent)
    written = (search.layout.candidate(ind.id) / "weights.pt").is_file()
    codes = None if parent is None else (search.jobs.code_of(parent.id),
                                         search.jobs.code_of(ind.id))
    if parent is not None and not written:
        member.distill = search.starter.start(member.gm, parent, member.plan, member.boundaries,
                                              ind.seed, codes=codes).plan
    elif parent is not None and (ind.mutation.get("distill") or {}).get("where") == "worker":
        member.distill = search.starter.plan(member.gm, parent, member.boundaries, ind.seed,
                                             codes)
    if not written:
        search.jobs.write(ind.id)


def _measure(measured: Measured) -> dict[str, float | None]:
    """Every objective's value for a finished training (None where it was not measured)."""
    values = {}
    for objective in OBJECTIVES.values():
        value = objective.measure(measured)
        values[objective.name] = None if value is None else float(value)
    return values


def identity_name(model: Any) -> str:
    """How messages name the model: its file, zoo name, or class."""
    return f"{type(model).__qualname__}" if isinstance(model, nn.Module) else str(model)


def _trace_module(module: nn.Module, spec: Any, seed: int) -> TracedModel:
    """A user's module object, traced at the target's example shape (what ``load`` does)."""
    from alphac.frontends.trace import trace
    from alphac.ir import annotate_shapes

    shape = spec.example_shape()
    example = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)),)
    gm, frontend = trace(module, example)
    annotate_shapes(gm, example)
    blocks = find_blocks(gm, module if frontend == "fx" else None)
    return TracedModel(f"python:{type(module).__qualname__}", module, gm, frontend, example,
                       blocks)


def optimize(model: str | nn.Module, *, out: str | Path, settings: SearchSettings | None = None,
             resume: bool = False, on_event: Callable[..., Any] | None = None
             ) -> RunResult:
    """Search for cheaper models as accurate as ``model`` (a model file, ``zoo:NAME`` or an
    ``nn.Module``).

    Pre: the target's data is available. Post: ``out`` holds the journal, every candidate, the
    retrained Pareto front, ``best/``, ``report.json`` and ``history.csv``. With ``resume`` the
    run in ``out`` continues where it stopped (its own settings; ``candidates`` and ``budget_s``
    as given now). ``on_event(event)`` sees every step as a typed
    :class:`~alphac.search.events.Event` (start, done, failed, retry, promoted, reference,
    final_start, final) with its ``progress``; a callback of two parameters gets
    ``(event.kind, event.as_dict())``."""
    settings = settings or SearchSettings()
    run_dir = Path(out)
    spec = get_target(settings.target)
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, nn.Module):
        traced = _trace_module(model, spec, settings.seed)
    else:
        traced = load(model, spec.example_shape(), num_classes=spec.num_classes,
                      seed=settings.seed)
    spec.check_output_shape(traced.output_shape, model=str(identity_name(model)))
    resolve_device(settings.device)  # a device that does not exist fails before the journal
    identity = _identity(traced, model, settings.target)
    if resume:
        journal = Journal.open(run_dir, expect_identity=identity)
        known = {f.name for f in fields(SearchSettings)}
        stored = {k: v for k, v in journal.settings.items() if k in known}
        stored.setdefault("distill_steps", 0)  # a run begun before distillation goes on without
        settings = SearchSettings(**{**stored, **{name: getattr(settings, name) for name in
                                                  (*WHEN_TO_STOP, *WHERE_IT_RUNS)}})
    else:
        journal = Journal.create(run_dir, asdict(settings), identity)
    with journal:
        search = _Search(traced, journal, settings, run_dir, on_event)
        queued = _replay(search) if resume else [search.add_seed()]
        with _executor(settings) as executor:
            search.run(executor, queued)
            search_seconds = search.elapsed()
            finish(search, search_seconds, executor)
        journal.heartbeat(search.session)
        journal.write_history_csv(run_dir / "history.csv")
    from alphac.search.report import load_run

    return load_run(run_dir)


