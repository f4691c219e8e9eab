"""Search quality at an equal budget: property-guided evolution against two simpler searches.

Three methods, each from the same zoo seed model on real Fashion-MNIST, with the same number of
trained children, the same proxy recipe and at least 3 search seeds each:

- ``property``: evolution with property-guided synthesis (alphac's default);
- ``random-edit``: evolution with the random-edit mutator (one random local edit per child);
- ``random-search``: random chains of property-guided mutations from the seed (parents chosen
  uniformly among finished individuals, no selection pressure).

Successive halving is off (``rungs=0``), so every method trains exactly ``--candidates``
children once with the proxy. For each run, on the search's validation accuracies (the test split
is never read here):

- hypervolume of the (validation accuracy, params / seed params) front against the reference
  point (seed accuracy minus 3 points, seed params), :func:`normalised_hypervolume`;
- the smallest model within 0.5 points of the seed's accuracy, as a fraction of the seed's params;
- the synthesis success rate (children made / mutations tried);
- the fraction of children that beat their parent (higher validation accuracy), and the fraction
  that dominate it (no less accurate and cheaper).

Writes ``bench/results/search_quality.md`` (and ``.json``, and a plot of every run's front).

    python bench/search_quality.py              # the full CPU protocol (about 60 min, 2 cores)
    python bench/search_quality.py --quick      # a smoke run (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from alphac.search.api import optimize
from alphac.search.journal import Journal
from alphac.search.selection import Candidate, best_within, normalised_hypervolume, pareto_front

HERE = Path(__file__).resolve().parent
METHODS = {"property": {"mutator": "property", "strategy": "evolution"},
           "random-edit": {"mutator": "random", "strategy": "evolution"},
           "random-search": {"mutator": "property", "strategy": "random-search"}}


def run_metrics(run_dir: Path) -> dict:
    """The study's figures for one finished run, from its journal."""
    with Journal.open(run_dir, readonly=True) as journal:
        inds = journal.individuals()
        elapsed = journal.elapsed_seconds()
    by_id = {i.id: i for i in inds}
    done = [i for i in inds if i.status == "done"]
    seed_ind = next(i for i in inds if i.parent is None)
    cands = [Candidate(i.id, i.val_accuracy, float(i.params), i.id) for i in done]
    seed = next(c for c in cands if c.id == seed_ind.id)
    children = [i for i in done if i.parent is not None]
    tried = [i for i in inds if i.parent is not None]
    synth_failed = [i for i in tried if (i.reason or "").startswith("synthesis:")]
    beat = [c for c in children if c.val_accuracy > by_id[c.parent].val_accuracy]
    dominate = [c for c in children if c.val_accuracy >= by_id[c.parent].val_accuracy
                and c.params < by_id[c.parent].params]
    smallest = best_within(cands, seed, 0.005)
    return {"hypervolume": normalised_hypervolume(cands, seed),
            "smallest_within_0.5_ratio": smallest.cost / seed.cost,
            "smallest_within_0.5_val": smallest.val_accuracy,
            "seed_val": seed.val_accuracy, "seed_params": int(seed.cost),
            "synthesis_success": 1 - len(synth_failed) / len(tried) if tried else None,
            "beat_parent": len(beat) / len(children) if children else None,
            "dominate_parent": len(dominate) / len(children) if children else None,
            "children": len(children), "front": [(c.val_accuracy, c.cost / seed.cost)
                                                  for c in pareto_front(cands)],
            "seconds": elapsed}


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
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="proxy steps at batch 64")
    parser.add_argument("--subset", type=int, default=6000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=Path(".bench/search-quality"))
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.quick:
        args.candidates, args.seeds, args.steps, args.subset = 2, 1, 5, 600
    methods = [m.strip() for m in args.methods.split(",")]
    began = time.monotonic()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in range(args.seeds):
        for method in methods:
            out = args.out / f"{method}-{seed}"
            if (out / "report.json").is_file():  # finished before: reuse (the study resumes)
                pass
            else:
                optimize(args.model, target="fashion-mnist", out=out,
                         candidates=args.candidates, steps=args.steps,
                         final_steps=args.steps, subset=args.subset, workers=args.workers,
                         device="cpu", seed=seed, rungs=0, resume=(out / "journal.sqlite")
                         .exists(), **METHODS[method])
            metrics = run_metrics(out)
            results[method].append(metrics)
            print(json.dumps({"method": method, "seed": seed,
                              **{k: v for k, v in metrics.items() if k != "front"}}), flush=True)
    wall = time.monotonic() - began
    suffix = "_quick" if args.quick else ""
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"search_quality{suffix}.json").write_text(json.dumps(
        {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
        indent=2) + "\n")
    _plot(results, args.results / f"search_quality{suffix}.png")
    lines = [
        "# Search quality at an equal budget", "",
        f"Measured by `python bench/search_quality.py{' --quick' if args.quick else ''}` on "
        f"this code: {args.model} on real Fashion-MNIST ({args.subset} training images, 10% "
        f"held out for validation), {args.candidates} trained children per run, proxy "
        f"{args.steps} steps at batch 64, successive halving off, {args.workers} local "
        f"workers, search seeds 0..{args.seeds - 1}. Wall time {wall / 60:.1f} min.", "",
        "Hypervolume: of the (validation accuracy, params / seed params) front, reference point "
        "(seed accuracy - 3 points, seed params); higher is better, at most "
        "(1 - seed accuracy + 0.03). Smallest: params of the smallest model within 0.5 points "
        "of the seed's validation accuracy, over the seed's (1.0: none found). Mean ± standard "
        "deviation over seeds.", "",
        "| method | hypervolume | smallest within 0.5 pts | synthesis success | beat parent "
        "| dominate parent |", "|---|---|---|---|---|---|"]
    for method, runs in results.items():
        lines.append(f"| {method} | {_mean_sd([r['hypervolume'] for r in runs])} | "
                     f"{_mean_sd([r['smallest_within_0.5_ratio'] for r in runs])} | "
                     f"{_mean_sd([r['synthesis_success'] for r in runs])} | "
                     f"{_mean_sd([r['beat_parent'] for r in runs])} | "
                     f"{_mean_sd([r['dominate_parent'] for r in runs])} |")
    lines += ["", "Per run:", "", "| method | seed | hypervolume | smallest | seed val | "
              "children | minutes |", "|---|---|---|---|---|---|---|"]
    for method, runs in results.items():
        for seed, r in enumerate(runs):
            lines.append(f"| {method} | {seed} | {r['hypervolume']:.4f} | "
                         f"{r['smallest_within_0.5_ratio']:.3f} | {100 * r['seed_val']:.1f}% | "
                         f"{r['children']} | {r['seconds'] / 60:.1f} |")
    (args.results / f"search_quality{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
