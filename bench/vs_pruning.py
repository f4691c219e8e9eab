"""alphac against structured pruning (Torch-Pruning) on real Fashion-MNIST, side by side (issue #17).

Two models: ``zoo:small_cnn`` (the VGG-style plain CNN, 0.14 M params) and
``bench/models/small_resnet.py`` (a CIFAR-style ResNet, 16/32/64 x 2 blocks, 0.17 M params). Both
methods read the same data through alphac's runtime (:func:`alphac.runtime.train.load_task_data`:
the training subset, the validation split outside it, the whole 10,000-image test set).

``pruning``: the seed is built under ``--seed`` and trained with the seed recipe
(:data:`SEED_RECIPE`, the same for both models); Torch-Pruning's ``MagnitudePruner`` with L1
magnitude importance (``MagnitudeImportance(p=1)``) then prunes one uniform channel ratio over
every conv (the classifier's outputs are kept), chosen by bisection so that the params ratio
(pruned / seed params) is closest to each target in ``--ratios``. Each pruned model is fine-tuned
from the trained seed for ``--finetune-images`` training images at a tenth of the seed's learning
rate (cosine decay, no warm-up) and evaluated on the validation split and the whole test set. The
seed itself gets the same fine-tune as a control (``1.00 + fine-tune``), since the extra training
alone moves its accuracy.

``alphac``: :func:`run_alphac` runs ``alphac.optimize`` from the same model and reads its
``report.json`` (seed, best, retrained Pareto front).

For each model and method the report gives the smallest params ratio whose test accuracy is within
0.5 points of that method's own seed test accuracy (:func:`smallest_ratio_within`).

    python bench/vs_pruning.py                      # both methods, both models
    python bench/vs_pruning.py --methods pruning    # one side
    python bench/vs_pruning.py --quick              # a smoke run (under 3 min on 2 cores)
    python bench/vs_pruning.py --methods pruning --equal-images --out-name STEM
        # pruning given alphac's training images, model by model (alphac's side from STEM.json)

Writes ``bench/results/vs_pruning.md`` and ``.json`` (``--out-name`` changes the stem). Needs the
bench-only dependencies (``make bench-deps``: torch-pruning, scipy).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET = "fashion-mnist"
INPUT_SHAPE = (1, 28, 28)

#: The seed recipe, identical for both models and both methods (about 1 min per seed on 2 idle
#: cores): 3 epochs of a 10,000-image subset at batch 128, peak lr 0.1 (one-cycle, 15% warm-up).
SEED_RECIPE: dict[str, Any] = {"epochs": 3.0, "batch_size": 128, "lr": 0.1, "subset": 10_000}
QUICK_SEED_RECIPE: dict[str, Any] = {"epochs": 1.0, "batch_size": 128, "lr": 0.1,
                                     "subset": 3_000, "test_subset": 2_000}
RATIOS = (0.75, 0.5, 0.35, 0.25, 0.15)
THRESHOLD_POINTS = 0.5

MODELS: dict[str, str] = {
    "small_cnn": "zoo:small_cnn",
    "small_resnet": str(HERE / "models" / "small_resnet.py"),
}


# --- pure helpers (tests/test_bench_studies.py) -------------------------------------------------

def smallest_ratio_within(rows: Iterable[Mapping[str, Any]], reference: float,
                          threshold_points: float = THRESHOLD_POINTS, *,
                          key: str = "test_accuracy",
                          ratio_key: str = "params_ratio") -> float | None:
    """The smallest ``ratio_key`` among ``rows`` whose ``key`` accuracy (a fraction) is at least
    ``reference - threshold_points / 100``; None when no row qualifies. Rows missing either value
    are ignored. A tiny tolerance keeps a row exactly at the threshold in."""
    floor = reference - threshold_points / 100.0 - 1e-12
    ratios = [float(r[ratio_key]) for r in rows
              if r.get(key) is not None and r.get(ratio_key) is not None and r[key] >= floor]
    return min(ratios) if ratios else None


def bisect_decreasing(f: Callable[[float], float], target: float, lo: float = 0.0,
                      hi: float = 0.95, iters: int = 14) -> tuple[float, float]:
    """``(x, f(x))`` with ``f(x)`` closest to ``target`` among the points a bisection of the
    non-increasing ``f`` over ``[lo, hi]`` visited (f is a step function for channel pruning, so
    an exact hit is not guaranteed)."""
    best = (lo, f(lo))
    seen = [best, (hi, f(hi))]
    a, b = lo, hi
    for _ in range(iters):
        mid = (a + b) / 2
        value = f(mid)
        seen.append((mid, value))
        if value > target:
            a = mid
        else:
            b = mid
    for x, value in seen:
        if abs(value - target) < abs(best[1] - target):
            best = (x, value)
    return best


def images_to_steps(images: int, batch_size: int) -> int:
    """Optimizer steps that consume at least ``images`` training images at ``batch_size``."""
    return max(1, math.ceil(images / batch_size))


def seed_images(seed_recipe: Mapping[str, Any]) -> int:
    """Training images of the pruning side's seed training."""
    return int(seed_recipe["epochs"] * seed_recipe["subset"])


def equal_finetune_images(total: int, seed: int, fine_tunes: int, batch_size: int) -> int:
    """Fine-tune images per pruned model (whole batches) that bring the pruning side's total,
    ``seed`` images plus ``fine_tunes`` fine-tunes, nearest to ``total`` (alphac's)."""
    if total <= seed:
        raise ValueError(f"alphac used {total} training images, no more than the seed's "
                         f"{seed}: nothing is left for pruning's fine-tunes")
    steps = round((total - seed) / fine_tunes / batch_size)
    return max(1, steps) * batch_size


# --- models and data ----------------------------------------------------------------------------

def build_seed(name: str, seed: int):
    """The nn.Module of model ``name`` built under ``seed`` (same seed, same initial weights)."""
    import torch

    torch.manual_seed(seed)
    spec = MODELS[name]
    if spec.startswith("zoo:"):
        from alphac.frontends import zoo

        return zoo.build(spec[4:], num_classes=10, input_shape=INPUT_SHAPE)
    sys.path.insert(0, str(HERE))
    from models.small_resnet import build_model

    return build_model(num_classes=10)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _recipe(**fields):
    from alphac.runtime.recipe import Recipe

    return Recipe(**fields)


def _metrics_row(metrics) -> dict[str, Any]:
    return {"val_accuracy": metrics.val_accuracy, "test_accuracy": metrics.test_accuracy,
            "steps": metrics.steps, "epochs": metrics.epochs,
            "train_seconds": metrics.seconds, "images_per_second": metrics.images_per_second}


def _val_accuracy(model, data) -> float:
    """Validation accuracy of ``model`` as it is (no training)."""
    from alphac.runtime.evaluate import evaluate
    from alphac.runtime.pipeline import Normalizer

    model.to(data.device)
    return evaluate(model, data.val, normalize=Normalizer(data.target, data.device, False)).accuracy


# --- the pruning side ---------------------------------------------------------------------------

def prune_to_ratio(model, target_ratio: float, *, example_inputs) -> tuple[Any, float, float]:
    """A pruned copy of ``model`` (left unchanged) whose params ratio is closest to
    ``target_ratio``: one uniform channel pruning ratio over every conv, L1 magnitude importance,
    the final Linear's outputs kept. Returns ``(pruned, channel_ratio, params_ratio)``."""
    import torch
    import torch_pruning as tp

    base = count_params(model)

    def pruned(channel_ratio: float):
        copy_ = copy.deepcopy(model).cpu().eval()
        classifier = [m for m in copy_.modules() if isinstance(m, torch.nn.Linear)][-1:]
        if channel_ratio > 0:
            pruner = tp.pruner.MagnitudePruner(
                copy_, example_inputs, importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=channel_ratio, ignored_layers=classifier, global_pruning=False)
            pruner.step()
        return copy_

    ratio, _ = bisect_decreasing(lambda r: count_params(pruned(r)) / base, target_ratio)
    model_ = pruned(ratio)
    return model_, ratio, count_params(model_) / base


def run_pruning(name: str, data, *, seed: int, seed_recipe: Mapping[str, Any],
                ratios: Sequence[float], finetune_images: int,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """The pruning side for model ``name``: train the seed, prune to each ratio, fine-tune,
    evaluate. Returns a JSON-ready dict."""
    import torch

    from alphac.runtime.train import train_and_evaluate

    recipe = _recipe(**seed_recipe)
    began = time.monotonic()
    model = build_seed(name, seed)
    base = count_params(model)
    seed_metrics = train_and_evaluate(model, TARGET, recipe, seed=seed, data=data, test=True)
    seed_row = {"params": base, **_metrics_row(seed_metrics),
                "seconds": round(time.monotonic() - began, 1)}
    log(f"  {name} seed: params {base}, val {seed_metrics.val_accuracy:.4f}, "
        f"test {seed_metrics.test_accuracy:.4f} ({seed_row['seconds']} s)")
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()
    trained = copy.deepcopy(model.state_dict())
    ft = recipe.replace(lr=recipe.lr / 10, warmup=0.0, schedule="cosine",
                        steps=images_to_steps(finetune_images, recipe.batch_size))
    example = torch.randn(2, *INPUT_SHAPE)
    rows = []
    for target in (1.0, *ratios):
        start = time.monotonic()
        model.load_state_dict(trained)
        if target < 1.0:
            pruned, channel_ratio, params_ratio = prune_to_ratio(model, target,
                                                                 example_inputs=example)
        else:
            pruned, channel_ratio, params_ratio = copy.deepcopy(model), 0.0, 1.0
        before = _val_accuracy(pruned, data)
        metrics = train_and_evaluate(pruned, TARGET, ft, seed=seed, data=data, test=True)
        row = {"target_ratio": target, "channel_ratio": round(channel_ratio, 4),
               "params": count_params(pruned), "params_ratio": params_ratio,
               "val_before_finetune": before, **_metrics_row(metrics),
               "seconds": round(time.monotonic() - start, 1)}
        rows.append(row)
        log(f"  {name} ratio {params_ratio:.3f} (target {target}): before ft val {before:.4f}, "
            f"val {metrics.val_accuracy:.4f}, test {metrics.test_accuracy:.4f} "
            f"({row['seconds']} s)")
    pruned_rows = [r for r in rows if r["target_ratio"] < 1.0]
    control = rows[0]
    return {
        "model": name, "spec": MODELS[name], "seed": seed,
        "seed_recipe": recipe.to_dict(), "finetune_recipe": ft.to_dict(),
        "finetune_images": finetune_images, "seed_model": seed_row, "control": control,
        "rows": pruned_rows,
        "smallest_within": smallest_ratio_within(pruned_rows, seed_row["test_accuracy"]),
        "smallest_within_vs_control": smallest_ratio_within(pruned_rows,
                                                            control["test_accuracy"]),
        "seconds": round(time.monotonic() - began, 1),
    }


# --- the alphac side ----------------------------------------------------------------------------

def run_alphac(model_spec: str, out_dir: str | Path, *, seed: int, candidates: int,
               finetune_images: int, child_images: int, seed_recipe: Mapping[str, Any],
               reuse: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Search ``model_spec`` with ``alphac.optimize`` and read back its ``report.json``.

    The seed is built under ``seed`` and trained with ``seed_recipe`` (the pruning side's), so
    both methods start from the same trained model. ``candidates`` children, each fine-tuned
    gently from its parent for ``child_images`` images at a tenth of the seed's lr (cosine, no
    warm-up), each scored against the seed fine-tuned as often; the front is fine-tuned for
    ``finetune_images`` more (the pruned models' fine-tune) and the seed from its reference
    at the front's deepest generation, a shallower child as many times over as it takes to end
    with as many fine-tunes. Other ``kwargs`` go to ``alphac.optimize`` unchanged.
    The result counts every training image the run used (seed, children, references, final).
    """
    import alphac

    batch = int(seed_recipe["batch_size"])
    settings: dict[str, Any] = {
        "target": TARGET, "subset": seed_recipe["subset"], "batch_size": batch,
        "lr": seed_recipe["lr"], "seed_epochs": seed_recipe["epochs"],
        "finetune_lr": seed_recipe["lr"] / 10, "steps": images_to_steps(child_images, batch),
        "final_steps": images_to_steps(finetune_images, batch), "candidates": candidates,
        "executor": "inline", "workers": 1, "seed": seed,
        "max_accuracy_drop": THRESHOLD_POINTS, "distill_steps": 300}
    if seed_recipe.get("test_subset"):
        settings["test_images"] = seed_recipe["test_subset"]
    settings.update(kwargs)
    out_dir = Path(out_dir)
    if reuse and (out_dir / "report.json").is_file():  # finished before: read it back
        return summarize_run(model_spec, out_dir, seed=seed, settings=settings, seconds=None)
    if out_dir.exists():  # a fresh search each time (a half-finished one would resume)
        import shutil

        shutil.rmtree(out_dir)
    began = time.monotonic()
    alphac.optimize(model_spec, out=str(out_dir), **settings)
    return summarize_run(model_spec, out_dir, seed=seed, settings=settings,
                         seconds=time.monotonic() - began)


def summarize_run(model_spec: str, out_dir: Path, *, seed: int, settings: Mapping[str, Any],
                  seconds: float | None) -> dict[str, Any]:
    """The alphac side's figures from a finished run directory (``seconds``: the search's wall
    time, else the journal's)."""
    if seconds is None:
        from alphac.search.journal import Journal

        with Journal.open(out_dir, readonly=True) as journal:
            seconds = journal.elapsed_seconds()
    report = json.loads((out_dir / "report.json").read_text())
    seed_row, best = report["seed_model"], report["best"]
    base = float(seed_row["params"])

    def row(r: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": r.get("id"), "params": r.get("params"),
                "params_ratio": float(r["params"]) / base if r.get("params") else None,
                "generation": r.get("generation"), "search_score": r.get("search_score"),
                "val_accuracy": r.get("val_accuracy"), "test_accuracy": r.get("test_accuracy"),
                "flops": r.get("flops")}

    rows = [row(r) for r in report.get("retrained", report.get("pareto", []))]
    children = [r for r in rows if r["id"] != seed_row.get("id")]
    images = _run_images(out_dir, report)
    return {"model": model_spec, "seed": seed, "settings": dict(settings),
            "seed_model": row(seed_row), "seed_trained_val": _seed_trained_val(out_dir),
            "best": row(best), "rows": rows,
            "smallest_within": smallest_ratio_within(children, seed_row["test_accuracy"]),
            "references": report.get("references"), "images": images,
            "counts": report.get("counts"), "timing": report.get("timing"),
            "run_dir": str(out_dir), "seconds": round(seconds, 1)}


def _individuals(run_dir: Path) -> list[Any]:
    from alphac.search.journal import Journal

    journal = Journal.open(run_dir, readonly=True)
    try:
        return journal.individuals()
    finally:
        journal.close()


def _seed_trained_val(run_dir: Path) -> float | None:
    """The seed's validation accuracy after its own training (before any fine-tune)."""
    seed = next((i for i in _individuals(run_dir) if i.parent is None), None)
    return None if seed is None else seed.val_accuracy


def _run_images(run_dir: Path, report: Mapping[str, Any]) -> dict[str, int]:
    """Training images a search used: the seed's training, the children's fine-tunes (and the
    references'), and the final fine-tunes, from the journal and the report."""
    inds = _individuals(run_dir)
    schedules = report["schedules"]
    per_child = int(schedules["proxy"].get("steps") or 0) * int(schedules["proxy"]["batch_size"])
    per_final = int(schedules["final"].get("steps") or 0) * int(schedules["final"]["batch_size"])
    seed_images = next((int(i.extra.get("images") or 0) for i in inds if i.parent is None), 0)
    children = sum(int(i.extra.get("images") or 0) for i in inds if i.parent is not None)
    refs = max(0, len(report.get("references") or {}) - 1) * per_child
    final = sum(int(r.get("final_fine_tunes") or 1) for r in report.get("retrained", [])) \
        * per_final
    return {"seed": seed_images, "children": children, "references": refs, "final": final,
            "total": seed_images + children + refs + final}


# --- report -------------------------------------------------------------------------------------

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _ratio(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def render(result: Mapping[str, Any]) -> str:
    """The Markdown report of a run (``result`` as :func:`main` writes it to JSON)."""
    lines = ["# alphac vs structured pruning (Torch-Pruning) on Fashion-MNIST", "",
             f"Written by `python bench/vs_pruning.py {' '.join(result['argv'])}` "
             f"({result['seconds']:.0f} s on {result['machine']}).", "",
             "Data: real Fashion-MNIST through alphac's runtime for both methods: training "
             f"subset of {result['seed_recipe']['subset']} images, the validation split "
             f"({result['data']['val']} images, outside the subset), the test set "
             f"({result['data']['test']} images). Accuracies in %.", "",
             f"Seed recipe (both models, both methods): `{_short(result['seed_recipe'])}`.", ""]
    pruning = result.get("pruning") or {}
    if pruning:
        first = next(iter(pruning.values()))
        lines += [f"Torch-Pruning {result.get('torch_pruning', '?')}: `MagnitudePruner`, L1 "
                  "magnitude importance, one uniform channel ratio over every conv (classifier "
                  "outputs kept), bisected to the target params ratio; each pruned model "
                  "fine-tuned from the trained seed for "
                  f"{_images_per_model(pruning)} images "
                  f"(`{_short(first['finetune_recipe'], per_model=len({q['finetune_images'] for q in pruning.values()}) > 1)}`). `1.00 + ft` is the unpruned seed "
                  "given the same fine-tune (a control: extra training alone moves accuracy).",
                  ""]
    for name in result["models"]:
        lines += [f"## {name} (`{_rel(MODELS[name])}`)", ""]
        p = pruning.get(name)
        a = (result.get("alphac") or {}).get(name)
        if p:
            s = p["seed_model"]
            lines += [f"Seed: {s['params']} params, val {_pct(s['val_accuracy'])}, test "
                      f"{_pct(s['test_accuracy'])} ({s['seconds']:.0f} s).", "",
                      "| method | params ratio | params | val before ft | val | test | "
                      "test - seed (pts) |", "|---|---|---|---|---|---|---|"]
            for r in [p["control"], *p["rows"]]:
                label = "seed + ft" if r["target_ratio"] == 1.0 else "pruning"
                lines.append(
                    f"| {label} | {r['params_ratio']:.3f} | {r['params']} | "
                    f"{_pct(r['val_before_finetune'])} | {_pct(r['val_accuracy'])} | "
                    f"{_pct(r['test_accuracy'])} | "
                    f"{100 * (r['test_accuracy'] - s['test_accuracy']):+.2f} |")
            n_models = 1 + len(p["rows"])
            seeds = seed_images(p["seed_recipe"])
            lines += ["", f"Training images: seed {seeds}, fine-tunes {n_models} x "
                      f"{p['finetune_images']}, total {seeds + n_models * p['finetune_images']}.",
                      "", f"Pruning, smallest params ratio within {THRESHOLD_POINTS} points of "
                      f"the seed's test accuracy: **{_ratio(p['smallest_within'])}** (within "
                      f"{THRESHOLD_POINTS} of the fine-tuned seed control: "
                      f"{_ratio(p['smallest_within_vs_control'])}).", ""]
        if a:
            s = a["seed_model"]
            im = a.get("images", {})
            lines += [f"alphac ({a['settings'].get('candidates')} children, "
                      f"{a['settings'].get('mutator', 'property')} mutator, {a['seconds']:.0f} s):"
                      f" the same seed, trained with the same recipe (val "
                      f"{_pct(a.get('seed_trained_val'))}); each child fine-tuned from its "
                      f"parent for {a['settings']['steps'] * a['settings']['batch_size']} "
                      f"images at lr {a['settings']['finetune_lr']:g} and scored against the "
                      "seed fine-tuned as often; the front and the seed (from its reference at "
                      f"the front's deepest generation) fine-tuned for "
                      f"{a['settings']['final_steps'] * a['settings']['batch_size']} more, "
                      "as many times over as it takes every model to end with the front's "
                      "deepest generation of fine-tunes. "
                      f"Training images: seed {im.get('seed')}, children {im.get('children')}, "
                      f"references {im.get('references')}, final {im.get('final')}, total "
                      f"{im.get('total')}.", "",
                      "| alphac | generation | params ratio | params | val | test | "
                      "test - seed (pts) |", "|---|---|---|---|---|---|---|"]
            for r in sorted(a["rows"], key=lambda r: -(r["params_ratio"] or 0)):
                label = "seed (final)" if r["id"] == s["id"] else f"#{r['id']}"
                lines.append(
                    f"| {label} | {r.get('generation')} | {_ratio(r['params_ratio'])} | "
                    f"{r['params']} | {_pct(r['val_accuracy'])} | {_pct(r['test_accuracy'])} | "
                    f"{100 * (r['test_accuracy'] - s['test_accuracy']):+.2f} |")
            versus = (p["seed_model"]["test_accuracy"] if p else None)
            lines += ["", f"alphac, smallest params ratio within {THRESHOLD_POINTS} points of its "
                      f"final seed's test accuracy: **{_ratio(a['smallest_within'])}**" +
                      ("" if versus is None else
                       f" (of the trained seed's, as pruning is judged: **"
                       f"{_ratio(smallest_ratio_within([r for r in a['rows'] if r['id'] != s['id']], versus))}**)")
                      + f"; best on validation: #{a['best']['id']}, params ratio "
                      f"{_ratio(a['best']['params_ratio'])}, test "
                      f"{_pct(a['best']['test_accuracy'])}.", ""]
        else:
            lines += ["alphac: pending (run `python bench/vs_pruning.py --methods alphac`).", ""]
    return "\n".join(lines) + "\n"


def _images_per_model(pruning: Mapping[str, Any]) -> str:
    counts = {name: p["finetune_images"] for name, p in pruning.items()}
    if len(set(counts.values())) == 1:
        return str(next(iter(counts.values())))
    return ", ".join(f"{n} ({name})" for name, n in counts.items())


def _short(recipe: Mapping[str, Any], per_model: bool = False) -> str:
    """The recipe's main fields (``per_model``: without the steps, which differ by model). A
    recipe with ``steps`` shows no ``epochs``: the steps decide its length."""
    by_steps = recipe.get("steps") is not None
    keys = (*(() if by_steps else ("epochs",)), *(() if per_model else ("steps",)), "batch_size",
            "lr", "warmup", "schedule", "subset", "augment", "test_subset")
    return ", ".join(f"{k}={recipe[k]}" for k in keys if k in recipe and recipe[k] is not None)


def _rel(spec: str) -> str:
    try:
        return str(Path(spec).resolve().relative_to(ROOT))
    except ValueError:
        return spec


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="pruning,alphac",
                        help="comma-separated: pruning, alphac (default both)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ratios", default=",".join(str(r) for r in RATIOS))
    parser.add_argument("--finetune-images", type=int, default=10_000,
                        help="training images of each pruned model's fine-tune (default 10000)")
    parser.add_argument("--equal-images", action="store_true",
                        help="fine-tune each pruned model for as many images as make the pruning "
                             "side's total equal alphac's on that model (alphac's side from this "
                             "run, else from the results file of the same --out-name)")
    parser.add_argument("--candidates", type=int, default=20,
                        help="alphac's children per model (default 20)")
    parser.add_argument("--child-images", type=int, default=2_560,
                        help="training images of each alphac child's fine-tune (default 2560)")
    parser.add_argument("--mutator", default="property", help="alphac's mutator (default property)")
    parser.add_argument("--seed-epochs", type=float, default=None,
                        help="epochs of both methods' seed training (default "
                             f"{SEED_RECIPE['epochs']:g}; more brings the seeds nearer "
                             "convergence, so extra fine-tuning moves them less)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="read back alphac runs that finished before instead of rerunning")
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 3 min)")
    parser.add_argument("--out-name", default=None,
                        help="results stem under bench/results (default vs_pruning, "
                             "vs_pruning_quick with --quick)")
    parser.add_argument("--work-dir", default=str(ROOT / ".bench" / "vs_pruning"))
    args = parser.parse_args(argv)
    import platform

    import torch

    from alphac.runtime.train import load_task_data

    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - {"pruning", "alphac"}
    if unknown:
        parser.error(f"unknown method(s): {', '.join(sorted(unknown))}")
    models = [m for m in args.models.split(",") if m]
    ratios = [float(r) for r in args.ratios.split(",") if r]
    seed_recipe = dict(QUICK_SEED_RECIPE if args.quick else SEED_RECIPE)
    if args.seed_epochs is not None:
        if args.seed_epochs <= 0:
            parser.error(f"--seed-epochs must be positive, got {args.seed_epochs:g}")
        seed_recipe["epochs"] = args.seed_epochs
    finetune_images = 1_000 if args.quick else args.finetune_images
    if args.quick:
        ratios = ratios[1:2] or ratios[:1]
    stem = args.out_name or ("vs_pruning_quick" if args.quick else "vs_pruning")
    began = time.monotonic()
    data = load_task_data(TARGET, _recipe(**seed_recipe), seed=args.seed)
    result: dict[str, Any] = {
        "argv": argv, "machine": f"{platform.machine()}, {torch.get_num_threads()} torch "
                                 f"threads, {data.device}",
        "models": models, "methods": methods, "seed_recipe": seed_recipe,
        "data": {"train": len(data.train.labels), "val": len(data.val.labels),
                 "test": len(data.test.labels)}}
    alphac_side = _previous(stem).get("alphac") or {}
    if args.equal_images and "alphac" not in methods and not all(m in alphac_side for m in models):
        parser.error(f"--equal-images needs alphac's side of {', '.join(models)}: run with "
                     f"--methods alphac,pruning, or keep bench/results/{stem}.json from one")
    if "alphac" in methods:  # before pruning: --equal-images reads its image totals
        result["alphac"] = {}
        for name in models:
            print(f"alphac: {name}", flush=True)
            extra: dict[str, Any] = {"val_images": 1_000} if args.quick else {}
            result["alphac"][name] = run_alphac(
                MODELS[name], Path(args.work_dir) / f"{name}-seed{args.seed}", seed=args.seed,
                candidates=2 if args.quick else args.candidates, finetune_images=finetune_images,
                child_images=300 if args.quick else args.child_images, seed_recipe=seed_recipe,
                mutator=args.mutator, reuse=args.reuse, **extra)
            _save(result, stem, methods, began)
        alphac_side = result["alphac"]
    if "pruning" in methods:
        import torch_pruning as tp

        result["torch_pruning"] = getattr(tp, "__version__", "?")
        result["pruning"] = {}
        for name in models:
            images = finetune_images
            if args.equal_images:
                images = equal_finetune_images(
                    alphac_side[name]["images"]["total"], seed_images(seed_recipe),
                    len(ratios) + 1, int(seed_recipe["batch_size"]))
            print(f"pruning: {name} ({images} fine-tune images per model)", flush=True)
            result["pruning"][name] = run_pruning(
                name, data, seed=args.seed, seed_recipe=seed_recipe, ratios=ratios,
                finetune_images=images)
            _save(result, stem, methods, began)  # a killed run keeps what finished
    print(_save(result, stem, methods, began))
    return 0


def _previous(stem: str) -> dict[str, Any]:
    """The results file ``bench/results/STEM.json`` as it is now ({} when there is none)."""
    path = HERE / "results" / f"{stem}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save(result: dict[str, Any], stem: str, methods: Sequence[str], began: float) -> str:
    """Write ``result`` so far as ``bench/results/STEM.{json,md}``; returns the markdown. A
    run keeps the last numbers of the sides and models it did not run from the file it
    replaces."""
    result["seconds"] = round(time.monotonic() - began, 1)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    old = _previous(stem)
    for side in ("pruning", "alphac"):
        kept = {k: v for k, v in (old.get(side) or {}).items()
                if side not in methods or k not in result["models"]}
        if kept:
            result[side] = {**kept, **(result.get(side) or {})}
    result["models"] = [*dict.fromkeys([*(old.get("models") or []), *result["models"]])]
    text = render(result)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    return text


if __name__ == "__main__":
    raise SystemExit(main())
