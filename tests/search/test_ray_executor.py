"""The Ray executor on a local Ray started by the test, on real Fashion-MNIST: candidates as code,
a dead worker's candidate comes back lost and the executor keeps working, a raising candidate
fails with its reason, a bad address fails fast with a clear error."""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from typing import Any

import pytest

from alphac.codegen import generate_code
from alphac.frontends import load
from alphac.search.candidate import CandidateTask
from alphac.search.executors import LOST
from alphac.search.ray_executor import RayClusterUnreachable, RayExecutor, RayNotInstalled

ray = pytest.importorskip("ray", reason='the ray extra is not installed: pip install "alphac[ray]"')

RECIPE = {"steps": 5, "batch_size": 32, "subset": 800, "lr": 0.05, "val_subset": 300,
          "test_subset": 300}
_DIES = "import os\n\ndef build_model(weights=None):\n    os._exit(3)\n"
_RAISES = "def build_model(weights=None):\n    raise ValueError('no such layer')\n"


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def code() -> str:
    return generate_code(load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10).gm)


def _task(i: int, code: str) -> CandidateTask:
    return CandidateTask(i, code, None, "fashion-mnist", RECIPE, seed=i, device="cpu")


def _executor() -> RayExecutor:
    return RayExecutor(workers=2, target="fashion-mnist", recipe=RECIPE, device="cpu")


def _drain(ex: RayExecutor) -> dict[int, Any]:
    got = {}
    while ex.running:
        for r in ex.results(timeout=120):
            got[r.id] = r
    return got


def test_two_candidates_train_as_ray_tasks(local_ray: Any, code: str) -> None:
    with _executor() as ex:
        ex.submit(_task(1, code))
        ex.submit(_task(2, code))
        assert ex.running == 2
        got = _drain(ex)
    assert sorted(got) == [1, 2]
    for r in got.values():
        assert r.status == "done" and r.params == 140458, r.reason
        assert 0.0 < r.val_accuracy <= 1.0 and r.test_accuracy is None
    assert local_ray.is_initialized()  # the test's Ray: the executor did not stop it


def test_a_dead_worker_comes_back_lost_and_the_executor_goes_on(local_ray: Any,
                                                               code: str) -> None:
    with _executor() as ex:
        ex.submit(_task(3, _DIES))
        assert [(r.id, r.status) for r in _drain(ex).values()] == [(3, LOST)]
        ex.submit(_task(4, code))
        ex.submit(_task(5, _RAISES))
        got = _drain(ex)
    assert got[4].status == "done" and got[4].val_accuracy > 0
    assert got[5].status == "failed" and "ValueError: no such layer" in got[5].reason


def test_an_unreachable_address_fails_fast_and_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process
    start = time.monotonic()
    with pytest.raises(RayClusterUnreachable) as err:
        RayExecutor(workers=1, target="fashion-mnist", recipe=RECIPE, address="127.0.0.1:1")
    assert time.monotonic() - start < 10
    assert "127.0.0.1:1" in str(err.value) and "ray start --head" in str(err.value)


def test_without_ray_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(RayNotInstalled, match=r'pip install "alphac\[ray\]"'):
        RayExecutor(workers=1, target="fashion-mnist", recipe=RECIPE)


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="ray[client] installed")
def test_a_ray_client_address_without_the_client_names_its_extra(monkeypatch) -> None:
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.create_server(("127.0.0.1", 0)) as server:  # something listens there
        address = f"ray://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(RayNotInstalled, match=r'pip install "ray\[client\]"'):
            RayExecutor(workers=1, target="fashion-mnist", recipe=RECIPE, address=address)


class _FakeRay:
    """Records what the executor asks of Ray: how it starts it, what each task requests."""

    def __init__(self, resources: dict[str, float]) -> None:
        self.resources, self.init_kwargs, self.options, self.stopped = resources, None, None, False

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs: Any) -> None:
        self.init_kwargs = kwargs

    def cluster_resources(self) -> dict[str, float]:
        return self.resources

    def remote(self, fn: Any) -> Any:
        outer = self

        class _Remote:
            def options(self, **kwargs: Any) -> None:
                outer.options = kwargs

        return _Remote()

    def shutdown(self) -> None:
        self.stopped = True


@pytest.mark.parametrize("resources, device, expected", [
    ({"CPU": 8.0}, "auto", {"num_cpus": 4.0, "num_gpus": 0.0}),
    ({"CPU": 8.0, "GPU": 2.0}, "auto", {"num_cpus": 1.0, "num_gpus": 1.0}),
    ({"CPU": 8.0, "GPU": 2.0}, "cpu", {"num_cpus": 4.0, "num_gpus": 0.0}),
])
def test_a_started_ray_is_stopped_and_tasks_ask_for_their_share(monkeypatch, resources, device,
                                                                expected) -> None:
    fake = _FakeRay(resources)
    monkeypatch.setattr("alphac.search.ray_executor._import_ray", lambda: fake)
    ex = RayExecutor(workers=2, target="fashion-mnist", recipe=RECIPE, device=device)
    assert fake.init_kwargs["address"] == "local" and not fake.init_kwargs["include_dashboard"]
    assert fake.options == {**expected, "max_retries": 0}
    ex.close()
    assert fake.stopped
