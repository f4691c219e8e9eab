"""Library coverage: every timm architecture family and torchvision classification family, through
capture, exact properties, the mixing check and mutation into valid standalone children.

    .venv/bin/python bench/library_coverage.py                      # every family (about an hour)
    .venv/bin/python bench/library_coverage.py timm:resnet tv:vgg   # some families, merged in
    .venv/bin/python bench/library_coverage.py --failed             # rerun the rows not all ok

One representative per family (:data:`FAMILIES`: the smallest registered variant, chosen once by
parameter count, see ``--select``), built offline (``pretrained=False``, ``num_classes=10``) at
the smallest input the family accepts (:data:`SIZES`, with ``img_size=`` where the constructor
takes it). Each family runs in its own process under ``--timeout`` seconds, so one family cannot
hang the bench. Per family, with alphac's own APIs:

- capture: :func:`alphac.frontends.trace.trace` (fx, else export), ``annotate_shapes``,
  ``find_blocks``; fidelity is max |graph - model| in eval mode on one batch;
- properties: shape, depth, mixing and cost of every outermost block (the whole model when it
  has none); ``diagnostics`` counts the ops without an exact rule;
- check: :func:`~alphac.passes.analysis.ground_truth.check_mixing` on the first block;
- mutate: :func:`~alphac.passes.transform.mutate.mutate` with seeds 0, 1, 2 (the search's drawn
  mix), then each of the kinds rewrite, duplicate, delete forced (seed 0) where eligible; every
  child is written with :func:`~alphac.codegen.write_model` and loaded in a fresh process where
  ``alphac``, timm, torchvision and transformers cannot be imported: it must import only torch
  (and the standard library), build, run at the input size and return ``(batch, 10)``.

A family torch cannot run at a small size on CPU (eager forward over :data:`EAGER_LIMIT_S`, or
over :data:`PARAMS_LIMIT` parameters) or that its library cannot build offline is listed and not
counted. Writes ``bench/results/library_coverage.json`` (rows, merged by family across runs) and
``bench/results/library_coverage.md`` (the table and the summary by root cause).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIZES = (32, 64, 96, 128, 160, 224, 256)
EAGER_LIMIT_S = 10.0  # one eager eval forward at batch 2 on one core
PARAMS_LIMIT = 150_000_000
BATCH = 2
SEEDS = (0, 1, 2)
KINDS = ("rewrite", "duplicate", "delete")
CAUSES = ("capture", "unknown op", "check", "synthesis", "splice", "codegen", "timeout", "crash")

# family -> (library, entrypoint, extra constructor kwargs). timm: the smallest registered model of
# each module of timm 1.0.31 by parameter count (``--select`` prints this table again); the
# ``test_*`` configs timm registers for its own tests are that family's code at its smallest.
# torchvision: one model per family of ``torchvision.models.list_models(module=torchvision.models)``.
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "tv:alexnet": ("torchvision", "alexnet", {}),
    "tv:convnext": ("torchvision", "convnext_tiny", {}),
    "tv:densenet": ("torchvision", "densenet121", {}),
    "tv:efficientnet": ("torchvision", "efficientnet_b0", {}),
    "tv:efficientnet_v2": ("torchvision", "efficientnet_v2_s", {}),
    "tv:googlenet": ("torchvision", "googlenet", {}),
    "tv:inception": ("torchvision", "inception_v3", {}),
    "tv:maxvit": ("torchvision", "maxvit_t", {}),
    "tv:mnasnet": ("torchvision", "mnasnet0_5", {}),
    "tv:mobilenet_v2": ("torchvision", "mobilenet_v2", {}),
    "tv:mobilenet_v3": ("torchvision", "mobilenet_v3_small", {}),
    "tv:regnet": ("torchvision", "regnet_x_400mf", {}),
    "tv:resnet": ("torchvision", "resnet18", {}),
    "tv:resnext": ("torchvision", "resnext50_32x4d", {}),
    "tv:shufflenet": ("torchvision", "shufflenet_v2_x0_5", {}),
    "tv:squeezenet": ("torchvision", "squeezenet1_1", {}),
    "tv:swin": ("torchvision", "swin_t", {}),
    "tv:swin_v2": ("torchvision", "swin_v2_t", {}),
    "tv:vgg": ("torchvision", "vgg11", {}),
    "tv:vit": ("torchvision", "vit_b_32", {}),
    "tv:wide_resnet": ("torchvision", "wide_resnet50_2", {}),
}


def _add_timm(table: dict[str, str]) -> None:
    for module, name in table.items():
        FAMILIES[f"timm:{module}"] = ("timm", name, {})


_add_timm({  # --select, timm 1.0.31
    "beit": "beit_base_patch16_224",
    "byoanet": "halonet_h1",
    "byobnet": "test_byobnet",
    "cait": "cait_xxs24_224",
    "coat": "coat_tiny",
    "convit": "convit_tiny",
    "convmixer": "convmixer_768_32",
    "convnext": "test_convnext",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_tiny_240",
    "csatv2": "csatv2",
    "cspnet": "cs3darknet_focus_s",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m",
    "deit": "deit_tiny_patch16_224",
    "densenet": "densenet121",
    "dla": "dla46x_c",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s0",
    "efficientnet": "test_efficientnet",
    "efficientvim": "efficientvim_m1",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m0",
    "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t0",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "gemma4_vit": "gemma4_vit_167m_enc",
    "ghostnet": "ghostnet_050",
    "hardcorenas": "hardcorenas_b",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_t",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_128s",
    "lowformer": "lowformer_b0",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12",
    "mlp_mixer": "gmlp_ti16_224",
    "mobilenetv3": "lcnet_035",
    "mobilenetv5": "mobilenetv5_base",
    "mobilevit": "mobilevit_xxs",
    "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_parfac_gap",
    "nasnet": "nasnetalarge",
    "nest": "nest_tiny",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_ti_224",
    "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b0",
    "qwen3_vit": "qwen3_vit_88m",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_002",
    "repghost": "repghostnet_050",
    "repvit": "repvit_m1",
    "res2net": "res2next50",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "swin_transformer_v2": "swinv2_tiny_window8_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_s_legacy_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "vgg": "vgg11",
    "visformer": "visformer_tiny",
    "vision_transformer": "test_vit",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "test_vit_relpos",
    "vision_transformer_sam": "samvit_base_patch16_224",
    "vitamin": "vitamin_small_224",
    "volo": "volo_d1_224",
    "vovnet": "ese_vovnet19b_slim_dw",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_nano_12_p8_224",
})


# ---- building ------------------------------------------------------------------------------
def _library(library: str):
    sys.path.insert(0, str(ROOT / "tests"))
    import libmodels

    libmodels._define_torchvision_schemas()
    if library == "timm":
        import timm

        return timm
    import torchvision

    return torchvision


def _constructor(library: str, name: str, kwargs: dict[str, Any]):
    lib = _library(library)
    if library == "timm":
        return lambda **extra: lib.create_model(name, pretrained=False, num_classes=10,
                                                **kwargs, **extra)
    return lambda **extra: getattr(lib.models, name)(weights=None, num_classes=10, **kwargs,
                                                     **extra)


def _size_kwargs(library: str, size: int) -> list[dict[str, Any]]:
    """Constructor kwargs that set the input size, most specific first (then none)."""
    if library == "timm":
        return [{"img_size": size}, {}]
    return [{"image_size": size}, {"input_size": (size, size)}, {}]


def build_smallest(library: str, name: str, kwargs: dict[str, Any]):
    """``(model, size, size kwargs, eager seconds)`` at the smallest size of :data:`SIZES` whose
    eager eval forward runs; raises the last error when none does."""
    import torch

    make = _constructor(library, name, kwargs)
    last: BaseException | None = None
    for size in SIZES:
        for extra in _size_kwargs(library, size):
            try:
                torch.manual_seed(0)
                model = make(**extra)
            except Exception as exc:  # noqa: BLE001 - no such size argument, or a size it refuses
                last = exc
                continue
            x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
            try:
                model.eval()
                start = time.perf_counter()
                with torch.no_grad():
                    out = model(x)
                seconds = time.perf_counter() - start
                if not isinstance(out, torch.Tensor) or tuple(out.shape) != (BATCH, 10):
                    raise ValueError(f"output {type(out).__name__} "
                                     f"{tuple(getattr(out, 'shape', ()))}, not ({BATCH}, 10)")
            except Exception as exc:  # noqa: BLE001 - this size does not fit; try the next
                last = exc
                continue
            model.train()
            return model, size, extra, seconds
    assert last is not None
    raise last


# ---- one family (runs in a child process) --------------------------------------------------
def _message(exc: BaseException) -> str:
    """What the user sees: a UserError's message and hint, else the CLI's internal-error line."""
    from alphac.errors import UserError

    if isinstance(exc, UserError):
        text = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    else:
        text = f"internal error: {type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text[:500] + ("..." if len(text) > 500 else "")


def _cause_of_mutation(exc: BaseException) -> str:
    """Root cause of a failed mutation: synthesis (no replacement met the targets), splice (the
    spliced child was refused by a gate or the splice raised), codegen, else crash."""
    from alphac.codegen import CodegenError
    from alphac.errors import SynthesisFailed

    if isinstance(exc, CodegenError):
        return "codegen"
    if isinstance(exc, SynthesisFailed):
        return "splice" if exc.prop == "gate" else "synthesis"
    files = [frame.filename for frame in traceback.extract_tb(exc.__traceback__)]
    if any(f.endswith(("splice.py", "rewriter.py", "gates.py")) for f in files):
        return "splice"
    if any(f.endswith("codegen.py") for f in files):
        return "codegen"
    return "crash"


class _Row:
    """The family's row, written to ``path`` after every stage (a timeout keeps what was done)."""

    def __init__(self, path: Path, family: str) -> None:
        self.path = path
        library, name, _ = FAMILIES[family]
        self.data: dict[str, Any] = {"family": family, "library": library, "model": name,
                                     "stage": "build", "counted": True, "cause": None}
        self.start = time.monotonic()

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.data["seconds"] = round(time.monotonic() - self.start, 1)
        self.path.write_text(json.dumps(self.data, default=str))


def _properties(gm, blocks, am, row: _Row) -> Any:
    """Every block's four properties inside a diagnostics collector; the first block's check."""
    from alphac.diagnostics import collect
    from alphac.ir import Subgraph
    from alphac.passes.analysis import CostAnalysis, DepthAnalysis, MixingAnalysis, ShapeAnalysis
    from alphac.passes.analysis.ground_truth import check_mixing

    targets = [(b.path, b.subgraph(gm)) for b in blocks] or [("<model>", Subgraph.whole(gm))]
    with collect() as diag:
        for path, sub in targets:
            with diag.label(sub, path):
                for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis(),
                                 CostAnalysis()):
                    am.get(analysis, gm, sub)
    findings = diag.findings()
    row.set(stage="check", diagnostics=len(findings),
            unknown_ops=sorted({f"{f.analysis}:{f.op}" for f in findings}),
            unknown_message=findings[0].message if findings else None)
    path, sub = targets[0]
    with collect():
        disagreements = check_mixing(gm, sub, am)
    row.set(stage="mutate", check_block=path, check=len(disagreements),
            check_detail=disagreements[:2])


def _mutations(gm, blocks, inputs, row: _Row, folder: Path, seeds: tuple[int, ...],
               kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """``seeds`` of the drawn mix, then each of ``kinds`` forced (seed 0) where eligible; each
    child's code written."""
    from alphac.analysis import AnalysisManager
    from alphac.codegen import write_model
    from alphac.frontends.blocks import walk_blocks
    from alphac.passes.transform.block_mutations import eligible_blocks
    from alphac.passes.transform.mutate import mutate

    am = AnalysisManager()  # one for the model's every mutation
    eligible = bool(eligible_blocks(gm, list(walk_blocks(blocks)), am))
    requests = [("seed", s, None) for s in seeds]
    requests += [("kind", 0, k) for k in kinds if k == "rewrite" or eligible]
    attempts: list[dict[str, Any]] = []
    weights = sum(p.numel() for p in gm.parameters()) < 30_000_000
    for what, seed, kind in requests:
        entry: dict[str, Any] = {"what": what, "seed": seed, "kind": kind}
        start = time.monotonic()
        try:
            child = mutate(gm, blocks, inputs, seed=seed, kind=kind, am=am)
            entry["done"] = child.record.kind
            out = folder / f"{what}-{kind or seed}"
            entry["path"] = str(write_model(child.gm, out, weights=weights))
        except Exception as exc:  # noqa: BLE001 - every failure is a result of the bench
            entry.update(cause=_cause_of_mutation(exc), message=_message(exc))
        entry["seconds"] = round(time.monotonic() - start, 1)
        attempts.append(entry)
        row.set(attempts=attempts)
    return attempts


_LOAD = r"""
import ast, json, runpy, sys
for name in ("alphac", "timm", "torchvision", "transformers"):
    sys.modules[name] = None
import torch
batch, size, paths = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
allowed = set(sys.stdlib_module_names) | {"torch"}
for path in paths:
    try:
        tree = ast.parse(open(path).read())
        tops = {(a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
        others = sorted(tops - allowed)
        if others:
            raise ImportError(f"model.py imports {', '.join(others)}")
        model = runpy.run_path(path)["build_model"]().eval()
        with torch.no_grad():
            out = model(torch.randn(batch, 3, size, size))
        shape = tuple(out.shape)
        ok = shape == (batch, 10)
        print(json.dumps({"path": path, "ok": ok, "error": None if ok else f"output {shape}"}))
    except Exception as exc:
        text = " ".join(str(exc).split())[:300]
        print(json.dumps({"path": path, "ok": False, "error": f"{type(exc).__name__}: {text}"}))
"""


def _load_children(attempts: list[dict[str, Any]], size: int, timeout: float) -> None:
    """Load every written child where alphac and the model libraries cannot be imported."""
    paths = [a["path"] for a in attempts if "path" in a]
    if not paths:
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(BATCH), str(size), *paths],
                          capture_output=True, text=True, timeout=timeout, env=env)
    results = {}
    for line in done.stdout.splitlines():
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            results[r["path"]] = r
    for a in attempts:
        if "path" not in a:
            continue
        r = results.get(a["path"], {"ok": False, "error": f"the loader died: {done.stderr[-300:]}"})
        a["valid"] = bool(r["ok"])
        if not r["ok"]:
            a.update(cause="codegen", message=f"the written model.py does not run standalone: "
                     f"{r['error']}")


def run_family(family: str, out: Path, workdir: Path, *, seeds: tuple[int, ...] = SEEDS,
               kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Measure one family; its row goes to ``out`` (JSON) as it progresses and is returned."""
    import torch

    from alphac.analysis import AnalysisManager
    from alphac.frontends.blocks import find_blocks
    from alphac.frontends.trace import FX, annotate_shapes, trace

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    row = _Row(out, family)
    library, name, kwargs = FAMILIES[family]
    try:
        model, size, extra, eager = build_smallest(library, name, kwargs)
    except Exception as exc:  # noqa: BLE001 - the library cannot build or run it here
        row.set(counted=False, cause="not runnable", message=f"{type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]}")
        return row.data
    params = sum(p.numel() for p in model.parameters())
    row.set(stage="capture", size=size, size_kwargs=extra, params=params,
            eager_s=round(eager, 2))
    if eager > EAGER_LIMIT_S or params > PARAMS_LIMIT:
        row.set(counted=False, cause="too big for CPU",
                message=f"{params / 1e6:.0f}M params, eager forward {eager:.1f} s at {size}px")
        return row.data
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    training = model.training
    try:
        gm, frontend = trace(model, (x,))
        annotate_shapes(gm, (x,))
        blocks = find_blocks(gm, model if frontend == FX else None)
        model.eval()
        gm.eval()
        with torch.no_grad():
            ref = model(x)
            fidelity = (ref - gm(x)).abs().max().item()
    except Exception as exc:  # noqa: BLE001
        row.set(cause="capture", message=_message(exc))
        return row.data
    row.set(stage="properties", frontend=frontend, blocks=len(blocks), fidelity=fidelity)
    if not fidelity <= 1e-4 * max(1.0, ref.abs().max().item()):
        row.set(cause="capture", message=f"the captured graph differs from the model in eval "
                f"mode by {fidelity:.2e}")
        return row.data
    am = AnalysisManager()
    try:
        _properties(gm, blocks, am, row)
    except Exception as exc:  # noqa: BLE001
        row.set(cause="crash", message=f"properties: {_message(exc)}")
        return row.data
    gm.train(training)  # mutate the graph in the mode the library built it, as the CLI does
    attempts = _mutations(gm, blocks, (x,), row, workdir, seeds, kinds)
    row.set(stage="load")
    _load_children(attempts, size, timeout=300)
    row.set(stage="done", attempts=attempts)
    return row.data


# ---- the driver ----------------------------------------------------------------------------
def _summarise_row(r: dict[str, Any]) -> dict[str, Any]:
    attempts = r.get("attempts", [])
    seeds = [a for a in attempts if a["what"] == "seed"]
    kinds = [a for a in attempts if a["what"] == "kind"]
    r["seeds_valid"] = sum(bool(a.get("valid")) for a in seeds)
    r["mix"] = {a["kind"]: bool(a.get("valid")) for a in kinds}
    if r.get("cause") is None and r.get("stage") != "done":
        r["cause"] = "timeout"
        r["message"] = f"no result within the time limit (stage {r.get('stage')})"
    return r


def _measure(family: str, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="alphac-coverage-") as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--worker", family, "--row", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            tail = done.stderr.strip().splitlines()[-1:] if done.returncode else []
        except subprocess.TimeoutExpired:
            tail = []
        row = json.loads(out.read_text()) if out.exists() else {
            "family": family, "library": FAMILIES[family][0], "model": FAMILIES[family][1],
            "stage": "start", "counted": True, "cause": None}
        if tail and row.get("stage") != "done" and row.get("cause") is None:
            row.update(cause="crash", message=f"worker died: {tail[0][:300]}")
        row["seconds"] = round(time.monotonic() - start, 1)
        return _summarise_row(row)


def _attempt_ok(a: dict[str, Any]) -> bool:
    return bool(a.get("valid"))


def markdown(rows: list[dict[str, Any]]) -> str:
    counted = [r for r in rows if r.get("counted", True)]
    mutating = [r for r in counted if r.get("seeds_valid", 0) >= 1]
    seed_attempts = [a for r in counted for a in r.get("attempts", []) if a["what"] == "seed"]
    seed_attempts += [{}] * sum(len(SEEDS) - len([a for a in r.get("attempts", [])
                                                   if a["what"] == "seed"]) for r in counted)
    valid = sum(_attempt_ok(a) for a in seed_attempts)
    exact = [r for r in counted if r.get("diagnostics") == 0]
    checked = [r for r in counted if r.get("check") == 0]
    kinds = [(k, ok) for r in counted for k, ok in r.get("mix", {}).items()]
    pct = lambda a, b: f"{100 * a / b:.1f}%" if b else "n/a"  # noqa: E731
    lines = ["# Library coverage", "",
             f"Families measured: {len(rows)} ({sum(r['library'] == 'timm' for r in rows)} timm, "
             f"{sum(r['library'] == 'torchvision' for r in rows)} torchvision); counted: "
             f"{len(counted)} (not counted: {len(rows) - len(counted)}, listed below).", "",
             f"- **Families that mutate into a valid child** (at least one of seeds "
             f"{', '.join(map(str, SEEDS))}): {len(mutating)}/{len(counted)} = "
             f"{pct(len(mutating), len(counted))}",
             f"- **Mutation attempts valid** (seeds x families): {valid}/{len(seed_attempts)} = "
             f"{pct(valid, len(seed_attempts))}",
             f"- Properties with exact rules on every block (no diagnostics): {len(exact)}/"
             f"{len(counted)}; mixing check agrees on the first block: {len(checked)}/"
             f"{len(counted)}",
             "- The search's mix (each kind forced where eligible): "
             + ", ".join(f"{k} {sum(ok for kk, ok in kinds if kk == k)}/"
                         f"{sum(kk == k for kk, _ in kinds)}" for k in KINDS), ""]
    lines += _failures(counted)
    lines += ["", "## Every family", "",
              "| family | library | model | input | frontend | blocks | diagnostics | fidelity "
              "| check | mutate | mix (r/d/x) | seconds | root cause |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mix = "/".join({True: "ok", False: "FAIL"}.get(r.get("mix", {}).get(k), "-")
                       for k in KINDS)
        fid = f"{r['fidelity']:.1e}" if isinstance(r.get("fidelity"), float) else ""
        cause = r.get("cause") or _first_cause(r) or ""
        lines.append(f"| {r['family']} | {r['library']} | {r['model']} | {r.get('size', '')} | "
                     f"{r.get('frontend', '')} | {r.get('blocks', '')} | "
                     f"{r.get('diagnostics', '')} | {fid} | {r.get('check', '')} | "
                     f"{r.get('seeds_valid', 0)}/{len(SEEDS)} | {mix} | {r.get('seconds', '')} | "
                     f"{cause} |")
    lines += ["", *_not_counted(rows)]
    return "\n".join(lines) + "\n"


def _first_cause(r: dict[str, Any]) -> str | None:
    bad = [a["cause"] for a in r.get("attempts", []) if not a.get("valid") and a.get("cause")]
    if r.get("diagnostics"):
        bad.insert(0, "unknown op")
    return ", ".join(dict.fromkeys(bad)) or None


def _failures(counted: list[dict[str, Any]]) -> list[str]:
    """Failures by root cause: the families, and one message a user sees for each."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in counted:
        if r.get("cause"):
            groups[r["cause"]].append((r["family"], r.get("message") or ""))
            continue
        if r.get("diagnostics"):
            groups["unknown op"].append((r["family"], ", ".join(r["unknown_ops"])))
        if r.get("check"):
            groups["check"].append((r["family"], "; ".join(r.get("check_detail", []))[:300]))
        seen: set[str] = set()
        for a in r.get("attempts", []):
            if not a.get("valid") and a.get("cause") and a["cause"] not in seen:
                seen.add(a["cause"])
                groups[a["cause"]].append((r["family"], f"({a['what']} {a['kind'] or a['seed']})"
                                           f" {a.get('message', '')}"))
    lines = ["## Failures by root cause", ""]
    if not groups:
        return [*lines, "None.", ""]
    for cause in sorted(groups, key=lambda c: (-len(groups[c]), c)):
        lines.append(f"### {cause} ({len(groups[cause])} families)")
        lines.append("")
        for family, message in groups[cause]:
            lines.append(f"- {family}: {message}")
        lines.append("")
    return lines


def _not_counted(rows: list[dict[str, Any]]) -> list[str]:
    skipped = [r for r in rows if not r.get("counted", True)]
    if not skipped:
        return []
    lines = ["## Not counted (torch or the library cannot run them small on this CPU)", ""]
    lines += [f"- {r['family']} ({r['model']}): {r['cause']}: {r.get('message', '')}"
              for r in skipped]
    return [*lines, ""]


def select_timm() -> dict[str, str]:
    """The smallest registered model of each timm module by parameter count (meta-device
    builds, so no memory is allocated)."""
    import torch

    timm = _library("timm")
    table = {}
    for module in sorted(timm.list_modules()):
        best: tuple[int, str] | None = None
        for name in timm.list_models(module=module):
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = timm.create_model(name, pretrained=False, num_classes=10)
            except Exception:  # noqa: BLE001 - a variant that does not build is not a choice
                continue
            n = sum(p.numel() for p in model.parameters())
            best = min(best or (n, name), (n, name))
        if best:
            table[module] = best[1]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="families to (re)measure (default: all)")
    parser.add_argument("--failed", action="store_true", help="rerun rows that are not all ok")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per family")
    parser.add_argument("--select", action="store_true", help="print the timm selection")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        with tempfile.TemporaryDirectory(prefix="alphac-children-") as tmp:
            run_family(args.worker, Path(args.row), Path(tmp))
        return
    if args.select:
        print(json.dumps(select_timm(), indent=4))
        return
    store = RESULTS / "library_coverage.json"
    rows = {r["family"]: r for r in json.loads(store.read_text())} if store.exists() else {}
    names = args.families or list(FAMILIES)
    if args.failed:
        names = [f for f in names if f not in rows or _first_cause(rows[f])
                 or rows[f].get("cause")]
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    for family in names:
        rows[family] = _measure(family, args.timeout)
        r = rows[family]
        print(f"{family}: {r.get('seeds_valid', 0)}/{len(SEEDS)} {r.get('cause') or ''} "
              f"{(r.get('message') or '')[:160]} ({r['seconds']} s)", flush=True)
        ordered = [rows[f] for f in FAMILIES if f in rows]
        store.write_text(json.dumps(ordered, indent=1, default=str) + "\n")
        (RESULTS / "library_coverage.md").write_text(markdown(ordered))


if __name__ == "__main__":
    main()
