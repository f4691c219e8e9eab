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

import inspect
from collections.abc import Callable
from typing import Any

from alphac.runtime.recipe import Recipe
from alphac.search.driver import SearchSettings, parse_duration
from alphac.search.driver import optimize as run_search
from alphac.search.options import OPTIONS, defaults, signature
from alphac.search.results import RunResult

__all__ = ["optimize", "recipes"]


def recipes(*, steps: int | None = None, epochs: float | None = None,
            final_steps: int | None = None, subset: int | None = 6000, batch_size: int = 64,
            lr: float = 0.05, seed_steps: int | None = None, seed_epochs: float | None = None,
            finetune_lr: float | None = None, final_init: str = "inherited",
            val_images: int | None = None, test_images: int | None = None
            ) -> tuple[Recipe, Recipe, Recipe]:
    """The proxy (each child's fine-tune), final and seed recipes
    (:class:`~alphac.runtime.recipe.Recipe` values; fields not set here keep its defaults).

    The seed trains ``seed_steps`` steps or ``seed_epochs`` epochs (default three times the
    proxy) at peak ``lr`` with warm-up, one-cycle decay and augmentation. Children start from
    their parents' weights, so the proxy is a gentle fine-tune: ``steps`` steps or ``epochs``
    epochs (default 1) at ``finetune_lr`` (default ``lr / 5``), no warm-up, a cosine decay, no
    augmentation. The final training (``final_steps``) continues from the search's weights with
    the proxy's schedule (default: as long as the proxy), or with ``final_init="scratch"``
    trains from scratch with the seed's schedule (default three times the proxy). ``subset``
    images of the training set (0 or None: all); ``val_images``/``test_images`` cap the
    validation and test splits (default: 10% of the training set held out, the whole test
    set), for quick runs."""
    subset = subset or None  # 0: every image
    data = {"subset": subset, **({"val_subset": val_images} if val_images else {}),
            **({"test_subset": test_images} if test_images else {})}
    gentle = {"batch_size": batch_size, "lr": finetune_lr if finetune_lr is not None else lr / 5,
              "warmup": 0.0, "schedule": "cosine", "augment": False, **data}
    full = {"batch_size": batch_size, "lr": lr, **data}

    def recipe(base: dict[str, Any], step_count: int | None, epoch_count: float) -> Recipe:
        return Recipe(**base, epochs=epoch_count, steps=step_count or None)

    proxy_epochs = 1.0 if epochs is None else epochs
    thrice = 3 * steps if steps else None
    proxy = recipe(gentle, steps, proxy_epochs)
    # an explicit --seed-epochs wins over the default of three times the proxy's steps
    seed = recipe(full, seed_steps if seed_steps is not None else
                  (None if seed_epochs is not None else thrice),
                  seed_epochs if seed_epochs is not None else 3 * proxy_epochs)
    if final_init == "scratch":
        final = recipe(full, final_steps if final_steps is not None else thrice, 3 * proxy_epochs)
    else:
        final = recipe(gentle, final_steps if final_steps is not None else steps, proxy_epochs)
    return proxy, final, seed


def optimize(model: Any, *, on_event: Callable[..., Any] | None = None,
             **options: Any) -> RunResult:
    """Search for models as accurate as ``model`` and cheaper; see `alphac optimize --help`.

    ``budget`` is seconds or a duration such as ``"30m"``; with neither ``budget`` nor
    ``candidates``, 20 candidates. ``workers`` defaults to one per GPU, else one per 2 CPU
    cores. The recipes are :func:`recipes`'s. Returns the
    :class:`~alphac.search.results.RunResult` (``best``, ``pareto``, ``seed_model``,
    ``run_dir``, ``best_dir``, ``report``)."""
    from alphac.search.executors import default_workers

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"optimize() got unknown options {', '.join(unknown)}; the options are "
                        f"{', '.join(OPTIONS)}")
    o = {**defaults(), **options}
    target, candidates, budget, device = o["target"], o["candidates"], o["budget"], o["device"]
    workers = o["workers"]
    budget_s = parse_duration(budget) if isinstance(budget, str) else budget
    if candidates is None and budget_s is None:
        candidates = 20
    proxy, final, seed_recipe = recipes(**{k: o[k] for k in _RECIPE_OPTIONS})
    settings = SearchSettings(
        target=target, candidates=candidates, budget_s=None if budget_s is None else
        float(budget_s), proxy=proxy, final=final, seed_recipe=seed_recipe,
        workers=workers if workers is not None else default_workers(device),
        **{k: o[k] for k in _SETTINGS_OPTIONS})
    return run_search(model, out=o["out"], settings=settings, resume=o["resume"],
                      on_event=on_event)


#: The options that build the recipes, and those that go to the settings as they are.
_RECIPE_OPTIONS = ("steps", "epochs", "final_steps", "subset", "batch_size", "lr", "seed_steps",
                   "seed_epochs", "finetune_lr", "final_init", "val_images", "test_images")
_SETTINGS_OPTIONS = ("objective", "max_accuracy_drop", "mutator", "strategy", "final_init",
                     "seed", "search_seed", "executor", "device", "data_dir", "ray_address",
                     "rungs", "eta", "distill_steps")
optimize.__signature__ = signature(  # type: ignore[attr-defined]
    first=[inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Any)],
    last=[inspect.Parameter("on_event", inspect.Parameter.KEYWORD_ONLY, default=None,
                            annotation=Callable[[str, dict], None] | None)])
