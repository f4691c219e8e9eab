"""The studies' statistics and bookkeeping (bench/vs_pruning.py, bench/mutation_quality.py,
bench/search_quality.py) on hand-made numbers; no study runs here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vs = _module("vs_pruning")
mq = _module("mutation_quality")


def test_smallest_ratio_within_honours_the_threshold_and_ignores_missing_rows():
    rows = [{"params_ratio": 0.8, "test_accuracy": 0.812},
            {"params_ratio": 0.5, "test_accuracy": 0.805},  # exactly 0.5 points below: in
            {"params_ratio": 0.3, "test_accuracy": 0.7999},  # just outside
            {"params_ratio": 0.1, "test_accuracy": None}]
    assert vs.smallest_ratio_within(rows, 0.81) == 0.5
    assert vs.smallest_ratio_within(rows, 0.83) is None
    assert vs.smallest_ratio_within(rows, 0.81, 2.0) == 0.3


def test_bisection_finds_the_input_closest_to_a_target_of_a_decreasing_function():
    x, fx = vs.bisect_decreasing(lambda c: (1 - c) ** 2, 0.25)
    assert fx == pytest.approx(0.25, abs=1e-3) and x == pytest.approx(0.5, abs=1e-3)
    assert vs.images_to_steps(10_000, 128) == 79 and vs.images_to_steps(1, 128) == 1


def test_quartiles_match_numpy_and_fractions_count_the_floor_in():
    values = [3.0, -1.0, 7.5, 0.0, 2.0, -4.0, 10.0]
    q1, med, q3 = mq.quartiles(values)
    assert (q1, med, q3) == pytest.approx(tuple(np.quantile(values, [0.25, 0.5, 0.75])))
    assert mq.iqr(values) == pytest.approx(q3 - q1)
    assert mq.quartiles([]) is None
    assert mq.fraction_at_least([-2.0, -1.0, 0.5, -3.0], -2.0) == 0.75


def test_pairs_are_matched_by_seed_and_tested_with_wilcoxon():
    a = {0: 80.0, 1: 79.0, 2: 81.0, 3: None, 5: 70.0, 6: 75.0}
    b = {0: 78.0, 1: 78.5, 2: 80.0, 3: 77.0, 4: 90.0, 5: 66.0, 6: 72.0}
    assert mq.paired_differences(a, b) == {0: 2.0, 1: 0.5, 2: 1.0, 5: 4.0, 6: 3.0}
    # five positive differences: the exact two-sided p is 2 / 2**5
    assert mq.wilcoxon_p([2.0, 0.5, 1.0, 4.0, 3.0]) == pytest.approx(0.0625)
    assert mq.wilcoxon_p([0.0, 0.0]) is None
    low, high = mq.bootstrap_median_ci([1.0, 2.0, 3.0, 4.0, 5.0], n_boot=2000)
    assert 1.0 <= low <= 3.0 <= high <= 5.0


def test_summary_counts_collapses_and_failures_and_measures_retention_from_the_parent():
    rows = [{"status": "ok", "seed": 0, "val_accuracy": 0.80, "params_ratio": 0.9},
            {"status": "ok", "seed": 1, "val_accuracy": 0.785, "params_ratio": 0.7},
            {"status": "diverged", "seed": 2, "val_accuracy": None, "params_ratio": 1.1},
            {"status": "synthesis_failed", "seed": 3}]
    s = mq.summarize(rows, parent_reference=0.80)
    assert (s["tried"], s["made"], s["synthesis_failed"], s["diverged"]) == (4, 3, 1, 1)
    assert s["retention_median"] == pytest.approx(-1.5)  # 0, -1.5 and chance (-70)
    assert s["within_1"] == pytest.approx(1 / 3) and s["within_2"] == pytest.approx(2 / 3)
    assert s["collapse_rate"] == pytest.approx(1 / 3)
    assert s["params_ratio_median"] == pytest.approx(0.9)
    c = mq.compare(rows, [{"status": "ok", "seed": 0, "val_accuracy": 0.70},
                          {"status": "ok", "seed": 1, "val_accuracy": 0.78}])
    assert c["pairs"] == 2 and c["differences"] == pytest.approx({0: 10.0, 1: 0.5})


def test_search_quality_scores_a_child_against_the_reference_of_its_generation():
    sq = _module("search_quality")

    from alphac.search.journal import Rung

    class Ind:
        def __init__(self, id, parent, acc, generation, references=()):
            self.id, self.parent, self.val_accuracy, self.status = id, parent, acc, "done"
            self.extra, self.references = {"generation": generation}, tuple(references)

    seed = Ind(1, None, 0.80, 0, [Rung(1, 0.82, 1.0)])
    inds = [seed, Ind(2, 1, 0.81, 1), Ind(3, 2, 0.83, 2)]
    scores = sq.equal_training_scores(inds)
    # generation 1 loses the seed's 2-point fine-tune gain; generation 2 the deepest (1) stands in
    assert scores == pytest.approx({1: 0.80, 2: 0.79, 3: 0.81})
    assert sq.kendall_tau([(1, 1), (2, 2), (3, 3)]) == 1.0
    assert sq.kendall_tau([(1, 3), (2, 2), (3, 1)]) == -1.0
    assert sq.permutation_p([5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0, 4.0], rounds=4000) < 0.05
    assert sq.permutation_p([1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], rounds=4000) > 0.9


def test_an_alphac_run_counts_each_final_fine_tune_it_was_given(monkeypatch):
    """A front child retrained k times over (to end as trained as the deepest) counts k final
    recipes of images; the seed's training, the children's and the references' count once."""
    from types import SimpleNamespace

    inds = [SimpleNamespace(parent=None, extra={"images": 1000}),
            SimpleNamespace(parent=1, extra={"images": 64}),
            SimpleNamespace(parent=2, extra={"images": 64})]
    monkeypatch.setattr(vs, "_individuals", lambda run_dir: inds)
    report = {"schedules": {"proxy": {"steps": 1, "batch_size": 64},
                            "final": {"steps": 10, "batch_size": 64}},
              "references": {"0": {}, "1": {}, "2": {}},
              "retrained": [{"id": 1, "final_fine_tunes": 1}, {"id": 2, "final_fine_tunes": 2},
                            {"id": 3}]}
    images = vs._run_images(Path("unused"), report)
    assert images == {"seed": 1000, "children": 128, "references": 128, "final": 4 * 640,
                      "total": 1000 + 128 + 128 + 2560}


def test_equal_images_give_pruning_the_fine_tunes_that_match_alphacs_total():
    """Pruning's seed plus its fine-tunes (whole batches) come nearest alphac's images; a total
    no larger than the seed's training is an error that says so."""
    per = vs.equal_finetune_images(252_544, 80_000, 6, 128)
    assert per % 128 == 0 and per == 28_800
    assert abs(80_000 + 6 * per - 252_544) <= 6 * 64
    with pytest.raises(ValueError, match="nothing is left"):
        vs.equal_finetune_images(80_000, 80_000, 6, 128)


def test_a_recipe_shown_by_steps_carries_no_epochs():
    """The steps decide a fine-tune's length, so the report does not print the seed's epochs
    beside them; a recipe by epochs still shows its epochs."""
    by_steps = {"epochs": 8.0, "steps": 225, "batch_size": 128, "lr": 0.01}
    assert vs._short(by_steps) == "steps=225, batch_size=128, lr=0.01"
    assert vs._short(by_steps, per_model=True) == "batch_size=128, lr=0.01"
    assert vs._short({"epochs": 3.0, "batch_size": 128}) == "epochs=3.0, batch_size=128"


def test_a_partial_rerun_keeps_the_models_and_sides_it_did_not_run(tmp_path, monkeypatch):
    """Rerunning one side of one model replaces just that entry in the results file."""
    import json

    monkeypatch.setattr(vs, "HERE", tmp_path)
    monkeypatch.setattr(vs, "render", lambda result: "rendered")
    (tmp_path / "results").mkdir()
    old = {"models": ["a", "b"], "pruning": {"a": {"n": 1}, "b": {"n": 2}},
           "alphac": {"a": {"n": 3}, "b": {"n": 4}}}
    (tmp_path / "results" / "s.json").write_text(json.dumps(old))
    new = {"models": ["b"], "pruning": {"b": {"n": 5}}}
    vs._save(new, "s", ["pruning"], 0.0)
    saved = json.loads((tmp_path / "results" / "s.json").read_text())
    assert saved["pruning"] == {"a": {"n": 1}, "b": {"n": 5}}
    assert saved["alphac"] == old["alphac"] and saved["models"] == ["a", "b"]


def test_search_quality_width_ratios_reach_the_driver_mutations(monkeypatch):
    """``--width-ratios`` makes the search driver's width mutations draw from the given ratios
    (zoo:small_cnn's convs narrowed to 0.875 of their width, rounded to its grain)."""
    import alphac.search.driver as driver
    from alphac.frontends import load
    from alphac.passes.transform.width_mutation import new_width

    sq = _module("search_quality")
    monkeypatch.setattr(driver, "mutate", driver.mutate)  # undone after the test
    sq.use_width_ratios((0.875,))
    sq.use_width_ratios((0.875,))  # a second call replaces the config, does not stack
    assert driver.mutate.keywords["config"].width_ratios == (0.875,)
    t = load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10)
    child = driver.mutate(t.gm, t.blocks, t.example_inputs, seed=0, kind="width")
    widths = child.record.achieved["widths"]
    assert widths and all(new == new_width(old, 0.875) for old, new in widths.values())


def test_mutation_quality_splits_children_by_their_params_change():
    """Within 1% of the parent's params is the same size; a failed synthesis is no child; a
    diverged child counts at chance."""
    rows = [{"status": "ok", "params_ratio": 0.995, "val_accuracy": 0.85},
            {"status": "ok", "params_ratio": 1.0, "val_accuracy": 0.87},
            {"status": "ok", "params_ratio": 0.7, "val_accuracy": 0.80},
            {"status": "diverged", "params_ratio": 0.5, "val_accuracy": None},
            {"status": "ok", "params_ratio": 1.2, "val_accuracy": 0.86},
            {"status": "synthesis_failed", "params_ratio": 0.1, "val_accuracy": None}]
    groups = mq.by_params_change(rows, 0.86)
    assert [g["children"] for g in groups.values()] == [2, 2, 1]
    assert groups["same"]["retention_median"] == pytest.approx(0.0)
    assert groups["smaller"]["retention_median"] == pytest.approx((-6 - 76) / 2)
    assert groups["smaller"]["params_ratio_median"] == pytest.approx(0.6)
    assert groups["larger"]["retention_median"] == pytest.approx(0.0)
