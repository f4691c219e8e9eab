"""Dependencies point one way, by an explicit allowlist of which layer may import which.

Every module of every layer is parsed with ``ast``; every import counts, at the top, inside a
function or under ``TYPE_CHECKING``, relative or absolute, and ``importlib.import_module("...")``
with a literal name. Layers: core (``alphac.*`` but the CLI and the search), cli (``alphac.cli``
and ``alphac/__main__.py``), search (``alphac.search``, once it exists), passes, frontends, runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Installed package -> source folder (pyproject.toml's package-dir).
FOLDERS = {"alphac.passes": "passes", "alphac.frontends": "frontends",
           "alphac.runtime": "runtime", "alphac": "alphac"}
LAYERS = ("core", "cli", "search", "passes", "frontends", "runtime")
#: Which layers each layer may import (itself included). Anything not listed is a violation.
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "passes": frozenset({"core", "passes"}),
    "frontends": frozenset({"core", "frontends"}),
    "runtime": frozenset({"core", "runtime"}),
    "search": frozenset({"core", "passes", "frontends", "runtime", "search"}),
    "cli": frozenset(LAYERS),
    # the package root, ``alphac/__init__.py``: the public facade (``alphac.optimize``, lazily)
    "facade": frozenset({"core", "search"}),
}


def module_name(path: Path, root: Path = ROOT) -> str:
    """``passes/analysis/cost.py`` -> ``alphac.passes.analysis.cost`` (a package: its name)."""
    rel = path.relative_to(root).with_suffix("")
    package = next(p for p, folder in FOLDERS.items() if rel.parts[0] == folder)
    parts = [*package.split("."), *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """The layer an imported module belongs to; None for the standard library and third parties.

    A bare ``passes``/``frontends``/``runtime`` (the folder, not the installed name) counts as
    that layer, so importing it by folder name does not slip past the check.
    """
    parts = module.split(".")
    if parts[0] in ("passes", "frontends", "runtime"):
        return parts[0]
    if parts[0] != "alphac":
        return None
    second = parts[1] if len(parts) > 1 else ""
    if second in ("cli", "__main__"):
        return "cli"
    if second in ("search", "passes", "frontends", "runtime"):
        return second
    return "core"


def _resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _literal_import(node: ast.Call) -> str | None:
    """The name in ``importlib.import_module("x")`` or ``__import__("x")``, if a literal."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
    if named and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        return value if isinstance(value, str) else None
    return None


def imported_modules(path: Path, importer: str = "") -> set[str]:
    """Every module ``path`` imports, absolute; ``importer`` is its own name (for ``from .``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, importer, is_package)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Call) and (literal := _literal_import(node)):
            names.add(literal)
    return {n for n in names if n}


def all_modules() -> list[Path]:
    """Every Python file of every layer (the search package included once it exists)."""
    paths: list[Path] = []
    for folder in FOLDERS.values():
        paths.extend(p for p in sorted((ROOT / folder).rglob("*.py"))
                     if "__pycache__" not in p.parts)
    return paths


def violations(path: Path, root: Path = ROOT) -> list[str]:
    """``"importer layer -> imported layer: module"`` for each import the allowlist forbids."""
    importer = module_name(path, root)
    own = "facade" if importer == "alphac" else layer_of(importer)
    assert own is not None, importer
    found = []
    for module in sorted(imported_modules(path, importer)):
        target = layer_of(module)
        if target is not None and target not in ALLOWED[own]:
            found.append(f"{own} -> {target}: {module}")
    return found


MODULES = all_modules()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_allowlist(path):
    bad = violations(path)
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_imports_a_folder_by_its_folder_name(path):
    # `import passes.x` works from a checkout and breaks once installed (as alphac.passes).
    bad = [m for m in imported_modules(path, module_name(path))
           if m.split(".")[0] in ("passes", "frontends", "runtime")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_walk_covers_every_layer_and_nested_packages():
    layers = {layer_of(module_name(p)) for p in MODULES}
    expected = {"core", "cli", "passes", "frontends", "runtime"}
    if (ROOT / "alphac" / "search").is_dir():
        expected.add("search")
    assert expected <= layers
    names = {module_name(p) for p in MODULES}
    assert {"alphac.cli.common", "alphac.passes.analysis.registry", "alphac.frontends.zoo",
            "alphac.__main__"} <= names


def test_layers_are_mapped_as_documented():
    assert layer_of("alphac.analysis") == "core" and layer_of("alphac") == "core"
    assert layer_of("alphac.cli.common") == "cli" and layer_of("alphac.__main__") == "cli"
    assert layer_of("alphac.search.loop") == "search"
    assert layer_of("alphac.passes.analysis.cost") == "passes"
    assert layer_of("torch.fx") is None and layer_of("alphacx") is None
    assert not ALLOWED["passes"] & {"runtime", "frontends"}
    assert ALLOWED["core"] == {"core"}


def test_the_check_itself_detects_violations(tmp_path):
    folder = tmp_path / "passes" / "transform"
    folder.mkdir(parents=True)
    sample = folder / "x.py"
    sample.write_text(
        "import importlib\n"
        "from alphac.passes.analysis import ops\n"
        "from ..analysis import cost\n"
        "def late():\n"
        "    import alphac.runtime.targets\n"
        "    from alphac import frontends\n"
        "    return importlib.import_module('alphac.cli.common')\n"
    )
    found = imported_modules(sample, "alphac.passes.transform.x")
    assert {"alphac.passes.analysis", "alphac.passes.analysis.cost", "alphac.runtime.targets",
            "alphac.frontends", "alphac.cli.common"} <= found
    assert sorted({line.split(":")[0] for line in violations(sample, tmp_path)}) == [
        "passes -> cli", "passes -> frontends", "passes -> runtime"]


def test_relative_imports_resolve_inside_packages(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from ._common import helper\nfrom . import resnet\n")
    found = imported_modules(init, "alphac.frontends.zoo")
    assert {"alphac.frontends.zoo._common", "alphac.frontends.zoo.resnet"} <= found


def test_every_package_folder_is_installed():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {v: k for k, v in config["package-dir"].items()}
    declared = set(config["packages"])
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        top = rel.parts[0]
        if top not in mapping:
            continue
        name = ".".join([mapping[top], *rel.parts[1:]])
        assert name in declared, f"{rel} is a package but pyproject.toml does not list {name}"
