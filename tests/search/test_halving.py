"""Successive halving in the search driver: who is promoted when, and how rungs are compared."""

from __future__ import annotations

import pytest

from alphac.errors import UserError
from alphac.runtime.recipe import Recipe
from alphac.search.budget import scaled as _scaled
from alphac.search.budget import work as _work
from alphac.search.driver import SearchSettings, parse_duration
from alphac.search.population import Population
from alphac.search.schedule import Member


def search_with(accs: dict[int, list[float]], *, rungs: int = 2, eta: int = 3,
                inflight: set | None = None) -> Population:
    """The promotion rules only: a population, no journal, no model."""
    return Population(rungs=rungs, eta=eta, seed_id=1, inflight=set(inflight or ()),
                      members={i: Member(i, None, [], cost=100.0 - i, accs=list(a))
                               for i, a in accs.items()})


def test_nothing_is_promoted_before_eta_individuals_finished_a_rung():
    assert search_with({1: [0.5], 2: [0.6]}).next_promotion() is None


def test_the_seed_is_promoted_before_the_best_of_a_rung():
    search = search_with({1: [0.5], 2: [0.9], 3: [0.4]})
    assert search.next_promotion() == (1, 1)  # the seed first: the reference for rung 1
    search.inflight.add((1, 1))
    assert search.next_promotion() is None  # #2 waits for the seed's rung-1 accuracy
    search.members[1].accs.append(0.7)
    search.inflight.clear()
    assert search.next_promotion() == (2, 1)


def test_only_the_best_third_of_a_rung_is_promoted_and_higher_rungs_go_first():
    accs = {1: [0.5, 0.6], 2: [0.9, 0.95], 3: [0.4], 4: [0.8], 5: [0.3], 6: [0.85]}
    search = search_with(accs)
    # rung 1 has 2 members (1 and 2): too few for rung 2; rung 0 has 6: the best two are 2
    # (done) and 6, so 6 is next; 4 (third best) is not promoted
    assert search.next_promotion() == (6, 1)
    search.inflight.add((6, 1))
    assert search.next_promotion() is None
    search.members[6].accs.append(0.9)
    search.inflight.clear()
    # rung 1 now has 3 members: the best (2) goes to rung 2, after the seed
    assert search.next_promotion() == (1, 2)


def test_a_failed_promotion_is_not_retried_and_rungs_zero_turns_halving_off():
    search = search_with({1: [0.5, 0.6], 2: [0.9], 3: [0.4], 4: [0.8], 5: [0.3], 6: [0.85]})
    search.members[2].stuck = True
    assert search.next_promotion() == (6, 1)
    assert search_with({1: [0.5], 2: [0.9], 3: [0.4]}, rungs=0).next_promotion() is None


def test_scores_compare_with_the_seed_at_the_same_rung():
    search = search_with({1: [0.5, 0.7], 2: [0.6, 0.75], 3: [0.55]})
    assert search.score(search.members[1]) == pytest.approx(0.5)
    assert search.score(search.members[2]) == pytest.approx(0.55)  # 0.75 - 0.7 + 0.5
    assert search.score(search.members[3]) == pytest.approx(0.55)  # rung 0 as measured


def test_schedules_scale_in_steps_or_epochs():
    assert _scaled(Recipe(steps=10, batch_size=8), 2) == Recipe(steps=20, batch_size=8)
    assert _scaled({"epochs": 1.0}, 3).epochs == 3.0  # a stored settings dict reads as a Recipe
    assert _work({"steps": 10, "batch_size": 8}) == 80
    assert _work({"epochs": 2.0, "subset": 100}) == 200


def test_budgets_parse_and_settings_refuse_bad_values():
    assert parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    with pytest.raises(UserError, match="not a duration"):
        parse_duration("soon")
    for bad, message in (({"candidates": 0}, "--candidates must be at least 1"),
                         ({"candidates": None}, "give --candidates N or --budget"),
                         ({"budget_s": -5.0}, "--budget must be a positive time"),
                         ({"rungs": -1}, "--rungs must be 0"), ({"eta": 1}, "--eta must be"),
                         ({"max_accuracy_drop": -1.0}, "--max-accuracy-drop must be")):
        with pytest.raises(UserError, match=message):
            SearchSettings(**bad)


def test_settings_hold_recipes_as_values_and_read_stored_dicts():
    """A stored run gives its recipes as JSON dicts; the settings hold Recipe values, and
    asdict (what the journal stores) gives the dicts back."""
    from dataclasses import asdict

    settings = SearchSettings(proxy={"steps": 4, "batch_size": 8}, final=Recipe(steps=2))
    assert settings.proxy == Recipe(steps=4, batch_size=8) and settings.final.steps == 2
    stored = asdict(settings)
    assert stored["proxy"]["steps"] == 4 and SearchSettings(**stored) == settings
    with pytest.raises(UserError, match="batch size"):
        SearchSettings(proxy={"batch_size": 0})
