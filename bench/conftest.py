"""Benchmark collection (``bench_*.py`` files) and fixtures: the real Fashion-MNIST, loaded once.

The numbers ``bench/compare.py`` tracks are recorded with ``figures.record`` (``bench/figures.py``).

Every benchmark runs with ``ALPHAC_BENCH_THREADS`` torch threads (default 1): on a small machine
shared with other jobs, one thread per process gives more repeatable timings than threads
fighting other processes for the cores, and the goals are per core.
"""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("ALPHAC_BENCH_THREADS", "1")))


def pytest_collect_file(file_path, parent):
    """Collect ``bench/bench_*.py`` as test modules (pytest's own pattern is ``test_*.py``)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST dataset (`make data`)."""
    from alphac.runtime.datasets import load_dataset

    return load_dataset("fashion-mnist")
