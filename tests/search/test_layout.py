"""The run directory's paths (alphac.search.layout.RunLayout): one place names them all."""

from __future__ import annotations

from pathlib import Path

import torch

from alphac.search.layout import RunLayout


def test_relative_paths_resolve_inside_the_run_directory(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.trained(7) == "candidates/000007/trained.pt"
    assert layout.trained(7, rung=2) == "candidates/000007/trained-r2.pt"
    assert layout.reference(1, 3) == "candidates/000001/reference-3.pt"
    assert layout.path(layout.trained(7)) == layout.candidate(7) / "trained.pt"
    assert layout.pareto(12) == tmp_path / "pareto" / "000012"
    assert layout.best == tmp_path / "best"


def test_write_puts_the_code_and_the_starting_weights_in_the_folder(tmp_path: Path) -> None:
    layout, module = RunLayout(tmp_path), torch.nn.Linear(3, 2)
    layout.write(4, "# model\n", module)
    folder = layout.candidate(4)
    assert (folder / "model.py").read_text() == "# model\n"
    saved = torch.load(folder / "weights.pt", weights_only=True)
    assert torch.equal(saved["weight"], module.weight.detach())
