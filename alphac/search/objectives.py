"""The search's objectives as data: one row per cost a search can minimise.

Every place that depends on the objective reads :data:`OBJECTIVES`: the settings' check, the
driver's cost of a finished trial, the journal's values, ``report.json`` (each row's ``values``
and the report's ``objectives`` table of units), the Pareto table's order, the plot's axis label
and the CLI's ``--objective`` choices. Adding an objective (say peak memory) is one entry.

An objective is measured from a :class:`Measured`: the trained model's graph, its cost analysis
(:func:`alphac.passes.analysis.cost.model_cost`) and the worker's result. ``in_worker`` says the
worker must measure it (latency: timed on the training device), so the driver asks for it.

Example::

    OBJECTIVES["params"].measure(Measured(gm, cost, result))   # 140458.0
    OBJECTIVES["flops"].unit                                  # 'FLOPs per image'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alphac.errors import UserError
from alphac.units import format_count

__all__ = ["OBJECTIVES", "Measured", "Objective", "UnknownObjectiveError", "get_objective",
           "row_cost"]


class UnknownObjectiveError(UserError):
    """``--objective`` names no objective of :data:`OBJECTIVES`."""


@dataclass(frozen=True)
class Measured:
    """What a finished training gives to measure an objective with."""

    gm: Any  # the trial's torch.fx GraphModule
    cost: Any  # its ModelCost (params, flops_per_sample)
    result: Any  # the worker's CandidateResult (latency_ms, metrics)


@dataclass(frozen=True)
class Objective:
    """One cost to minimise. ``column``: the journal/report field that holds it where it has
    one (else only the trial's ``values``); ``unit``: how tables and plots name it; ``measure``:
    its value for a finished trial (None when unknown); ``in_worker``: measured by the worker."""

    name: str
    unit: str
    measure: Callable[[Measured], float | None]
    column: str | None = None
    in_worker: bool = False
    format: Callable[[float], str] | None = None

    def show(self, value: float | None) -> str:
        """``value`` as tables print it (``-`` when unknown)."""
        if value is None:
            return "-"
        if self.format is not None:
            return self.format(value)
        return format_count(value)


OBJECTIVES: dict[str, Objective] = {
    "params": Objective("params", "parameters", lambda m: float(m.cost.params),
                        column="params"),
    "flops": Objective("flops", "FLOPs per image", lambda m: float(m.cost.flops_per_sample),
                       column="flops"),
    "latency": Objective("latency", "latency (ms per batch)", lambda m: m.result.latency_ms,
                         column="latency_ms", in_worker=True, format=lambda v: f"{v:.2f} ms"),
}


def get_objective(name: str) -> Objective:
    """The objective called ``name``; a clear error naming the known ones otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UnknownObjectiveError(f"unknown objective {name!r}: the objectives are "
                                    f"{', '.join(OBJECTIVES)}",
                                    hint="pass --objective with one of them") from None


def row_cost(row: Mapping[str, Any], name: str) -> float | None:
    """A report or journal row's cost under objective ``name``: its column where it has one,
    else its ``values`` entry."""
    objective = OBJECTIVES.get(name)
    if objective is None:
        return None
    value = row.get(objective.column) if objective.column else None
    if value is None:
        value = (row.get("values") or {}).get(name)
    return None if value is None else float(value)
