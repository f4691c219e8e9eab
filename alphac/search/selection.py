"""Parent selection, Pareto fronts and hypervolume for the evolutionary search (ALGORITHM.md s. 5).

Everything here is pure and deterministic given an explicit ``random.Random``. Candidates carry a
*validation* accuracy only: this module has no notion of a test accuracy and never reads one, so
selection cannot leak the test split (a flaw of the reference code, ALGORITHM.md section 7).

Conventions used throughout:

- accuracies are fractions (0.9 is 90%); "points" in the CLI and the issues are percentage
  points, so a 0.5-point constraint is ``0.005`` here;
- ``cost`` is the chosen objective (params, FLOPs or latency); lower is better;
- boundaries are inclusive with a tolerance of ``1e-9``, so a candidate exactly at a threshold
  such as ``seed - 0.005`` qualifies despite floating-point rounding;
- a candidate whose accuracy or cost is not finite (a failed or unmeasured run) is never eligible
  as a parent, never on a front and contributes no hypervolume.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, Protocol, TypeVar, overload

__all__ = [
    "Candidate",
    "CandidateLike",
    "Selection",
    "best_within",
    "hypervolume",
    "normalised_hypervolume",
    "pareto_front",
    "select_parent",
]

_EPS = 1e-9
DEFAULT_MIN_ACCURACY_DROP = 0.05
"""Default filter margin: parents must be at most 5 accuracy points below the seed."""


class CandidateLike(Protocol):
    """What selection reads from an individual; the search's own records satisfy it."""

    @property
    def id(self) -> int: ...
    @property
    def val_accuracy(self) -> float: ...
    @property
    def cost(self) -> float: ...
    @property
    def born(self) -> int: ...


C = TypeVar("C", bound=CandidateLike)


@dataclass(frozen=True)
class Candidate:
    """One evaluated individual as selection sees it: validation accuracy and cost, nothing else.

    ``born`` is the insertion order (used for aging); ``id`` is unique within a run.
    """

    id: int
    val_accuracy: float
    cost: float
    born: int


@dataclass(frozen=True)
class Selection:
    """Why a parent was chosen, for the search's log.

    ``rule`` is ``"fallback"`` (only the seed was eligible), ``"accuracy"`` (the accuracy-only
    pick) or ``"pareto"`` (Pareto-anchored sampling). ``anchor_id`` is the anchor on the front
    (pareto only); ``kept`` how many candidates the weighted draw chose among; ``eligible`` and
    ``passed`` the pool sizes after aging and after the accuracy filter (both count the seed).
    """

    rule: Literal["fallback", "accuracy", "pareto"]
    chosen_id: int
    min_accuracy: float
    eligible: int
    passed: int
    front_size: int = 0
    anchor_id: int | None = None
    kept: int = 0


def _finite(c: CandidateLike) -> bool:
    return math.isfinite(c.val_accuracy) and math.isfinite(c.cost)


def _order(c: CandidateLike) -> tuple[int, int]:
    return (c.born, c.id)


def pareto_front(cands: Iterable[C]) -> list[C]:
    """The non-dominated candidates (maximise ``val_accuracy``, minimise ``cost``), sorted by cost.

    Pre: any iterable of candidates. Post: ``q`` dominates ``p`` when it is no worse on both axes
    and strictly better on one; the result holds exactly the finite candidates no finite candidate
    dominates. Equal points do not dominate each other, so duplicates are all on the front
    (ordered by ``born`` then ``id``). Example: of (acc, cost) a=(0.9, 10), b=(0.8, 5),
    c=(0.8, 8), d=(0.9, 10) the front is [b, a, d]; c is dominated by b.
    """
    finite = [c for c in cands if _finite(c)]
    ranked = sorted(finite, key=lambda c: (c.cost, -c.val_accuracy, *_order(c)))
    front: list[C] = []
    best_cheaper = -math.inf  # best accuracy among strictly cheaper candidates
    i = 0
    while i < len(ranked):
        j = i + 1
        while j < len(ranked) and ranked[j].cost == ranked[i].cost:
            j += 1
        top = ranked[i].val_accuracy  # the group is sorted by accuracy, best first
        if top > best_cheaper:
            front.extend(c for c in ranked[i:j] if c.val_accuracy == top)
            best_cheaper = top
        i = j
    return front


def hypervolume(points: Iterable[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Exact area dominated by ``(accuracy, cost)`` points and bounded by ``reference``.

    Pre: ``reference = (ref_accuracy, ref_cost)`` is finite. Post: the area of the union of the
    rectangles ``[ref_accuracy, acc] x [cost, ref_cost]``; a point that is not strictly better
    than the reference on both axes contributes nothing, and so does a non-finite point. The
    result is in accuracy units times cost units, and never decreases when a point is added.

    Example: reference (0.87, 1.0), points (0.90, 0.5) and (0.88, 0.25). Sorted by cost, the front
    is (0.88, 0.25), (0.90, 0.5); the area is the strip from cost 0.25 to 0.5 at height
    0.88 - 0.87 plus the strip from 0.5 to 1.0 at height 0.90 - 0.87:
    ``0.25 * 0.01 + 0.5 * 0.03 = 0.0175``.
    """
    ref_acc, ref_cost = reference
    if not (math.isfinite(ref_acc) and math.isfinite(ref_cost)):
        raise ValueError(f"hypervolume reference must be finite, got {reference!r}")
    inside = sorted((cost, -acc) for acc, cost in points
                    if math.isfinite(acc + cost) and acc > ref_acc and cost < ref_cost)
    area, best_acc, prev_cost = 0.0, ref_acc, None
    # Sweep by increasing cost: between two consecutive costs the dominated height is the best
    # accuracy reachable at or below the lower cost.
    for cost, neg_acc in inside:
        if prev_cost is not None:
            area += (cost - prev_cost) * (best_acc - ref_acc)
        best_acc, prev_cost = max(best_acc, -neg_acc), cost
    if prev_cost is not None:
        area += (ref_cost - prev_cost) * (best_acc - ref_acc)
    return area


def normalised_hypervolume(cands: Iterable[CandidateLike], seed: CandidateLike, *,
                           drop: float = 0.03) -> float:
    """Hypervolume of the (validation accuracy, cost / seed cost) front, as issue #11 defines it.

    Pre: ``seed.cost > 0`` and finite, ``seed.val_accuracy`` finite. Post: ``hypervolume`` of the
    points ``(c.val_accuracy, c.cost / seed.cost)`` against the reference
    ``(seed.val_accuracy - drop, 1.0)``: seed cost, seed accuracy minus 3 points by default. The
    seed itself contributes nothing (it lies on the reference's cost edge). The value is at most
    ``(1 - seed.val_accuracy + drop) * 1.0``. Example: seed (0.90, 100 params), children
    (0.90, 50) and (0.88, 25) give the worked example of ``hypervolume``: ``0.0175``.
    """
    if not (math.isfinite(seed.cost) and seed.cost > 0 and math.isfinite(seed.val_accuracy)):
        raise ValueError(f"the seed needs a finite accuracy and a positive cost, got {seed!r}")
    reference = (seed.val_accuracy - drop, 1.0)
    return hypervolume(((c.val_accuracy, c.cost / seed.cost) for c in cands), reference)


def best_within(cands: Iterable[C], seed: C, max_drop: float) -> C:
    """The cheapest candidate at most ``max_drop`` below the seed's accuracy, else the seed.

    Pre: ``max_drop >= 0`` is a fraction (0.5 percentage points is ``0.005``). Post: among the
    seed and every finite candidate with ``val_accuracy >= seed.val_accuracy - max_drop`` (up to
    ``1e-9``), the lowest cost; ties go to higher accuracy, then earlier ``born``, then lower
    ``id``. The seed is returned when nothing qualifies or nothing is cheaper. This is "Best" in
    the search's report.
    """
    floor = seed.val_accuracy - max_drop - _EPS
    contenders = [seed, *(c for c in cands if _finite(c) and c.val_accuracy >= floor)]
    return min(contenders, key=lambda c: (c.cost, -c.val_accuracy, *_order(c)))


def _pool(cands: Sequence[C], seed: C, population: int | None) -> list[C]:
    """Aging: the seed plus the ``population`` most recent others, in (born, id) order."""
    others = sorted((c for c in cands if c.id != seed.id), key=_order)
    if population is not None:
        others = others[len(others) - population:] if population > 0 else []
    return sorted([seed, *others], key=_order)


def _anchor_weights(passed: Sequence[C], anchor: C) -> list[float]:
    """Euclidean distance to ``anchor`` after scaling each axis by its range over ``passed``."""
    accs = [c.val_accuracy for c in passed]
    costs = [c.cost for c in passed]
    acc_range = (max(accs) - min(accs)) or 1.0  # a zero range means every difference is zero
    cost_range = (max(costs) - min(costs)) or 1.0
    return [math.hypot((c.val_accuracy - anchor.val_accuracy) / acc_range,
                       (c.cost - anchor.cost) / cost_range) for c in passed]


def _sample(items: Sequence[C], weights: Sequence[float], rng: random.Random) -> C:
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    index = bisect.bisect_right(cumulative, rng.random() * total)
    return items[min(index, len(items) - 1)]


@overload
def select_parent(cands: Sequence[C], seed: C, rng: random.Random, *,
                  min_accuracy_drop: float = ..., accuracy_only_p: float = ...,
                  keep: int | None = ..., population: int | None = ...,
                  explain: Literal[False] = ...) -> C: ...
@overload
def select_parent(cands: Sequence[C], seed: C, rng: random.Random, *,
                  min_accuracy_drop: float = ..., accuracy_only_p: float = ...,
                  keep: int | None = ..., population: int | None = ...,
                  explain: Literal[True]) -> tuple[C, Selection]: ...
@overload
def select_parent(cands: Sequence[C], seed: C, rng: random.Random, *,
                  min_accuracy_drop: float = ..., accuracy_only_p: float = ...,
                  keep: int | None = ..., population: int | None = ...,
                  explain: bool = ...) -> C | tuple[C, Selection]: ...


def select_parent(cands: Sequence[C], seed: C, rng: random.Random, *,
                  min_accuracy_drop: float = DEFAULT_MIN_ACCURACY_DROP,
                  accuracy_only_p: float = 0.2, keep: int | None = None,
                  population: int | None = None,
                  explain: bool = False) -> C | tuple[C, Selection]:
    """Choose the next parent (ALGORITHM.md section 5, with the reference's flaws fixed).

    Pre: ids unique; ``0 <= accuracy_only_p <= 1``; ``keep >= 1`` or None; ``population >= 0``
    or None. Post: the result is the seed or a finite candidate of the eligible pool with
    ``val_accuracy >= seed.val_accuracy - min_accuracy_drop``; same inputs and rng state give the
    same result, whatever the order of ``cands``. Never raises on data: an empty ``cands``, no
    candidate passing the filter or a non-finite seed all return the seed.

    1. Pool: the seed (always, whether or not it is in ``cands``) plus, when ``population`` is
       set, only the ``population`` most recent others by ``born`` (aging), else all of them.
    2. Filter: keep finite candidates at most ``min_accuracy_drop`` (default 0.05, i.e. 5 points,
       absolute) below the seed. If only the seed is left, return it (rule ``fallback``).
    3. With probability ``accuracy_only_p``: the most accurate (ties: cheaper, then earlier).
    4. Otherwise pick a uniform anchor on the Pareto front of the filtered set; weight each
       filtered candidate by ``w = hypot(d_acc / range_acc, d_cost / range_cost)``, its distance
       to the anchor with both axes scaled by their range over the filtered set; keep the
       ``keep`` smallest (default ``max(10, ceil(10%))`` of the filtered set) and sample one with
       probability proportional to ``10 ** -w``. Weights and samples index the filtered list.

    Example (anchor a): filtered seed (0.90, 100), a (0.91, 80), b (0.88, 40); ranges 0.03 and
    60; w(a) = 0, w(seed) = hypot(1/3, 1/3) = 0.471, w(b) = hypot(1, 2/3) = 1.202; so
    ``10 ** -w`` = 1, 0.338, 0.063 and the picks are a 71.4%, seed 24.1%, b 4.5%.
    """
    if not min_accuracy_drop >= 0.0:
        raise ValueError(f"min_accuracy_drop must be non-negative, got {min_accuracy_drop}")
    if not 0.0 <= accuracy_only_p <= 1.0:
        raise ValueError(f"accuracy_only_p must be within [0, 1], got {accuracy_only_p}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (or None for max(10, 10%)), got {keep}")
    if population is not None and population < 0:
        raise ValueError(f"population must be non-negative (or None), got {population}")
    minimum = seed.val_accuracy - min_accuracy_drop
    pool = _pool(cands, seed, population)
    passed = [c for c in pool if _finite(c) and c.val_accuracy >= minimum - _EPS]
    record = partial(Selection, min_accuracy=minimum, eligible=len(pool), passed=len(passed))
    if not _finite(seed) or len(passed) <= 1:
        return (seed, record("fallback", seed.id)) if explain else seed
    if rng.random() < accuracy_only_p:
        chosen = min(passed, key=lambda c: (-c.val_accuracy, c.cost, *_order(c)))
        info = record("accuracy", chosen.id)
    else:
        front = pareto_front(passed)
        anchor = front[rng.randrange(len(front))]
        weights = _anchor_weights(passed, anchor)
        size = min(len(passed), keep or max(10, math.ceil(0.1 * len(passed))))
        nearest = sorted(range(len(passed)), key=lambda i: weights[i])[:size]  # stable: by born
        chosen = _sample([passed[i] for i in nearest], [10.0 ** -weights[i] for i in nearest], rng)
        info = record("pareto", chosen.id, front_size=len(front), anchor_id=anchor.id, kept=size)
    return (chosen, info) if explain else chosen
