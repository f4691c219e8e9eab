"""Executors: where candidates train. ``inline`` (this process) and ``local`` (worker processes).

Both take :class:`~alphac.search.candidate.CandidateTask` values and hand back
:class:`~alphac.search.candidate.CandidateResult` values as candidates finish, in completion
order, so the search is asynchronous: a new candidate starts as soon as a worker is free. A worker
loads the target's data once (its initializer) and keeps it. A worker process that dies (killed,
out of memory, a segfault in the candidate) makes its candidates come back as ``lost`` results;
the search re-queues them once (issue #10, executors). Workers are started with ``spawn``, so no
state is inherited by fork; tasks and results are plain data.

Example::

    with LocalExecutor(workers=2, target="fashion-mnist", recipe=proxy) as ex:
        ex.submit(task)
        for result in ex.results(timeout=60): ...
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, runtime_checkable

from alphac.search.candidate import CandidateResult, CandidateTask, evaluate_candidate

__all__ = ["LOST", "Executor", "InlineExecutor", "LocalExecutor", "default_workers"]

#: The status of a result whose worker died before reporting.
LOST = "lost"


@runtime_checkable
class Executor(Protocol):
    """What the search needs of a place to train: the search's candidates, the seed's
    references and promotions, and the final retraining all go through one.

    ``submit`` queues a task; ``results(timeout)`` yields the tasks that finished (in completion
    order, a dead worker's as a ``lost`` result); ``running`` counts the tasks not yet yielded;
    ``workers`` is how many run at once; ``close`` stops the workers (a context manager too)."""

    workers: int

    def submit(self, task: CandidateTask) -> None: ...

    @property
    def running(self) -> int: ...

    def results(self, timeout: float | None = None) -> Iterator[CandidateResult]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def default_workers(device: str = "auto", cores_per_worker: int = 2) -> int:
    """One worker per GPU, else one per ``cores_per_worker`` CPU cores (at least one)."""
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return max(1, (os.cpu_count() or 1) // cores_per_worker)


def _load(target: str, recipe: dict[str, Any], seed: int, data_dir: str | None,
          device: str) -> Any:
    from alphac.runtime.recipe import Recipe
    from alphac.runtime.train import load_task_data

    return load_task_data(target, Recipe(**recipe), seed=seed, data_dir=data_dir, device=device)


def _init_worker(target: str, recipe: dict[str, Any], seed: int, data_dir: str | None,
                 device: str, threads: int) -> None:
    import torch

    from alphac.runtime.train import worker_task_data

    torch.set_num_threads(threads)
    worker_task_data(target, recipe, seed, data_dir, device)  # now, before the first candidate


def _run(task: CandidateTask, settings: tuple) -> CandidateResult:
    from alphac.runtime.train import worker_task_data

    return evaluate_candidate(task, worker_task_data(*settings))


class InlineExecutor:
    """Runs each candidate in this process when its results are asked for (tests, debugging)."""

    def __init__(self, *, target: str, recipe: dict[str, Any], seed: int = 0,
                 data_dir: str | None = None, device: str = "auto", data: Any = None) -> None:
        self._data = data if data is not None else _load(target, recipe, seed, data_dir, device)
        self._queue: list[CandidateTask] = []
        self.workers = 1

    def submit(self, task: CandidateTask) -> None:
        self._queue.append(task)

    @property
    def running(self) -> int:
        return len(self._queue)

    def results(self, timeout: float | None = None) -> Iterator[CandidateResult]:
        """The next finished candidate (one per call of ``next``)."""
        if self._queue:
            yield evaluate_candidate(self._queue.pop(0), self._data)

    def close(self) -> None:
        self._queue.clear()

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor:
    """A pool of ``workers`` spawned processes, each with the target's data loaded once."""

    def __init__(self, *, workers: int, target: str, recipe: dict[str, Any], seed: int = 0,
                 data_dir: str | None = None, device: str = "auto",
                 threads: int | None = None) -> None:
        self.workers = max(1, workers)
        threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self._args = (target, recipe, seed, data_dir, device, threads)
        self._pool = self._new_pool()
        self._futures: dict[Future, CandidateTask] = {}

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=self._args)

    @property
    def running(self) -> int:
        return len(self._futures)

    def submit(self, task: CandidateTask) -> None:
        try:
            future = self._pool.submit(_run, task, self._args[:-1])
        except BrokenProcessPool:
            self._pool = self._new_pool()
            future = self._pool.submit(_run, task, self._args[:-1])
        self._futures[future] = task

    def results(self, timeout: float | None = None) -> Iterator[CandidateResult]:
        """Yield the candidates that finish within ``timeout`` seconds (at least one if any is
        running and the timeout allows)."""
        if not self._futures:
            return
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for future in done:
            task = self._futures.pop(future)
            try:
                yield future.result()
            except BrokenProcessPool:
                broken = True
                yield CandidateResult(task.id, LOST, "the worker process died", rung=task.rung)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                yield CandidateResult(task.id, "failed", f"{type(exc).__name__}: {exc}",
                                      rung=task.rung)
        if broken:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def close(self) -> None:
        """Stop the workers now: a candidate still training is abandoned (the journal keeps it
        running, so a resume re-queues it), and the interpreter does not wait for it at exit.
        With nothing running the workers exit cleanly (no leaked semaphores at shutdown)."""
        processes = list(getattr(self._pool, "_processes", {}).values())
        if not self._futures:  # nothing running: let the workers exit and their queues close
            self._pool.shutdown(wait=True)
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
        self._futures.clear()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
