"""Executors on real Fashion-MNIST: candidates as code, results in completion order, a dead
worker's candidate comes back lost and the pool keeps working, a bad candidate fails cleanly."""

from __future__ import annotations

import pytest

from alphac.codegen import generate_code
from alphac.frontends import load
from alphac.search.candidate import CandidateTask, build_from_code, evaluate_candidate
from alphac.search.executors import LOST, InlineExecutor, LocalExecutor

RECIPE = {"steps": 8, "batch_size": 32, "subset": 1000, "lr": 0.05, "val_subset": 300,
          "test_subset": 300}
_DIES = "import os\n\ndef build_model(weights=None):\n    os._exit(3)\n"
_RAISES = "def build_model(weights=None):\n    raise ValueError('no such layer')\n"


@pytest.fixture(scope="module")
def code() -> str:
    return generate_code(load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10).gm)


def _task(i: int, code: str) -> CandidateTask:
    return CandidateTask(i, code, None, "fashion-mnist", RECIPE, seed=i, device="cpu")


def test_a_candidate_trains_from_its_code(code: str) -> None:
    assert sum(p.numel() for p in build_from_code(code).parameters()) == 140458
    with InlineExecutor(target="fashion-mnist", recipe=RECIPE, device="cpu") as ex:
        ex.submit(_task(0, code))
        (result,) = list(ex.results())
    assert result.status == "done" and result.params == 140458
    assert 0.0 < result.val_accuracy <= 1.0 and result.test_accuracy is None  # no test split


def test_a_raising_candidate_fails_with_its_reason() -> None:
    result = evaluate_candidate(CandidateTask(5, _RAISES, None, "fashion-mnist", RECIPE,
                                              device="cpu"))
    assert result.status == "failed" and "ValueError: no such layer" in result.reason


def test_local_workers_survive_a_dead_worker(code: str) -> None:
    with LocalExecutor(workers=1, target="fashion-mnist", recipe=RECIPE, device="cpu",
                       threads=1) as ex:
        ex.submit(_task(1, _DIES))
        first = [r for _ in range(3) for r in ex.results(timeout=120)]
        assert [(r.id, r.status) for r in first] == [(1, LOST)]
        ex.submit(_task(2, code))
        ex.submit(_task(3, _RAISES))
        got = {}
        while ex.running:
            for r in ex.results(timeout=180):
                got[r.id] = r
    assert got[2].status == "done" and got[2].val_accuracy > 0
    assert got[3].status == "failed"


def test_every_executor_is_an_executor_for_the_driver():
    from alphac.search.executors import Executor, InlineExecutor, LocalExecutor
    from alphac.search.ray_executor import RayExecutor

    inline = InlineExecutor(target="fashion-mnist", recipe={}, data=object())
    assert isinstance(inline, Executor)
    with LocalExecutor(workers=1, target="fashion-mnist", recipe={}) as local:
        assert isinstance(local, Executor)  # no worker started before a submit
    for name in ("submit", "results", "running", "close", "__enter__", "__exit__"):
        assert hasattr(RayExecutor, name), name
