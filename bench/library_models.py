"""The library-model table: how alphac captures and analyses real timm/torchvision/transformers
models (built offline from configs, no weights; see tests/libmodels.py).

    .venv/bin/python bench/library_models.py [--check-blocks 3] [NAME ...] > table.md

Per model: the frontend, the number of (outermost) blocks, eval-mode fidelity (max |graph - model|
on one batch), whether a train-mode SGD step updates the running statistics as the original does,
the mixing check against the Jacobian on a seeded sample of blocks (disagreements), the analysis
warnings, and batch-1 latency from ``measure_speed``. Not part of ``make test`` (tests cover the
same ground with assertions); this prints the numbers for notes and the README.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import libmodels  # noqa: E402

from alphac.analysis import AnalysisManager  # noqa: E402
from alphac.frontends.blocks import find_blocks  # noqa: E402
from alphac.frontends.trace import FX, annotate_shapes, trace  # noqa: E402
from alphac.ir import Subgraph  # noqa: E402
from alphac.passes.analysis import (  # noqa: E402
    CostAnalysis,
    DepthAnalysis,
    MixingAnalysis,
    ShapeAnalysis,
)
from alphac.passes.analysis.ground_truth import check_mixing  # noqa: E402
from alphac.runtime.measure import measure_speed  # noqa: E402


def _train_step_matches(model: torch.nn.Module, gm: torch.nn.Module, x: torch.Tensor) -> bool:
    """One SGD step in train mode on the graph and on a copy of the model: same buffers after."""
    reference = copy.deepcopy(model).train()
    gm.train()
    for net in (reference, gm):
        torch.manual_seed(0)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        net(x).float().square().mean().backward()
        opt.step()
    ref = dict(reference.named_buffers())
    got = dict(gm.named_buffers())
    shared = [k for k in ref if k in got and ref[k].is_floating_point()]
    return all(torch.allclose(ref[k], got[k], atol=1e-5) for k in shared)


def row(name: str, check_blocks: int) -> dict[str, object]:
    start = time.perf_counter()
    model = libmodels.build(name)
    x = torch.randn(*libmodels.INPUT, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm, frontend = trace(model, (x,))
        annotate_shapes(gm, (x,))
        blocks = find_blocks(gm, model if frontend == FX else None)
        model.eval()
        gm.eval()
        with torch.no_grad():
            fidelity = (model(x) - gm(x)).abs().max().item()
        am = AnalysisManager()
        subgraphs = [Subgraph.whole(gm)] + [b.subgraph(gm) for b in blocks]
        for sub in subgraphs:
            for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis(), CostAnalysis()):
                am.get(analysis, gm, sub)
        sample = random.Random(0).sample(blocks, min(check_blocks, len(blocks)))
        disagreements = sum(len(check_mixing(gm, b.subgraph(gm), am)) for b in sample)
    train_ok = _train_step_matches(model, gm, x)
    latency = measure_speed(gm, libmodels.INPUT[1:], device="cpu", warmup=1, repeats=3).latency_ms
    return {"model": name, "frontend": frontend, "blocks": len(blocks),
            "eval |diff|": f"{fidelity:.1e}", "train step": "same" if train_ok else "DIFFERS",
            "check": f"{len(sample)} blocks, {disagreements} disagreements",
            "warnings": len(caught), "latency b1 (ms)": f"{latency:.1f}",
            "seconds": f"{time.perf_counter() - start:.1f}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(libmodels.MODELS))
    parser.add_argument("--check-blocks", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name in args.names:
        try:
            rows.append(row(name, args.check_blocks))
        except Exception as exc:  # noqa: BLE001 - a failing model is a row of the table
            rows.append({"model": name, "frontend": f"FAILED: {type(exc).__name__}: {exc}"[:160]})
        print(rows[-1], file=sys.stderr, flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
