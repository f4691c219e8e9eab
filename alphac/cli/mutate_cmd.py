"""`alphac mutate`: one child of a model by property-guided synthesis, written as model.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from alphac.cli.common import (
    InputShapeOpt,
    JsonOpt,
    ModelArg,
    TargetOpt,
    console,
    err_console,
    handles_user_errors,
    print_json,
)
from alphac.units import format_count

SeedOpt = Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same child.")]
MutatorOpt = Annotated[
    str,
    typer.Option("--mutator", help="property (αNAS synthesis), random (random edit, ignores "
                 "properties) or enumerate (random-order enumeration meeting the properties)."),
]
OutOpt = Annotated[
    str | None,
    typer.Option("--out", help="Folder for the child's model.py and weights.pt "
                 "(default: ./mutant-SEED).", show_default=False),
]
KindOpt = Annotated[
    str | None,
    typer.Option("--kind", help="Force the mutation: rewrite, width, duplicate or delete "
                 "(default: drawn 40/30/15/15).", show_default=False),
]


def _check_options(mutator: str, kind: str | None) -> None:
    from alphac.errors import UserError
    from alphac.passes.transform.mutate import MUTATORS

    if mutator not in MUTATORS:
        raise UserError(f"unknown mutator {mutator!r}", hint=f"use one of {', '.join(MUTATORS)}")
    if kind is not None and kind not in ("rewrite", "width", "duplicate", "delete"):
        raise UserError(f"unknown mutation kind {kind!r}",
                        hint="use rewrite, width, duplicate or delete")


def _report(record: Any, out: Path | None, status: str, reason: str | None,
            seconds: float) -> dict[str, Any]:
    base: dict[str, Any] = {"status": status, "reason": reason, "seconds": round(seconds, 3)}
    if record is None:
        return {**base, "mutation": None, "block": None, "params_parent": None,
                "params_child": None, "flops_parent": None, "flops_child": None}
    info = record.as_dict()
    return {**base, "mutation": info.pop("kind"), "block": info.pop("block"),
            "model_py": str(out / "model.py") if out else None, **info,
            "seconds": round(seconds, 3)}


@handles_user_errors
def mutate(
    model: ModelArg,
    target: TargetOpt = "cifar10",
    input_shape: InputShapeOpt = None,
    seed: SeedOpt = 0,
    mutator: MutatorOpt = "property",
    out: OutOpt = None,
    kind: KindOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Mutate MODEL once: select a subgraph, perturb its properties, synthesize, splice; write
    the child as a standalone model.py."""
    import time

    from alphac.cli.common import check_out_dir, load_traced
    from alphac.codegen import write_model
    from alphac.errors import SynthesisFailed
    from alphac.passes.transform.mutate import mutate as mutate_model

    _check_options(mutator, kind)
    folder = check_out_dir(out if out else f"mutant-{seed}")  # before the work, made after it
    start = time.monotonic()
    traced = load_traced(model, target, input_shape)
    try:
        child = mutate_model(traced.gm, traced.blocks, traced.example_inputs, seed=seed,
                             mutator=mutator, kind=kind)
    except SynthesisFailed as exc:
        report = _report(None, None, "failed", exc.reason, time.monotonic() - start)
        if json_output:
            print_json(report)
        raise
    _writable(folder)
    write_model(child.gm, folder)
    report = _report(child.record, folder, "ok", None, time.monotonic() - start)
    if json_output:
        print_json(report)
    else:
        _print(report)


def _writable(folder: Path) -> None:
    from alphac.errors import RunDirError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output folder {folder}: {exc.strerror}",
                          hint="pass --out with a folder you can write to") from None


def _print(report: dict[str, Any]) -> None:
    def say(text: str, **kw: Any) -> None:
        console.print(text, soft_wrap=True, **kw)

    where = report["block"] or "<model>"
    say(f"[bold]{report['mutation']}[/] of {where} ({report.get('block_type') or 'no block'}), "
        f"mutator {report['mutator']}, seed {report['seed']}")
    if report.get("instances") and len(report["instances"]) > 1:
        say(f"  also spliced into: {', '.join(report['instances'][1:])}")
    if report.get("subgraph"):
        say(f"  selected subgraph: {', '.join(report['subgraph'])}")
    for i, chain in enumerate(report.get("chains") or ()):
        say(f"  chain {i}: {' -> '.join(chain)}")
    if report.get("targets") is not None:
        say(f"  target depth {report['targets']['depth']}, achieved {report['achieved']['depth']}")
        say(f"  target mixing pairs {sorted(report['targets']['mixing'])}, achieved "
            f"{sorted(report['achieved']['mixing'])}")
    say(f"  params {format_count(report['params_parent'])} -> "
        f"{format_count(report['params_child'])}, FLOPs per image "
        f"{format_count(report['flops_parent'])} -> {format_count(report['flops_child'])}")
    say("  child code of the replaced part:")
    for line in (report.get("replaced_code") or "").splitlines():
        say(f"    {line}", highlight=False, markup=False)
    say(f"wrote {report['model_py']} ({report['seconds']:.2f} s)")
    err_console.print("load it with: python -c \"import runpy; m = runpy.run_path('"
                      f"{report['model_py']}')['build_model']()\"", highlight=False, markup=False)
