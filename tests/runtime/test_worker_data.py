"""One worker data cache (alphac.runtime.train.worker_task_data), used by local and Ray workers:
the real Fashion-MNIST, loaded once per process and reused."""

from __future__ import annotations

import pytest
import torch

from alphac.runtime import train
from alphac.runtime.train import worker_task_data

RECIPE = {"steps": 5, "batch_size": 32, "subset": 800, "val_subset": 300, "test_subset": 300}


@pytest.fixture(autouse=True)
def _empty_cache(monkeypatch):
    monkeypatch.setattr(train, "_WORKER_DATA", {})


def test_a_worker_keeps_one_dataset_and_reuses_it() -> None:
    settings = ("fashion-mnist", RECIPE, 0, None, "cpu")
    first = worker_task_data(*settings)
    assert first is not None and len(first.train) == 800 and len(first.val) == 300
    assert worker_task_data(*settings) is first
    assert worker_task_data("fashion-mnist", {**RECIPE, "lr": 0.5, "steps": 9}, 0, None,
                            "cpu") is first  # training settings do not change the data
    other = worker_task_data("fashion-mnist", RECIPE, 1, None, "cpu")  # another split
    assert other is not first and list(train._WORKER_DATA.values()) == [other]
    smaller = worker_task_data("fashion-mnist", {**RECIPE, "val_subset": 100}, 1, None, "cpu")
    assert len(smaller.val) == 100 and len(train._WORKER_DATA) == 1


def test_data_that_cannot_be_loaded_is_none_for_the_candidate_to_report(tmp_path) -> None:
    assert worker_task_data("fashion-mnist", RECIPE, 0, str(tmp_path / "none"), "cpu") is None
    assert worker_task_data("fashion-mnist", {"subset": 0}, 0, None, "cpu") is None
    assert train._WORKER_DATA == {}


def test_local_and_ray_workers_take_their_data_from_it(monkeypatch) -> None:
    from alphac.search import executors, ray_executor

    given = []
    for module in (executors, ray_executor):
        monkeypatch.setattr(module, "evaluate_candidate", lambda task, data: given.append(data))
    settings = ("fashion-mnist", RECIPE, 0, None, "cpu")
    executors._run("task", settings)
    ray_executor._evaluate_on_worker("task", settings, threads=torch.get_num_threads())
    assert given[0] is given[1] is worker_task_data(*settings) is not None
