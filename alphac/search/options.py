"""The search's options, once: the table that builds ``alphac optimize``'s flags, the keyword
arguments of :func:`alphac.optimize`, and their defaults.

Each option belongs to one part of the settings:

- ``run``: what defines the run; stored in the journal and kept by every resume;
- ``stop``: when to stop (``candidates``, ``budget``); given by each session;
- ``where``: where it runs (executor, workers, device, Ray address, data folder); given by each
  session, so a run started on one machine resumes on another;
- ``session``: the run directory and whether to resume it.

Adding an option is one row here (and its use where the settings are built). Example::

    OPTIONS["steps"].flag          # '--steps'
    defaults()["candidates"]       # None: 20 unless a --budget is given
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["OPTIONS", "PARTS", "Option", "defaults", "names", "signature"]

PARTS = ("run", "stop", "where", "session")


@dataclass(frozen=True)
class Option:
    """One option: its keyword, its Python type, its default, its help line and its part."""

    name: str
    type: Any
    default: Any
    help: str
    part: str = "run"
    show_default: bool = True
    api_type: Any = None  # where Python takes more than the command line (a Path, seconds)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_ROWS = (
    Option("target", str, "fashion-mnist", "Task: cifar10, cifar100, fashion-mnist, mnist, "
           "imagenet, synthetic."),
    Option("candidates", int | None, None, "How many children to train (the seed not "
           "counted); default 20, or unlimited with --budget.", "stop", False),
    Option("budget", str | None, None, "Wall-time budget for the whole run, final retraining "
           "included (e.g. 30m, 2h, 1h30m); counted across --resume.", "stop", False,
           api_type=str | float | None),
    Option("objective", str, "params", "params, flops (per image) or latency (batch 1 on the "
           "search's device)."),
    Option("max_accuracy_drop", float, 0.5, "Best = cheapest within this many points of the "
           "seed."),
    Option("mutator", str, "property", "property, random or enumerate."),
    Option("strategy", str, "evolution", "evolution or random-search."),
    Option("workers", int | None, None, "Parallel candidates (default: one per GPU, else one "
           "per 2 CPU cores).", "where", False),
    Option("executor", str, "local", "local (processes), ray, or inline (this process).",
           "where"),
    Option("ray_address", str | None, None, "An existing Ray cluster (default: start a local "
           "Ray).", "where", False),
    Option("steps", int | None, None, "Fine-tune steps per child (the proxy).",
           show_default=False),
    Option("epochs", float | None, None, "Proxy epochs per candidate (default 1).",
           show_default=False),
    Option("final_steps", int | None, None, "Steps of the final training (default: the "
           "proxy's, 3x with --final-init scratch).", show_default=False),
    Option("seed_steps", int | None, None, "Steps of the seed's own training (default 3x the "
           "proxy).", show_default=False),
    Option("seed_epochs", float | None, None, "Epochs of the seed's own training (default 3x "
           "the proxy).", show_default=False),
    Option("finetune_lr", float | None, None, "Peak learning rate of the children's fine-tune "
           "(default --lr / 5).", show_default=False),
    Option("distill_steps", int | None, None, "Before its fine-tune, train each child's changed "
           "parts for this many steps to compute what its parent computed there (block-wise "
           "distillation; default 3 times the proxy's steps, at most 300; 0: off).",
           show_default=False),
    Option("final_init", str, "inherited", "inherited: the front is fine-tuned from its search "
           "weights; scratch: retrained from scratch."),
    Option("rungs", int, 0, "Successive-halving rungs above the proxy (0: off)."),
    Option("eta", int, 3, "Successive halving: the best 1/eta of a rung train eta times "
           "longer."),
    Option("subset", int | None, 6000, "Use only N training images (0: all).",
           show_default=False),
    Option("val_images", int | None, None, "Validate on only N of the held-out images "
           "(default: all, 10% of the training set).", show_default=False),
    Option("test_images", int | None, None, "Test on only N images (default: the whole test "
           "set).", show_default=False),
    Option("batch_size", int, 64, "Training batch size."),
    Option("lr", float, 0.05, "Peak learning rate of the seed's training."),
    Option("out", str, "alphac-run", "Run directory.", "session", api_type=str | Path),
    Option("resume", bool, False, "Continue the run in --out.", "session"),
    Option("seed", int, 0, "Seed of the seed model's weights, data split and training, and of "
           "the search."),
    Option("search_seed", int | None, None, "Seed of selection, mutations and children alone "
           "(default --seed): searches that differ only here share one seed model.",
           show_default=False),
    Option("data_dir", str | None, None, "Folder with the dataset (default: "
           "~/.cache/alphac/TARGET).", "where", False),
    Option("device", str, "auto", "auto, cpu or cuda.", "where"),
)

OPTIONS: dict[str, Option] = {o.name: o for o in _ROWS}


def defaults(part: str | None = None) -> dict[str, Any]:
    """Every option's default (or those of one part)."""
    return {o.name: o.default for o in OPTIONS.values() if part is None or o.part == part}


def names(part: str) -> tuple[str, ...]:
    return tuple(o.name for o in OPTIONS.values() if o.part == part)


def signature(first: Iterable[inspect.Parameter] = (), last: Iterable[inspect.Parameter] = (),
              annotate: Any = None) -> inspect.Signature:
    """A signature with ``first``, then every option as a keyword (``annotate(option)`` gives
    its annotation: the CLI's typer options; default: its type), then ``last``."""
    params = [*first]
    for o in OPTIONS.values():
        params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                                        annotation=annotate(o) if annotate else
                                        (o.api_type or o.type)))
    return inspect.Signature([*params, *last])
