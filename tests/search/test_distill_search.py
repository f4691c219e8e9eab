"""The search distils each child's changed parts on its parent's values before the fine-tune
(``distill_steps``), journals what it did, writes the distilled start weights, and resumes."""

from __future__ import annotations

from pathlib import Path

import torch

import alphac
from alphac.codegen import inherit_weights
from alphac.frontends import load
from alphac.passes.transform.mutate import mutate
from alphac.search.journal import Journal
from alphac.search.layout import RunLayout

TINY = dict(target="fashion-mnist", steps=8, final_steps=4, subset=800, executor="inline",
            device="cpu", val_images=200, test_images=200, seed_steps=40)


def _children(run_dir: Path):
    with Journal.open(run_dir, readonly=True) as journal:
        return [t for t in journal.individuals() if t.parent is not None
                and t.mutation and "kind" in t.mutation]


def test_children_start_from_distilled_weights_and_say_so(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = alphac.optimize("zoo:small_cnn", out=out, candidates=2, distill_steps=25, **TINY)
    assert result.report["settings"]["distill_steps"] == 25
    distilled = [t for t in _children(out) if t.mutation.get("distill", {}).get("steps")]
    assert distilled, [t.mutation.get("distill") for t in _children(out)]
    trial = distilled[0]
    info = trial.mutation["distill"]
    assert info["images"] == (info["steps"] + 1) * 64 and not info["diverged"]
    assert all(a <= b for a, b in zip(info["error_after"], info["error_before"], strict=True))
    # the start weights are the inherited ones with the parts distilled: rebuild the child
    traced = load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10, seed=0)
    assert trial.parent == 1, "a first-generation child (the seed is its parent)"
    child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=trial.seed)
    assert child.record.fingerprint_child == trial.fingerprint
    layout = RunLayout(out)
    trained = torch.load(layout.path(layout.trained(1)), weights_only=True)
    inherit_weights(child.gm, trained, plan=child.record.weight_plan)
    plain = child.gm.state_dict()
    written = torch.load(out / trial.weights_path, weights_only=True)
    parts = {n for b in child.record.boundaries for n in b.part.nodes}
    modules = {str(n.target) for n in child.gm.graph.nodes
               if n.op == "call_module" and n.name in parts}
    changed = {k for k in plain if not torch.equal(plain[k], written[k])}
    assert changed, "distillation moved the parts' weights"
    assert all(any(k.startswith(m + ".") for m in modules) for k in changed), \
        "only the changed parts' weights moved"


def test_distill_steps_zero_turns_it_off_and_resume_keeps_the_setting(tmp_path: Path) -> None:
    out = tmp_path / "run"
    alphac.optimize("zoo:small_cnn", out=out, candidates=1, distill_steps=0, **TINY)
    assert all("distill" not in t.mutation for t in _children(out))
    again = alphac.optimize("zoo:small_cnn", out=out, candidates=2, distill_steps=50,
                            resume=True, **TINY)
    assert again.report["settings"]["distill_steps"] == 0  # what defines the run is kept
    assert all("distill" not in t.mutation for t in _children(out))


def test_the_default_distillation_follows_the_proxy():
    from alphac.runtime.recipe import Recipe
    from alphac.search.driver import SearchSettings
    from alphac.search.starts import DISTILL_STEPS_MAX, distill_steps

    assert distill_steps(SearchSettings(proxy=Recipe(steps=5, batch_size=8))) == 15
    one_epoch = Recipe(epochs=1.0, batch_size=64, subset=6000)  # 94 steps
    assert distill_steps(SearchSettings(proxy=one_epoch)) == 281
    assert distill_steps(SearchSettings(proxy=Recipe(steps=1000))) == DISTILL_STEPS_MAX
    assert distill_steps(SearchSettings(distill_steps=7)) == 7
    assert distill_steps(SearchSettings(distill_steps=0)) == 0
