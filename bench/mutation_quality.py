"""Mutation quality, paired by seed: how much of a trained parent's accuracy a child keeps.

One well-trained parent (``zoo:small_cnn`` on real Fashion-MNIST, built and trained under
``--seed`` with :data:`PARENT_RECIPE`, cached under ``.bench/mutation_quality/`` as a state dict
keyed by its settings). For each mutator in ``property``, ``random``, ``enumerate`` and each
mutation kind in ``--kinds`` (default ``rewrite``), ``--k`` paired seeds (default 48; seed ``s``
is the same for every mutator): ``mutate(gm, blocks, example_inputs, seed=s, mutator=m,
kind=kind)``; a :class:`~alphac.errors.SynthesisFailed` counts as a synthesis failure.

Each child inherits the parent's trained weights with :func:`alphac.codegen.inherit_weights`:
with the mutation's ``record.weight_plan`` where the record has one (the channel plan), else by
name and shape only; the report says which. Before any training its validation accuracy is
measured with that inheritance and, when a non-empty plan exists, with name-only inheritance too.
With ``--distill-steps N`` each child's changed parts are then distilled on the parent's values
at their boundaries (:func:`alphac.runtime.distill.distill`, :data:`DISTILL`) and measured again.
Then every child, and the parent itself under ``--parent-seeds`` seeds, gets the same short gentle
fine-tune (:data:`FINETUNE_RECIPE`, seed ``s`` for child ``s``) and is evaluated on the validation
split (the test split is never read).

Per mutator: *retention* (child validation accuracy minus the parent's mean validation accuracy
after the same fine-tune, in points) median and IQR, the fraction of children within 1 and 2
points (retention >= -1, >= -2), the collapse rate (accuracy below 50%), the params ratio median,
the synthesis failure rate; paired over the seeds where both mutators made a child, the Wilcoxon
signed-rank p-value of property vs random and property vs enumerate and a bootstrap 95% CI of the
median paired difference; the parent's fine-tune noise (std over its seeds). A child whose
fine-tune diverges counts at chance accuracy (10%) and as a collapse.

    python bench/mutation_quality.py               # K=48 (long: about 1 min per child on 2 cores)
    python bench/mutation_quality.py --k 12        # a shorter check
    python bench/mutation_quality.py --quick       # a smoke run (K=4, few steps)

Children's results are cached per (settings, sources of the mutation code, mutator, kind, seed)
under ``.bench/mutation_quality/``, so an interrupted run resumes; ``--fresh`` ignores the cache.
Writes ``bench/results/mutation_quality.md`` and ``.json`` (``--out-name`` changes the stem).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = "fashion-mnist"
MODEL = "zoo:small_cnn"
EXAMPLE_SHAPE = (2, 1, 28, 28)
MUTATORS = ("property", "random", "enumerate")
CHANCE = 0.1
COLLAPSE = 0.5
#: Children within this fraction of the parent's params count as the same size (a dropped bias
#: or a norm's affine is a rounding error of the model).
SAME_PARAMS = 0.01

#: The parent's training: 5 epochs of a 10,000-image subset at batch 128, peak lr 0.1.
PARENT_RECIPE: dict[str, Any] = {"epochs": 5.0, "batch_size": 128, "lr": 0.1, "subset": 10_000}
#: The fine-tune every child and the parent get: 150 steps at batch 64, lr 0.01, cosine, no
#: warm-up, no augmentation (9,600 images, about a pass over the subset).
FINETUNE_RECIPE: dict[str, Any] = {"steps": 150, "batch_size": 64, "lr": 0.01, "warmup": 0.0,
                                   "schedule": "cosine", "augment": False, "subset": 10_000}
#: Block-wise distillation's settings (besides ``--distill-steps``).
DISTILL: dict[str, Any] = {"batch_size": 64, "lr": 3e-3}
QUICK_PARENT: dict[str, Any] = {"epochs": 1.0, "batch_size": 128, "lr": 0.1, "subset": 3_000}
QUICK_FINETUNE: dict[str, Any] = {**FINETUNE_RECIPE, "steps": 15, "subset": 3_000}
#: The sources whose changes invalidate cached children.
MUTATION_SOURCES = ("alphac/codegen.py", "alphac/channels.py", "passes/transform",
                    "runtime/distill.py")


# --- pure statistics (tests/test_bench_studies.py) ----------------------------------------------

def quartiles(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(q1, median, q3)`` of ``values`` (linear interpolation, numpy's default); None if empty."""
    values = sorted(float(v) for v in values)
    if not values:
        return None

    def q(p: float) -> float:
        pos = p * (len(values) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return q(0.25), q(0.5), q(0.75)


def iqr(values: Sequence[float]) -> float | None:
    """The interquartile range ``q3 - q1``; None if empty."""
    quart = quartiles(values)
    return None if quart is None else quart[2] - quart[0]


def fraction_at_least(values: Sequence[float], floor: float) -> float | None:
    """The fraction of ``values`` that are ``>= floor``; None if empty."""
    return sum(v >= floor - 1e-12 for v in values) / len(values) if values else None


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> dict[int, float]:
    """``a[s] - b[s]`` for every seed ``s`` present (not None) in both, in seed order."""
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))
            if a[s] is not None and b[s] is not None}


def bootstrap_median_ci(values: Sequence[float], *, n_boot: int = 10_000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float] | None:
    """A percentile bootstrap confidence interval of the median of ``values``; None if empty."""
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    medians = np.median(data[rng.integers(0, data.size, size=(n_boot, data.size))], axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(medians, alpha)), float(np.quantile(medians, 1 - alpha))


def wilcoxon_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired ``differences`` (zeros dropped); None
    when fewer than one non-zero difference (the test is undefined)."""
    nonzero = [d for d in differences if abs(d) > 1e-12]
    if not nonzero:
        return None
    from scipy.stats import wilcoxon

    return float(wilcoxon(nonzero).pvalue)


def _accuracy(row: Mapping[str, Any]) -> float:
    """A made child's fine-tuned validation accuracy; a diverged one counts at chance."""
    return CHANCE if row["val_accuracy"] is None else row["val_accuracy"]


def summarize(children: Iterable[Mapping[str, Any]], parent_reference: float) -> dict[str, Any]:
    """Per-mutator figures from child rows (``status``, ``val_accuracy``, ``params_ratio``,
    ``val_before``, ``val_before_name_only``); accuracies are fractions, retention in points."""
    rows = list(children)
    made = [r for r in rows if r["status"] in ("ok", "diverged")]
    failed = [r for r in rows if r["status"] == "synthesis_failed"]
    errors = [r for r in rows if r["status"] == "error"]
    acc = [_accuracy(r) for r in made]
    retention = [100 * (a - parent_reference) for a in acc]
    quart = quartiles(retention)
    before = [r["val_before"] for r in made if r.get("val_before") is not None]
    name_only = [r["val_before_name_only"] for r in made
                 if r.get("val_before_name_only") is not None]
    distilled = [r["val_distilled"] for r in made if r.get("val_distilled") is not None]
    return {
        "tried": len(rows), "made": len(made), "synthesis_failed": len(failed),
        "errors": len(errors), "diverged": sum(r["status"] == "diverged" for r in made),
        "synthesis_failure_rate": len(failed) / len(rows) if rows else None,
        "retention_median": None if quart is None else quart[1],
        "retention_q1": None if quart is None else quart[0],
        "retention_q3": None if quart is None else quart[2],
        "retention_iqr": iqr(retention),
        "within_1": fraction_at_least(retention, -1.0),
        "within_2": fraction_at_least(retention, -2.0),
        "collapse_rate": (sum(a < COLLAPSE for a in acc) / len(acc)) if acc else None,
        "params_ratio_median": (statistics.median(r["params_ratio"] for r in made)
                                if made else None),
        "val_before_median": statistics.median(before) if before else None,
        "val_before_name_only_median": statistics.median(name_only) if name_only else None,
        "val_distilled_median": statistics.median(distilled) if distilled else None,
        "above_40_distilled": fraction_at_least(distilled, 0.4),
        "above_40_before": fraction_at_least(before, 0.4),
        "plan_used": sum(bool(r.get("plan_used")) for r in made),
        "plan_nonempty": sum(bool(r.get("plan_steps")) for r in made),
    }


def by_params_change(children: Iterable[Mapping[str, Any]],
                     parent_reference: float) -> dict[str, dict[str, Any]]:
    """The made children split by what the mutation did to the params: ``smaller`` or
    ``larger`` than the parent's by more than :data:`SAME_PARAMS` (a fraction), else ``same``;
    per group the count, the retention median (points) and the params ratio median. A mutator
    that mostly keeps the params says little about shrinking."""
    groups: dict[str, list[Mapping[str, Any]]] = {"smaller": [], "same": [], "larger": []}
    for r in children:
        if r["status"] not in ("ok", "diverged"):
            continue
        ratio = r["params_ratio"]
        groups["same" if abs(ratio - 1) <= SAME_PARAMS else "smaller" if ratio < 1
               else "larger"].append(r)
    out = {}
    for name, rows in groups.items():
        retention = [100 * (_accuracy(r) - parent_reference) for r in rows]
        out[name] = {"children": len(rows),
                     "retention_median": statistics.median(retention) if rows else None,
                     "params_ratio_median": (statistics.median(r["params_ratio"] for r in rows)
                                             if rows else None)}
    return out


def compare(a_rows: Iterable[Mapping[str, Any]], b_rows: Iterable[Mapping[str, Any]], *,
            seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two mutators' fine-tuned accuracies over the seeds where both made a
    child: the differences (points), their median, bootstrap 95% CI and Wilcoxon p-value."""
    def by_seed(rows: Iterable[Mapping[str, Any]]) -> dict[int, float]:
        return {r["seed"]: 100 * _accuracy(r) for r in rows if r["status"] in ("ok", "diverged")}

    diffs = paired_differences(by_seed(a_rows), by_seed(b_rows))
    values = list(diffs.values())
    return {"pairs": len(values),
            "median_difference": statistics.median(values) if values else None,
            "ci95": bootstrap_median_ci(values, seed=seed),
            "wilcoxon_p": wilcoxon_p(values), "differences": diffs}


# --- the experiment -----------------------------------------------------------------------------

def _key(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def sources_digest() -> str:
    """A digest of the mutation and inheritance code (cached children are stale when it moves)."""
    h = hashlib.sha256()
    for entry in MUTATION_SOURCES:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                h.update(str(f.relative_to(ROOT)).encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _recipe(fields: Mapping[str, Any]):
    from alphac.runtime.recipe import Recipe

    return Recipe(**fields)


def _val_accuracy(model, data) -> float:
    from alphac.runtime.evaluate import evaluate
    from alphac.runtime.pipeline import Normalizer

    model.to(data.device)
    return evaluate(model, data.val, normalize=Normalizer(data.target, data.device, False)).accuracy


def trained_parent(traced, data, *, recipe: Mapping[str, Any], seed: int, cache: Path
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parent's trained state dict and its metrics, from the cache when the settings match."""
    import torch

    from alphac.runtime.train import train_and_evaluate

    key = _key({"model": MODEL, "shape": EXAMPLE_SHAPE, "recipe": dict(recipe), "seed": seed})
    path = cache / f"parent-{key}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["state"], json.loads(saved["metrics"])
    gm = copy.deepcopy(traced.gm)
    began = time.monotonic()
    metrics = train_and_evaluate(gm, TARGET, _recipe(recipe), seed=seed, data=data, test=False)
    info = {"val_accuracy": metrics.val_accuracy, "steps": metrics.steps,
            "epochs": metrics.epochs, "seconds": round(time.monotonic() - began, 1),
            "params": metrics.params}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in gm.state_dict().items()}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "metrics": json.dumps(info)}, path)
    return state, info


def child_row(traced, parent_state, data, *, mutator: str, kind: str, seed: int,
              finetune: Mapping[str, Any], distill_steps: int = 0) -> dict[str, Any]:
    """Mutate, inherit, measure before training, distil the changed parts on the parent's
    boundary values (``distill_steps`` > 0) and measure again, fine-tune, measure: one child's
    JSON row."""
    from alphac.codegen import inherit_weights
    from alphac.errors import SynthesisFailed
    from alphac.passes.transform.mutate import mutate
    from alphac.runtime.distill import distill
    from alphac.runtime.train import train_and_evaluate

    row: dict[str, Any] = {"mutator": mutator, "kind": kind, "seed": seed}
    began = time.monotonic()
    try:
        child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=seed,
                       mutator=mutator, kind=kind)
    except SynthesisFailed as exc:
        return {**row, "status": "synthesis_failed", "reason": str(exc)[:300],
                "seconds": round(time.monotonic() - began, 1)}
    except Exception as exc:  # noqa: BLE001 - a bug, recorded (the study carries on)
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300],
                "seconds": round(time.monotonic() - began, 1)}
    record = child.record
    row.update(mutate_seconds=round(time.monotonic() - began, 2), block=record.block,
               actual_kind=record.kind, params_parent=record.params_parent,
               params_child=record.params_child,
               params_ratio=record.params_child / record.params_parent)
    has_plan = hasattr(record, "weight_plan")
    plan = tuple(getattr(record, "weight_plan", None) or ())
    name_only_gm = copy.deepcopy(child.gm) if plan else None
    try:
        if has_plan:
            report = inherit_weights(child.gm, parent_state, plan=plan)
        else:
            report = inherit_weights(child.gm, parent_state)
        row.update(plan_used=has_plan, plan_steps=len(plan), inherited=len(report.copied),
                   not_inherited=len(report.skipped), val_before=_val_accuracy(child.gm, data))
        if name_only_gm is not None:
            inherit_weights(name_only_gm, parent_state)
            row["val_before_name_only"] = _val_accuracy(name_only_gm, data)
        else:  # no plan (or an empty one): name-only inheritance is the same thing
            row["val_before_name_only"] = row["val_before"]
        if distill_steps:
            parent = copy.deepcopy(traced.gm)
            parent.load_state_dict(parent_state)
            done = distill(parent, child.gm, record.boundaries, data, steps=distill_steps,
                           seed=seed, **DISTILL)
            row.update(distill=done.to_dict(), val_distilled=_val_accuracy(child.gm, data))
        metrics = train_and_evaluate(child.gm, TARGET, _recipe(finetune), seed=seed, data=data,
                                     test=False, raise_on_divergence=False)
    except Exception as exc:  # noqa: BLE001
        return {**row, "status": "error", "reason": f"{type(exc).__name__}: {exc}"[:300],
                "seconds": round(time.monotonic() - began, 1)}
    row.update(status="ok" if metrics.status == "ok" else "diverged",
               val_accuracy=metrics.val_accuracy, train_seconds=metrics.seconds,
               seconds=round(time.monotonic() - began, 1))
    return row


def parent_finetunes(traced, parent_state, data, *, seeds: Sequence[int],
                     finetune: Mapping[str, Any]) -> list[float]:
    """The parent's validation accuracy after the children's fine-tune, one per seed."""
    from alphac.runtime.train import train_and_evaluate

    out = []
    for s in seeds:
        gm = copy.deepcopy(traced.gm)
        gm.load_state_dict(parent_state)
        out.append(train_and_evaluate(gm, TARGET, _recipe(finetune), seed=s, data=data,
                                      test=False).val_accuracy)
    return out


# --- report -------------------------------------------------------------------------------------

def _pts(value: float | None, signed: bool = True) -> str:
    return "-" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2g}" if value < 0.01 else f"{value:.3f}")


def render(result: Mapping[str, Any]) -> str:
    """The Markdown report (``result`` as written to JSON)."""
    parent = result["parent"]
    lines = ["# Mutation quality: paired children of one trained parent", "",
             f"Written by `python bench/mutation_quality.py {' '.join(result['argv'])}` "
             f"({result['seconds']:.0f} s on {result['machine']}).", "",
             f"Parent: `{MODEL}`, {parent['params']} params, trained with "
             f"`{_short(result['parent_recipe'])}` (seed {result['seed']}): validation "
             f"{_pct(parent['val_accuracy'])}. Children: K={result['k']} paired seeds per "
             f"mutator, kinds {', '.join(result['kinds'])}; every child and the parent get the "
             f"fine-tune `{_short(result['finetune_recipe'])}`; validation split "
             f"({result['data']['val']} images, outside the {result['data']['train']}-image "
             "training subset); the test split is not read.", "",
             f"Parent after the same fine-tune over {len(parent['finetune_val'])} seeds: mean "
             f"{_pct(parent['finetune_mean'])}, std {100 * parent['finetune_std']:.2f} points "
             "(the fine-tune noise); retention is measured against that mean.", "",
             f"Weight inheritance: {result['inheritance']}.", ""]
    distill = result.get("distill")
    lines += [f"Block-wise distillation before the fine-tune: `{_short(distill)}` "
              "(`alphac.runtime.distill.distill` on the record's boundaries; the parent sees "
              f"{distill['steps'] * distill['batch_size']:,} training images forward, only the "
              "changed parts train); `val distilled` is measured after it." if distill else
              "No distillation before the fine-tune.", ""]
    for kind in result["kinds"]:
        per = result["summary"][kind]
        lines += [f"## kind = {kind}", "",
                  "| mutator | made / tried | synth. fail | retention median (pts) | IQR "
                  "[q1, q3] | within 1 pt | within 2 pts | collapse (<50%) | params ratio "
                  "median | val before ft (plan) | val before ft (name only) | val distilled | "
                  "above 40% before / distilled |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in result["mutators"]:
            s = per[m]
            lines.append(
                f"| {m} | {s['made']} / {s['tried']} | {_pct(s['synthesis_failure_rate'])} | "
                f"{_pts(s['retention_median'])} | {_pts(s['retention_iqr'], False)} "
                f"[{_pts(s['retention_q1'])}, {_pts(s['retention_q3'])}] | "
                f"{_pct(s['within_1'])} | {_pct(s['within_2'])} | {_pct(s['collapse_rate'])} | "
                f"{_ratio(s['params_ratio_median'])} | "
                f"{_pct(s['val_before_median'])} | {_pct(s['val_before_name_only_median'])} | "
                f"{_pct(s.get('val_distilled_median'))} | {_pct(s.get('above_40_before'))} / "
                f"{_pct(s.get('above_40_distilled'))} |")
        lines += ["", "By what the mutation did to the params (smaller or larger by more than "
                  f"{SAME_PARAMS:.0%}; children: retention median at params ratio median):", "",
                  "| mutator | smaller | same | larger |", "|---|---|---|---|"]
        for m in result["mutators"]:
            rows = [r for r in result["children"] if r["kind"] == kind and r["mutator"] == m]
            groups = by_params_change(rows, parent["finetune_mean"])
            lines.append(f"| {m} | " + " | ".join(
                f"{g['children']}: {_pts(g['retention_median'])} at "
                f"{_ratio(g['params_ratio_median'])}" if g["children"] else "0"
                for g in groups.values()) + " |")
        lines += ["", "Paired over seeds where both made a child (fine-tuned validation "
                  "accuracy, points):", "",
                  "| comparison | pairs | median difference | bootstrap 95% CI | Wilcoxon p |",
                  "|---|---|---|---|---|"]
        for name, c in result["paired"][kind].items():
            ci = c["ci95"]
            lines.append(f"| {name} | {c['pairs']} | {_pts(c['median_difference'])} | "
                         f"{'-' if ci is None else f'[{ci[0]:+.2f}, {ci[1]:+.2f}]'} | "
                         f"{_p(c['wilcoxon_p'])} |")
        lines.append("")
        errors = [r for r in result["children"] if r["kind"] == kind and r["status"] == "error"]
        if errors:
            lines += ["Errors (bugs, not synthesis failures):", ""]
            lines += [f"- {r['mutator']} seed {r['seed']}: {r['reason']}" for r in errors[:10]]
            lines.append("")
    return "\n".join(lines) + "\n"


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _short(recipe: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in recipe.items())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=48, help="paired seeds per mutator (default 48)")
    parser.add_argument("--kinds", default="rewrite",
                        help="comma-separated mutation kinds (default rewrite; e.g. width)")
    parser.add_argument("--mutators", default=",".join(MUTATORS))
    parser.add_argument("--parent-seeds", type=int, default=8,
                        help="fine-tunes of the parent itself, for the noise (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="the parent's seed")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default 150)")
    parser.add_argument("--distill-steps", type=int, default=0,
                        help="block-wise distillation steps before the fine-tune (default 0: "
                             "none; the search's default is 300)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (K=4, few steps)")
    parser.add_argument("--fresh", action="store_true", help="ignore cached children")
    parser.add_argument("--out-name", default=None,
                        help="results stem under bench/results (default mutation_quality, "
                             "mutation_quality_quick with --quick)")
    parser.add_argument("--render", action="store_true",
                        help="rewrite bench/results/STEM.md from STEM.json (no run)")
    args = parser.parse_args(argv)
    stem = args.out_name or ("mutation_quality_quick" if args.quick else "mutation_quality")
    if args.render:
        source = HERE / "results" / f"{stem}.json"
        if not source.is_file():
            parser.error(f"--render needs {_rel(source)}: run the study with --out-name {stem} "
                         "first")
        (HERE / "results" / f"{stem}.md").write_text(render(json.loads(source.read_text())))
        print(f"wrote {_rel(source.with_suffix('.md'))}")
        return 0
    import platform

    import torch

    from alphac.frontends import load
    from alphac.runtime.train import load_task_data

    kinds = [k for k in args.kinds.split(",") if k]
    mutators = [m for m in args.mutators.split(",") if m]
    k = 4 if args.quick else args.k
    parent_recipe = dict(QUICK_PARENT if args.quick else PARENT_RECIPE)
    finetune = dict(QUICK_FINETUNE if args.quick else FINETUNE_RECIPE)
    if args.steps:
        finetune["steps"] = args.steps
    parent_seeds = list(range(2 if args.quick else args.parent_seeds))
    cache = ROOT / ".bench" / "mutation_quality"
    began = time.monotonic()
    data = load_task_data(TARGET, _recipe(parent_recipe), seed=args.seed)
    traced = load(MODEL, EXAMPLE_SHAPE, num_classes=10, seed=args.seed)
    parent_state, parent_info = trained_parent(traced, data, recipe=parent_recipe,
                                               seed=args.seed, cache=cache)
    print(f"parent: val {parent_info['val_accuracy']:.4f} ({parent_info['seconds']} s)",
          flush=True)
    parent_val = parent_finetunes(traced, parent_state, data, seeds=parent_seeds,
                                  finetune=finetune)
    reference = statistics.fmean(parent_val)
    print(f"parent fine-tuned: {[round(v, 4) for v in parent_val]}", flush=True)
    digest = sources_digest()
    distill_steps = min(args.distill_steps, 20) if args.quick else args.distill_steps
    settings = {"parent": parent_recipe, "finetune": finetune, "seed": args.seed,
                "sources": digest}
    if distill_steps:
        settings["distill"] = {**DISTILL, "steps": distill_steps}
    settings_key = _key(settings)
    child_cache = cache / f"children-{settings_key}"
    child_cache.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        for s in range(k):
            for m in mutators:
                path = child_cache / f"{kind}-{m}-{s}.json"
                if path.is_file() and not args.fresh:
                    row = json.loads(path.read_text())
                else:
                    row = child_row(traced, parent_state, data, mutator=m, kind=kind, seed=s,
                                    finetune=finetune, distill_steps=distill_steps)
                    path.write_text(json.dumps(row))
                rows.append(row)
                acc = row.get("val_accuracy")
                print(f"{kind} {m:9s} seed {s:3d}: {row['status']:16s} "
                      f"before {row.get('val_before', float('nan')):.4f} "
                      f"distilled {row.get('val_distilled', float('nan')):.4f} "
                      f"after {acc if acc is not None else float('nan'):.4f} "
                      f"params {row.get('params_ratio', float('nan')):.3f} "
                      f"({row.get('seconds')} s)", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    paired: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        of = {m: [r for r in rows if r["kind"] == kind and r["mutator"] == m] for m in mutators}
        summary[kind] = {m: summarize(of[m], reference) for m in mutators}
        paired[kind] = {f"property - {other}": compare(of["property"], of[other])
                        for other in mutators if other != "property" and "property" in of}
    made = [r for r in rows if r["status"] in ("ok", "diverged")]
    used = sum(bool(r.get("plan_used")) for r in made)
    nonempty = sum(bool(r.get("plan_steps")) for r in made)
    inheritance = (f"`inherit_weights(child.gm, parent_state, plan=record.weight_plan)` for "
                   f"{used} of {len(made)} children (a non-empty plan for {nonempty}); name and "
                   f"shape only for the rest" if used else
                   "name and shape only (`inherit_weights(child.gm, parent_state)`: the records "
                   "have no `weight_plan`)")
    result = {
        "argv": argv, "machine": f"{platform.machine()}, {torch.get_num_threads()} torch "
                                 f"threads, {data.device}",
        "seed": args.seed, "k": k, "kinds": kinds, "mutators": mutators,
        "parent_recipe": parent_recipe, "finetune_recipe": finetune,
        "distill": settings.get("distill"),
        "data": {"train": len(data.train.labels), "val": len(data.val.labels)},
        "sources_digest": digest, "inheritance": inheritance,
        "parent": {**parent_info, "finetune_val": parent_val, "finetune_mean": reference,
                   "finetune_std": statistics.stdev(parent_val) if len(parent_val) > 1 else 0.0},
        "summary": summary, "paired": paired, "children": rows,
        "seconds": round(time.monotonic() - began, 1)}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
