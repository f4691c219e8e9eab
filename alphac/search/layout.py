"""Where a run keeps its files: one place that names every path of a run directory.

``journal.sqlite``, ``candidates/NNNNNN/{model.py,weights.pt,trained.pt,trained-rN.pt,
reference-G.pt}``, ``pareto/NNNNNN/{model.py,weights.pt,model.pt2}``, ``best/`` (the same three),
``report.json``, ``history.csv``, ``pareto.png``. The journal stores paths relative to the run
directory (:meth:`RunLayout.rel`), so a run directory can move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["RunLayout"]


@dataclass(frozen=True)
class RunLayout:
    """The paths of the run directory ``root``."""

    root: Path

    def candidate(self, ident: int) -> Path:
        """The folder of individual ``ident``'s model, weights and checkpoints."""
        return self.root / "candidates" / f"{ident:06d}"

    def rel(self, name: str, ident: int) -> str:
        """``name`` in ``ident``'s folder, relative to the run directory (as journalled)."""
        return f"candidates/{ident:06d}/{name}"

    def path(self, rel: str) -> Path:
        """A journalled relative path, resolved in this run directory."""
        return self.root / rel

    def trained(self, ident: int, rung: int = 0) -> str:
        """The relative path of ``ident``'s weights after rung ``rung`` (0: its proxy)."""
        return self.rel("trained.pt" if rung == 0 else f"trained-r{rung}.pt", ident)

    def reference(self, ident: int, generation: int) -> str:
        """The relative path of the seed ``ident`` fine-tuned ``generation`` times."""
        return self.rel(f"reference-{generation}.pt", ident)

    def pareto(self, ident: int) -> Path:
        """The folder of ``ident``'s final retraining (a model of the front, or the seed)."""
        return self.root / "pareto" / f"{ident:06d}"

    @property
    def best(self) -> Path:
        return self.root / "best"

    def write(self, ident: int, code: str, module: Any) -> None:
        """``ident``'s ``model.py`` and its starting ``weights.pt``."""
        folder = self.candidate(ident)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.py").write_text(code)
        torch.save({k: v.detach().clone() for k, v in module.state_dict().items()},
                   folder / "weights.pt")
