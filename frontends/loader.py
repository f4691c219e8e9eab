"""Turn a MODEL argument (a path to a Python file, or ``zoo:NAME``) into an ``nn.Module``.

A model file provides, in order of preference: a function ``build_model()``, a module-level
``model`` instance, or exactly one ``nn.Module`` subclass constructible without arguments.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

from torch import nn

from alphac.errors import ModelLoadError
from alphac.frontends.locate import user_location

ZOO_PREFIX = "zoo:"
_HOW = (
    "define a function `build_model()` that returns the model (preferred), or a module-level "
    "`model = MyNet()`, or exactly one nn.Module subclass whose constructor needs no arguments"
)


def load_module(spec: str, *, num_classes: int = 1000, input_shape=(3, 224, 224)) -> nn.Module:
    """The model named by ``spec``: ``zoo:NAME`` or a path to a ``.py`` file.

    ``num_classes`` and ``input_shape`` (C, H, W of one sample) configure zoo models; a model file
    decides these itself.
    """
    if spec.startswith(ZOO_PREFIX):
        from alphac.frontends import zoo

        return zoo.build(spec[len(ZOO_PREFIX) :], num_classes=num_classes, input_shape=input_shape)
    return load_model_file(Path(spec))


def _import_file(path: Path) -> ModuleType:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"alphac_user_model_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ModelLoadError(f"cannot import {path} as a Python module", hint="pass a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise _syntax_error(path, exc) from None
    except Exception as exc:
        sys.modules.pop(name, None)
        where = user_location(exc, path)
        sibling = isinstance(exc, ModuleNotFoundError) and exc.name and (
            (path.parent / f"{exc.name.split('.')[0]}.py").exists()
            or (path.parent / exc.name.split(".")[0] / "__init__.py").exists())
        if sibling:
            hint = (f"alphac imports {path.name} without its folder on the import path: move "
                    f"the code of {exc.name!r} into {path.name}, or install it as a package")
        elif isinstance(exc, ModuleNotFoundError) and exc.name:
            hint = (f"install the package that provides {exc.name!r} into the Python environment "
                    "alphac runs in, or remove the import")
        else:
            hint = f"the file must import cleanly on its own: try `python {path}`"
        raise ModelLoadError(
            f"importing {path} failed{where}: {type(exc).__name__}: {exc}", hint=hint
        ) from None
    return module


def _syntax_error(path: Path, exc: SyntaxError) -> ModelLoadError:
    """``FILE:LINE:COL: syntax error: MSG (`code`)``; FILE is the imported file it was found in."""
    where = f"{exc.filename or path}:{exc.lineno}" + (f":{exc.offset}" if exc.offset else "")
    code = f" (`{exc.text.strip()}`)" if exc.text and exc.text.strip() else ""
    inside = exc.filename and Path(exc.filename).resolve() != path.resolve()
    prefix = f"importing {path} failed: " if inside else ""
    return ModelLoadError(f"{prefix}{where}: syntax error: {exc.msg}{code}",
                          hint=f"fix the Python syntax at {where}")


def load_model_file(path: Path) -> nn.Module:
    """Import ``path`` and build its model as described in the module docstring."""
    if not path.exists():
        raise ModelLoadError(
            f"no model file at {path}",
            hint="pass a path to a .py file, or zoo:NAME (see `alphac zoo`)",
        )
    if path.suffix != ".py":
        raise ModelLoadError(f"{path} is not a Python file", hint="pass a .py file that " + _HOW)
    module = _import_file(path)
    if callable(getattr(module, "build_model", None)):
        return _call_builder(module.build_model, path)
    instance = getattr(module, "model", None)
    if isinstance(instance, nn.Module):
        return instance
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module.__name__
    ]
    buildable = [c for c in classes if _constructible(c)]
    if len(buildable) == 1:
        return _call_builder(buildable[0], path)
    raise _no_model(path, classes, buildable)


def _no_model(path: Path, classes: list[type], buildable: list[type]) -> ModelLoadError:
    """The error for a file without ``build_model()`` or ``model`` and not one usable class."""
    if not classes:
        return ModelLoadError(
            f"{path} defines no model: no build_model() function, no module-level `model` and "
            "no nn.Module class", hint=_HOW)
    found = ", ".join(c.__name__ for c in classes)
    pick = (buildable or classes)[0].__name__
    args = "" if buildable else "..."
    what = ("several nn.Module classes and no build_model() saying which one is the model"
            if buildable else "no build_model(), and alphac cannot build its model without "
            "arguments")
    return ModelLoadError(
        f"{path} has {what} (nn.Module classes found: {found}; {len(buildable)} constructible "
        "without arguments)",
        hint=f"add `def build_model(): return {pick}({args})` to {path}, naming the model and "
        "its arguments",
    )


def _constructible(cls: type) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in list(params)[1:]
    )


def _call_builder(builder, path: Path) -> nn.Module:
    name = getattr(builder, "__name__", "builder")
    try:
        model = builder()
    except Exception as exc:
        fix = (f"fix {name}.__init__ (alphac calls {name}() without arguments), or add a "
               "build_model() that builds it" if inspect.isclass(builder)
               else f"fix {name}() so that it returns the model when called without arguments")
        raise ModelLoadError(
            f"{name}() in {path} raised{user_location(exc, path)}: {type(exc).__name__}: {exc}",
            hint=f"{fix}; `alphac --debug ...` shows the whole traceback",
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"{name}() in {path} returned {type(model).__name__}, not an nn.Module",
            hint="return the torch.nn.Module to optimize",
        )
    return model
