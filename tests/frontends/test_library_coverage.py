"""The library-coverage bench on a fixed sample of families (the bench itself covers every timm
and torchvision family: ``make coverage``), and its summary arithmetic."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "library_coverage.py"
_SPEC = importlib.util.spec_from_file_location("library_coverage", _PATH)
coverage = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(coverage)

#: A plain CNN, a ViT, and torchvision's EfficientNet (stochastic depth, squeeze-excitation).
SAMPLE = ("timm:resnet", "timm:vision_transformer", "tv:efficientnet")


@pytest.mark.parametrize("family", SAMPLE)
def test_family_captures_with_exact_properties_and_mutates_into_standalone_children(
        family, tmp_path):
    row = coverage.run_family(family, tmp_path / "row.json", tmp_path, seeds=(0,),
                              kinds=("duplicate", "delete"))
    assert row["stage"] == "done" and row["cause"] is None, row.get("message")
    assert row["size"] == 32 and row["blocks"] > 0
    assert row["fidelity"] <= 1e-4
    assert row["diagnostics"] == 0, row["unknown_ops"]
    assert row["check"] == 0, row["check_detail"]
    attempts = row["attempts"]
    assert [a["what"] for a in attempts] == ["seed", "kind", "kind"]
    for a in attempts:  # each child written, loaded without alphac, right output shape
        assert a.get("valid"), a.get("message")
    assert [a["done"] for a in attempts[1:]] == ["duplicate", "delete"]


def _row(family: str, seeds: list[bool], **extra) -> dict:
    attempts = [{"what": "seed", "seed": i, "kind": None, "valid": ok,
                 **({} if ok else {"cause": "synthesis", "message": "no replacement"})}
                for i, ok in enumerate(seeds)]
    return coverage._summarise_row({"family": family, "library": "timm", "model": family,
                                    "stage": "done", "counted": True, "cause": None,
                                    "diagnostics": 0, "check": 0, "attempts": attempts,
                                    **extra})


def test_summary_counts_families_and_attempts_and_groups_failures():
    rows = [_row("a", [True, True, True]), _row("b", [True, False, False]),
            _row("c", [False, False, False]),
            _row("d", [], stage="capture", cause="capture", message="cannot capture D"),
            _row("e", [], counted=False, cause="too big for CPU", message="400M params"),
            _row("f", [], stage="mutate")]  # a timeout: no cause recorded by the worker
    text = coverage.markdown(rows)
    assert "2/5 = 40.0%" in text  # a and b mutate; c, d and f do not; e is not counted
    assert "4/15 = 26.7%" in text  # 3 + 1 valid of 5 families x 3 seeds
    assert "### synthesis (2 families)" in text
    assert "- d: cannot capture D" in text
    assert "stage mutate" in text  # f's timeout names the stage it reached
    assert "e (e): too big for CPU: 400M params" in text
