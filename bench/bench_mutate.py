"""The mutation corpus: seeded mutation requests on CIFAR ResNet-34, CIFAR ViT and EfficientNet-B0.

Run: ``python bench/bench_mutate.py [--per-model 100] [--mutator property random] [--load 5]``.
For each model and mutator it makes ``--per-model`` requests (seeds 0..N-1, one core), and reports
the success rate, median and p95 seconds (the whole request, and the synthesis part: select, lift,
perturb, synthesize; the rest is the splice and the gates, whose forward and backward pass is the
model's own cost), the children's params relative to the parent, the mutation kinds, and how
often each vocabulary op appears in synthesized chains. ``--load N`` writes the first N children
of each model as model.py and loads them in a process without alphac (forward, output shape) and
trains each a few steps with ``alphac train``. Writes ``bench/results/mutation_corpus.json`` and
``.md``. Goals (issue): >= 95% valid children, median < 0.5 s, p95 < 3 s.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"resnet34": (2, 3, 32, 32), "vit_ti4": (2, 3, 32, 32), "efficientnet_b0": (2, 3, 32, 32)}
_LOAD = """
import sys, runpy
sys.modules["alphac"] = None
import torch
for path in sys.argv[1:]:
    model = runpy.run_path(path)["build_model"]().eval()
    with torch.no_grad():
        print(path, tuple(model(torch.randn(2, 3, 32, 32)).shape))
"""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_model(name: str, mutator: str, n: int, load: int, out: Path) -> dict:
    from alphac.analysis import AnalysisManager
    from alphac.codegen import write_model
    from alphac.errors import SynthesisFailed
    from alphac.frontends import load as load_model
    from alphac.passes.transform.mutate import mutate

    traced = load_model(f"zoo:{name}", MODELS[name], num_classes=10)
    am = AnalysisManager()  # one per model, as a search keeps one: the parent's facts are reused
    rows, reasons, ops = [], collections.Counter(), collections.Counter()
    written = []
    for seed in range(n):
        start = time.monotonic()
        try:
            child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=seed,
                           mutator=mutator, am=am)
        except SynthesisFailed as exc:
            rows.append({"seed": seed, "ok": False, "seconds": time.monotonic() - start})
            reasons[exc.prop or "?"] += 1
            continue
        r = child.record
        rows.append({"seed": seed, "ok": True, "seconds": time.monotonic() - start,
                     "synthesis_seconds": r.synthesis_seconds, "kind": r.kind,
                     "params_ratio": r.params_child / r.params_parent,
                     "flops_ratio": r.flops_child / max(1, r.flops_parent)})
        for chain in r.chains:
            for label in chain:
                ops[label.split(" ")[0]] += 1
        if len(written) < load:
            folder = out / f"{name}-{mutator}-{seed}"
            written.append(write_model(child.gm, folder))
        print(f"{name} {mutator} {seed}: {r.kind} {rows[-1]['seconds']:.2f}s", flush=True)
    return _summary(name, mutator, rows, reasons, ops, _check_written(written))


def _check_written(paths: list[Path]) -> dict:
    if not paths:
        return {}
    done = subprocess.run([sys.executable, "-c", _LOAD, *map(str, paths)], capture_output=True,
                          text=True, timeout=900)
    loaded = sum(line.endswith("(2, 10)") for line in done.stdout.splitlines())
    trained = 0
    for path in paths:
        result = subprocess.run([sys.executable, "-m", "alphac", "train", str(path), "--target",
                                 "synthetic", "--steps", "3", "--batch-size", "16", "--json"], capture_output=True,
                                text=True, timeout=900)
        trained += result.returncode == 0
    return {"written": len(paths), "loaded_without_alphac": loaded, "trained": trained}


def _summary(name, mutator, rows, reasons, ops, loading) -> dict:
    ok = [r for r in rows if r["ok"]]
    secs = [r["seconds"] for r in rows]
    synth = [r["synthesis_seconds"] for r in ok if r["kind"] == "rewrite"]
    ratios = [r["params_ratio"] for r in ok]
    return {
        "model": name, "mutator": mutator, "requests": len(rows), "valid": len(ok),
        "success_rate": len(ok) / len(rows) if rows else 0.0,
        "median_s": statistics.median(secs), "p95_s": _pct(secs, 0.95),
        "synthesis_median_s": statistics.median(synth) if synth else None,
        "synthesis_p95_s": _pct(synth, 0.95) if synth else None,
        "params_ratio_median": statistics.median(ratios) if ratios else None,
        "params_ratio_min": min(ratios, default=None), "params_ratio_max": max(ratios, default=None),
        "kinds": dict(collections.Counter(r["kind"] for r in ok)),
        "failures": dict(reasons), "ops": dict(ops.most_common()), **loading,
    }


def _markdown(results: list[dict]) -> str:
    lines = ["# Mutation corpus", "",
             "| model | mutator | valid | median s | p95 s | synthesis median s | synthesis p95 s "
             "| params child/parent (median, min-max) | kinds | failures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['mutator']} | {r['valid']}/{r['requests']} | "
            f"{r['median_s']:.2f} | {r['p95_s']:.2f} | {r['synthesis_median_s'] or 0:.2f} | "
            f"{r['synthesis_p95_s'] or 0:.2f} | {r['params_ratio_median'] or 0:.2f} "
            f"({r['params_ratio_min'] or 0:.2f}-{r['params_ratio_max'] or 0:.2f}) | "
            f"{r['kinds']} | {r['failures']} |")
    lines += ["", "Vocabulary use in synthesized chains:", ""]
    for r in results:
        lines.append(f"- {r['model']} / {r['mutator']}: {r['ops']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-model", type=int, default=100)
    parser.add_argument("--mutator", nargs="+", default=["property", "random"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--load", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the goals are per core
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for mutator in args.mutator:
            for name in args.models:
                results.append(run_model(name, mutator, args.per_model, args.load, Path(tmp)))
                # written after every model, so an interrupted run keeps what it measured
                (out / "mutation_corpus.json").write_text(json.dumps(results, indent=2) + "\n")
                (out / "mutation_corpus.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
