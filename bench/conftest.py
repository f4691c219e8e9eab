"""Benchmark collection (``bench_*.py`` files) and fixtures: the real Fashion-MNIST, loaded once."""

from __future__ import annotations

import pytest


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
