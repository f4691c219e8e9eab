"""Shared fixtures of the runtime tests: the real Fashion-MNIST, loaded once."""

from __future__ import annotations

import pytest

from alphac.runtime.datasets import Dataset, load_dataset


@pytest.fixture(scope="session")
def fashion_mnist() -> Dataset:
    """The real Fashion-MNIST from its default locations (`make data` puts it there)."""
    return load_dataset("fashion-mnist")
