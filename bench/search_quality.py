"""Search quality at an equal budget: property-guided evolution against two simpler searches.

Three methods, each from the same seed model (zoo:small_cnn, built and trained once: the same
``--seed`` gives the same weights, data split and training, and the runs differ only in their
``search_seed``) on real Fashion-MNIST, with the same number of trained children and the same
fine-tune recipe:

- ``property``: evolution with property-guided synthesis (alphac's default mix of rewrites,
  width mutations, duplicates and deletions);
- ``random-edit``: evolution with the random-edit mutator in place of synthesis;
- ``random-search``: random mutation chains from the seed (parents chosen uniformly among the
  finished individuals, no selection pressure), trained equally.

Every child is fine-tuned from its parent's weights and scored at equal training (its
validation accuracy minus what as many fine-tunes gave the seed: the search's references).
Successive halving is off, so every method trains exactly ``--candidates`` children. For each
run, on validation accuracies only:

- hypervolume of the (equal-training score, params / seed params) front against the reference
  point (seed accuracy minus 3 points, seed params), :func:`normalised_hypervolume`;
- the smallest model within 0.5 points of the seed, as a fraction of the seed's params;
- the synthesis success rate, and per mutation kind: children, the fraction within 0.5 points
  of the seed, the fraction that beat their parent at equal training, the median params ratio
  to the parent.

Across runs: each method's hypervolumes against property's (a one-sided permutation test on
the means, and the difference), and the Kendall tau between the search score and the final
validation accuracy over every model the runs retrained.

    python bench/search_quality.py              # the protocol (10 search seeds x 48 children)
    python bench/search_quality.py --seeds 4 --candidates 24   # what fits a 2-core session
    python bench/search_quality.py --quick      # a smoke run (a few minutes)
    python bench/search_quality.py --methods property --width-ratios 0.5,0.75,0.875 \
        --out-name search_quality_gentle       # the same runs with other width-mutation ratios

``--width-ratios`` replaces the ratios a width mutation draws from (``MutationConfig``'s
``width_ratios``, a uniform draw, repeats allowed) in every run of this study; the report
states them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

import alphac.search.driver as driver
from alphac.passes.transform.mutate import MutationConfig
from alphac.search.api import optimize
from alphac.search.journal import Journal
from alphac.search.selection import Candidate, best_within, normalised_hypervolume, pareto_front

HERE = Path(__file__).resolve().parent
METHODS = {"property": {"mutator": "property", "strategy": "evolution"},
           "random-edit": {"mutator": "random", "strategy": "evolution"},
           "random-search": {"mutator": "property", "strategy": "random-search"}}


def use_width_ratios(ratios: tuple[float, ...]) -> None:
    """Make every search of this process draw width mutations' ratios from ``ratios``: the
    driver's ``mutate`` gets a config with them (mutation runs in the driver, not the workers).
    """
    base = driver.mutate.func if isinstance(driver.mutate, functools.partial) else driver.mutate
    config = dataclasses.replace(MutationConfig(), width_ratios=tuple(ratios))
    driver.mutate = functools.partial(base, config=config)


def equal_training_scores(inds) -> dict[int, float]:
    """Each finished individual's validation accuracy minus the seed's gain from as many
    fine-tunes as it had (the seed's journalled references; the deepest stands in)."""
    seed = next(i for i in inds if i.parent is None)
    refs = {0: seed.val_accuracy, **{r.rung: r.val_accuracy for r in seed.references
                                     if r.val_accuracy is not None}}
    scores = {}
    for ind in inds:
        if ind.status != "done":
            continue
        g = int(ind.extra.get("generation", 0))
        known = max(k for k in refs if k <= g)
        scores[ind.id] = ind.val_accuracy - (refs[known] - refs[0])
    return scores


def run_metrics(run_dir: Path) -> dict:
    """The study's figures for one finished run, from its journal and report."""
    with Journal.open(run_dir, readonly=True) as journal:
        inds = journal.individuals()
        elapsed = journal.elapsed_seconds()
    by_id = {i.id: i for i in inds}
    scores = equal_training_scores(inds)
    seed_ind = next(i for i in inds if i.parent is None)
    cands = [Candidate(i, sc, float(by_id[i].params), i) for i, sc in scores.items()]
    seed = next(c for c in cands if c.id == seed_ind.id)
    children = [c for c in cands if by_id[c.id].parent is not None]
    tried = [i for i in inds if i.parent is not None]
    synth_failed = [i for i in tried if (i.reason or "").startswith("synthesis:")]
    kinds: dict[str, dict] = {}
    for c in children:
        ind = by_id[c.id]
        kind = (ind.mutation or {}).get("kind", "?")
        row = kinds.setdefault(kind, {"children": 0, "within": 0, "beat": 0, "ratios": []})
        row["children"] += 1
        row["within"] += c.val_accuracy >= seed.val_accuracy - 0.005
        row["beat"] += c.val_accuracy > scores.get(ind.parent, 0.0)
        row["ratios"].append(c.cost / float(by_id[ind.parent].params))
    smallest = best_within(cands, seed, 0.005)
    report = json.loads((run_dir / "report.json").read_text())
    return {"hypervolume": normalised_hypervolume(cands, seed),
            "smallest_within_0.5_ratio": smallest.cost / seed.cost,
            "smallest_within_0.5_val": smallest.val_accuracy,
            "seed_val": seed.val_accuracy, "seed_params": int(seed.cost),
            "synthesis_success": 1 - len(synth_failed) / len(tried) if tried else None,
            "kinds": {k: {"children": v["children"], "within_0.5": v["within"] / v["children"],
                          "beat_parent": v["beat"] / v["children"],
                          "params_ratio_median": statistics.median(v["ratios"])}
                      for k, v in sorted(kinds.items())},
            "children": len(children), "front": [(c.val_accuracy, c.cost / seed.cost)
                                                  for c in pareto_front(cands)],
            "retrained": [(r["search_score"], r["val_accuracy"]) for r in report["retrained"]
                          if r["status"] == "done" and r["search_score"] is not None],
            "best_params_ratio": report["best"]["params"] / report["seed_model"]["params"],
            "best_test_delta": 100 * ((report["best"]["test_accuracy"] or 0)
                                      - (report["seed_model"]["test_accuracy"] or 0)),
            "seconds": elapsed}


def kendall_tau(pairs: list[tuple[float, float]]) -> float | None:
    """Tau-a of the pairs' two coordinates; None with fewer than two pairs."""
    both = list(itertools.combinations(pairs, 2))
    if not both:
        return None
    sign = [((a[0] - b[0]) * (a[1] - b[1]) > 0) - ((a[0] - b[0]) * (a[1] - b[1]) < 0)
            for a, b in both]
    return sum(sign) / len(sign)


def permutation_p(better: list[float], other: list[float], rounds: int = 20_000,
                  seed: int = 0) -> float:
    """One-sided p-value that mean(better) > mean(other) by chance (label permutations)."""
    observed = statistics.mean(better) - statistics.mean(other)
    pool, n = better + other, len(better)
    rng = random.Random(seed)
    hits = 0
    for _ in range(rounds):
        rng.shuffle(pool)
        hits += statistics.mean(pool[:n]) - statistics.mean(pool[n:]) >= observed - 1e-12
    return (hits + 1) / (rounds + 1)


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def _plot(results: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"property": "tab:blue", "random-edit": "tab:orange", "random-search": "tab:green"}
    for method, runs in results.items():
        for i, run in enumerate(runs):
            front = sorted(run["front"], key=lambda p: p[1])
            ax.step([p[1] for p in front], [100 * p[0] for p in front], where="post",
                    color=colours[method], alpha=0.8, label=method if i == 0 else None)
    seed_val = 100 * statistics.mean(r["seed_val"] for runs in results.values() for r in runs)
    ax.axhline(seed_val - 0.5, color="grey", ls="--", lw=0.8, label="seed - 0.5 pts (mean)")
    ax.set_xlabel("params / seed params")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Pareto fronts at an equal budget (one line per run)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 children, 1 seed, few steps")
    parser.add_argument("--model", default="zoo:small_cnn")
    parser.add_argument("--candidates", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=10, help="search seeds per method")
    parser.add_argument("--steps", type=int, default=40, help="fine-tune steps at batch 64")
    parser.add_argument("--seed-steps", type=int, default=400, help="the seed's training steps")
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=None,
                        help="the runs' folder (default .bench/ and the results' stem, "
                             "e.g. .bench/search-quality; a finished run there is reused)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out-name", default="search_quality",
                        help="the results' file stem (default search_quality)")
    parser.add_argument("--width-ratios", default=None,
                        help="comma-separated ratios for width mutations (default: "
                             f"{','.join(f'{r:g}' for r in MutationConfig().width_ratios)})")
    args = parser.parse_args(argv)
    if args.out is None:  # another stem (or --quick), another folder: settings never mix
        args.out = Path(".bench") / (args.out_name + ("_quick" if args.quick else "")).replace(
            "_", "-")
    ratios = MutationConfig().width_ratios
    if args.width_ratios is not None:
        try:
            ratios = tuple(float(r) for r in args.width_ratios.split(","))
        except ValueError:
            parser.error(f"--width-ratios takes numbers separated by commas, got "
                         f"{args.width_ratios!r}")
        if not ratios or any(r <= 0 or r == 1 for r in ratios):
            parser.error(f"--width-ratios must be positive and not 1, got {args.width_ratios!r}")
        use_width_ratios(ratios)
    if args.quick:
        args.candidates, args.seeds, args.steps, args.subset = 2, 2, 5, 600
        args.seed_steps = 20
    methods = [m.strip() for m in args.methods.split(",")]
    began = time.monotonic()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    reused = 0
    for seed in range(args.seeds):
        for method in methods:
            out = args.out / f"{method}-{seed}"
            if (out / "report.json").is_file():  # finished before: reuse (the study resumes)
                reused += 1
            else:
                optimize(args.model, target="fashion-mnist", out=out,
                         candidates=args.candidates, steps=args.steps,
                         seed_steps=args.seed_steps, final_steps=args.steps,
                         subset=args.subset, workers=args.workers, device="cpu", seed=0,
                         search_seed=seed, rungs=0,
                         resume=(out / "journal.sqlite").exists(), **METHODS[method])
            metrics = run_metrics(out)
            results[method].append(metrics)
            print(json.dumps({"method": method, "seed": seed,
                              **{k: v for k, v in metrics.items()
                                 if k not in ("front", "retrained")}}), flush=True)
    wall = time.monotonic() - began
    suffix = "_quick" if args.quick else ""
    stem = args.out_name
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}{suffix}.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
        indent=2) + "\n")
    _plot(results, args.results / f"{stem}{suffix}.png")
    lines = [
        "# Search quality at an equal budget", "",
        f"Measured by `python bench/search_quality.py --seeds {args.seeds} --candidates "
        f"{args.candidates}{' --quick' if args.quick else ''}"
        f"{'' if args.methods == ','.join(METHODS) else ' --methods ' + args.methods}"
        f"{'' if args.width_ratios is None else ' --width-ratios ' + args.width_ratios}` on this "
        f"code: {args.model} on real "
        f"Fashion-MNIST ({args.subset} training images; validation: 6,000 held-out images), one "
        f"seed model (seed 0, {args.seed_steps} steps) shared by every run, {args.candidates} "
        f"children per run, each fine-tuned {args.steps} steps at batch 64 from its parent, "
        f"successive halving off, {args.workers} local workers, search seeds "
        f"0..{args.seeds - 1}; width mutations draw their ratio from "
        f"({', '.join(f'{r:g}' for r in ratios)}). Wall time {wall / 60:.1f} min"
        + (f" (this invocation; {reused} runs finished before were reused: the per-run table "
           "has each run's minutes)" if reused else "") + ".", "",
        "Scores are at equal training (validation accuracy minus the seed's gain from as many "
        "fine-tunes). Hypervolume: of the (score, params / seed params) front, reference point "
        "(seed accuracy - 3 points, seed params); higher is better. Smallest: params of the "
        "smallest model within 0.5 points of the seed, over the seed's (1.0: none found). "
        "Mean ± standard deviation over search seeds; p: one-sided permutation test that "
        "property's mean hypervolume is higher.", "",
        "| method | hypervolume | p vs property | smallest within 0.5 pts | best (final) params "
        "| best Δtest | synthesis success |", "|---|---|---|---|---|---|---|"]
    prop = [r["hypervolume"] for r in results.get("property", [])]
    for method, runs in results.items():
        hv = [r["hypervolume"] for r in runs]
        p = (f"{permutation_p(prop, hv):.3f}" if method != "property" and prop and len(hv) > 1
             else "-")
        lines.append(f"| {method} | {_mean_sd(hv)} | {p} | "
                     f"{_mean_sd([r['smallest_within_0.5_ratio'] for r in runs])} | "
                     f"{_mean_sd([r['best_params_ratio'] for r in runs])} | "
                     f"{_mean_sd([r['best_test_delta'] for r in runs])} | "
                     f"{_mean_sd([r['synthesis_success'] for r in runs])} |")
    pooled = [pair for runs in results.values() for r in runs for pair in r["retrained"]]
    tau = kendall_tau(pooled)
    lines += ["", f"Proxy fidelity: Kendall tau between the search score and the final "
              f"validation accuracy over the {len(pooled)} retrained models of all runs: "
              + ("-" if tau is None else f"{tau:.3f}") + ".", "",
              "Per mutation kind (all runs of a method pooled):", "",
              "| method | kind | children | within 0.5 pts of the seed | beat parent | "
              "params / parent (median) |", "|---|---|---|---|---|---|"]
    for method, runs in results.items():
        pooled_kinds: dict[str, list] = {}
        for r in runs:
            for kind, row in r["kinds"].items():
                pooled_kinds.setdefault(kind, []).append(row)
        for kind, rows in sorted(pooled_kinds.items()):
            n = sum(x["children"] for x in rows)
            within = sum(x["within_0.5"] * x["children"] for x in rows) / n
            beat = sum(x["beat_parent"] * x["children"] for x in rows) / n
            ratio = statistics.median(x["params_ratio_median"] for x in rows)
            lines.append(f"| {method} | {kind} | {n} | {within:.2f} | {beat:.2f} | {ratio:.2f} |")
    lines += ["", "Per run:", "", "| method | seed | hypervolume | smallest | seed val | "
              "children | minutes |", "|---|---|---|---|---|---|---|"]
    for method, runs in results.items():
        for seed, r in enumerate(runs):
            lines.append(f"| {method} | {seed} | {r['hypervolume']:.4f} | "
                         f"{r['smallest_within_0.5_ratio']:.3f} | {100 * r['seed_val']:.1f}% | "
                         f"{r['children']} | {r['seconds'] / 60:.1f} |")
    (args.results / f"{stem}{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
