from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).parent / "data" / "models"


@pytest.fixture
def model_file():
    """Path of a sample user model file in tests/data/models."""

    def get(name: str) -> str:
        path = MODELS / f"{name}.py"
        assert path.exists(), path
        return str(path)

    return get
