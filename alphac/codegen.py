"""Write any traced GraphModule as a standalone, readable PyTorch file (``model.py``).

Precondition: a GraphModule from torch.fx or torch.export (alphac's frontends, or a rewrite of
one). Postcondition: the file imports torch and the standard library only (plus, named in its
docstring, the libraries of functions the graph calls), never alphac, and pickles nothing. It
defines an ``nn.Module`` class whose ``__init__`` builds every submodule with concrete
hyperparameters under the original paths (so ``state_dict()`` keys and order are the graph
module's), whose ``forward`` is the graph's own code (``Graph.python_code``), and a
``build_model()`` that loads ``weights.pt`` by name and shape and starts in the graph's mode.

- Leaf modules from ``torch.nn`` are rebuilt from their constructor's signature: each argument is
  read from the module's attribute of that name (a ``bias`` flag from whether the bias tensor
  exists; a few classes need a reader, :data:`SPECIAL`), arguments whose omission rebuilds the
  same module are left out, and the rebuilt module must match the original (repr, state,
  argument values), else :class:`CodegenError`. :class:`~alphac.modes.ModeValue` and timm's
  ``DropPath`` become small classes in the file (:data:`INLINED`); any other leaf class is refused,
  naming its path. :func:`module_constructors` records the kind used per module.
- Parameters and buffers no leaf owns (torch.export graphs fetch all of theirs by ``get_attr``)
  are registered by dotted name with shape, dtype, ``requires_grad`` and persistence, initialised
  by a fixed rule (``_parameter``/``_buffer`` in the file); ``weights.pt`` holds their values.
  Constants (non-persistent buffers, tensor attributes, torch.fx's ``_tensor_constant*``) are
  written into the file with their values. torch.export's input guard (``_guards_fn``), which
  computes nothing, is left out.
- A function the graph calls is imported by name; one that cannot be (a lambda, a local
  function, an object) is refused, as are arguments with no source form (a tensor).

Example: ``fx.symbolic_trace`` of ``x -> conv -> bn -> relu -> (+ x) -> linear`` gives::

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, kernel_size=(3, 3), padding=(1, 1), bias=False)
            self.bn = nn.BatchNorm2d(8)
            ...

        def forward(self, x):
            conv = self.conv(x)
            bn = self.bn(conv);  conv = None
            ...

and ``build_model()`` returns ``Model()`` with ``weights.pt`` loaded, in the graph's mode.
"""

from __future__ import annotations

import base64
import builtins
import enum
import importlib
import inspect
import keyword
import math
import re
import sys
import textwrap
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.fx.graph import CodeGen, _PyTreeCodeGen
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.utils import _pytree as pytree

from alphac.channels import apply_channel_plan, plan_from_json
from alphac.errors import UserError
from alphac.modes import ModeValue


class CodegenError(UserError):
    """A graph module that cannot be written as a standalone PyTorch file."""


#: How a submodule's constructor was written: from its signature alone, from its signature with
#: a per-class reader for some arguments, or as a class defined in the generated file.
SIGNATURE, SPECIAL, INLINED = "signature", "special", "inlined"


@dataclass(frozen=True)
class ModuleCode:
    """One leaf module of the generated file: its dotted path, constructor call and kind."""

    path: str
    source: str
    kind: str


@dataclass(frozen=True)
class InheritReport:
    """What :func:`inherit_weights` did: the names it copied, and the others with the reason
    (``"missing"`` from the parent, or ``"shape (a, b) != (c, d)"``, child's shape first)."""

    copied: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    @property
    def reasons(self) -> dict[str, str]:
        """Skipped name -> why."""
        return dict(self.skipped)


# ---------------------------------------------------------------------------------------------
# Literals


class _Unwritable(ValueError):
    """A value with no literal form in the generated file."""


def _literal(value: Any) -> str:
    """Python source for a hyperparameter value (scalars, strings, dtypes, tuples, lists)."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'float("{value}")'
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, (tuple, list)) and type(value) in (tuple, list, torch.Size):
        items = ", ".join(_literal(v) for v in value)
        if isinstance(value, list):
            return f"[{items}]"
        return f"({items},)" if len(value) == 1 else f"({items})"
    raise _Unwritable(f"{type(value).__name__} {value!r}")


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (``1`` is not ``True``), elementwise for tuples and lists."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _tensor_source(value: torch.Tensor, indent: str) -> str:
    """Source that recreates a constant tensor exactly, wrapped at ``indent``: nested lists when
    small and exactly printable, else its bytes (little-endian) in base64."""
    value = value.detach().cpu()
    dtype, shape = str(value.dtype), _literal(tuple(value.shape))
    printable = value.dtype in _EXACT_DTYPES or (
        value.dtype.is_floating_point and bool(torch.isfinite(value).all()))
    if value.numel() <= _LIST_ELEMENTS and printable:
        lines = textwrap.wrap(repr(value.flatten().tolist()), 96 - len(indent),
                              break_long_words=False, break_on_hyphens=False)
        return (f"torch.tensor(\n{indent}" + f"\n{indent}".join(lines)
                + f", dtype={dtype}).reshape({shape})")
    data = base64.b64encode(value.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    text = data.decode()
    chunks = [f'"{text[i:i + 88]}"' for i in range(0, len(text), 88)] or ['""']
    return f"_from_base64(\n{indent}" + f"\n{indent}".join(chunks) + f", {dtype}, {shape})"


_LIST_ELEMENTS = 4096
_EXACT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


# ---------------------------------------------------------------------------------------------
# Leaf modules


def _is_torch_nn(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn.modules.")


def _class_source(cls: type) -> str:
    """``nn.Conv2d`` where torch.nn exports the class, else its full dotted path."""
    if getattr(nn, cls.__name__, None) is cls:
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


#: Per-class readers for constructor arguments that no attribute of the same name holds.
_READERS: dict[type, dict[str, Any]] = {
    nn.MultiheadAttention: {"bias": lambda m: m.in_proj_bias is not None,
                            "add_bias_kv": lambda m: m.bias_k is not None},
}
_FACTORY = ("self", "device", "dtype")
_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _parameters_of(cls: type) -> list[inspect.Parameter]:
    """The constructor's named parameters, factory keywords (device, dtype) aside."""
    return [p for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind in _KINDS and p.name not in _FACTORY]


def _read(module: nn.Module, params: list[inspect.Parameter]) -> dict[str, Any]:
    """The value of each constructor argument, read from the module's attribute of that name
    (or its class's reader); arguments without either keep their default."""
    readers = _READERS.get(type(module), {})
    values: dict[str, Any] = {}
    for p in params:
        if p.name in readers:
            values[p.name] = readers[p.name](module)
        elif hasattr(module, p.name):
            value = getattr(module, p.name)
            if isinstance(p.default, bool) and (value is None or isinstance(value, torch.Tensor)):
                value = value is not None  # `bias=True` keeps a tensor called bias
            values[p.name] = value
        elif p.default is inspect.Parameter.empty:
            raise _Unwritable(f"no attribute {p.name!r} for the required argument")
    return values


def _dtype(cls: type, module: nn.Module) -> dict[str, Any]:
    """``{"dtype": ...}`` when the module's floating tensors are not float32."""
    floats = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    if "dtype" not in inspect.signature(cls.__init__).parameters or not floats:
        return {}
    return {} if floats[0].dtype == torch.float32 else {"dtype": floats[0].dtype}


def _rebuild(cls: type, args: list[Any], kwargs: dict[str, Any]) -> nn.Module:
    meta = {"device": "meta"} if "device" in inspect.signature(cls.__init__).parameters else {}
    return cls(*args, **kwargs, **meta)


def _state_shapes(module: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype, bool]]:
    persistent = module.state_dict(keep_vars=True).keys()
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [(n, tuple(t.shape), t.dtype, n in persistent) for n, t in tensors]


def _equivalent(a: nn.Module, b: nn.Module, params: list[inspect.Parameter]) -> bool:
    """Same repr, same state (names, shapes, dtypes, persistence), same argument values."""
    if repr(a) != repr(b) or _state_shapes(a) != _state_shapes(b):
        return False
    read_a, read_b = _read(a, params), _read(b, params)
    return read_a.keys() == read_b.keys() and all(_same(read_a[k], read_b[k]) for k in read_a)


def _shortest_call(module: nn.Module, params: list[inspect.Parameter]
                   ) -> tuple[list[Any], dict[str, Any]]:
    """Arguments that rebuild ``module``: the leading required ints positionally, then keywords,
    leaving out every optional one whose omission rebuilds the same module."""
    cls, values = type(module), _read(module, params)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in params:
        if p.name in values:
            positional = p.default is inspect.Parameter.empty and not kwargs
            if positional and type(values[p.name]) is int:
                args.append(values[p.name])
            else:
                kwargs[p.name] = values[p.name]
    kwargs.update(_dtype(cls, module))
    optional = {p.name for p in params if p.default is not inspect.Parameter.empty}
    for name in [k for k in kwargs if k in optional]:
        trial = {k: v for k, v in kwargs.items() if k != name}
        if _equivalent(_rebuild(cls, args, trial), module, params):
            kwargs = trial
    return args, kwargs


def _signature_constructor(path: str, module: nn.Module) -> ModuleCode:
    """A torch.nn module's constructor call, read from its signature and verified by rebuilding."""
    cls = type(module)
    params = _parameters_of(cls)
    try:
        args, kwargs = _shortest_call(module, params)
        rebuilt = _rebuild(cls, args, kwargs)
        same = _equivalent(rebuilt, module, params)
        text = ", ".join([*map(_literal, args), *(f"{k}={_literal(v)}" for k, v in kwargs.items())])
    except (_Unwritable, TypeError, ValueError, RuntimeError) as exc:
        raise _unsupported(path, module, f"its constructor could not be rebuilt ({exc})") from None
    if not same:
        raise _unsupported(path, module, f"the rebuilt {rebuilt!r} differs from it")
    kind = SPECIAL if cls in _READERS else SIGNATURE
    return ModuleCode(path, f"{_class_source(cls)}({text})", kind)


def _is_drop_path(module: nn.Module) -> bool:
    """timm's stochastic depth (or a look-alike): ``DropPath`` with a ``drop_prob``, no state."""
    return (type(module).__name__ == "DropPath"
            and isinstance(getattr(module, "drop_prob", None), (int, float))
            and not list(module.children()) and not module.state_dict())


def _inlined_constructor(path: str, module: nn.Module) -> ModuleCode:
    """``ModeValue(eval, train)`` or ``DropPath(p)``, classes the generated file defines."""
    try:
        if isinstance(module, ModeValue):
            source = f"ModeValue({_literal(module.eval_value)}, {_literal(module.train_value)})"
        else:
            keep = getattr(module, "scale_by_keep", True)
            suffix = "" if keep is True else f", scale_by_keep={_literal(bool(keep))}"
            source = f"DropPath({_literal(float(module.drop_prob))}{suffix})"
    except _Unwritable as exc:
        raise _unsupported(path, module, f"a value has no literal form ({exc})") from None
    return ModuleCode(path, source, INLINED)


def _is_export_guard(module: nn.Module) -> bool:
    """torch.export's check of the input shapes (``_guards_fn``): it computes nothing."""
    cls = type(module)
    return cls.__name__ == "GuardsFn" and cls.__module__.startswith("torch.export")


def _constructor(path: str, module: nn.Module) -> ModuleCode:
    """The constructor call for the leaf module at ``path``; CodegenError if there is none."""
    if isinstance(module, ModeValue) or _is_drop_path(module):
        return _inlined_constructor(path, module)
    if isinstance(module, fx.GraphModule):
        raise _unsupported(path, module, "a nested graph (a higher-order op such as torch.cond "
                           "or a no_grad region) has no constructor")
    if _is_torch_nn(module):
        return _signature_constructor(path, module)
    raise _unsupported(path, module, "alphac writes torch.nn modules, ModeValue and DropPath only")


def _unsupported(path: str, module: nn.Module, why: str) -> CodegenError:
    cls = type(module)
    return CodegenError(
        f"cannot write submodule {path!r} ({cls.__module__}.{cls.__qualname__}) as standalone "
        f"PyTorch code: {why}",
        hint="let the tracer trace through this module (do not make it a leaf), or build the "
        "model from torch.nn modules and functions")


# ---------------------------------------------------------------------------------------------
# __init__: the module tree, parameters, buffers and constants


_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class _Init:
    """What ``__init__`` is made of, collected in the graph module's own order."""

    lines: list[str]
    modules: list[ModuleCode]
    constants: dict[str, torch.Tensor]

    def add_constant(self, path: str, value: torch.Tensor, persistent: bool) -> None:
        """A buffer whose value the file holds (``_CONSTANTS``), not weights.pt."""
        self.constants[path] = value
        flag = ", persistent=True" if persistent else ""
        self.lines.append(f'_constant(self, "{path}", _CONSTANTS["{path}"]{flag})')


def _self_target(path: str) -> str | None:
    """``self.name`` for a top-level name that assignment can register, else None."""
    if "." in path or not path.isidentifier() or keyword.iskeyword(path) or path.startswith("_"):
        return None
    taken = hasattr(nn.Module, path) or path in vars(nn.Module())  # e.g. `training`
    return None if taken else f"self.{path}"


def _tensor_args(tensor: torch.Tensor) -> str:
    dtype = "" if tensor.dtype == torch.float32 else f", dtype={tensor.dtype}"
    return f"{_literal(tuple(tensor.shape))}{dtype}"


#: Buffers torch.fx registers for tensors that forward creates: constants, though persistent.
_FX_CONSTANT = re.compile(r"_tensor_constant\d+")


def _container_lines(init: _Init, module: nn.Module, prefix: str,
                     constants: dict[str, torch.Tensor]) -> None:
    """Register the container's own parameters, buffers and constants, in its order."""
    for name, param in module._parameters.items():
        if param is not None:
            frozen = "" if param.requires_grad else ", requires_grad=False"
            init.lines.append(f'_parameter(self, "{prefix}{name}", {_tensor_args(param)}{frozen})')
    for name, buffer in module._buffers.items():
        persistent = name not in module._non_persistent_buffers_set
        if buffer is None:
            continue
        if persistent and not (prefix == "" and _FX_CONSTANT.fullmatch(name)):
            init.lines.append(f'_buffer(self, "{prefix}{name}", {_tensor_args(buffer)})')
        else:
            init.add_constant(prefix + name, buffer, persistent)
    for path, value in constants.items():
        if path.rpartition(".")[0] == prefix[:-1]:
            init.add_constant(path, value, False)


def _walk(init: _Init, module: nn.Module, prefix: str, called: set[str],
          constants: dict[str, torch.Tensor]) -> None:
    """Emit the subtree of ``module`` in registration order (so state_dict order matches)."""
    _container_lines(init, module, prefix, constants)
    for name, child in module._modules.items():
        path = prefix + name
        if child is None or _is_export_guard(child):
            continue
        if type(child) in _CONTAINERS and path not in called:
            _walk(init, child, path + ".", called, constants)
            continue
        code = _constructor(path, child)
        init.modules.append(code)
        target = _self_target(path)
        init.lines.append(f"{target} = {code.source}" if target else
                          f'_add(self, "{path}", {code.source})')


def _get_attr_constants(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """Tensors fetched by ``get_attr`` that are neither parameters nor buffers, by path;
    CodegenError for a fetched value that is not a tensor or a submodule."""
    found: dict[str, torch.Tensor] = {}
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        owner_path, _, name = str(node.target).rpartition(".")
        owner = gm.get_submodule(owner_path)
        value = getattr(owner, name)
        if name in owner._parameters or name in owner._buffers or isinstance(value, nn.Module):
            continue
        if not isinstance(value, torch.Tensor):
            raise CodegenError(
                f"node {node.name!r} fetches {node.target!r}, a {type(value).__name__}, which "
                "cannot be written as code", hint="keep only tensors as graph attributes")
        found[str(node.target)] = value
    return found


def _init(gm: fx.GraphModule) -> _Init:
    """The lines of ``__init__``: modules and tensors, then tied and frozen parameters."""
    init = _Init([], [], {})
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    constants = _get_attr_constants(gm)
    _walk(init, gm, "", called, constants)
    unplaced = sorted(constants.keys() - init.constants.keys())
    if unplaced:
        raise CodegenError(f"the graph fetches {unplaced[0]!r}, a plain tensor inside a leaf "
                           "module", hint="register the tensor as a buffer of that module")
    seen: dict[int, str] = {}
    for name, param in gm.named_parameters(remove_duplicate=False):
        if id(param) in seen:  # a tied parameter: one tensor under two names
            init.lines.append(f'_share(self, "{name}", "{seen[id(param)]}")')
        seen.setdefault(id(param), name)
    for code in init.modules:
        for name, param in gm.get_submodule(code.path).named_parameters(prefix=code.path):
            if not param.requires_grad:
                init.lines.append(f'self.get_parameter("{name}").requires_grad_(False)')
    return init


# ---------------------------------------------------------------------------------------------
# forward: the graph's own code


_SCALARS = (type(None), bool, int, float, complex, str, torch.dtype, torch.device,
            torch.memory_format, torch.layout, type(Ellipsis))
#: Containers fx prints as literals (a subclass such as a ModelOutput would print as its repr).
_SEQUENCES = (tuple, list, immutable_list, torch.Size)
_MAPPINGS = (dict, immutable_dict)


def _check_argument(node: fx.Node, value: Any) -> None:
    """CodegenError unless ``value`` prints as valid source (fx prints what it is given)."""
    if isinstance(value, (fx.Node, *_SCALARS, enum.Enum, torch._ops.OpOverload,
                          torch._ops.HigherOrderOperator)):
        return
    if type(value) in _SEQUENCES or (isinstance(value, tuple) and hasattr(value, "_fields")):
        for item in value:  # a namedtuple's class is imported like a function
            _check_argument(node, item)
        return
    if type(value) in _MAPPINGS:
        for key, item in value.items():
            _check_argument(node, key)
            _check_argument(node, item)
        return
    if isinstance(value, slice):
        for bound in (value.start, value.stop, value.step):
            _check_argument(node, bound)
        return
    what = "a tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
    raise CodegenError(
        f"node {node.name!r} ({node.op} {node.target}) has {what} among its arguments, which "
        "cannot be written as code",
        hint="register tensors as buffers (they are fetched by get_attr) and keep other "
        "arguments to Python scalars, strings, tuples and torch dtypes")


def _unflatten_output(gm: fx.GraphModule, codegen: _PyTreeCodeGen, graph: fx.Graph,
                      output: Any) -> Any:
    """The output of a pytree-calling graph (torch.export) as a plain Python structure; its
    inputs must be positional tensors only."""
    info = codegen.pytree_info
    flat = list(range(sum(1 for n in graph.nodes if n.op == "placeholder")))
    if info.in_spec is not None:
        try:
            positional = pytree.tree_unflatten(flat, info.in_spec) == (tuple(flat), {})
        except (ValueError, TypeError):  # as many leaves as placeholders, or it is not plain
            positional = False
        if not positional:
            raise CodegenError(
                f"{type(gm).__name__} takes nested or keyword inputs ({info.in_spec}); the "
                "generated forward takes positional tensors only",
                hint="capture the model with positional tensor inputs")
    if info.out_spec is None:
        return output
    leaves = list(output) if isinstance(output, (tuple, list)) else [output]
    return pytree.tree_unflatten(leaves, info.out_spec)


def _plain_graph(gm: fx.GraphModule) -> fx.Graph:
    """A copy of ``gm.graph`` with the plain calling convention and no type annotations."""
    codegen = gm.graph._codegen
    if type(codegen) not in (CodeGen, _PyTreeCodeGen):
        raise CodegenError(f"the graph uses a custom calling convention ({type(codegen).__name__})",
                           hint="use a graph from torch.fx symbolic tracing or torch.export")
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    output: Any = None
    for node in gm.graph.nodes:  # a fresh graph: the export guard is left out, not erased
        if node.op == "output":
            output = fx.node.map_arg(node.args[0], env.__getitem__)
        elif not (node.op == "call_module" and not node.users
                  and _is_export_guard(gm.get_submodule(str(node.target)))):
            env[node] = graph.node_copy(node, env.__getitem__)
    if isinstance(codegen, _PyTreeCodeGen):
        output = _unflatten_output(gm, codegen, graph, output)
    graph.output(output)
    for node in graph.nodes:
        node.type = None  # annotations are strings or classes that would need their own imports
        for value in (*node.args, *node.kwargs.values()):
            _check_argument(node, value)
    return graph


@dataclass
class _Imports:
    """Import statements of the generated file, grouped as isort would."""

    modules: set[str]
    names: dict[str, set[str]]
    assignments: list[str]
    libraries: list[str]

    def add_name(self, module: str, name: str) -> None:
        self.names.setdefault(module, set()).add(name)

    def lines(self) -> list[str]:
        """Standard library, torch, other libraries, then assignments, a blank line between."""
        def section(module: str) -> int:
            top = module.split(".")[0]
            return 0 if top in sys.stdlib_module_names else 1 if top == "torch" else 2

        groups: list[list[str]] = [[], [], [], list(self.assignments)]
        for module in sorted(self.modules):
            groups[section(module)].append(f"import {module}")
        for module, names in sorted(self.names.items()):
            groups[section(module)].append(f"from {module} import {', '.join(sorted(names))}")
        out: list[str] = []
        for group in (g for g in groups if g):
            out.extend([""] * bool(out) + group)
        return out


def _resolves(module: str, qualname: str, value: Any) -> bool:
    if "." in qualname or "<" in qualname or module == "__main__":
        return False
    try:
        return getattr(importlib.import_module(module), qualname, None) is value
    except ImportError:
        return False


def _add_global(imports: _Imports, name: str, value: Any) -> None:
    """The import (or assignment) that defines the forward's global ``name`` as ``value``."""
    if getattr(builtins, name, None) is value or value is torch:
        return
    if name in ("inf", "nan") and isinstance(value, float) and repr(value) == name:
        imports.add_name("math", name)
    elif value is type(None):
        imports.assignments.append(f"{name} = type(None)")
    elif isinstance(value, types.ModuleType):
        alias = "" if name == value.__name__ else f" as {name}"
        imports.modules.add(f"{value.__name__}{alias}")
    else:
        module = getattr(value, "__module__", None) or ""
        module = "operator" if module == "_operator" else module
        qualname = getattr(value, "__qualname__", "")
        if not module or not _resolves(module, qualname, value):
            what = f"{module}.{qualname}" if qualname else f"a {type(value).__name__}"
            raise CodegenError(
                f"the graph calls {what} (as {name!r}), which cannot be imported by name",
                hint="call module-level functions (no lambdas, local functions or bound "
                "objects) in forward, or let the tracer trace through them")
        imports.add_name(module, qualname if qualname == name else f"{qualname} as {name}")
        if module.split(".")[0] not in (*sys.stdlib_module_names, "torch"):
            imports.libraries.append(f"{module}.{qualname}")


def _forward(gm: fx.GraphModule, reserved: set[str]) -> tuple[list[str], list[str], _Imports]:
    """(module-level statements fx emits, forward's lines, the imports its globals need)."""
    code = _plain_graph(gm).python_code(root_module="self")
    head, _, body = code.src.strip("\n").partition("def forward(")
    imports = _Imports({"torch"}, {"torch": {"nn"}, "pathlib": {"Path"}}, [], [])
    for name in sorted(code.globals):
        if name != "__builtins__" and re.search(rf"\b{re.escape(name)}\b", code.src):
            if name in reserved:
                raise CodegenError(f"the graph uses the global name {name!r}, which the "
                                   "generated file defines itself",
                                   hint="pass another class_name")
            _add_global(imports, name, code.globals[name])
    lines = [f"    {line}".rstrip() for line in ("def forward(" + body).split("\n")]
    statements = [line for line in head.split("\n") if line.strip()]
    return statements, lines, imports


# ---------------------------------------------------------------------------------------------
# The file


_MODE_VALUE = '''
class ModeValue(nn.Module):
    """A constant that follows the mode: ``train_value`` in training mode, else ``eval_value``."""

    def __init__(self, eval_value, train_value) -> None:
        super().__init__()
        self.eval_value = eval_value
        self.train_value = train_value

    def forward(self):
        return self.train_value if self.training else self.eval_value

    def extra_repr(self) -> str:
        return f"eval={self.eval_value!r}, train={self.train_value!r}"
'''

_DROP_PATH = '''
class DropPath(nn.Module):
    """Stochastic depth: in training, zero each sample with probability ``drop_prob`` (the kept
    ones scaled by ``1 / (1 - drop_prob)`` when ``scale_by_keep``); the identity in eval mode."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        if self.scale_by_keep and keep > 0.0:
            mask.div_(keep)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
'''

_BUILD = '''
def build_model(weights: str | None = "auto") -> nn.Module:
    """A new ``{cls}`` in the traced graph's mode (``TRAINING``), with weights loaded.

    ``weights="auto"`` loads ``weights.pt`` from beside this file if it exists, a path loads that
    file, ``None`` keeps the initial values. Each saved tensor whose name and shape match one of
    the model's is copied; the others keep their initial values.
    """
    model = {cls}()
    if weights == "auto":
        here = globals().get("__file__")
        beside = Path(here).with_name("weights.pt") if here else None
        weights = str(beside) if beside is not None and beside.is_file() else None
    if weights is not None:
        _load_matching(model, torch.load(weights, map_location="cpu", weights_only=True))
    return model.train(TRAINING)
'''

#: Helpers of the generated file, by name; each is written when the file uses it.
_HELPERS = {
    "_submodule": '''
def _submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at the dotted ``path`` under ``root``, creating empty containers on the way."""
    module = root
    for name in path.split(".") if path else ():
        if name not in module._modules:
            module.add_module(name, nn.Module())
        module = module._modules[name]
    return module
''',
    "_add": '''
def _add(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` at the dotted ``path`` under ``root``."""
    parent, _, name = path.rpartition(".")
    _submodule(root, parent).add_module(name, module)
''',
    "_parameter": '''
def _parameter(root: nn.Module, path: str, shape: tuple[int, ...],
               dtype: torch.dtype = torch.float32, requires_grad: bool = True) -> None:
    """Register a parameter at ``path``, initialised by rank and name (weights.pt holds its
    value): floats of rank >= 2 kaiming-uniform as in nn.Linear, a 1-d ``*weight`` ones, others
    zeros."""
    parent, _, name = path.rpartition(".")
    value = torch.zeros(shape, dtype=dtype)
    if dtype.is_floating_point and len(shape) >= 2 and value.numel():
        nn.init.kaiming_uniform_(value, a=5**0.5)
    elif len(shape) == 1 and name.endswith("weight"):
        value.fill_(1)
    _submodule(root, parent).register_parameter(name, nn.Parameter(value, requires_grad))
''',
    "_buffer": '''
def _buffer(root: nn.Module, path: str, shape: tuple[int, ...],
            dtype: torch.dtype = torch.float32) -> None:
    """Register a buffer at ``path``: ``running_var`` ones, others zeros (weights.pt holds its
    value)."""
    parent, _, name = path.rpartition(".")
    value = (torch.ones if name == "running_var" else torch.zeros)(shape, dtype=dtype)
    _submodule(root, parent).register_buffer(name, value)
''',
    "_constant": '''
def _constant(root: nn.Module, path: str, value: torch.Tensor, persistent: bool = False) -> None:
    """Register a buffer at ``path`` with its value from this file (a constant, not a weight)."""
    parent, _, name = path.rpartition(".")
    _submodule(root, parent).register_buffer(name, value.clone(), persistent=persistent)
''',
    "_share": '''
def _share(root: nn.Module, path: str, source: str) -> None:
    """Make the parameter at ``path`` the one at ``source`` (tied weights)."""
    parent, _, name = path.rpartition(".")
    _submodule(root, parent).register_parameter(name, root.get_parameter(source))
''',
    "_load_matching": '''
def _load_matching(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy each saved tensor whose name and shape match one of the model's state tensors."""
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in saved.items():
            if name in own and own[name].shape == tensor.shape:
                own[name].copy_(tensor)
''',
    "_from_base64": '''
def _from_base64(data: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A constant tensor from its little-endian bytes."""
    raw = bytearray(base64.b64decode(data))
    if not raw:
        return torch.zeros(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).reshape(shape)
''',
}
_DEFINED = {"nn", "Path", "TRAINING", "build_model", "ModeValue", "DropPath", "_CONSTANTS",
            "base64", *_HELPERS}


_MODULE_DOC = '''"""{cls}: a standalone PyTorch model, written by alphac from a traced graph.

{body}
"""'''
_MODE = "#: The mode build_model() returns the model in: the traced graph's.\nTRAINING = {training}"
_CLASS_DOC = '    """The traced graph as a module; submodules and tensors keep their paths."""'


def _docstring(class_name: str, training: bool, libraries: list[str]) -> str:
    needs = "torch only" if not libraries else (
        "torch and the libraries of functions the traced model calls: "
        + ", ".join(sorted(set(libraries))))
    text = ("build_model() builds it, loads weights.pt from beside this file when present (tensors "
            f"matched by name and shape) and returns it in {'training' if training else 'eval'} "
            f"mode. It needs {needs}.")
    return _MODULE_DOC.format(cls=class_name, body="\n".join(textwrap.wrap(text, 96)))


def _model_class(class_name: str, init: _Init, forward: list[str]) -> str:
    lines = [f"class {class_name}(nn.Module):", _CLASS_DOC, "",
             "    def __init__(self) -> None:", "        super().__init__()",
             *(f"        {line}" for line in init.lines), "", *forward]
    return "\n".join(lines).rstrip()


def _inlined_classes(init: _Init) -> list[str]:
    sources = {"ModeValue": _MODE_VALUE, "DropPath": _DROP_PATH}
    return [text.strip("\n") for name, text in sources.items()
            if any(c.source.startswith(f"{name}(") for c in init.modules)]


def _constants_source(constants: dict[str, torch.Tensor]) -> str:
    if not constants:
        return ""
    lines = ["#: Tensors no state dict carries (non-persistent buffers, constants of the graph).",
             "_CONSTANTS = {"]
    for path, value in constants.items():
        lines.append(f'    "{path}": {_tensor_source(value, " " * 8)},')
    return "\n".join([*lines, "}"])


def _helper_sources(text: str) -> list[str]:
    """The helpers ``text`` calls, and those they call, in a fixed order."""
    used: set[str] = set()
    for _ in range(2):  # helpers call _submodule
        text += "".join(_HELPERS[name] for name in used)
        used = {name for name in _HELPERS if f"{name}(" in text}
    return [source.strip("\n") for name, source in _HELPERS.items() if name in used]


def generate_code(gm: fx.GraphModule, *, class_name: str = "Model") -> str:
    """The source of a standalone ``model.py`` for ``gm``: torch imports only, a ``class_name``
    module with the same ``state_dict()`` keys, the graph's forward, and ``build_model()``.

    Deterministic: the same graph gives the same text in any process. Raises CodegenError for a
    submodule, function or argument that cannot be written as code.
    """
    if not class_name.isidentifier() or keyword.iskeyword(class_name) or class_name in _DEFINED:
        raise CodegenError(f"{class_name!r} cannot name the generated class",
                           hint="pass a Python identifier such as 'Model' or 'Child3'")
    init = _init(gm)
    statements, forward, imports = _forward(gm, {class_name, *_DEFINED})
    constants = _constants_source(init.constants)
    if "_from_base64(" in constants:
        imports.modules.add("base64")
    build = _BUILD.format(cls=class_name).strip("\n")
    head = [_docstring(class_name, gm.training, imports.libraries),
            "from __future__ import annotations", "\n".join(imports.lines()),
            "\n".join(statements)]
    body = [_MODE.format(training=gm.training), *_inlined_classes(init),
            _model_class(class_name, init, forward), build,
            *_helper_sources("\n".join([*init.lines, constants, build])), constants]
    return ("\n\n".join(filter(None, head)) + "\n\n\n"
            + "\n\n\n".join(filter(None, body)) + "\n")


def module_constructors(gm: fx.GraphModule) -> tuple[ModuleCode, ...]:
    """Each leaf module :func:`generate_code` writes, with its constructor call and kind
    (:data:`SIGNATURE`, :data:`SPECIAL` or :data:`INLINED`), in the order written."""
    return tuple(_init(gm).modules)


def write_model(gm: fx.GraphModule, directory: Path, *, class_name: str = "Model",
                weights: bool = True) -> Path:
    """Write ``directory/model.py`` (and, with ``weights``, ``directory/weights.pt``: ``gm``'s
    state dict, loadable with ``torch.load(..., weights_only=True)``); return model.py's path."""
    directory = Path(directory)
    source = generate_code(gm, class_name=class_name)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.py"
    path.write_text(source, encoding="utf-8")
    if weights:
        state = {name: tensor.detach().clone() for name, tensor in gm.state_dict().items()}
        torch.save(state, directory / "weights.pt")
    return path


def inherit_weights(child: nn.Module, parent_state: Mapping[str, torch.Tensor],
                    plan: Sequence[Any] = ()) -> InheritReport:
    """Copy into ``child`` each tensor of ``parent_state`` whose name and shape match one of the
    child's state tensors; the others keep their values. Then ``plan`` (a mutation's
    :class:`~alphac.channels.ChannelStep` tuple, e.g. ``child.record.weight_plan``) maps the
    channels of modules whose widths or names changed (:func:`alphac.channels.apply_channel_plan`).
    Reports what was copied and skipped (a tensor the plan set counts as copied)."""
    copied: list[str] = []
    skipped: list[tuple[str, str]] = []
    with torch.no_grad():
        for name, tensor in child.state_dict().items():
            source = parent_state.get(name)
            if source is None:
                skipped.append((name, "missing"))
            elif source.shape != tensor.shape:
                skipped.append((name, f"shape {tuple(tensor.shape)} != {tuple(source.shape)}"))
            else:
                tensor.copy_(source.to(device=tensor.device, dtype=tensor.dtype))
                copied.append(name)
    steps = tuple(s if not isinstance(s, Mapping) else plan_from_json([s])[0] for s in plan)
    if steps:
        mapped = set(apply_channel_plan(child, parent_state, steps))
        copied += sorted(mapped - set(copied))
        skipped = [s for s in skipped if s[0] not in mapped]
    return InheritReport(tuple(copied), tuple(skipped))
