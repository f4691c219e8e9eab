"""``alphac.optimize``: the search from Python, with the CLI's options as keyword arguments.

Example::

    import alphac

    result = alphac.optimize("model.py", target="fashion-mnist", candidates=8, steps=100,
                             out="runs/first")
    print(result.best["params"], result.best["test_accuracy"], result.best_dir)
    for row in result.pareto:
        print(row["id"], row["params"], row["val_accuracy"])

``model`` is a model file, ``zoo:NAME`` or an ``nn.Module`` instance. Errors a user can cause
are :class:`alphac.errors.UserError` subclasses with the same messages as the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alphac.search.driver import SearchResult, SearchSettings, parse_duration
from alphac.search.driver import optimize as run_search

__all__ = ["optimize", "recipes"]


def recipes(*, steps: int | None = None, epochs: float | None = None,
            final_steps: int | None = None, subset: int | None = 6000, batch_size: int = 64,
            lr: float = 0.05) -> tuple[dict[str, Any], dict[str, Any]]:
    """The proxy and final recipes: the proxy trains ``steps`` steps or ``epochs`` epochs
    (default 1 epoch); the final retraining ``final_steps``, default three times the proxy.
    ``subset`` images of the training set (0 or None: all)."""
    def recipe(step_count: int | None, epoch_count: float) -> dict[str, Any]:
        made: dict[str, Any] = {"batch_size": batch_size, "lr": lr, "subset": subset,
                                "epochs": epoch_count}
        if step_count is not None:
            made["steps"] = step_count
        return made

    subset = subset or None  # 0: every image
    proxy_epochs = 1.0 if epochs is None else epochs
    final = final_steps if final_steps is not None else (3 * steps if steps else None)
    return recipe(steps, proxy_epochs), recipe(final, 3 * proxy_epochs)


def optimize(model: Any, *, target: str = "fashion-mnist", out: str | Path = "alphac-run",
             candidates: int | None = None, budget: str | float | None = None,
             objective: str = "params", max_accuracy_drop: float = 0.5,
             steps: int | None = None, epochs: float | None = None,
             final_steps: int | None = None, subset: int | None = 6000, batch_size: int = 64,
             lr: float = 0.05, workers: int | None = None, executor: str = "local",
             ray_address: str | None = None, mutator: str = "property",
             strategy: str = "evolution", rungs: int = 1, eta: int = 3, seed: int = 0,
             device: str = "auto", data_dir: str | None = None, resume: bool = False,
             on_event: Callable[[str, dict], None] | None = None) -> SearchResult:
    """Search for models as accurate as ``model`` and cheaper; see `alphac optimize --help`.

    ``budget`` is seconds or a duration such as ``"30m"``; with neither ``budget`` nor
    ``candidates``, 20 candidates. ``workers`` defaults to one per GPU, else one per 2 CPU
    cores. Returns the :class:`~alphac.search.driver.SearchResult` (``best``, ``pareto``,
    ``seed_model``, ``run_dir``, ``best_dir``, ``report``)."""
    from alphac.search.executors import default_workers

    budget_s = parse_duration(budget) if isinstance(budget, str) else budget
    if candidates is None and budget_s is None:
        candidates = 20
    proxy, final = recipes(steps=steps, epochs=epochs, final_steps=final_steps, subset=subset,
                           batch_size=batch_size, lr=lr)
    settings = SearchSettings(
        target=target, candidates=candidates, budget_s=None if budget_s is None else
        float(budget_s), objective=objective, max_accuracy_drop=max_accuracy_drop,
        mutator=mutator, strategy=strategy, proxy=proxy, final=final, seed=seed,
        workers=workers if workers is not None else default_workers(device), executor=executor, device=device,
        data_dir=data_dir, ray_address=ray_address, rungs=rungs, eta=eta)
    return run_search(model, out=out, settings=settings, resume=resume, on_event=on_event)
