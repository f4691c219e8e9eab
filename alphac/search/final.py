"""The end of a search: retrain the front and the seed with the final recipe, write the outputs.

:func:`finish` retrains every Pareto-optimal individual and the seed on the search's executor
(in parallel where it has several workers; a lost job is tried once more), tests each once,
exports ``model.pt2``, copies ``best/``, and writes ``report.json`` (a
:class:`~alphac.search.results.RunResult`) and ``pareto.png``. ``best`` is the cheapest model
within ``max_accuracy_drop`` points of the seed on validation.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from alphac.codegen import inherit_weights
from alphac.search.budget import scaled
from alphac.search.candidate import CandidateResult, CandidateTask
from alphac.search.events import FinalStarted, FinalTrained
from alphac.search.executors import LOST, Executor
from alphac.search.objectives import OBJECTIVES, Measured, get_objective, row_cost
from alphac.search.results import ModelRow, RunResult
from alphac.search.selection import Candidate, best_within, pareto_front

if TYPE_CHECKING:
    from alphac.search.driver import _Search
    from alphac.search.layout import RunLayout
    from alphac.search.population import Population

__all__ = ["finish", "plot", "start_weights"]


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


def finish(search: _Search, search_seconds: float, executor: Executor) -> RunResult:
    """Retrain the front and the seed with the final recipe on the search's executor (in
    parallel where it has several workers), test once, write the outputs.

    Fine-tuned from their search weights (``final_init="inherited"``), the models end at equal
    training: a child of generation g gets ``deepest - g + 1`` final recipes, the seed (from
    its reference at the front's deepest generation) one, where ``deepest`` is the front's
    deepest generation (each row's ``final_fine_tunes``)."""
    s = search.s
    front = search.pop.front()
    search.say(FinalStarted(models=len(front), estimate_s=search.final_estimate()))
    began = time.monotonic()
    deepest = max((search.pop.members[i].generation for i in front), default=0)
    tasks, times = {}, {}
    for ident in front:
        folder = search.layout.pareto(ident)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(search.jobs.code_of(ident))
        times[ident] = (1 if s.final_init == "scratch"
                        else search.pop.final_fine_tunes(ident, deepest))
        tasks[ident] = replace(search.jobs.task(ident, test=True,
                                                recipe=scaled(s.final, times[ident]),
                                                save_to=folder / "weights.pt"),
                               weights=start_weights(search.pop, search.layout, s.final_init, ident,
                                                     deepest),
                               latency=get_objective(s.objective).in_worker)
    rows = [_final_row(search, tasks[r.id], r, times[r.id])
            for r in _final_results(search, executor, tasks)]
    timing = _timing(search, search_seconds, time.monotonic() - began)
    return _report(search, sorted(rows, key=lambda r: r.id), timing)


def _final_results(search: _Search, executor: Executor, tasks: dict[int, CandidateTask]
                   ) -> Iterator[CandidateResult]:
    """Each final task's result as it finishes, from ``executor`` (a lost one is tried once
    more), or in this process where the final recipe reads other images than the workers
    loaded."""
    s = search.s
    if any(getattr(s.final, k) != getattr(s.proxy, k) for k in _DATA_FIELDS):
        from alphac.runtime.train import load_task_data
        from alphac.search.candidate import evaluate_candidate

        data = load_task_data(s.target, s.final, seed=s.seed, data_dir=s.data_dir,
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


def _final_row(search: _Search, task: CandidateTask, result: CandidateResult,
               fine_tunes: int) -> ModelRow:
    """The report's row of one retrained model given ``fine_tunes`` final recipes (and its
    ``model.pt2`` export)."""
    ident, run_dir = result.id, search.layout.root
    folder = search.layout.pareto(ident)
    pt2 = (_export_pt2(folder, search.jobs.code_of(ident), search.traced.example_inputs)
           if result.status == "done" else "not trained")
    ind, member = search.journal.get(ident), search.pop.members[ident]
    # what the worker measures (latency) is measured again where the final model trained
    remeasured = {o.name: o.measure(Measured(member.gm, None, result))
                  for o in OBJECTIVES.values() if o.in_worker}
    values = {**ind.values, **{k: v for k, v in remeasured.items() if v is not None}}
    row = ModelRow(
        ident, parent=ind.parent, params=ind.params, flops=ind.flops,
        latency_ms=result.latency_ms if result.latency_ms is not None else ind.latency_ms,
        values=values, proxy_val_accuracy=ind.val_accuracy, rung=len(member.accs) - 1,
        generation=member.generation, search_score=search.pop.score(member),
        final_init="scratch" if task.weights is None else str(Path(task.weights).relative_to(
            run_dir)),
        final_fine_tunes=fine_tunes,
        rung_val_accuracy=member.accs[-1], status=result.status, reason=result.reason,
        val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
        path=str(folder), pt2=None if pt2 else str(folder / "model.pt2"), pt2_error=pt2)
    search.say(FinalTrained(id=ident, val_accuracy=row.val_accuracy,
                            test_accuracy=row.test_accuracy, row=row.to_json()))
    return row


def start_weights(pop: Population, layout: RunLayout, final_init: str, ident: int,
                  deepest: int) -> str | None:
    """The weights the final training of ``ident`` starts from: None from scratch; else its
    best search weights, and for the seed its reference at the front's deepest generation (so
    the seed has had at least the fine-tunes of every model it is compared with)."""
    if final_init == "scratch":
        return None
    if ident == pop.seed_id:
        known = [g for g in pop.refs if g <= deepest]
        if known:
            return str(layout.path(pop.refs[max(known)][1]))
    return str(layout.path(pop.members[ident].weights[-1]))


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
    s, run_dir = search.s, search.layout.root
    ok = [r for r in rows if r.status == "done"]
    seed_row = next(r for r in rows if r.id == search.pop.seed_id)
    cands = [Candidate(r.id, r.val_accuracy, row_cost(r, s.objective) or 0.0, r.id) for r in ok]
    seed_c = next((c for c in cands if c.id == search.pop.seed_id), None)
    best_id = (best_within(cands, seed_c, s.max_accuracy_drop / 100).id if seed_c is not None
               else search.pop.seed_id)
    best = next(r for r in rows if r.id == best_id)
    search.layout.best.mkdir(exist_ok=True)
    for name in ("model.py", "weights.pt", "model.pt2"):
        source = Path(best.path) / name
        if source.is_file():
            shutil.copyfile(source, search.layout.best / name)
    pareto = [r for r in ok if r.id in {c.id for c in pareto_front(cands)}]
    schedules = {"seed": s.seed_recipe.to_dict(), "proxy": s.proxy.to_dict(),
                 "final": s.final.to_dict(),
                 "final_init": s.final_init,
                 "successive_halving": {"rungs": s.rungs, "eta": s.eta,
                                        "rung_budgets_in_proxies": [s.eta ** r for r in
                                                                    range(s.rungs + 1)]}}
    sections = {
        "objectives": {o.name: {"unit": o.unit, "column": o.column} for o in OBJECTIVES.values()},
        "references": {str(g): {"val_accuracy": acc, "weights": w}
                       for g, (acc, w) in sorted(search.pop.refs.items())},
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
    plot(run_dir)
    return result


def plot(run_dir: Path) -> None:
    """``pareto.png`` (matplotlib is a dependency; a broken install loses the plot, not the
    run)."""
    from alphac.search.report import PlotUnavailableError, plot_pareto

    try:
        plot_pareto(run_dir)
    except PlotUnavailableError:
        pass
