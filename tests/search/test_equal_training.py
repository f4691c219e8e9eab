"""Equal training: children against the seed fine-tuned as often, the recipes, the estimates."""

from __future__ import annotations

import hashlib

import pytest

import alphac
from alphac.runtime.recipe import Recipe
from alphac.search.api import recipes
from alphac.search.budget import Budget
from alphac.search.budget import work as _work
from alphac.search.driver import SearchSettings
from alphac.search.final import start_weights
from alphac.search.journal import Journal
from alphac.search.layout import RunLayout
from alphac.search.population import Population
from alphac.search.schedule import Member


def search_with(accs: dict[int, list[float]], rungs: int = 0) -> Population:
    """The scoring rules only: a population, no journal, no model."""
    return Population(rungs=rungs, seed_id=1,
                      members={i: Member(i, None, [], cost=100.0 - i, accs=list(a))
                               for i, a in accs.items()})


def _generations(search, generations: dict[int, int]):
    for ident, g in generations.items():
        search.members[ident].generation = g
    return search


def test_a_child_is_scored_against_the_seed_fine_tuned_as_often_as_it_was():
    search = _generations(search_with({1: [0.80], 2: [0.84], 3: [0.84], 4: [0.82]}, rungs=0),
                          {2: 1, 3: 2, 4: 5})
    assert search.score(search.members[3]) == pytest.approx(0.84)  # no reference yet: raw
    search.refs = {0: (0.80, "a"), 1: (0.83, "b"), 2: (0.85, "c")}
    assert search.score(search.members[1]) == pytest.approx(0.80)
    assert search.score(search.members[2]) == pytest.approx(0.84 - 0.03)
    assert search.score(search.members[3]) == pytest.approx(0.84 - 0.05)
    # deeper than any reference trained so far: the deepest one stands in
    assert search.score(search.members[4]) == pytest.approx(0.82 - 0.05)


def test_references_are_trained_one_generation_at_a_time_as_they_become_needed():
    search = _generations(search_with({1: [0.8], 2: [0.8], 3: [0.7]}, rungs=0), {2: 1, 3: 2})
    assert search.next_reference() is None  # the seed's own accuracy comes first
    search.refs = {0: (0.8, "w0")}
    assert search.next_reference() == 1
    search.inflight.add((1, -1))
    assert search.next_reference() is None  # one at a time: each starts from the previous
    search.inflight.clear()
    search.refs[1] = (0.82, "w1")
    assert search.next_reference() == 2
    search.refs[2] = (0.83, "w2")
    assert search.next_reference() is None  # nobody is deeper than generation 2
    search.refs_stuck = True
    search.members[3].generation = 3
    assert search.next_reference() is None  # a failed reference is not retried


def test_the_final_estimate_follows_measured_speed_and_corrects_itself():
    pop = search_with({1: [0.8]})
    settings = SearchSettings(final={"epochs": 1.0, "subset": 1000})
    budget = Budget(None, 0.0, settings.proxy, settings.final)
    assert pop.front() == [1]  # the seed alone
    assert budget.final_estimate(len(pop.front())) == 0.0  # nothing measured yet
    budget.rates = [0.01]
    assert budget.final_estimate(len(pop.front())) == pytest.approx(1 * 1000 * 0.01)
    assert budget.final_estimate(len(pop.front()) + 1) == pytest.approx(2 * 1000 * 0.01)
    budget.rates += [0.002, 0.002]  # a faster machine than the first job said: the median moves
    assert budget.final_estimate(len(pop.front())) == pytest.approx(1000 * 0.002)
    assert _work({"steps": 10, "batch_size": 32}) == 320


def test_the_final_training_starts_from_the_search_weights_and_the_seed_from_its_reference(
        tmp_path):
    search = _generations(search_with({1: [0.8], 2: [0.8], 3: [0.7]}, rungs=0), {2: 1, 3: 2})
    layout = RunLayout(tmp_path)
    for m in search.members.values():
        m.weights = [f"candidates/{m.id:06d}/trained.pt"]
    search.refs = {0: (0.8, "candidates/000001/trained.pt"),
                   1: (0.81, "candidates/000001/reference-1.pt")}
    assert start_weights(search, layout, "inherited", 2, 2) == str(
        tmp_path / "candidates/000002/trained.pt")
    assert start_weights(search, layout, "inherited", 1, 2) == str(
        tmp_path / "candidates/000001/reference-1.pt")
    assert start_weights(search, layout, "inherited", 1, 0) == str(
        tmp_path / "candidates/000001/trained.pt")
    assert start_weights(search, layout, "scratch", 2, 2) is None


def test_recipes_train_the_seed_fully_and_fine_tune_children_gently():
    proxy, final, seed = recipes(steps=40, lr=0.05, subset=3000)
    assert seed == Recipe(batch_size=64, lr=0.05, subset=3000, epochs=3.0, steps=120)
    assert proxy.steps == 40 and proxy.lr == pytest.approx(0.01)
    assert (proxy.warmup, proxy.schedule, proxy.augment) == (0.0, "cosine", False)
    assert final == proxy
    # an explicit seed schedule wins over the default of three proxies
    assert recipes(steps=40, seed_epochs=2.0)[2].epochs == 2.0
    assert recipes(steps=40, seed_epochs=2.0)[2].steps is None
    assert recipes(steps=40, seed_steps=7)[2].steps == 7
    _, scratch, _ = recipes(steps=40, final_init="scratch")
    assert scratch.steps == 120 and scratch.warmup == Recipe().warmup  # the seed's schedule
    with pytest.raises(alphac.errors.UserError, match="final-init"):
        SearchSettings(final_init="pretrained")


def test_the_same_seed_gives_the_same_seed_model_and_accuracy(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = alphac.optimize("zoo:small_cnn", target="fashion-mnist", out=tmp_path / name,
                                 candidates=1, steps=4, seed_steps=12, subset=300, val_images=300,
                                 test_images=300,
                                 executor="inline", device="cpu", seed=3)
        with Journal.open(tmp_path / name, readonly=True) as journal:
            seed = next(i for i in journal.individuals() if i.parent is None)
        weights = (tmp_path / name / "candidates" / f"{seed.id:06d}" / "weights.pt").read_bytes()
        runs.append((hashlib.sha256(weights).hexdigest(), seed.val_accuracy,
                     result.seed_model["val_accuracy"]))
        report = result.report
        assert {r["id"] for r in report["retrained"]} >= {seed.id}
        assert report["schedules"]["final_init"] == "inherited"
        assert report["seed_model"]["generation"] == 0
    assert runs[0] == runs[1]


def test_the_final_retraining_brings_every_model_to_the_front_s_deepest_generation():
    """A child of generation g gets deepest - g + 1 final fine-tunes; the seed, from its
    deepest reference up to that generation, the rest: every model ends equally trained."""
    pop = _generations(search_with({1: [0.80], 2: [0.81], 3: [0.82]}), {2: 1, 3: 3})
    pop.members[2].cost, pop.members[3].cost = 40.0, 50.0  # both on the front with the seed
    pop.refs = {0: (0.80, "w0"), 1: (0.81, "w1")}  # generations 2 and 3 not trained
    assert pop.final_fine_tunes(3, 3) == 1
    assert pop.final_fine_tunes(2, 3) == 3
    assert pop.final_fine_tunes(1, 3) == 3  # from reference 1: two more, then the final
    assert pop.final_units() == 7 and pop.final_units(scratch=True) == 3
    pop.refs[3] = (0.83, "w3")
    assert pop.final_fine_tunes(1, 3) == 1
