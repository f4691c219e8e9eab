"""Synthesis benchmark: time per candidate on a fixed subset of the mutation corpus.

The corpus (``python bench/bench_mutate.py``, 300 property requests: seeds 0..99 on ResNet-34,
ViT-Ti/4 and EfficientNet-B0) takes many minutes; this suite takes its first ``SEEDS`` requests
per model, runs them once to capture each synthesis problem (the program lifted in its contexts,
the targets, the random state at the call), then replays exactly those calls: the same problem
and state give the same search, candidate for candidate. Each replay starts from empty memo
tables, so the rounds repeat the same work.

Tracked figures (``bench/compare.py``): time per candidate considered (all replays' time over
all their candidates), and that time over one property inference: shape, depth, mixing and cost
of the lifted subgraph in one of its contexts from empty memo tables, timed as a loop of as many
inferences as the replay has candidates just before each replay (so both last about as long and
see the same share of a shared machine).
"""

from __future__ import annotations

import contextlib
import random
import statistics
from unittest import mock

import pytest
from bench_mutate import MODELS
from figures import best_ratio, record, seconds

from alphac.analysis import AnalysisManager
from alphac.errors import SynthesisFailed
from alphac.frontends import load
from alphac.passes.analysis import program_infer
from alphac.passes.transform import mutate as mutate_module
from alphac.passes.transform.synthesize import synthesize

SEEDS = 4
ROUNDS = 3


def _capture() -> list[tuple[str, int, object, tuple, object, int]]:
    """(model, seed, problem, random state, config, candidates) of every synthesis call the
    first ``SEEDS`` corpus requests per model make and that succeeds."""
    calls = []
    for name, shape in MODELS.items():
        traced = load(f"zoo:{name}", shape, num_classes=10)
        for seed in range(SEEDS):
            def spy(problem, rng, config=None, am=None, name=name, seed=seed):
                state = rng.getstate()
                result = synthesize(problem, rng, config, am)
                calls.append((name, seed, problem, state, config, result.candidates))
                return result

            with mock.patch.object(mutate_module, "synthesize", spy), \
                    contextlib.suppress(SynthesisFailed):  # its successful calls still count
                mutate_module.mutate(traced.gm, traced.blocks, traced.example_inputs, seed=seed)
    return calls


@pytest.fixture(scope="module")
def problems():
    return _capture()


def _inferences(problem, n: int) -> float:
    """Seconds for ``n`` property inferences of the lifted subgraph, each from empty memo tables
    in one context (cycling through them). With ``n`` the replay's candidates it takes about as
    long as the replay, so both see the same share of a shared machine."""
    def run() -> None:
        for i in range(n):
            program_infer.infer(problem.program, problem.contexts[i % len(problem.contexts)],
                                AnalysisManager())  # empty memo tables

    return seconds(run)


def _replay(problem, state, config) -> tuple[float, int]:
    rng = random.Random()  # synthesize's own fresh manager: empty memo tables
    rng.setstate(state)
    found = []
    took = seconds(lambda: found.append(synthesize(problem, rng, config)))
    return took, found[0].candidates


def test_synthesis_per_candidate(benchmark, problems):
    synth: list[list[float]] = []  # per round, per problem
    infer: list[list[float]] = []
    counts: list[tuple[int, ...]] = []

    def one_round() -> None:  # each problem's reference inferences, then its replay
        times = [(_inferences(problem, n), *_replay(problem, state, config))
                 for *_, problem, state, config, n in problems]
        infer.append([t for t, _, _ in times])
        synth.append([t for _, t, _ in times])
        counts.append(tuple(n for _, _, n in times))

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    candidates = sum(counts[0])
    ms = statistics.median(sum(r) for r in synth) / candidates * 1e3
    ratio = best_ratio(synth, infer)  # as many inferences as candidates, per problem
    record(benchmark.extra_info, "synthesis.per_candidate_ms", ms, unit="ms")
    record(benchmark.extra_info, "synthesis.per_candidate_vs_inference", ratio, unit="x",
           reference="one property inference (4 properties, one context) of the same subgraphs")
    benchmark.extra_info.update(
        requests=[f"{name}:{seed}" for name, seed, *_ in problems], candidates=counts,
        synthesis_s=synth, inference_s=infer)
    print(f"\n{len(problems)} synthesis calls, {candidates} candidates: {ms:.3f} ms per "
          f"candidate (median), {ratio:.2f}x one inference (best rounds)")
