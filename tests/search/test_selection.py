"""Parent selection, Pareto fronts and hypervolume (alphac/search/selection.py)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alphac.search.selection import (
    DEFAULT_MIN_ACCURACY_DROP,
    Candidate,
    Selection,
    best_within,
    hypervolume,
    normalised_hypervolume,
    pareto_front,
    select_parent,
)

SEED = Candidate(id=0, val_accuracy=0.90, cost=100.0, born=0)


def cand(id: int, acc: float, cost: float, born: int | None = None) -> Candidate:
    return Candidate(id=id, val_accuracy=acc, cost=cost, born=id if born is None else born)


def draws(cands, n=1000, seed=0, **kw) -> list[tuple[Candidate, Selection]]:
    rng = random.Random(seed)
    return [select_parent(cands, SEED, rng, explain=True, **kw) for _ in range(n)]


# --- the validation split only -----------------------------------------------------------------


def test_candidate_carries_no_test_accuracy():
    assert [f.name for f in dataclasses.fields(Candidate)] == ["id", "val_accuracy", "cost", "born"]
    with pytest.raises(TypeError):
        Candidate(id=1, val_accuracy=0.9, cost=1.0, born=1, test_accuracy=0.9)  # type: ignore


class _Record:
    """A search record with a test accuracy that selection must never read."""

    def __init__(self, id: int, acc: float, cost: float) -> None:
        self.id, self.val_accuracy, self.cost, self.born = id, acc, cost, id

    @property
    def test_accuracy(self) -> float:
        raise AssertionError("selection read the test accuracy")


def test_no_function_reads_a_test_accuracy():
    seed = _Record(0, 0.9, 100.0)
    recs = [seed, _Record(1, 0.91, 80.0), _Record(2, 0.88, 40.0), _Record(3, 0.5, 10.0)]
    rng = random.Random(0)
    for _ in range(50):
        select_parent(recs, seed, rng)
    assert [r.id for r in pareto_front(recs)] == [3, 2, 1]
    assert best_within(recs, seed, 0.05).id == 2
    assert normalised_hypervolume(recs, seed) > 0


# --- Pareto front -------------------------------------------------------------------------------


def test_pareto_drops_dominated_points_and_sorts_by_cost():
    a, b, c, d = cand(1, 0.9, 10), cand(2, 0.8, 5), cand(3, 0.8, 8), cand(4, 0.95, 20)
    e = cand(5, 0.85, 20)  # dominated by a: cheaper and more accurate
    assert pareto_front([e, d, c, a, b]) == [b, a, d]


def test_pareto_keeps_equal_points_and_breaks_one_sided_ties():
    a, a_twin = cand(1, 0.9, 10), cand(2, 0.9, 10)
    same_cost_worse = cand(3, 0.85, 10)
    same_acc_dearer = cand(4, 0.9, 12)
    front = pareto_front([same_acc_dearer, a_twin, same_cost_worse, a])
    assert front == [a, a_twin]


def test_pareto_edge_cases():
    assert pareto_front([]) == []
    only = cand(1, 0.5, 3)
    assert pareto_front([only]) == [only]
    assert pareto_front([cand(2, math.nan, 1), only, cand(3, 0.99, math.nan)]) == [only]


# --- hypervolume --------------------------------------------------------------------------------


def test_hypervolume_one_point():
    assert hypervolume([(0.9, 0.25)], (0.8, 1.0)) == pytest.approx(0.1 * 0.75)


def test_hypervolume_two_points_worked_example():
    points = [(0.90, 0.5), (0.88, 0.25)]
    assert hypervolume(points, (0.87, 1.0)) == pytest.approx(0.25 * 0.01 + 0.5 * 0.03)
    # a dominated point adds nothing; the union is not a sum of rectangles
    assert hypervolume([*points, (0.89, 0.6)], (0.87, 1.0)) == pytest.approx(0.0175)


def test_hypervolume_points_beyond_the_reference_contribute_nothing():
    ref = (0.8, 1.0)
    beyond = [(0.7, 0.1), (0.95, 1.5), (0.8, 0.5), (0.9, 1.0), (math.nan, 0.2), (math.inf, 0.2)]
    assert hypervolume(beyond, ref) == 0.0
    assert hypervolume([], ref) == 0.0
    assert hypervolume([*beyond, (0.9, 0.5)], ref) == pytest.approx(0.1 * 0.5)


def test_hypervolume_rejects_a_non_finite_reference():
    with pytest.raises(ValueError, match="finite"):
        hypervolume([(0.9, 0.5)], (math.nan, 1.0))


def test_normalised_hypervolume_reference_is_seed_cost_and_seed_accuracy_minus_3_points():
    seed = cand(0, 0.90, 2_000_000)
    child = cand(1, 0.88, 1_000_000)  # 1 point above the reference, half the seed's params
    assert normalised_hypervolume([seed, child], seed) == pytest.approx(0.01 * 0.5)
    assert normalised_hypervolume([seed], seed) == 0.0
    assert normalised_hypervolume([cand(2, 0.869, 10)], seed) == 0.0  # below seed - 3 points
    assert normalised_hypervolume([cand(3, 0.95, 2_000_001)], seed) == 0.0  # dearer than seed
    assert normalised_hypervolume([child], seed, drop=0.05) == pytest.approx(0.03 * 0.5)
    scaled = cand(0, 0.90, 2.0), cand(1, 0.88, 1.0)
    assert normalised_hypervolume(scaled, scaled[0]) == pytest.approx(0.005)


def test_normalised_hypervolume_needs_a_positive_seed_cost():
    with pytest.raises(ValueError, match="positive cost"):
        normalised_hypervolume([], cand(0, 0.9, 0.0))


# --- selection: basic contract ------------------------------------------------------------------


POPULATION = [SEED, cand(1, 0.91, 80), cand(2, 0.88, 40), cand(3, 0.80, 10), cand(4, 0.86, 60),
              cand(5, 0.93, 150), cand(6, 0.70, 5), cand(7, 0.89, 90)]


def test_selection_is_deterministic_for_a_seeded_rng_and_ignores_input_order():
    first = [c.id for c, _ in draws(POPULATION, n=200, seed=7)]
    assert first == [c.id for c, _ in draws(POPULATION, n=200, seed=7)]
    shuffled = POPULATION[:]
    random.Random(1).shuffle(shuffled)
    assert first == [c.id for c, _ in draws(shuffled, n=200, seed=7)]
    assert first != [c.id for c, _ in draws(POPULATION, n=200, seed=8)]


def test_filter_is_respected_over_1000_draws():
    minimum = SEED.val_accuracy - DEFAULT_MIN_ACCURACY_DROP
    picks = Counter(c.id for c, _ in draws(POPULATION, n=1000))
    below = {c.id for c in POPULATION if c.val_accuracy < minimum}
    assert below == {3, 6}
    assert not below & picks.keys()
    assert picks.keys() == {c.id for c in POPULATION} - below  # every eligible one is reachable


def test_custom_margin_tightens_the_filter():
    picks = {c.id for c, _ in draws(POPULATION, n=1000, min_accuracy_drop=0.0)}
    assert picks <= {0, 1, 5}


ALL_FILTERED = [cand(1, 0.5, 1), cand(2, math.nan, 0.5), cand(3, 0.95, math.nan),
                cand(4, 0.95, math.inf)]


@pytest.mark.parametrize("cands", [[], [SEED], ALL_FILTERED])
def test_empty_or_all_filtered_returns_the_seed(cands):
    chosen, info = select_parent(cands, SEED, random.Random(0), explain=True)
    assert chosen is SEED
    assert info.rule == "fallback" and info.passed == 1


def test_single_candidate_besides_the_seed_works():
    child = cand(1, 0.89, 50)
    picks = {select_parent([child], SEED, random.Random(s)).id for s in range(50)}
    assert picks == {0, 1}


def test_non_finite_seed_falls_back_to_the_seed():
    seed = cand(0, math.nan, 100)
    assert select_parent([cand(1, 0.9, 1)], seed, random.Random(0)) is seed


@pytest.mark.parametrize("kw", [{"accuracy_only_p": 1.5}, {"keep": 0}, {"population": -1},
                                {"min_accuracy_drop": -0.01}])
def test_invalid_options_raise(kw):
    with pytest.raises(ValueError):
        select_parent(POPULATION, SEED, random.Random(0), **kw)


# --- selection: the rules -----------------------------------------------------------------------


def test_accuracy_only_rule_fires_about_20_percent_of_the_time_and_picks_the_best():
    results = draws(POPULATION, n=5000, seed=3)
    rules = Counter(info.rule for _, info in results)
    assert rules.keys() == {"accuracy", "pareto"}
    assert abs(rules["accuracy"] / 5000 - 0.2) < 0.03  # binomial sd is 0.006
    assert {c.id for c, info in results if info.rule == "accuracy"} == {5}
    assert {info.rule for _, info in draws(POPULATION, n=100, accuracy_only_p=0.0)} == {"pareto"}
    always = draws(POPULATION, n=100, accuracy_only_p=1.0)
    assert {(c.id, info.rule) for c, info in always} == {(5, "accuracy")}


def test_pareto_weights_match_the_worked_example():
    seed, a, b = SEED, cand(1, 0.91, 80), cand(2, 0.88, 40)
    results = draws([seed, a, b], n=20000, accuracy_only_p=0.0)
    anchored_a = Counter(c.id for c, info in results if info.anchor_id == a.id)
    total = sum(anchored_a.values())
    assert 9000 < total < 11000  # the anchor is uniform over the front {b, a}
    for cid, expected in [(a.id, 0.714), (seed.id, 0.241), (b.id, 0.045)]:
        assert anchored_a[cid] / total == pytest.approx(expected, abs=0.02)


def test_pareto_anchored_picks_concentrate_near_the_front():
    front = [cand(1, 0.92, 90), cand(2, 0.91, 60), cand(3, 0.89, 30)]
    far = cand(4, 0.86, 100)  # passes the filter but is dominated by every front member
    picks = Counter(c.id for c, _ in draws([SEED, *front, far], n=3000, accuracy_only_p=0.0))
    assert {c.id for c in pareto_front([SEED, *front, far])} == {1, 2, 3}
    for member in front:
        assert picks[member.id] > 5 * picks[far.id]


def test_keep_is_max_10_or_10_percent_of_the_filtered_set():
    many = [cand(i, 0.86 + 0.0001 * i, 1000 - i) for i in range(1, 300)]
    _, info = select_parent(many[:29], SEED, random.Random(0), accuracy_only_p=0.0, explain=True)
    assert info.passed == 30 and info.kept == 10
    _, info = select_parent(many, SEED, random.Random(0), accuracy_only_p=0.0, explain=True)
    assert info.passed == 300 and info.kept == 30
    _, info = select_parent(many, SEED, random.Random(0), accuracy_only_p=0.0, keep=3,
                            explain=True)
    assert info.kept == 3
    small = select_parent(POPULATION, SEED, random.Random(0), accuracy_only_p=0.0, explain=True)
    assert small[1].kept == small[1].passed == 6  # fewer than 10: everyone is kept


def test_kept_set_is_the_nearest_to_the_anchor():
    line = [cand(i, 0.86 + 0.01 * i, 10.0 * i) for i in range(1, 6)]  # the seed lies far off it
    assert all(c.id == info.anchor_id for c, info in draws(line, n=300, accuracy_only_p=0.0,
                                                           keep=1))
    for chosen, info in draws(line, n=300, accuracy_only_p=0.0, keep=2):
        assert chosen is not SEED and abs(chosen.id - info.anchor_id) <= 1


def test_population_bound_keeps_only_the_most_recent_plus_the_seed():
    old_star = cand(1, 0.99, 1)  # the best and cheapest, but old
    recent = [cand(i, 0.88, 100 - i) for i in range(2, 22)]
    cands = [SEED, old_star, *recent]
    bounded = draws(cands, n=1000, population=5)
    allowed = {0} | {c.id for c in recent[-5:]}
    assert {c.id for c, _ in bounded} <= allowed
    assert 0 in {c.id for c, _ in bounded}  # the seed is eligible despite its age
    assert {info.eligible for _, info in bounded} == {6}
    shuffled = cands[::-1]
    assert {c.id for c, _ in draws(shuffled, n=1000, population=5)} <= allowed
    assert 1 in {c.id for c, _ in draws(cands, n=1000)}  # unbounded: the old star is reachable
    assert {c.id for c, _ in draws(cands, n=50, population=0)} == {0}


def test_weights_index_the_filtered_list_not_the_unfiltered_one():
    # The reference computed weights over the filtered list and indexed the unfiltered one with
    # them. Here the filtered list is [seed, good3, good4] and unfiltered positions 1 and 2 hold
    # candidates under the minimum, so that bug would pick them about two thirds of the time.
    bad1, bad2 = cand(1, 0.40, 1), cand(2, 0.30, 2)
    good3, good4 = cand(3, 0.91, 50), cand(4, 0.89, 20)
    unfiltered = [SEED, bad1, bad2, good3, good4]
    passed = [c for c in unfiltered if c.val_accuracy >= 0.85]
    assert {unfiltered[i].id for i in range(len(passed))} & {1, 2}  # the case can catch the bug
    picks = Counter(c.id for c, _ in draws(unfiltered, n=1000))
    assert not picks.keys() & {1, 2}
    assert picks.keys() == {0, 3, 4}


# --- best_within --------------------------------------------------------------------------------


def test_best_within_is_the_cheapest_within_the_accuracy_constraint():
    cands = [SEED, cand(1, 0.897, 50), cand(2, 0.895, 30), cand(3, 0.80, 1), cand(4, 0.95, 70)]
    assert best_within(cands, SEED, 0.005).id == 2  # 0.895 is exactly on the 0.5-point bound
    assert best_within(cands, SEED, 0.004).id == 1
    assert best_within(cands, SEED, 0.2).id == 3
    seed = cand(0, 0.8, 100)
    assert 0.8 - 0.1 > 0.7  # floating point: the exact bound would exclude 0.7
    assert best_within([cand(1, 0.7, 10)], seed, 0.1).id == 1


def test_best_within_falls_back_to_the_seed():
    assert best_within([], SEED, 0.005) is SEED
    assert best_within([cand(1, 0.5, 1)], SEED, 0.005) is SEED
    assert best_within([cand(2, 0.95, 150), cand(3, math.nan, 1)], SEED, 0.005) is SEED


def test_best_within_breaks_cost_ties_by_accuracy():
    assert best_within([cand(1, 0.89, 10), cand(2, 0.90, 10)], SEED, 0.05).id == 2


# --- properties ---------------------------------------------------------------------------------

_accuracies = st.integers(0, 20).map(lambda k: k / 20)  # coarse grids so ties are common
_costs = st.integers(1, 12).map(float)
_cand_lists = st.lists(st.tuples(_accuracies, _costs), max_size=25).map(
    lambda pts: [cand(i + 1, a, c) for i, (a, c) in enumerate(pts)])


def _dominates(q: Candidate, p: Candidate) -> bool:
    no_worse = q.val_accuracy >= p.val_accuracy and q.cost <= p.cost
    return no_worse and (q.val_accuracy > p.val_accuracy or q.cost < p.cost)


@given(_cand_lists)
def test_pareto_front_is_exactly_the_non_dominated_set(cands):
    front = pareto_front(cands)
    expected = [p for p in cands if not any(_dominates(q, p) for q in cands)]
    assert sorted(front, key=lambda c: c.id) == expected
    assert [c.cost for c in front] == sorted(c.cost for c in front)


def _grid_hypervolume(points, ref):
    """Oracle: sum the cells of the coordinate grid whose centre some point dominates."""
    ra, rc = ref
    accs = sorted({ra, *(a for a, _ in points if a > ra)})
    costs = sorted({rc, *(c for _, c in points if c < rc)})
    area = 0.0
    for (a0, a1), (c0, c1) in itertools.product(itertools.pairwise(accs),
                                                itertools.pairwise(costs)):
        ma, mc = (a0 + a1) / 2, (c0 + c1) / 2
        if any(a >= ma and c <= mc for a, c in points):
            area += (a1 - a0) * (c1 - c0)
    return area


@given(st.lists(st.tuples(_accuracies, _costs), max_size=12), _accuracies, _costs)
def test_hypervolume_matches_a_grid_oracle_and_is_monotone(points, ref_acc, ref_cost):
    ref = (ref_acc, ref_cost)
    value = hypervolume(points, ref)
    assert value == pytest.approx(_grid_hypervolume(points, ref), abs=1e-12)
    if points:
        assert hypervolume(points[:-1], ref) <= value + 1e-12


@settings(max_examples=60, deadline=None)
@given(_cand_lists, st.integers(0, 2**32), st.sampled_from([0.0, 0.02, 0.05, 0.3]),
       st.one_of(st.none(), st.integers(0, 10)))
def test_every_parent_is_the_seed_or_passes_the_filter(cands, rng_seed, margin, population):
    seed = cand(0, 0.6, 6.0)
    rng = random.Random(rng_seed)
    eligible = {c.id for c in sorted(cands, key=lambda c: c.born)[-population:]} if population \
        else ({c.id for c in cands} if population is None else set())
    for _ in range(20):
        chosen, info = select_parent(cands, seed, rng, min_accuracy_drop=margin,
                                     population=population, explain=True)
        assert chosen is seed or (chosen.val_accuracy >= 0.6 - margin - 1e-9
                                  and chosen.id in eligible)
        assert info.chosen_id == chosen.id
        if info.rule == "pareto":
            assert 1 <= info.kept <= info.passed and info.anchor_id is not None
