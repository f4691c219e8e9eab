"""Dependencies point one way: the core never imports passes, frontends, runtime or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# __main__ is the `python -m alphac` entry point, part of the CLI layer.
CORE = [p for p in (ROOT / "alphac").glob("*.py") if p.name != "__main__.py"]
FORBIDDEN_FOR_CORE = ("alphac.passes", "alphac.frontends", "alphac.runtime", "alphac.cli",
                      "alphac.search")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_imports_no_outer_layer(path):
    bad = [m for m in imported_modules(path) if m.startswith(FORBIDDEN_FOR_CORE)]
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("folder", ["runtime", "frontends"])
def test_runtime_and_frontends_do_not_import_passes_or_each_other(folder):
    other = {"runtime": "alphac.frontends", "frontends": "alphac.runtime"}[folder]
    for path in (ROOT / folder).rglob("*.py"):
        bad = [m for m in imported_modules(path) if m.startswith(("alphac.passes", other,
                                                                  "alphac.cli"))]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_check_itself_detects_a_violation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from alphac.passes.analysis import ops\nimport alphac.runtime.targets\n")
    assert {"alphac.passes.analysis", "alphac.runtime.targets"} <= imported_modules(sample)


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
