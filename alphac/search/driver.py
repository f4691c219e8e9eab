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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alphac.codegen import generate_code, inherit_weights
from alphac.errors import SynthesisFailed, TrainingError, UserError
from alphac.frontends import TracedModel, find_blocks, load
from alphac.passes.analysis.cost import model_cost
from alphac.passes.transform.gates import model_fingerprint
from alphac.passes.transform.mutate import MUTATORS, mutate
from alphac.runtime.device import resolve_device
from alphac.runtime.targets import get_target
from alphac.search import faults
from alphac.search.candidate import CandidateResult, CandidateTask
from alphac.search.executors import LOST, InlineExecutor, LocalExecutor
from alphac.search.journal import Journal
from alphac.search.selection import Candidate, best_within, pareto_front, select_parent

__all__ = ["OBJECTIVES", "STRATEGIES", "SearchResult", "SearchSettings", "optimize"]

OBJECTIVES = ("params", "flops", "latency")
STRATEGIES = ("evolution", "random-search")
FINAL_INITS = ("inherited", "scratch")
#: A gentle fine-tune (children start from their parent's trained weights): no warm-up, a cosine
#: decay from a low peak, no augmentation; the re-warm to the seed's peak rate collapsed children.
FINETUNE: dict[str, Any] = {"batch_size": 64, "lr": 0.01, "warmup": 0.0, "schedule": "cosine",
                            "augment": False, "subset": 6000}


@dataclass(frozen=True)
class SearchSettings:
    """What a search does; stored in the journal (a resumed run keeps its own, except the
    ``candidates`` and ``budget_s`` given to the resume).

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

    target: str = "fashion-mnist"
    candidates: int | None = 20
    objective: str = "params"
    max_accuracy_drop: float = 0.5
    mutator: str = "property"
    strategy: str = "evolution"
    proxy: dict[str, Any] = field(default_factory=lambda: dict(FINETUNE, epochs=1.0, lr=0.01))
    final: dict[str, Any] = field(default_factory=lambda: dict(FINETUNE, epochs=1.0, lr=0.01))
    seed_recipe: dict[str, Any] = field(default_factory=lambda: {
        "epochs": 3.0, "batch_size": 64, "lr": 0.05, "subset": 6000})
    final_init: str = "inherited"
    seed: int = 0
    search_seed: int | None = None
    workers: int = 1
    executor: str = "local"
    device: str = "auto"
    data_dir: str | None = None
    population: int | None = None
    ray_address: str | None = None
    budget_s: float | None = None
    rungs: int = 0
    eta: int = 3

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


@dataclass
class SearchResult:
    """Where a finished search put its results, and the report it wrote (``report.json``)."""

    run_dir: Path
    report: dict[str, Any]

    @property
    def best(self) -> dict[str, Any]:
        """The cheapest retrained model within the accuracy constraint (the seed if none)."""
        return self.report["best"]

    @property
    def seed_model(self) -> dict[str, Any]:
        return self.report["seed_model"]

    @property
    def pareto(self) -> list[dict[str, Any]]:
        """The retrained Pareto front (validation accuracy against the chosen cost)."""
        return self.report["pareto"]

    @property
    def best_dir(self) -> Path:
        """``best/``: ``model.py`` (torch only, ``build_model()``), ``weights.pt``, ``model.pt2``."""
        return self.run_dir / "best"

    def __repr__(self) -> str:
        return (f"SearchResult({str(self.run_dir)!r}: best #{self.best['id']} "
                f"params {self.best['params']}, pareto {len(self.pareto)})")


@dataclass
class _Member:
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

    @property
    def val_accuracy(self) -> float | None:
        return self.accs[0] if self.accs else None


def _work(recipe: dict[str, Any]) -> float:
    """Training samples a recipe processes (to compare schedules, e.g. final against proxy)."""
    if recipe.get("steps"):
        return float(recipe["steps"]) * recipe.get("batch_size", 256)
    return float(recipe.get("epochs", 10.0)) * (recipe.get("subset") or 60_000)


def _scaled(recipe: dict[str, Any], factor: float) -> dict[str, Any]:
    """``recipe`` with ``factor`` times its training budget."""
    if recipe.get("steps"):
        return {**recipe, "steps": max(1, round(recipe["steps"] * factor))}
    return {**recipe, "epochs": float(recipe.get("epochs", 10.0)) * factor}


class _Search:
    def __init__(self, traced: TracedModel, journal: Journal, settings: SearchSettings,
                 run_dir: Path, on_event: Callable[[str, dict], None] | None) -> None:
        self.traced, self.journal, self.s, self.run_dir = traced, journal, settings, run_dir
        self.say_to = on_event or (lambda kind, info: None)
        self.members: dict[int, _Member] = {}
        self.seed_id: int | None = None
        self.retries: dict[tuple[int, int], int] = {}
        self.inflight: set[tuple[int, int]] = set()
        self.session = journal.begin_session()
        self.elapsed_before = journal.elapsed_seconds()
        self.began = time.monotonic()
        self.overhead_s = 0.0  # driver seconds for children outside training (this session)
        self.overhead_children = 0
        self.child_seconds: list[float] = []  # worker seconds per rung-0 training
        self.synthesis_failures = 0
        self.executor: Any = None
        #: the seed's equal-training references: generation -> (val accuracy, weights path)
        self.refs: dict[int, tuple[float, str]] = {}
        self.refs_stuck = False  # a reference failed: later generations use the deepest one
        self.rates: list[float] = []  # worker seconds per training image, per finished job

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
            latency=self.s.objective == "latency" and rung == 0,
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
        recipe = _scaled(self.s.proxy, eta ** rung - eta ** (rung - 1))
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
        self.members[ident] = _Member(ident, gm, self.traced.blocks)
        self._write(ident, gm)
        self.seed_id = ident
        return ident

    def spawn(self) -> int | None:
        """A new child of a chosen parent, written and journalled; None if mutation failed."""
        began = time.monotonic()
        ident = len(self.journal.individuals()) + 1
        rng = random.Random(f"alphac-select-{self.search_seed}-{ident}")
        parent = self.members[self._choose_parent(rng)]
        seed = self.search_seed * 1_000_003 + ident
        try:
            if faults.injected("synthesis", ident):
                raise SynthesisFailed("synthesis timed out (injected by ALPHAC_FAULT)")
            child = mutate(parent.gm, parent.blocks, self.traced.example_inputs, seed=seed,
                           mutator=self.s.mutator)
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
        self.members[ident] = _Member(ident, child.gm, find_blocks(child.gm, None),
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

    def score(self, member: _Member) -> float | None:
        """Validation accuracy on the seed's scale at equal training: the member's accuracy at
        its highest rung that the seed also reached, shifted by the seed's gain from rung 0 to
        that rung, minus the seed's gain from ``generation`` fine-tunes (its reference of the
        member's generation, or the deepest one trained so far)."""
        seed = self.members[self.seed_id]
        if not member.accs or not seed.accs:
            return None
        rung = min(len(member.accs), len(seed.accs)) - 1
        return member.accs[rung] - seed.accs[rung] + seed.accs[0] - self.generation_gain(
            member.generation)

    def generation_gain(self, generation: int) -> float:
        """What ``generation`` fine-tunes added to the seed's validation accuracy (0 before
        its references are trained)."""
        known = [g for g in self.refs if g <= generation]
        return self.refs[max(known)][0] - self.refs[0][0] if known and 0 in self.refs else 0.0

    def next_reference(self) -> int | None:
        """The generation whose reference should be trained next, if any: one past the deepest
        trained, when some individual is that deep and none is in flight."""
        if self.refs_stuck or 0 not in self.refs:
            return None
        g = max(self.refs) + 1
        deepest = max((m.generation for m in self.members.values()), default=0)
        if g > deepest or any(r < 0 for _, r in self.inflight):
            return None
        return g

    def candidates(self) -> list[Candidate]:
        return [Candidate(m.id, self.score(m), m.cost, m.id) for m in self.members.values()
                if m.accs and m.cost is not None]

    def _choose_parent(self, rng: random.Random) -> int:
        done = self.candidates()
        seed = next((c for c in done if c.id == self.seed_id), None)
        if seed is None:
            return self.seed_id
        if self.s.strategy == "random-search":
            # random chains of mutations from the seed: any finished individual, unselected
            return rng.choice(done).id
        return select_parent(done, seed, rng, population=self.s.population).id

    # ---- successive halving -----------------------------------------------------------------
    def next_promotion(self) -> tuple[int, int] | None:
        """The next (id, rung) to train longer, highest rung first; the seed before others."""
        if self.s.rungs < 1:
            return None
        seed = self.members[self.seed_id]
        for rung in range(self.s.rungs, 0, -1):
            ranked = sorted((m for m in self.members.values()
                             if len(m.accs) >= rung and m.cost is not None),
                            key=lambda m: (-m.accs[rung - 1], m.id))
            top = ranked[:len(ranked) // self.s.eta]
            due = [m for m in top if len(m.accs) == rung and not m.stuck
                   and (m.id, rung) not in self.inflight]
            if not due:
                continue
            if len(seed.accs) == rung and not seed.stuck:  # the reference goes first
                return None if (seed.id, rung) in self.inflight else (seed.id, rung)
            return due[0].id, rung
        return None

    # ---- results ----------------------------------------------------------------------------
    def submit(self, ident: int, rung: int = 0) -> None:
        if rung == 0:
            self.journal.start(ident, "local")
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
            return
        if result.rung < 0:
            self._record_reference(result)
            return
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
        member.cost = (result.latency_ms if self.s.objective == "latency"
                       else float(cost.params if self.s.objective == "params"
                                  else cost.flops_per_sample))
        images = self._images(result)
        self.journal.finish(result.id, params=cost.params, flops=cost.flops_per_sample,
                            latency_ms=result.latency_ms, val_accuracy=result.val_accuracy,
                            train_seconds=result.train_seconds or 0.0,
                            extra={"worker_seconds": result.seconds, "images": images,
                                   "generation": member.generation,
                                   "images_per_second": result.metrics.get("images_per_second")})
        if result.id == self.seed_id:
            self.refs[0] = (result.val_accuracy, member.weights[0])
        if result.id != self.seed_id:
            self.child_seconds.append(result.seconds)
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
        if images and result.seconds:
            self.rates.append(result.seconds / images)
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
        return self.elapsed_before + time.monotonic() - self.began

    def _mean_child_seconds(self) -> float:
        if self.rates and not self.child_seconds:  # before any child: from the seed's speed
            return _work(self.s.proxy) * statistics.median(self.rates)
        done = self.child_seconds or [m.seconds for m in self.members.values() if m.accs]
        return sum(done) / len(done) if done else 0.0

    def final_estimate(self, extra: int = 0) -> float:
        """Seconds the final retraining of the current front and the seed (and ``extra`` more
        models) will take: their training images at the median measured worker seconds per
        image (training, evaluation and start-up of every finished job, so the estimate
        follows the machine's real speed and corrects itself as jobs finish)."""
        if not self.rates:
            return 0.0
        front = {c.id for c in pareto_front(self.candidates())} | {self.seed_id}
        return (len(front) + extra) * _work(self.s.final) * statistics.median(self.rates)

    def budget_allows(self, seconds: float) -> bool:
        """Whether work of ``seconds`` still fits the budget with the final retraining."""
        if self.s.budget_s is None:
            return True
        # the new work may join the front: its final retraining is reserved too
        return self.elapsed() + seconds + self.final_estimate(extra=1) <= self.s.budget_s

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
            if self.s.budget_s is not None:
                eta_s = min(eta_s, max(0.0, self.s.budget_s - self.elapsed()))
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

    def run(self, executor: Any, queued: list[int]) -> None:
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


def parse_duration(text: str) -> float:
    """``"30m"`` -> 1800.0; also ``90s``, ``2h``, ``1h30m``, ``45`` (seconds), ``1.5h``."""
    import re

    cleaned = text.strip().lower().replace(" ", "")
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?",
                         cleaned)
    if not cleaned or parts is None or not any(parts.groups()):
        raise UserError(f"--budget {text!r} is not a duration",
                        hint="write it like 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise UserError(f"--budget {text!r} must be longer than zero", hint="e.g. --budget 30m")
    return total


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


def _executor(settings: SearchSettings) -> Any:
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
            search.members[ind.id] = _Member(ind.id, search.traced.gm, search.traced.blocks)
            search.seed_id = ind.id
        elif ind.status != "failed" or not (ind.reason or "").startswith("synthesis:"):
            parent = search.members[ind.parent]
            child = mutate(parent.gm, parent.blocks, search.traced.example_inputs, seed=ind.seed,
                           mutator=search.s.mutator)
            if child.record.fingerprint_child != ind.fingerprint:
                raise UserError(f"cannot resume: individual {ind.id} no longer replays to the "
                                "recorded child (alphac or the model changed since the run began)",
                                hint="start a new run with another --out")
            search.members[ind.id] = _Member(ind.id, child.gm, find_blocks(child.gm, None),
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
            member.cost = (ind.latency_ms if search.s.objective == "latency" else
                           float(ind.params if search.s.objective == "params" else ind.flops))
            if ind.parent is not None:
                search.child_seconds.append(member.seconds / len(member.accs))
            if ind.extra.get("images") and ind.extra.get("worker_seconds"):
                search.rates.append(ind.extra["worker_seconds"] / ind.extra["images"])
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
             ) -> SearchResult:
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
        settings = SearchSettings(**{**stored, "candidates": settings.candidates,
                                     "budget_s": settings.budget_s})
    else:
        journal = Journal.create(run_dir, asdict(settings), identity)
    with journal:
        search = _Search(traced, journal, settings, run_dir, on_event)
        queued = _replay(search) if resume else [search.add_seed()]
        with _executor(settings) as executor:
            search.run(executor, queued)
        search_seconds = search.elapsed()
        report = _finish(search, search_seconds)
        journal.heartbeat(search.session)
        journal.write_history_csv(run_dir / "history.csv")
    return SearchResult(run_dir, report)


def _kendall_tau(a: list[float], b: list[float]) -> float | None:
    """Rank agreement of two lists (tau-a); None with fewer than 2 pairs."""
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    if not pairs:
        return None
    score = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs) - sum(
        (a[i] - a[j]) * (b[i] - b[j]) < 0 for i, j in pairs)
    return score / len(pairs)


def _finish(search: _Search, search_seconds: float) -> dict[str, Any]:
    """Retrain the front and the seed with the final recipe, test once, write the outputs."""
    from alphac.runtime.recipe import Recipe
    from alphac.runtime.train import load_task_data
    from alphac.search.candidate import evaluate_candidate

    s, run_dir = search.s, search.run_dir
    front = {c.id for c in pareto_front(search.candidates())} | {search.seed_id}
    search.say("final_start", {"models": len(front), "estimate_s": search.final_estimate()})
    began = time.monotonic()
    data = load_task_data(s.target, Recipe(**s.final), seed=s.seed, data_dir=s.data_dir,
                          device=s.device)
    rows = []
    deepest = max((search.members[i].generation for i in front), default=0)
    for ident in sorted(front):
        folder = run_dir / "pareto" / f"{ident:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(search.code_of(ident))
        start = _final_start(search, ident, deepest)
        task = replace(search._task(ident, test=True, recipe=s.final,
                                    save_to=folder / "weights.pt"), weights=start,
                       latency=s.objective == "latency")
        result = evaluate_candidate(task, data)
        pt2 = (_export_pt2(folder, search.code_of(ident), search.traced.example_inputs)
               if result.status == "done" else "not trained")
        ind, member = search.journal.get(ident), search.members[ident]
        rows.append({"id": ident, "parent": ind.parent, "params": ind.params,
                     "flops": ind.flops,
                     "latency_ms": result.latency_ms if result.latency_ms is not None
                     else ind.latency_ms,
                     "proxy_val_accuracy": ind.val_accuracy, "rung": len(member.accs) - 1,
                     "generation": member.generation, "search_score": search.score(member),
                     "final_init": "scratch" if start is None else
                     str(Path(start).relative_to(run_dir)),
                     "rung_val_accuracy": member.accs[-1], "status": result.status,
                     "reason": result.reason, "val_accuracy": result.val_accuracy,
                     "test_accuracy": result.test_accuracy, "path": str(folder),
                     "pt2": None if pt2 else str(folder / "model.pt2"), "pt2_error": pt2})
        search.say("final", rows[-1])
    timing = _timing(search, search_seconds, time.monotonic() - began)
    return _report(search, rows, timing)


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
    median = statistics.median(search.child_seconds) if search.child_seconds else None
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


def _report(search: _Search, rows: list[dict[str, Any]], timing: dict[str, Any]
            ) -> dict[str, Any]:
    s, run_dir = search.s, search.run_dir
    ok = [r for r in rows if r["status"] == "done"]
    seed_row = next(r for r in rows if r["id"] == search.seed_id)
    key = {"params": "params", "flops": "flops", "latency": "latency_ms"}[s.objective]
    cands = [Candidate(r["id"], r["val_accuracy"], float(r[key] or 0), r["id"]) for r in ok]
    seed_c = next((c for c in cands if c.id == search.seed_id), None)
    best_id = (best_within(cands, seed_c, s.max_accuracy_drop / 100).id if seed_c is not None
               else search.seed_id)
    best = next(r for r in rows if r["id"] == best_id)
    (run_dir / "best").mkdir(exist_ok=True)
    for name in ("model.py", "weights.pt", "model.pt2"):
        source = Path(best["path"]) / name
        if source.is_file():
            shutil.copyfile(source, run_dir / "best" / name)
    pareto = [r for r in ok if r["id"] in {c.id for c in pareto_front(cands)}]
    schedules = {"seed": s.seed_recipe, "proxy": s.proxy, "final": s.final,
                 "final_init": s.final_init,
                 "successive_halving": {"rungs": s.rungs, "eta": s.eta,
                                        "rung_budgets_in_proxies": [s.eta ** r for r in
                                                                    range(s.rungs + 1)]}}
    report = {"seed_model": seed_row, "pareto": pareto, "best": best, "retrained": rows,
              "references": {str(g): {"val_accuracy": acc, "weights": w}
                             for g, (acc, w) in sorted(search.refs.items())},
              "settings": asdict(s), "schedules": schedules, "counts": search.journal.counts(),
              "proxy_fidelity_kendall_tau": _kendall_tau(
                  [r["proxy_val_accuracy"] or 0.0 for r in ok], [r["val_accuracy"] for r in ok]),
              "rung_fidelity_kendall_tau": _kendall_tau(
                  [r["rung_val_accuracy"] or 0.0 for r in ok], [r["val_accuracy"] for r in ok]),
              "fidelity_over": len(ok), "timing": timing,
              "failures": [{"id": i.id, "parent": i.parent, "reason": i.reason,
                            "attempts": i.attempts}
                           for i in search.journal.individuals("failed")]}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(run_dir)
    return report


def _plot(run_dir: Path) -> None:
    """``pareto.png`` where matplotlib is installed (the optional ``plot`` extra)."""
    from alphac.search.report import PlotUnavailableError, plot_pareto

    try:
        plot_pareto(run_dir)
    except PlotUnavailableError:
        pass
