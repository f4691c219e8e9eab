"""The search distils each child's changed parts on its parent's values before the fine-tune
(``distill_steps``): in the child's worker where the names carry over, else in the driver;
it journals what it did and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import alphac
from alphac.codegen import generate_code, inherit_weights
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


def test_children_are_distilled_in_their_worker_as_the_driver_would(tmp_path: Path) -> None:
    """The child's weights.pt is its inherited start; its worker distils the changed parts on
    the parent before the fine-tune and reports it; distilling here with the driver's own
    graphs on the same images gives the same errors (the names carried over exactly)."""
    from alphac.runtime.distill import distill
    from alphac.runtime.train import load_task_data
    from alphac.search.driver import SearchSettings

    out = tmp_path / "run"
    result = alphac.optimize("zoo:small_cnn", out=out, candidates=2, distill_steps=25, **TINY)
    assert result.report["settings"]["distill_steps"] == 25
    # the final retraining ends every model at the front's deepest generation of fine-tunes
    deepest = max(r.generation for r in result.retrained)
    refs = [int(g) for g in result.sections["references"] if int(g) <= deepest]
    for row in result.retrained:
        done = max(refs) if row.id == result.seed_model.id else row.generation
        assert row.final_fine_tunes == deepest - done + 1, (row.id, row.generation, refs)
    distilled = [t for t in _children(out) if t.mutation.get("distill", {}).get("steps")]
    assert distilled, [t.mutation.get("distill") for t in _children(out)]
    trial = distilled[0]
    assert trial.mutation["distill"] == {"where": "worker", "steps": 25}
    info = trial.extra["distill"]
    assert info["where"] == "worker" and info["steps"] == 25 and not info["diverged"]
    assert info["images"] == (info["steps"] + 1) * 64
    assert all(a < b for a, b in zip(info["error_after"], info["error_before"], strict=True))
    # weights.pt: exactly the inherited start (the worker distils, the driver only inherits)
    traced = load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10, seed=0)
    assert trial.parent == 1, "a first-generation child (the seed is its parent)"
    child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=trial.seed)
    assert child.record.fingerprint_child == trial.fingerprint
    layout = RunLayout(out)
    trained = torch.load(layout.path(layout.trained(1)), weights_only=True)
    inherit_weights(child.gm, trained, plan=child.record.weight_plan)
    plain = {k: v.clone() for k, v in child.gm.state_dict().items()}
    written = torch.load(out / trial.weights_path, weights_only=True)
    assert all(torch.equal(plain[k], written[k]) for k in plain)
    # the same distillation in this process, on the driver's graphs
    with Journal.open(out, readonly=True) as journal:
        settings = SearchSettings(**{k: v for k, v in journal.settings.items()
                                     if k in SearchSettings.__dataclass_fields__})
    data = load_task_data("fashion-mnist", settings.proxy, seed=settings.seed, device="cpu")
    teacher = traced.gm
    teacher.load_state_dict(trained)
    here = distill(teacher, child.gm, child.record.boundaries, data, steps=25, seed=trial.seed)
    assert here.error_before == pytest.approx(info["error_before"], abs=1e-4)
    assert here.error_after == pytest.approx(info["error_after"], abs=1e-3)
    parts = {n for b in child.record.boundaries for n in b.part.nodes}
    modules = {str(n.target) for n in child.gm.graph.nodes
               if n.op == "call_module" and n.name in parts}
    changed = {k for k, v in child.gm.state_dict().items() if not torch.equal(plain[k], v)}
    assert changed and all(any(k.startswith(m + ".") for m in modules) for k in changed), \
        "only the changed parts' weights moved"


def test_a_child_whose_code_does_not_trace_back_is_distilled_in_the_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Names carry over only when the generated code traces back node for node; where they
    would not, the driver distils and writes the distilled weights, as before."""
    from alphac.search import starts

    traced = load("zoo:small_cnn", (2, 1, 28, 28), num_classes=10, seed=0)
    child = next(c for c in (mutate(traced.gm, traced.blocks, traced.example_inputs, seed=s)
                             for s in range(20)) if c.record.kind == "rewrite"
                 and len(c.gm.graph.nodes) != len(traced.gm.graph.nodes))
    names = starts.worker_names(child.gm, generate_code(child.gm), traced.example_inputs)
    assert names is not None and set(names) == {n.name for n in child.gm.graph.nodes}
    assert starts.worker_names(child.gm, generate_code(traced.gm), traced.example_inputs) is None

    monkeypatch.setattr(starts, "worker_names", lambda *args: None)
    out = tmp_path / "run"
    alphac.optimize("zoo:small_cnn", out=out, candidates=2, distill_steps=25, **TINY)
    distilled = [t for t in _children(out) if t.mutation.get("distill")]
    assert distilled and all(t.mutation["distill"]["where"] == "driver" for t in distilled)
    assert all("distill" not in t.extra for t in distilled)
    info = distilled[0].mutation["distill"]
    assert info["steps"] == 25 and info["error_after"] < info["error_before"]


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
