"""Shared fixtures of the runtime tests: the real Fashion-MNIST, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphac.runtime.datasets import Dataset, load_dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_mnist() -> Dataset:
    """The real Fashion-MNIST from its default locations (`make data` puts it there)."""
    return load_dataset("fashion-mnist")
