"""One evolution step outside training, from the search's public pieces.

A step is what the search does between two trainings: choose a parent among finished
individuals (:func:`alphac.search.selection.select_parent`), mutate it
(:func:`alphac.passes.transform.mutate.mutate`), let the child inherit the parent's weights
(:func:`alphac.codegen.inherit_weights`), write its code (:func:`alphac.codegen.generate_code`)
and queue it in the journal (:meth:`alphac.search.journal.Journal.add`, one SQLite transaction).
Here the parent is always CIFAR ResNet-18 (the candidates only steer selection) and the mutation
seeds are fixed (rewrites and duplicates), so every round does the same work; each round starts
from empty memo tables and a fresh journal in a temporary folder.

Tracked figure (``bench/compare.py``): the median over rounds of the mean step time, absolute.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest
from figures import record

from alphac.analysis import AnalysisManager
from alphac.codegen import generate_code, inherit_weights
from alphac.frontends import load
from alphac.passes.analysis.shape_dims import clear_same_memo
from alphac.passes.transform.mutate import mutate
from alphac.search.journal import Journal
from alphac.search.selection import Candidate, select_parent

MODEL = ("zoo:resnet18", (2, 3, 32, 32))
SEEDS = (0, 1, 2, 3, 4, 5)  # seeds 0-3 rewrite, 4-5 duplicate a block
ROUNDS = 3
#: (validation accuracy, params) of the finished individuals; id 1 is the seed.
POPULATION = ((0.80, 11.2e6), (0.79, 9.1e6), (0.81, 12.0e6), (0.77, 6.3e6), (0.78, 7.5e6),
              (0.70, 3.1e6))


@pytest.fixture(scope="module")
def parent():
    traced = load(MODEL[0], MODEL[1], num_classes=10)
    return traced, {k: v.detach().clone() for k, v in traced.gm.state_dict().items()}


def _journal(folder) -> tuple[Journal, list[Candidate]]:
    journal = Journal.create(folder, {"bench": "evolution"},
                             {"source": MODEL[0], "target": "cifar10"})
    cands = []
    for born, (acc, params) in enumerate(POPULATION):
        ident = journal.add(None if born == 0 else 1, None, born, f"individual-{born}")
        cands.append(Candidate(ident, acc, params, born))
    return journal, cands


def step(traced, state, journal: Journal, cands: list[Candidate], seed: int,
         am: AnalysisManager) -> int:
    """One evolution step; the new individual's id."""
    chosen = select_parent(cands, cands[0], random.Random(f"bench-select-{seed}"))
    child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=seed, am=am)
    inherit_weights(child.gm, state)
    generate_code(child.gm)
    return journal.add(chosen.id, child.record.as_dict(), seed, child.record.fingerprint_child)


def test_evolution_step(benchmark, parent, tmp_path):
    traced, state = parent
    warm, cands = _journal(tmp_path / "warm-up")
    with warm:
        step(traced, state, warm, cands, 99, AnalysisManager())  # lazy imports, once
    means: list[float] = []
    folders = iter(tmp_path / f"round-{i}" for i in range(ROUNDS))

    def one_round() -> None:
        clear_same_memo()
        am = AnalysisManager()  # a search's one manager, from cold
        journal, population = _journal(next(folders))
        with journal:
            took = []
            for seed in SEEDS:
                start = time.perf_counter()
                step(traced, state, journal, population, seed, am)
                took.append(time.perf_counter() - start)
        means.append(statistics.mean(took))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    median = statistics.median(means)
    record(benchmark.extra_info, "evolution.step_s", median, unit="s")
    benchmark.extra_info.update(model=MODEL[0], seeds=list(SEEDS), step_mean_s=means)
    print(f"\nevolution step on {MODEL[0]} (seeds {SEEDS}): median {median:.3f} s per step")
