"""A finished search as one typed value: what the driver writes as ``report.json``, what
``alphac report`` and :func:`alphac.search.report.load_run` read back, what
:func:`alphac.optimize` returns.

- :class:`ModelRow`: one retrained model (the seed, a front member): costs, accuracies, where its
  files are. A read-only mapping as well (``row["params"]``), so JSON-shaped code keeps working.
- :class:`RunResult`: the seed's row, the retrained front, the best model and every retrained
  model, with the run's settings, schedules, references, counts, fidelity and timing;
  :meth:`RunResult.to_json` is ``report.json`` and :meth:`RunResult.from_json` reads it.

Keys of ``report.json`` this alphac does not know are kept and written back unchanged.

Example::

    result = RunResult.from_json(run_dir, json.loads((run_dir / "report.json").read_text()))
    result.best.params, result.best["test_accuracy"], result.best_dir
    result.to_json() == json.loads((run_dir / "report.json").read_text())   # True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["ModelRow", "RunResult"]


@dataclass(frozen=True)
class ModelRow(Mapping):
    """One retrained model of a finished run (a row of ``report.json``).

    Accuracies are fractions from the final training (``proxy_val_accuracy``: the search's rung-0
    accuracy; ``rung_val_accuracy``: its highest rung's); ``search_score`` is the search's
    equal-training score; ``values``: every objective's value by name (FLOPs per image);
    ``final_init``: the weights its final training started from (``scratch`` or a path
    relative to the run); ``final_fine_tunes``: how many final recipes it was given (so that
    every model ends with as many fine-tunes as the front's deepest); ``pt2``: its ``model.pt2``, None when the export failed
    (``pt2_error`` says why)."""

    id: int
    parent: int | None = None
    params: int | None = None
    flops: int | None = None
    latency_ms: float | None = None
    values: dict[str, float] = field(default_factory=dict)
    proxy_val_accuracy: float | None = None
    rung: int = 0
    generation: int = 0
    search_score: float | None = None
    final_init: str | None = None
    final_fine_tunes: int = 1
    rung_val_accuracy: float | None = None
    status: str = "done"
    reason: str | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    path: str | None = None
    pt2: str | None = None
    pt2_error: str | None = None
    more: dict[str, Any] = field(default_factory=dict)  # keys this alphac does not know

    # -- the read-only mapping of report.json's row ---------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key in _ROW_FIELDS:
            return getattr(self, key)
        return self.more[key]

    def __iter__(self) -> Iterator[str]:
        yield from _ROW_FIELDS
        yield from self.more

    def __len__(self) -> int:
        return len(_ROW_FIELDS) + len(self.more)

    def to_json(self) -> dict[str, Any]:
        return {**{name: _plain(getattr(self, name)) for name in _ROW_FIELDS}, **self.more}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRow:
        """A row of ``report.json``; ValueError when it has no integer ``id``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), int):
            raise ValueError("a model row has no integer id")
        known = {k: v for k, v in data.items() if k in _ROW_FIELDS}
        more = {k: v for k, v in data.items() if k not in _ROW_FIELDS and k != "more"}
        return cls(**known, more=more)


_ROW_FIELDS = tuple(f.name for f in fields(ModelRow) if f.name != "more")
#: report.json's sections other than the model rows.
_SECTIONS = ("objectives", "references", "settings", "schedules", "counts", "timing",
             "failures")
_FIDELITY = ("proxy_fidelity_kendall_tau", "rung_fidelity_kendall_tau", "fidelity_over")


@dataclass(frozen=True)
class RunResult:
    """A finished run: its report (:meth:`to_json` is ``report.json``) and, when read back from
    the run directory, the journal's settings, seed identity and trials."""

    run_dir: Path
    seed_model: ModelRow
    pareto: tuple[ModelRow, ...]
    best: ModelRow
    retrained: tuple[ModelRow, ...] = ()
    sections: dict[str, Any] = field(default_factory=dict)  # settings, timing, ... by name
    fidelity: dict[str, Any] = field(default_factory=dict)
    journal_settings: dict[str, Any] = field(default_factory=dict)
    seed_identity: dict[str, Any] = field(default_factory=dict)
    individuals: tuple = ()
    counts_now: dict[str, int] | None = None
    more: dict[str, Any] = field(default_factory=dict)

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``report.json``'s object (sections in their usual order, unknown keys kept)."""
        out: dict[str, Any] = {"seed_model": self.seed_model.to_json(),
                               "pareto": [r.to_json() for r in self.pareto],
                               "best": self.best.to_json(),
                               "retrained": [r.to_json() for r in self.retrained]}
        out.update({name: self.sections[name] for name in _SECTIONS if name in self.sections})
        return {**out, **self.fidelity, **self.more}

    @classmethod
    def from_json(cls, run_dir: str | Path, data: Mapping[str, Any], **journal: Any
                  ) -> RunResult:
        """Read ``report.json``'s object; ValueError naming what is wrong when it is not one.
        ``journal``: ``journal_settings``, ``seed_identity``, ``individuals``, ``counts_now``."""
        if not isinstance(data, Mapping):
            raise ValueError("it is not a JSON object")
        for key, kind in (("seed_model", dict), ("pareto", list), ("best", dict)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"it has no {key} ({kind.__name__})")
        rows = data.get("retrained") if isinstance(data.get("retrained"), list) else []
        known = {"seed_model", "pareto", "best", "retrained", *_SECTIONS, *_FIDELITY}
        return cls(Path(run_dir), ModelRow.from_json(data["seed_model"]),
                   tuple(ModelRow.from_json(r) for r in data["pareto"]),
                   ModelRow.from_json(data["best"]), tuple(ModelRow.from_json(r) for r in rows),
                   sections={k: data[k] for k in _SECTIONS if k in data},
                   fidelity={k: data[k] for k in _FIDELITY if k in data},
                   more={k: v for k, v in data.items() if k not in known}, **journal)

    # -- reading ------------------------------------------------------------------------------
    @property
    def report(self) -> dict[str, Any]:
        """``report.json`` as a dict (:meth:`to_json`)."""
        return self.to_json()

    @property
    def settings(self) -> dict[str, Any]:
        """The run's settings: the journal's, with those the report states on top."""
        stated = self.sections.get("settings")
        return {**self.journal_settings, **(stated if isinstance(stated, dict) else {})}

    @property
    def objective(self) -> str:
        return self.settings.get("objective", "params")

    @property
    def timing(self) -> dict[str, Any]:
        return self.sections.get("timing", {})

    @property
    def counts(self) -> dict[str, int]:
        """Trials by state: the journal's now where it was read, else the report's."""
        return self.counts_now if self.counts_now is not None else self.sections.get("counts", {})

    @property
    def best_dir(self) -> Path:
        """``best/``: ``model.py`` (torch only, ``build_model()``), ``weights.pt``, ``model.pt2``."""
        return self.run_dir / "best"

    @property
    def best_model_path(self) -> Path:
        """``best/model.py``, or the best model's Pareto folder copy where that is missing."""
        copied = self.best_dir / "model.py"
        return copied if copied.is_file() else (self.run_dir / "pareto" / f"{self.best.id:06d}"
                                                / "model.py")

    def table(self) -> list:
        """The seed, then the front by increasing cost (:func:`~alphac.search.report.pareto_table`)."""
        from alphac.search.report import pareto_table

        return pareto_table(self.report, self.run_dir, self.objective)

    def failures(self) -> list:
        """The failed trials (synthesis, training, a worker that died), with reasons."""
        return [t for t in self.individuals if t.status == "failed"]

    def best_lineage(self) -> list:
        """The best model's path from the seed (:func:`~alphac.search.report.lineage`)."""
        from alphac.search.report import lineage

        return lineage(self.individuals, self.best.id, run_dir=self.run_dir)

    def __repr__(self) -> str:
        return (f"RunResult({str(self.run_dir)!r}: best #{self.best.id} params "
                f"{self.best.params}, pareto {len(self.pareto)})")


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
