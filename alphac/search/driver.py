"""The evolutionary search end to end: seed, mutate, train, select, journal, retrain the front.

:func:`optimize` traces the user's model, trains it with the proxy recipe as the baseline, then
keeps every worker busy: a parent is chosen among the finished individuals
(:func:`~alphac.search.selection.select_parent`, on validation accuracy and the chosen cost), a
child is made by one mutation (:func:`alphac.passes.transform.mutate.mutate`), inherits its
parent's trained weights by name and shape, is written as code plus weights, journalled, and
trained by an executor. Successive halving (asynchronous, as in ASHA): when a worker is free, an
individual in the best ``1/eta`` of its rung first continues training to ``eta`` times that
rung's budget; the seed is promoted first, and selection compares every individual with the seed
at the highest rung both reached (:meth:`_Search.score`). ``budget_s`` bounds the wall time of
the whole run, the final retraining included (estimated from the seed's own training time).

Every event is one journal transaction, so a run killed at any moment resumes (``resume=True``):
running candidates are re-queued, unfinished promotions are issued again, and the individuals are
rebuilt by replaying their recorded mutations from the seed (mutations are deterministic), so
nothing from the run directory is executed. At the end the Pareto-optimal individuals
(validation accuracy against cost) and the seed are retrained from scratch with the final recipe
and evaluated once on the test split; ``best`` is the cheapest within ``max_accuracy_drop``
points of the seed.

Run directory: ``journal.sqlite``, ``candidates/NNNNNN/{model.py,weights.pt,trained.pt,
trained-rN.pt}``, ``pareto/NNNNNN/{model.py,weights.pt,model.pt2}``, ``best/`` (the same three),
``report.json``, ``history.csv``, ``pareto.png``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.codegen import generate_code, inherit_weights
from alphac.errors import SynthesisFailed, TrainingError, UserError
from alphac.frontends import TracedModel, find_blocks, load
from alphac.passes.analysis.cost import model_cost
from alphac.passes.transform.gates import model_fingerprint
from alphac.passes.transform.mutate import MUTATORS, mutate
from alphac.runtime.device import resolve_device
from alphac.runtime.targets import get_target
from alphac.search import faults
from alphac.search.budget import Budget, scaled
from alphac.search.candidate import CandidateResult, CandidateTask
from alphac.search.executors import LOST, Executor, InlineExecutor, LocalExecutor
from alphac.search.journal import Journal
from alphac.search.objectives import OBJECTIVES, Measured, get_objective, row_cost
from alphac.search.options import defaults, names
from alphac.search.results import ModelRow, RunResult
from alphac.search.schedule import PROPOSERS, Member, next_promotion, next_reference, score
from alphac.search.selection import Candidate, best_within, pareto_front

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
    proxy: dict[str, Any] = field(default_factory=lambda: dict(FINETUNE, epochs=1.0, lr=0.01))
    final: dict[str, Any] = field(default_factory=lambda: dict(FINETUNE, epochs=1.0, lr=0.01))
    seed_recipe: dict[str, Any] = field(default_factory=lambda: {
        "epochs": 3.0, "batch_size": 64, "lr": 0.05, "subset": 6000})
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

    def __post_init__(self) -> None:
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
                  (self.eta >= 2, f"--eta must be at least 2, got {self.eta}")]
        for ok, message in checks:
            if not ok:
                raise UserError(message, hint="see `alphac optimize --help`")


#: What :func:`optimize` returns: the finished run, as ``alphac report`` reads it.
SearchResult = RunResult


class _Search:
    def __init__(self, traced: TracedModel, journal: Journal, settings: SearchSettings,
                 run_dir: Path, on_event: Callable[[str, dict], None] | None) -> None:
        self.traced, self.journal, self.s, self.run_dir = traced, journal, settings, run_dir
        self.say_to = on_event or (lambda kind, info: None)
        self.members: dict[int, Member] = {}
        #: One manager for every mutation of the search: members' facts and the memo tables
        #: are reused from one child to the next (mutate's results never depend on them).
        self.am = AnalysisManager()
        self.seed_id: int | None = None
        self.retries: dict[tuple[int, int], int] = {}
        self.inflight: set[tuple[int, int]] = set()
        self.session = journal.begin_session()
        self.budget = Budget(settings.budget_s, journal.elapsed_seconds(), settings.proxy,
                             settings.final)
        self.overhead_s = 0.0  # driver seconds for children outside training (this session)
        self.overhead_children = 0
        self.synthesis_failures = 0
        self.executor: Executor | None = None
        #: the seed's equal-training references: generation -> (val accuracy, weights path)
        self.refs: dict[int, tuple[float, str]] = {}
        self.refs_stuck = False  # a reference failed: later generations use the deepest one

    @property
    def search_seed(self) -> int:
        """Seeds selection, mutation and the children's training (``seed`` unless
        ``search_seed`` is set; ``seed`` alone decides the seed model, its data split and its
        training, so searches with other search seeds share one seed model)."""
        return self.s.seed if self.s.search_seed is None else self.s.search_seed

    def say(self, kind: str, info: dict) -> None:
        self.say_to(kind, {**info, "progress": self.progress()})

    # ---- individuals ------------------------------------------------------------------------
    def folder(self, ident: int) -> Path:
        return self.run_dir / "candidates" / f"{ident:06d}"

    def _rel(self, name: str, ident: int) -> str:
        return f"candidates/{ident:06d}/{name}"

    def _task(self, ident: int, test: bool = False, recipe: dict | None = None,
              save_to: Path | None = None, weights: Path | None = None,
              rung: int = 0) -> CandidateTask:
        folder = self.folder(ident)
        return CandidateTask(
            ident, self.code_of(ident), str(weights or folder / "weights.pt"),
            self.s.target, recipe or (self.s.seed_recipe if ident == self.seed_id and rung == 0
                                      else self.s.proxy),
            seed=(self.s.seed if ident == self.seed_id else self.search_seed) + ident
            + 7919 * rung,
            device=self.s.device, data_dir=self.s.data_dir, test=test,
            latency=get_objective(self.s.objective).in_worker and rung == 0,
            save_to=str(save_to or folder / "trained.pt"), rung=rung)

    def _reference_task(self, generation: int) -> CandidateTask:
        """The seed fine-tuned once more, from its ``generation - 1`` reference."""
        seed = self.seed_id
        _, previous = self.refs[generation - 1]
        return self._task(seed, weights=self.run_dir / previous,
                          save_to=self.run_dir / self._rel(f"reference-{generation}.pt", seed),
                          rung=-generation)

    def _promotion_task(self, ident: int, rung: int) -> CandidateTask:
        """Continue ``ident``'s training from rung ``rung - 1`` to ``eta ** rung`` proxies."""
        member, eta = self.members[ident], self.s.eta
        recipe = scaled(self.s.proxy, eta ** rung - eta ** (rung - 1))
        return self._task(ident, recipe=recipe, weights=self.run_dir / member.weights[-1],
                          save_to=self.run_dir / self._rel(f"trained-r{rung}.pt", ident),
                          rung=rung)

    def code_of(self, ident: int) -> str:
        """The individual's model.py text, generated here from its graph (so a resumed run never
        executes code read from the run directory)."""
        member = self.members[ident]
        if not member.code:
            member.code = generate_code(member.gm)
        return member.code

    def _write(self, ident: int, gm: Any) -> None:
        folder = self.folder(ident)
        folder.mkdir(parents=True, exist_ok=True)
        code = generate_code(gm)
        if ident in self.members:
            self.members[ident].code = code
        (folder / "model.py").write_text(code)
        torch.save({k: v.detach().clone() for k, v in gm.state_dict().items()},
                   folder / "weights.pt")

    def add_seed(self) -> int:
        gm = self.traced.gm
        ident = self.journal.add(None, None, self.s.seed, model_fingerprint(gm),
                                 self._rel("model.py", 1), self._rel("weights.pt", 1))
        self.members[ident] = Member(ident, gm, self.traced.blocks)
        self._write(ident, gm)
        self.seed_id = ident
        return ident

    def spawn(self) -> int | None:
        """A new child of a chosen parent, written and journalled; None if mutation failed."""
        began = time.monotonic()
        ident = self.journal.next_id()
        rng = random.Random(f"alphac-select-{self.search_seed}-{ident}")
        parent = self.members[self._choose_parent(rng)]
        seed = self.search_seed * 1_000_003 + ident
        try:
            if faults.injected("synthesis", ident):
                raise SynthesisFailed("synthesis timed out (injected by ALPHAC_FAULT)")
            child = mutate(parent.gm, parent.blocks, self.traced.example_inputs, seed=seed,
                           mutator=self.s.mutator, am=self.am)
        except SynthesisFailed as exc:
            failed = self.journal.add(parent.id, {"failed": exc.reason}, seed, "")
            self.journal.fail(failed, f"synthesis: {exc.reason}")
            self.synthesis_failures += 1
            self.overhead_s += time.monotonic() - began
            self.say("failed", {"id": failed, "reason": f"synthesis: {exc.reason}"})
            return None
        self.inherit(child.gm, parent.id, child.record.weight_plan)
        made = self.journal.add(parent.id, child.record.as_dict(), seed,
                                child.record.fingerprint_child, self._rel("model.py", ident),
                                self._rel("weights.pt", ident))
        assert made == ident, "journal ids follow insertion order"
        self.members[ident] = Member(ident, child.gm, find_blocks(child.gm, None),
                                      generation=parent.generation + 1,
                                      plan=child.record.weight_plan)
        self._write(ident, child.gm)
        self.overhead_s += time.monotonic() - began
        return ident

    def inherit(self, gm: Any, parent: int, plan: tuple = ()) -> None:
        """``gm`` takes its parent's best-trained weights: by name and shape, and the channels
        the mutation's ``plan`` maps (:func:`alphac.codegen.inherit_weights`)."""
        member = self.members[parent]
        trained = self.run_dir / member.weights[-1] if member.weights else None
        if trained is not None and trained.is_file():
            inherit_weights(gm, torch.load(trained, map_location="cpu", weights_only=True),
                            plan=plan)

    def score(self, member: Member) -> float | None:
        """The member's score at equal training (:func:`alphac.search.schedule.score`)."""
        return score(member, self.members[self.seed_id], self.refs)

    def next_reference(self) -> int | None:
        deepest = max((m.generation for m in self.members.values()), default=0)
        return next_reference(self.refs, self.refs_stuck, deepest, self.inflight)

    def candidates(self) -> list[Candidate]:
        return [Candidate(m.id, self.score(m), m.cost, m.id) for m in self.members.values()
                if m.accs and m.cost is not None]

    def _choose_parent(self, rng: random.Random) -> int:
        done = self.candidates()
        seed = next((c for c in done if c.id == self.seed_id), None)
        if seed is None:
            return self.seed_id
        return PROPOSERS[self.s.strategy](done, seed, rng, self.s.population)

    def next_promotion(self) -> tuple[int, int] | None:
        """The next (id, rung) to train longer (:func:`alphac.search.schedule.next_promotion`)."""
        return next_promotion(self.members, self.seed_id, self.s.rungs, self.s.eta,
                              self.inflight)

    # ---- results ----------------------------------------------------------------------------
    def submit(self, ident: int, rung: int = 0) -> None:
        if rung == 0:
            self.journal.start(ident, self.s.executor)
            task = self._task(ident)
        elif rung < 0:
            task = self._reference_task(-rung)
        else:
            task = self._promotion_task(ident, rung)
        self.inflight.add((ident, rung))
        self.executor.submit(task)
        self.say("start", {"id": ident, "rung": rung})

    def record(self, result: CandidateResult) -> None:
        began = time.monotonic()
        key = (result.id, result.rung)
        self.inflight.discard(key)
        if result.status == LOST and self.retries.get(key, 0) < 1:
            self.retries[key] = self.retries.get(key, 0) + 1
            self.say("retry", {"id": result.id, "rung": result.rung, "reason": result.reason})
            if result.rung > 0:
                self.submit(result.id, result.rung)
            elif self.journal.requeue(result.id):
                self.submit(result.id)
            else:  # the journal failed it: its worker died twice
                self.say("failed", {"id": result.id, "reason": "worker died twice"})
            return
        if result.rung > 0:
            self._record_promotion(result)
        elif result.rung < 0:
            self._record_reference(result)
        else:
            self._record_trained(result, began)

    def _record_trained(self, result: CandidateResult, began: float) -> None:
        """A trial's first training (its proxy; the seed's own recipe) finished or failed."""
        member = self.members[result.id]
        if result.status == LOST:  # its second attempt died too
            result = replace(result, reason="worker died twice")
        if result.status != "done":
            self.journal.fail(result.id, result.reason or result.status)
            if result.id == self.seed_id:
                raise TrainingError(
                    f"the seed model could not be trained with the proxy recipe: "
                    f"{result.reason or result.status}",
                    hint="check that the model trains with `alphac train MODEL --target "
                         f"{self.s.target} --steps 20`, or lower --lr")
            self.say("failed", {"id": result.id, "reason": result.reason})
            return
        cost = model_cost(member.gm, self.traced.example_inputs)
        member.accs = [result.val_accuracy]
        member.weights = [self._rel("trained.pt", result.id)]
        member.seconds += result.seconds
        values = _measure(Measured(member.gm, cost, result))
        member.cost = values.get(self.s.objective)
        images = self._images(result)
        self.journal.finish(result.id, params=cost.params, flops=cost.flops_per_sample,
                            latency_ms=result.latency_ms, val_accuracy=result.val_accuracy,
                            train_seconds=result.train_seconds or 0.0,
                            extra={"worker_seconds": result.seconds, "images": images,
                                   "generation": member.generation,
                                   "images_per_second": result.metrics.get("images_per_second")},
                            values=values)
        if result.id == self.seed_id:
            self.refs[0] = (result.val_accuracy, member.weights[0])
        if result.id != self.seed_id:
            self.budget.child_seconds.append(result.seconds)
            self.overhead_children += 1
            self.overhead_s += time.monotonic() - began
        self.say("done", {"id": result.id, "val_accuracy": result.val_accuracy,
                          "params": cost.params, "flops": cost.flops_per_sample,
                          "latency_ms": result.latency_ms, "seconds": result.seconds,
                          "seed": result.id == self.seed_id})

    def _images(self, result: CandidateResult) -> int:
        """Training images of a finished job; its seconds per image join the estimate."""
        recipe = self.s.seed_recipe if result.id == self.seed_id and result.rung == 0 \
            else self.s.proxy
        images = int(result.metrics.get("steps") or 0) * int(recipe.get("batch_size", 64))
        self.budget.observe(result.seconds, images)
        return images

    def _record_reference(self, result: CandidateResult) -> None:
        generation = -result.rung
        self._images(result)
        if result.status == "done":
            rel = self._rel(f"reference-{generation}.pt", result.id)
            self.journal.reference(result.id, generation, val_accuracy=result.val_accuracy,
                                   train_seconds=result.train_seconds or 0.0, weights_path=rel)
            self.refs[generation] = (result.val_accuracy, rel)
            self.say("reference", {"generation": generation,
                                   "val_accuracy": result.val_accuracy,
                                   "seconds": result.seconds})
        else:
            self.journal.reference(result.id, generation, val_accuracy=None,
                                   train_seconds=result.train_seconds or 0.0,
                                   reason=result.reason or result.status)
            self.refs_stuck = True
            self.say("failed", {"id": result.id, "rung": result.rung, "reason": result.reason})

    def _record_promotion(self, result: CandidateResult) -> None:
        member = self.members[result.id]
        if result.status == "done":
            rel = self._rel(f"trained-r{result.rung}.pt", result.id)
            self.journal.promote(result.id, result.rung, val_accuracy=result.val_accuracy,
                                 train_seconds=result.train_seconds or 0.0, weights_path=rel)
            member.accs.append(result.val_accuracy)
            member.weights.append(rel)
            member.seconds += result.seconds
            self.say("promoted", {"id": result.id, "rung": result.rung,
                                  "val_accuracy": result.val_accuracy,
                                  "seconds": result.seconds})
        else:
            self.journal.promote(result.id, result.rung, val_accuracy=None,
                                 train_seconds=result.train_seconds or 0.0,
                                 reason=result.reason or result.status)
            member.stuck = True
            self.say("failed", {"id": result.id, "rung": result.rung, "reason": result.reason})

    # ---- time -------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.budget.elapsed()

    def _mean_child_seconds(self) -> float:
        return self.budget.mean_child_seconds([m.seconds for m in self.members.values()
                                               if m.accs])

    def _front_size(self) -> int:
        return len({c.id for c in pareto_front(self.candidates())} | {self.seed_id})

    def final_estimate(self, extra: int = 0) -> float:
        """Seconds the final retraining of the current front and the seed (and ``extra`` more
        models) will take, at the measured speed (:class:`~alphac.search.budget.Budget`)."""
        return self.budget.final_estimate(self._front_size() + extra)

    def budget_allows(self, seconds: float) -> bool:
        """Whether work of ``seconds`` still fits the budget with the final retraining (the
        new work may join the front: its final retraining is reserved too)."""
        return self.budget.allows(seconds, self._front_size() + 1)

    def progress(self) -> dict[str, Any]:
        """A snapshot for the live view: counts, the best so far, the front, an ETA."""
        inds = self.journal.individuals()  # one read per event
        running = len(self.inflight)
        cands = self.candidates()
        seed = next((c for c in cands if c.id == self.seed_id), None)
        best = (best_within(cands, seed, self.s.max_accuracy_drop / 100) if seed is not None
                else None)
        mean = self._mean_child_seconds()
        workers = max(1, getattr(self.executor, "workers", 1) or 1)
        eta_s = None
        if mean:
            left = ((self.s.candidates - self.trained_count(inds)) if self.s.candidates is not None
                    else float("inf"))
            eta_s = max(0.0, left) * mean / workers + self.final_estimate()
            if self.budget.time_left() is not None:
                eta_s = min(eta_s, self.budget.time_left())
        return {"trained": self.trained_count(inds), "total": self.s.candidates,
                "running": running, "failed": sum(i.status == "failed" for i in inds),
                "synthesis_failed": self.synthesis_failures,
                "promotions": sum(len(m.accs) - 1 for m in self.members.values() if m.accs),
                "pareto": len(pareto_front(cands)), "elapsed_s": self.elapsed(),
                "budget_s": self.s.budget_s, "eta_s": eta_s, "objective": self.s.objective,
                "seed": None if seed is None else {"val_accuracy": seed.val_accuracy,
                                                   "cost": seed.cost},
                "best": None if best is None else {"id": best.id,
                                                   "val_accuracy": best.val_accuracy,
                                                   "cost": best.cost}}

    # ---- the loop ---------------------------------------------------------------------------
    def trained_count(self, inds: list | None = None) -> int:
        """Children trained (done, or failed in training): the seed and synthesis not counted."""
        return sum(1 for i in (self.journal.individuals() if inds is None else inds)
                   if i.parent is not None and (i.status == "done" or (
                       i.status == "failed" and not (i.reason or "").startswith("synthesis:"))))

    def _room(self, running_children: int) -> bool:
        if self.s.candidates is None:
            return True
        return self.trained_count() + running_children < self.s.candidates

    def run(self, executor: Executor, queued: list[int]) -> None:
        self.executor = executor
        for ident in queued:
            self.submit(ident)
        attempts, spawning = 0, True
        limit = 4 * (self.s.candidates or 10_000) + 8
        while True:
            self.journal.heartbeat(self.session)
            if executor.workers - executor.running > 0:
                generation = self.next_reference()
                if generation is not None and self.budget_allows(self._mean_child_seconds()):
                    self.submit(self.seed_id, -generation)
                    continue
                job = self.next_promotion()
                mean = self._mean_child_seconds()
                if job is not None and self.budget_allows(
                        mean * (self.s.eta ** job[1] - self.s.eta ** (job[1] - 1))):
                    self.submit(*job)
                    continue
                seeded = bool(self.members[self.seed_id].accs)
                children = sum(1 for ident, rung in self.inflight if rung == 0
                               and ident != self.seed_id)
                spawning = spawning and attempts < limit and self.budget_allows(mean)
                if seeded and spawning and self._room(children):
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
    kwargs = dict(target=settings.target, recipe=settings.proxy, seed=settings.seed,
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
    queued = []
    search.journal.requeue_running()
    for ind in search.journal.individuals():
        if ind.parent is None:
            search.members[ind.id] = Member(ind.id, search.traced.gm, search.traced.blocks)
            search.seed_id = ind.id
        elif ind.status != "failed" or not (ind.reason or "").startswith("synthesis:"):
            parent = search.members[ind.parent]
            child = mutate(parent.gm, parent.blocks, search.traced.example_inputs, seed=ind.seed,
                           mutator=search.s.mutator, am=search.am)
            if child.record.fingerprint_child != ind.fingerprint:
                raise UserError(f"cannot resume: individual {ind.id} no longer replays to the "
                                "recorded child (alphac or the model changed since the run began)",
                                hint="start a new run with another --out")
            search.members[ind.id] = Member(ind.id, child.gm, find_blocks(child.gm, None),
                                             generation=parent.generation + 1,
                                             plan=child.record.weight_plan)
        member = search.members.get(ind.id)
        if member is not None and ind.status == "done":
            member.accs = [ind.val_accuracy]
            member.weights = [search._rel("trained.pt", ind.id)]
            member.seconds = float(ind.extra.get("worker_seconds", ind.train_seconds or 0.0))
            for rung in ind.extra.get("rungs", []):
                if rung.get("val_accuracy") is None:
                    member.stuck = True
                    break
                member.accs.append(rung["val_accuracy"])
                member.weights.append(rung["weights"])
                member.seconds += float(rung.get("train_seconds") or 0.0)
            member.cost = ind.values.get(search.s.objective)
            if ind.parent is not None:
                search.budget.child_seconds.append(member.seconds / len(member.accs))
            if ind.extra.get("images") and ind.extra.get("worker_seconds"):
                search.budget.rates.append(ind.extra["worker_seconds"] / ind.extra["images"])
            if ind.parent is None:
                search.refs[0] = (ind.val_accuracy, member.weights[0])
                for ref in ind.extra.get("references", []):
                    if ref.get("val_accuracy") is None:
                        search.refs_stuck = True
                        break
                    search.refs[ref["generation"]] = (ref["val_accuracy"], ref["weights"])
        if ind.status == "queued":
            if not (search.folder(ind.id) / "weights.pt").is_file():  # killed before writing
                if ind.parent is not None:
                    search.inherit(member.gm, ind.parent, member.plan)
                search._write(ind.id, member.gm)
            queued.append(ind.id)
    return queued


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
             resume: bool = False, on_event: Callable[[str, dict], None] | None = None
             ) -> RunResult:
    """Search for cheaper models as accurate as ``model`` (a model file, ``zoo:NAME`` or an
    ``nn.Module``).

    Pre: the target's data is available. Post: ``out`` holds the journal, every candidate, the
    retrained Pareto front, ``best/``, ``report.json`` and ``history.csv``. With ``resume`` the
    run in ``out`` continues where it stopped (its own settings; ``candidates`` and ``budget_s``
    as given now). ``on_event(kind, info)`` sees every event (start, done, failed, retry,
    promoted, final_start, final), each with ``info["progress"]``."""
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
            _finish(search, search_seconds, executor)
        journal.heartbeat(search.session)
        journal.write_history_csv(run_dir / "history.csv")
    from alphac.search.report import load_run

    return load_run(run_dir)


def _kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Rank agreement of two lists (tau-a); None with fewer than 2 pairs."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    if not pairs:
        return None
    score = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs) - sum(
        (a[i] - a[j]) * (b[i] - b[j]) < 0 for i, j in pairs)
    return score / len(pairs)


#: The recipe fields that decide which images a worker loads (its data is loaded once).
_DATA_FIELDS = ("subset", "val_fraction", "val_subset", "test_subset")


def _finish(search: _Search, search_seconds: float, executor: Executor) -> RunResult:
    """Retrain the front and the seed with the final recipe on the search's executor (in
    parallel where it has several workers), test once, write the outputs."""
    s, run_dir = search.s, search.run_dir
    front = sorted({c.id for c in pareto_front(search.candidates())} | {search.seed_id})
    search.say("final_start", {"models": len(front), "estimate_s": search.final_estimate()})
    began = time.monotonic()
    deepest = max((search.members[i].generation for i in front), default=0)
    tasks = {}
    for ident in front:
        folder = run_dir / "pareto" / f"{ident:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(search.code_of(ident))
        tasks[ident] = replace(search._task(ident, test=True, recipe=s.final,
                                            save_to=folder / "weights.pt"),
                               weights=_final_start(search, ident, deepest),
                               latency=get_objective(s.objective).in_worker)
    rows = [_final_row(search, tasks[r.id], r) for r in _final_results(search, executor, tasks)]
    timing = _timing(search, search_seconds, time.monotonic() - began)
    return _report(search, sorted(rows, key=lambda r: r.id), timing)


def _final_results(search: _Search, executor: Executor, tasks: dict[int, CandidateTask]
                   ) -> Iterator[CandidateResult]:
    """Each final task's result as it finishes, from ``executor`` (a lost one is tried once
    more), or in this process where the final recipe reads other images than the workers
    loaded."""
    s = search.s
    if any(s.final.get(k) != s.proxy.get(k) for k in _DATA_FIELDS):
        from alphac.runtime.recipe import Recipe
        from alphac.runtime.train import load_task_data
        from alphac.search.candidate import evaluate_candidate

        data = load_task_data(s.target, Recipe(**s.final), seed=s.seed, data_dir=s.data_dir,
                              device=s.device)
        for task in tasks.values():
            yield evaluate_candidate(task, data)
        return
    for task in tasks.values():
        executor.submit(task)
    waiting, retried = set(tasks), set()
    while waiting:
        if executor.running == 0:  # nothing will come back for the rest
            for ident in sorted(waiting):
                yield CandidateResult(ident, "failed", "its worker was lost")
            return
        for result in executor.results(timeout=5.0):
            if result.status == LOST and result.id not in retried:
                retried.add(result.id)
                executor.submit(tasks[result.id])
                continue
            waiting.discard(result.id)
            yield result
        search.journal.heartbeat(search.session)


def _final_row(search: _Search, task: CandidateTask, result: CandidateResult) -> ModelRow:
    """The report's row of one retrained model (and its ``model.pt2`` export)."""
    ident, run_dir = result.id, search.run_dir
    folder = run_dir / "pareto" / f"{ident:06d}"
    pt2 = (_export_pt2(folder, search.code_of(ident), search.traced.example_inputs)
           if result.status == "done" else "not trained")
    ind, member = search.journal.get(ident), search.members[ident]
    # what the worker measures (latency) is measured again where the final model trained
    remeasured = {o.name: o.measure(Measured(member.gm, None, result))
                  for o in OBJECTIVES.values() if o.in_worker}
    values = {**ind.values, **{k: v for k, v in remeasured.items() if v is not None}}
    row = ModelRow(
        ident, parent=ind.parent, params=ind.params, flops=ind.flops,
        latency_ms=result.latency_ms if result.latency_ms is not None else ind.latency_ms,
        values=values, proxy_val_accuracy=ind.val_accuracy, rung=len(member.accs) - 1,
        generation=member.generation, search_score=search.score(member),
        final_init="scratch" if task.weights is None else str(Path(task.weights).relative_to(
            run_dir)),
        rung_val_accuracy=member.accs[-1], status=result.status, reason=result.reason,
        val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
        path=str(folder), pt2=None if pt2 else str(folder / "model.pt2"), pt2_error=pt2)
    search.say("final", row.to_json())
    return row


def _final_start(search: _Search, ident: int, deepest: int) -> str | None:
    """The weights the final training of ``ident`` starts from: None from scratch; else its
    best search weights, and for the seed its reference at the front's deepest generation (so
    the seed has had at least the fine-tunes of every model it is compared with)."""
    if search.s.final_init == "scratch":
        return None
    member = search.members[ident]
    if ident == search.seed_id:
        known = [g for g in search.refs if g <= deepest]
        return str(search.run_dir / search.refs[max(known)][1]) if known else \
            str(search.run_dir / member.weights[-1])
    return str(search.run_dir / member.weights[-1])


def _timing(search: _Search, search_seconds: float, final_seconds: float) -> dict[str, Any]:
    """Where the time went; the overhead is the driver's time per child outside training
    (selection, mutation and synthesis, inheritance, code and weights files, journal), during
    which the worker that will train the child waits."""
    per_child = (search.overhead_s / search.overhead_children if search.overhead_children
                 else None)
    child_seconds = search.budget.child_seconds
    median = statistics.median(child_seconds) if child_seconds else None
    speeds = [i.extra["images_per_second"] for i in search.journal.individuals("done")
              if i.extra.get("images_per_second")]
    return {"search_seconds": search_seconds, "final_seconds": final_seconds,
            "candidate_seconds_median": median,
            "overhead_seconds_per_candidate": per_child,
            "overhead_fraction": (per_child / (per_child + median)
                                  if per_child is not None and median else None),
            "overhead_measured_over": search.overhead_children,
            "train_images_per_second_median": statistics.median(speeds) if speeds else None}


def _export_pt2(folder: Path, code: str, example_inputs: tuple) -> str | None:
    """Save ``folder``'s trained model as ``model.pt2`` (torch.export); the error, if any."""
    from alphac.search.candidate import build_from_code

    try:
        model = build_from_code(code)
        inherit_weights(model, torch.load(folder / "weights.pt", weights_only=True))
        inputs = tuple(example_inputs)
        batch = torch.export.Dim("batch", min=1)
        try:  # any batch size; a model that fixes its batch exports at the example's
            program = torch.export.export(model.eval(), inputs,
                                          dynamic_shapes=tuple({0: batch} for _ in inputs))
        except Exception:  # noqa: BLE001
            program = torch.export.export(model.eval(), inputs)
        torch.export.save(program, folder / "model.pt2")
    except Exception as exc:  # noqa: BLE001 - the .py and weights stay the deliverable
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None


def _report(search: _Search, rows: list[ModelRow], timing: dict[str, Any]) -> RunResult:
    s, run_dir = search.s, search.run_dir
    ok = [r for r in rows if r.status == "done"]
    seed_row = next(r for r in rows if r.id == search.seed_id)
    cands = [Candidate(r.id, r.val_accuracy, row_cost(r, s.objective) or 0.0, r.id) for r in ok]
    seed_c = next((c for c in cands if c.id == search.seed_id), None)
    best_id = (best_within(cands, seed_c, s.max_accuracy_drop / 100).id if seed_c is not None
               else search.seed_id)
    best = next(r for r in rows if r.id == best_id)
    (run_dir / "best").mkdir(exist_ok=True)
    for name in ("model.py", "weights.pt", "model.pt2"):
        source = Path(best.path) / name
        if source.is_file():
            shutil.copyfile(source, run_dir / "best" / name)
    pareto = [r for r in ok if r.id in {c.id for c in pareto_front(cands)}]
    schedules = {"seed": s.seed_recipe, "proxy": s.proxy, "final": s.final,
                 "final_init": s.final_init,
                 "successive_halving": {"rungs": s.rungs, "eta": s.eta,
                                        "rung_budgets_in_proxies": [s.eta ** r for r in
                                                                    range(s.rungs + 1)]}}
    sections = {
        "objectives": {o.name: {"unit": o.unit, "column": o.column} for o in OBJECTIVES.values()},
        "references": {str(g): {"val_accuracy": acc, "weights": w}
                       for g, (acc, w) in sorted(search.refs.items())},
        "settings": asdict(s), "schedules": schedules, "counts": search.journal.counts(),
        "timing": timing,
        "failures": [{"id": i.id, "parent": i.parent, "reason": i.reason, "attempts": i.attempts}
                     for i in search.journal.individuals("failed")]}
    accs = [r.val_accuracy for r in ok]
    fidelity = {"proxy_fidelity_kendall_tau": _kendall_tau(
                    [r.proxy_val_accuracy or 0.0 for r in ok], accs),
                "rung_fidelity_kendall_tau": _kendall_tau(
                    [r.rung_val_accuracy or 0.0 for r in ok], accs),
                "fidelity_over": len(ok)}
    result = RunResult(run_dir, seed_row, tuple(pareto), best, tuple(rows), sections=sections,
                       fidelity=fidelity)
    (run_dir / "report.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    _plot(run_dir)
    return result


def _plot(run_dir: Path) -> None:
    """``pareto.png`` (matplotlib is a dependency; a broken install loses the plot, not the
    run)."""
    from alphac.search.report import PlotUnavailableError, plot_pareto

    try:
        plot_pareto(run_dir)
    except PlotUnavailableError:
        pass
