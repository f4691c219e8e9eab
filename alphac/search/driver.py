"""The evolutionary search end to end: seed, mutate, train, select, journal, retrain the front.

:func:`optimize` traces the user's model, trains it with the proxy recipe as the baseline, then
keeps every worker busy: a parent is chosen among the finished individuals
(:func:`~alphac.search.selection.select_parent`, on validation accuracy and the chosen cost), a
child is made by one mutation (:func:`alphac.passes.transform.mutate.mutate`), inherits its
parent's trained weights by name and shape, is written as code plus weights, journalled, and
trained by an executor. Every event is one journal transaction, so a run killed at any moment
resumes (``resume=True``): running candidates are re-queued and the individuals are rebuilt by
replaying their recorded mutations from the seed (mutations are deterministic), so nothing from
the run directory is executed. At the end the Pareto-optimal individuals (validation accuracy
against cost) and the seed are retrained from scratch with the final recipe and evaluated once on
the test split; ``best`` is the cheapest within ``max_accuracy_drop`` points of the seed.

Run directory: ``journal.sqlite``, ``candidates/NNNNNN/{model.py,weights.pt,trained.pt}``,
``pareto/NNNNNN/{model.py,weights.pt}``, ``best/{model.py,weights.pt}``, ``report.json``,
``history.csv``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from alphac.codegen import generate_code, inherit_weights
from alphac.errors import SynthesisFailed, UserError
from alphac.frontends import TracedModel, find_blocks, load
from alphac.passes.analysis.cost import model_cost
from alphac.passes.transform.gates import model_fingerprint
from alphac.passes.transform.mutate import MUTATORS, mutate
from alphac.runtime.targets import get_target
from alphac.search.candidate import CandidateResult, CandidateTask
from alphac.search.executors import LOST, InlineExecutor, LocalExecutor
from alphac.search.journal import Journal
from alphac.search.selection import Candidate, best_within, pareto_front, select_parent

__all__ = ["OBJECTIVES", "SearchResult", "SearchSettings", "optimize"]

OBJECTIVES = ("params", "flops", "latency")


@dataclass(frozen=True)
class SearchSettings:
    """What a search does; stored in the journal (a resumed run keeps its own)."""

    target: str = "fashion-mnist"
    candidates: int = 20
    objective: str = "params"
    max_accuracy_drop: float = 0.5
    mutator: str = "property"
    strategy: str = "evolution"
    proxy: dict[str, Any] = field(default_factory=lambda: {"epochs": 1.0, "batch_size": 64,
                                                           "lr": 0.05, "subset": 6000})
    final: dict[str, Any] = field(default_factory=lambda: {"epochs": 3.0, "batch_size": 64,
                                                           "lr": 0.05, "subset": 6000})
    seed: int = 0
    workers: int = 1
    executor: str = "local"
    device: str = "auto"
    data_dir: str | None = None
    population: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        checks = [(self.candidates >= 1, "--candidates must be at least 1"),
                  (self.objective in OBJECTIVES, f"--objective must be one of "
                   f"{', '.join(OBJECTIVES)}"),
                  (self.max_accuracy_drop >= 0, "--max-accuracy-drop must be >= 0"),
                  (self.mutator in MUTATORS, f"--mutator must be one of {', '.join(MUTATORS)}"),
                  (self.strategy in ("evolution", "random-search"),
                   "--strategy must be evolution or random-search"),
                  (self.executor in ("local", "inline", "ray"),
                   "--executor must be local, inline or ray"),
                  (self.workers >= 1, "--workers must be at least 1")]
        for ok, message in checks:
            if not ok:
                raise UserError(message, hint="see `alphac optimize --help`")


@dataclass
class SearchResult:
    """Where a finished search put its results, and the report it wrote."""

    run_dir: Path
    report: dict[str, Any]

    @property
    def best(self) -> dict[str, Any]:
        return self.report["best"]

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return self.report["pareto"]


@dataclass
class _Member:
    id: int
    gm: Any
    blocks: list
    cost: float | None = None
    val_accuracy: float | None = None


class _Search:
    def __init__(self, traced: TracedModel, journal: Journal, settings: SearchSettings,
                 run_dir: Path, on_event: Callable[[str, dict], None] | None) -> None:
        self.traced, self.journal, self.s, self.run_dir = traced, journal, settings, run_dir
        self.say = on_event or (lambda kind, info: None)
        self.members: dict[int, _Member] = {}
        self.seed_id: int | None = None
        self.retries: dict[int, int] = {}

    # ---- individuals ------------------------------------------------------------------------
    def folder(self, ident: int) -> Path:
        return self.run_dir / "candidates" / f"{ident:06d}"

    def _task(self, ident: int, test: bool = False, recipe: dict | None = None,
              save_to: Path | None = None, weights: Path | None = None) -> CandidateTask:
        folder = self.folder(ident)
        return CandidateTask(
            ident, (folder / "model.py").read_text(), str(weights or folder / "weights.pt"),
            self.s.target, recipe or self.s.proxy, seed=self.s.seed + ident,
            device=self.s.device, data_dir=self.s.data_dir, test=test,
            latency=self.s.objective == "latency", save_to=str(save_to or folder / "trained.pt"))

    def _write(self, ident: int, gm: Any) -> None:
        folder = self.folder(ident)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(generate_code(gm))
        torch.save({k: v.detach().clone() for k, v in gm.state_dict().items()},
                   folder / "weights.pt")

    def add_seed(self) -> int:
        gm = self.traced.gm
        ident = self.journal.add(None, None, self.s.seed, model_fingerprint(gm),
                                 self._rel("model.py", 1), self._rel("trained.pt", 1))
        self._write(ident, gm)
        self.members[ident] = _Member(ident, gm, self.traced.blocks)
        self.seed_id = ident
        return ident

    def _rel(self, name: str, ident: int) -> str:
        return f"candidates/{ident:06d}/{name}"

    def spawn(self) -> int | None:
        """A new child of a chosen parent, written and journalled; None if mutation failed."""
        ident = len(self.journal.individuals()) + 1
        rng = random.Random(f"alphac-select-{self.s.seed}-{ident}")
        parent = self.members[self._choose_parent(rng)]
        seed = self.s.seed * 1_000_003 + ident
        try:
            child = mutate(parent.gm, parent.blocks, self.traced.example_inputs, seed=seed,
                           mutator=self.s.mutator)
        except SynthesisFailed as exc:
            failed = self.journal.add(parent.id, {"failed": exc.reason}, seed, "")
            self.journal.fail(failed, f"synthesis: {exc.reason}")
            self.say("failed", {"id": failed, "reason": exc.reason})
            return None
        self.inherit(child.gm, parent.id)
        made = self.journal.add(parent.id, child.record.as_dict(), seed,
                                child.record.fingerprint_child, self._rel("model.py", ident),
                                self._rel("trained.pt", ident))
        assert made == ident, "journal ids follow insertion order"
        self._write(ident, child.gm)
        self.members[ident] = _Member(ident, child.gm, find_blocks(child.gm, None))
        return ident

    def inherit(self, gm: Any, parent: int) -> None:
        """``gm`` takes its parent's trained weights where names and shapes match."""
        trained = self.folder(parent) / "trained.pt"
        if trained.is_file():
            inherit_weights(gm, torch.load(trained, map_location="cpu", weights_only=True))

    def _choose_parent(self, rng: random.Random) -> int:
        done = [Candidate(m.id, m.val_accuracy, m.cost, m.id) for m in self.members.values()
                if m.val_accuracy is not None]
        seed = next((c for c in done if c.id == self.seed_id), None)
        if seed is None:
            return self.seed_id
        if self.s.strategy == "random-search":
            return rng.choice(done).id
        return select_parent(done, seed, rng, population=self.s.population).id

    # ---- results ----------------------------------------------------------------------------
    def record(self, result: CandidateResult, executor: Any) -> None:
        if result.status == LOST and self.retries.get(result.id, 0) < 1:
            self.retries[result.id] = self.retries.get(result.id, 0) + 1
            self.say("retry", {"id": result.id, "reason": result.reason})
            if self.journal.requeue(result.id):
                self.journal.start(result.id, "local")
                executor.submit(self._task(result.id))
            else:  # the journal failed it: its worker died twice
                self.say("failed", {"id": result.id, "reason": "worker died twice"})
            return
        member = self.members[result.id]
        if result.status != "done":
            self.journal.fail(result.id, result.reason or result.status)
            self.say("failed", {"id": result.id, "reason": result.reason})
            return
        member.val_accuracy = result.val_accuracy
        cost = model_cost(member.gm, self.traced.example_inputs)
        member.cost = (result.latency_ms if self.s.objective == "latency"
                       else float(cost.params if self.s.objective == "params"
                                  else cost.flops_per_sample))
        self.journal.finish(result.id, params=cost.params, flops=cost.flops_per_sample,
                            latency_ms=result.latency_ms, val_accuracy=result.val_accuracy,
                            train_seconds=result.train_seconds or 0.0)
        self.say("done", {"id": result.id, "val_accuracy": result.val_accuracy,
                          "params": cost.params, "flops": cost.flops_per_sample,
                          "finished": self.trained_count(), "total": self.s.candidates,
                          "seconds": result.seconds})

    # ---- the loop ---------------------------------------------------------------------------
    def trained_count(self) -> int:
        counts = self.journal.counts()
        return counts.get("done", 0) + sum(1 for i in self.journal.individuals("failed")
                                           if not (i.reason or "").startswith("synthesis:"))

    def run(self, executor: Any, queued: list[int]) -> None:
        for ident in queued:
            self.journal.start(ident, "local")
            executor.submit(self._task(ident))
        attempts = 0
        while True:
            free = executor.workers - executor.running
            room = self.s.candidates - self.trained_count() - executor.running
            seeded = any(m.val_accuracy is not None for m in self.members.values())
            if free > 0 and room > 0 and (seeded or executor.running == 0) and attempts < \
                    4 * self.s.candidates:
                ident = self.spawn() if seeded else None
                attempts += 1
                if ident is not None:
                    self.journal.start(ident, "local")
                    executor.submit(self._task(ident))
                continue
            if executor.running == 0:
                return
            for result in executor.results(timeout=5.0):
                self.record(result, executor)


def _identity(traced: TracedModel, spec: str, target: str) -> dict[str, Any]:
    identity = {"source": spec, "target": target, "input_shape": list(traced.input_shape)}
    path = Path(spec)
    if not spec.startswith("zoo:") and path.is_file():
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
    """Rebuild the individuals from the journal by replaying their mutations; the queued ones."""
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
            search.members[ind.id] = _Member(ind.id, child.gm, find_blocks(child.gm, None))
        member = search.members.get(ind.id)
        if member is not None and ind.status == "done":
            member.val_accuracy = ind.val_accuracy
            member.cost = (ind.latency_ms if search.s.objective == "latency" else
                           float(ind.params if search.s.objective == "params" else ind.flops))
        if ind.status == "queued":
            if not (search.folder(ind.id) / "weights.pt").is_file():  # killed before writing
                if ind.parent is not None:
                    search.inherit(member.gm, ind.parent)
                search._write(ind.id, member.gm)
            queued.append(ind.id)
    return queued


def optimize(model: str, *, out: str | Path, settings: SearchSettings | None = None,
             resume: bool = False, on_event: Callable[[str, dict], None] | None = None
             ) -> SearchResult:
    """Search for cheaper models as accurate as ``model`` (a model file or ``zoo:NAME``).

    Pre: the target's data is available. Post: ``out`` holds the journal, every candidate, the
    retrained Pareto front, ``best/``, ``report.json`` and ``history.csv``. With ``resume`` the
    run in ``out`` continues where it stopped (its own settings, the count given now)."""
    settings = settings or SearchSettings()
    run_dir = Path(out)
    spec = get_target(settings.target)
    traced = load(model, spec.example_shape(), num_classes=spec.num_classes, seed=settings.seed)
    identity = _identity(traced, model, settings.target)
    if resume:
        journal = Journal.open(run_dir, expect_identity=identity)
        stored = SearchSettings(**{**journal.settings, "candidates": settings.candidates})
        settings = stored
    else:
        journal = Journal.create(run_dir, asdict(settings), identity)
    with journal:
        search = _Search(traced, journal, settings, run_dir, on_event)
        queued = _replay(search) if resume else [search.add_seed()]
        with _executor(settings) as executor:
            search.run(executor, queued)
        report = _finish(search)
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


def _finish(search: _Search) -> dict[str, Any]:
    """Retrain the front and the seed with the final recipe, test once, write the outputs."""
    from alphac.runtime.recipe import Recipe
    from alphac.runtime.train import load_task_data
    from alphac.search.candidate import evaluate_candidate

    s, run_dir = search.s, search.run_dir
    done = [Candidate(m.id, m.val_accuracy, m.cost, m.id) for m in search.members.values()
            if m.val_accuracy is not None]
    front = {c.id for c in pareto_front(done)} | {search.seed_id}
    data = load_task_data(s.target, Recipe(**s.final), seed=s.seed, data_dir=s.data_dir,
                          device=s.device)
    rows = []
    for ident in sorted(front):
        folder = run_dir / "pareto" / f"{ident:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(search.folder(ident) / "model.py", folder / "model.py")
        # the final retraining starts from the code's fresh initialisation, not inherited weights
        task = replace(search._task(ident, test=True, recipe=s.final,
                                    save_to=folder / "weights.pt"), weights=None)
        result = evaluate_candidate(task, data)
        pt2 = _export_pt2(folder, search.traced.example_inputs) if result.status == "done" \
            else "not trained"
        ind = search.journal.get(ident)
        rows.append({"id": ident, "parent": ind.parent, "params": ind.params,
                     "flops": ind.flops, "latency_ms": ind.latency_ms,
                     "proxy_val_accuracy": ind.val_accuracy, "status": result.status,
                     "reason": result.reason, "val_accuracy": result.val_accuracy,
                     "test_accuracy": result.test_accuracy, "path": str(folder),
                     "pt2": None if pt2 else str(folder / "model.pt2"), "pt2_error": pt2})
        search.say("final", rows[-1])
    return _report(search, rows)


def _export_pt2(folder: Path, example_inputs: tuple) -> str | None:
    """Save ``folder``'s trained model as ``model.pt2`` (torch.export); the error, if any."""
    from alphac.search.candidate import build_from_code

    try:
        model = build_from_code((folder / "model.py").read_text())
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


def _report(search: _Search, rows: list[dict[str, Any]]) -> dict[str, Any]:
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
    report = {"seed_model": seed_row, "pareto": pareto, "best": best,
              "settings": asdict(s), "counts": search.journal.counts(),
              "proxy_fidelity_kendall_tau": _kendall_tau(
                  [r["proxy_val_accuracy"] or 0.0 for r in ok], [r["val_accuracy"] for r in ok])}
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
