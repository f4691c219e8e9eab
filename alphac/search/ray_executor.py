"""The ``ray`` executor: each candidate is one Ray task, so a Ray cluster scales the search.

Same interface as :mod:`alphac.search.executors` (``workers``, ``running``, ``submit``,
``results(timeout)`` in completion order, ``close``, a context manager). A task receives the
:class:`~alphac.search.candidate.CandidateTask` (plain data: code text, a weights path, numbers)
and returns the :class:`~alphac.search.candidate.CandidateResult` (plain data); no GraphModule is
ever pickled. Ray reuses worker processes, so a worker loads the target's data once and keeps it
(:func:`alphac.runtime.train.worker_task_data`, as a local worker does). A task whose worker or
node dies comes back ``lost`` (the search re-queues it); Ray's own retries are off so a candidate
that kills its worker is not run four times.

``address=None`` starts a local Ray (stopped by :meth:`RayExecutor.close`); an address such as
``"10.0.0.5:6379"``, ``"ray://head:10001"`` or ``"auto"`` connects to a running cluster (left
running), whose nodes must have alphac installed. Without a GPU in the cluster, or with
``device="cpu"``, each task asks for ``cluster CPUs // workers`` CPUs; else for one GPU.

Example::

    with RayExecutor(workers=4, target="fashion-mnist", recipe=proxy, address="auto") as ex:
        ex.submit(task)
        for result in ex.results(timeout=60): ...
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from collections.abc import Iterator
from typing import Any

from alphac.errors import UserError
from alphac.search.candidate import CandidateResult, CandidateTask, evaluate_candidate
from alphac.search.executors import LOST

__all__ = ["RayClusterUnreachable", "RayExecutor", "RayNotInstalled"]

_PROBE_SECONDS = 5.0


class RayNotInstalled(UserError):
    """``--executor ray`` without the ``ray`` package."""

    def __init__(self, what: str = "the ray package", fix: str = 'pip install "alphac[ray]"'
                 ) -> None:
        super().__init__(f"the ray executor needs {what}, which is not installed",
                         hint=f"{fix} (or use --executor local)")


class RayClusterUnreachable(UserError):
    """A ``--ray-address`` where no Ray cluster answers."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"cannot connect to a Ray cluster at {address!r}: {why}",
                         hint="start one there with `ray start --head`, check the host and "
                         "port (the head's GCS port, 6379 by default), or leave out "
                         "--ray-address to start a local Ray")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled() from exc
    return ray


def _probe(address: str) -> None:
    """Fail fast where nothing listens: Ray itself retries an unreachable GCS for minutes."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return  # Ray finds the cluster itself, or says why not
    try:
        socket.create_connection((host.strip("[]"), int(port)), _PROBE_SECONDS).close()
    except OSError as exc:
        raise RayClusterUnreachable(address, exc.strerror or str(exc)) from exc


def _connect(ray: Any, address: str | None, cpus: int) -> bool:
    """Connect to (or start) Ray; True when this call started the Ray it is connected to."""
    if ray.is_initialized():  # the caller's Ray (a test, a notebook): use it, leave it running
        return False
    if address is None:
        # "local" starts a fresh instance even where RAY_ADDRESS names a cluster.
        ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
        return True
    _probe(address)
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise RayNotInstalled("Ray Client (for ray:// addresses)", 'pip install "ray[client]"')
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayClusterUnreachable(address, str(exc).splitlines()[0] if str(exc) else
                                    type(exc).__name__) from exc
    return False


def _task_resources(ray: Any, workers: int, device: str, num_cpus: float | None,
                    num_gpus: float | None) -> tuple[float, float]:
    """(num_cpus, num_gpus) for each task: one GPU where the cluster has GPUs and the device is
    not the CPU (one CPU beside it), else an equal share of the cluster's CPUs."""
    resources = ray.cluster_resources()
    if num_gpus is None:
        num_gpus = 1.0 if device != "cpu" and resources.get("GPU", 0) >= 1 else 0.0
    if num_cpus is None:
        num_cpus = 1.0 if num_gpus else max(1, int(resources.get("CPU", 1)) // workers)
    return float(num_cpus), float(num_gpus)


def _evaluate_on_worker(task: CandidateTask, settings: tuple, threads: int) -> CandidateResult:
    """The body of the Ray task (the remote function is made from it lazily)."""
    import torch

    from alphac.runtime.train import worker_task_data

    torch.set_num_threads(threads)
    return evaluate_candidate(task, worker_task_data(*settings))


def _is_lost(ray: Any, exc: BaseException) -> bool:
    """Did the worker (or its node, or the result) vanish, rather than the code fail?"""
    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
            ray.exceptions.NodeDiedError, ray.exceptions.LocalRayletDiedError,
            ray.exceptions.OutOfMemoryError)
    if isinstance(exc, lost):
        return True
    cause = getattr(exc, "cause", None)
    return isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, SystemExit)


def _reason(exc: BaseException) -> str:
    """One line: the task's own exception where Ray wrapped one, not Ray's traceback text."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0] if text else ''}"[:500]


class RayExecutor:
    """Candidates as Ray tasks, at most ``workers`` of them running at once (the search
    submits no more than that); see the module docstring."""

    def __init__(self, *, workers: int, target: str, recipe: dict[str, Any], seed: int = 0,
                 data_dir: str | None = None, device: str = "auto", address: str | None = None,
                 num_cpus_per_task: float | None = None,
                 num_gpus_per_task: float | None = None) -> None:
        self._ray = ray = _import_ray()
        self.workers = max(1, workers)
        local_cpus = max(os.cpu_count() or 1, math.ceil(self.workers * (num_cpus_per_task or 1)))
        self._started = _connect(ray, address, local_cpus)
        cpus, gpus = _task_resources(ray, self.workers, device, num_cpus_per_task,
                                     num_gpus_per_task)
        self._remote = ray.remote(_evaluate_on_worker).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=0)
        self._settings = (target, dict(recipe), seed, data_dir, device)
        self._threads = max(1, int(cpus))
        self._pending: dict[Any, CandidateTask] = {}
        self._closed = False

    @property
    def running(self) -> int:
        return len(self._pending)

    def submit(self, task: CandidateTask) -> None:
        self._pending[self._remote.remote(task, self._settings, self._threads)] = task

    def results(self, timeout: float | None = None) -> Iterator[CandidateResult]:
        """Yield the candidates that finish within ``timeout`` seconds (at least one if any is
        running and the timeout allows), then any others already finished."""
        if not self._pending:
            return
        ready, rest = self._ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = self._ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        for ref in ready:
            yield self._collect(ref, self._pending.pop(ref))

    def _collect(self, ref: Any, task: CandidateTask) -> CandidateResult:
        try:
            return self._ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - every failure is a result, never a crash
            return CandidateResult(task.id, LOST if _is_lost(self._ray, exc) else "failed",
                                   _reason(exc), rung=task.rung)

    def close(self) -> None:
        """Cancel what is still running; stop Ray if this executor started it."""
        if self._closed:
            return
        self._closed = True
        for ref in self._pending:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or its worker gone
                pass
        self._pending.clear()
        if self._started:
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
