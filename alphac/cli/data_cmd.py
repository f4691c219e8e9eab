"""`alphac data fetch|info TARGET`: download a dataset where allowed, or say where it is."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from alphac.cli.common import (
    DataDirOpt,
    JsonOpt,
    console,
    err_console,
    handles_user_errors,
    print_json,
)

data_app = typer.Typer(
    name="data", help="Get and inspect datasets (fetch, info).", no_args_is_help=True
)

TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help="cifar10, cifar100, "
                                          "fashion-mnist, mnist, imagenet or synthetic.")]


@data_app.command()
@handles_user_errors
def fetch(target: TargetArg, data_dir: DataDirOpt = None) -> None:
    """Download TARGET's dataset (CIFAR-10/100, Fashion-MNIST) unless it is already there."""
    from alphac.errors import DatasetError
    from alphac.runtime.datasets import load_dataset, search_dirs
    from alphac.runtime.fetch import fetch as download
    from alphac.runtime.targets import get_target

    spec = get_target(target)
    dirs = search_dirs(spec, data_dir)
    try:
        found = load_dataset(spec, data_dir, download=False)
        err_console.print(f"{spec.name}: already present in {found.location}")
        return
    except DatasetError:
        pass  # missing or corrupt: fetch it
    dest = download(spec, dirs[0])
    dataset = load_dataset(spec, dest, download=False)
    err_console.print(f"{spec.name}: {len(dataset.train)} training and {len(dataset.test)} test "
                      f"images in {dataset.location}")


@data_app.command()
@handles_user_errors
def info(target: TargetArg, data_dir: DataDirOpt = None, json_output: JsonOpt = False) -> None:
    """Describe TARGET (shape, classes, recipe) and where its data is, if found."""
    from alphac.errors import DatasetError
    from alphac.runtime.datasets import load_dataset, search_dirs
    from alphac.runtime.targets import get_target

    spec = get_target(target)
    result = {"target": spec.name, "description": spec.description,
              "input_shape": list(spec.input_shape), "num_classes": spec.num_classes,
              "searched": [str(d) for d in search_dirs(spec, data_dir)], "found": None,
              "train_images": None, "test_images": None, "recipe": spec.recipe.to_dict()}
    try:
        dataset = load_dataset(spec, data_dir, download=False)
        result.update(found=dataset.location, train_images=len(dataset.train),
                      test_images=len(dataset.test))
    except DatasetError as exc:
        result["problem"] = exc.message
    if json_output:
        print_json(result)
        return
    table = Table(title=spec.name, show_header=False)
    for key, value in result.items():
        if key != "recipe":
            table.add_row(key, str(value))
    console.print(table)
