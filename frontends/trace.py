"""Capture an ``nn.Module`` as a torch.fx GraphModule: torch.fx first, torch.export as fallback.

torch.fx keeps module calls (``call_module``) and is preferred; it traces in both modes and
merges them (:mod:`alphac.frontends.modes_capture`). Models with Python control flow on shapes
fail there but trace through ``torch.export`` (shapes are static there, except a dynamic batch
dimension), which yields aten-level ops; so do models whose fx graph would call a library's
function as one opaque node (:func:`library_functions`). It exports in eval mode and its training
flags follow the mode at run time. Either way ``.train()``/``.eval()`` on the returned graph behave as on the
model. If both fail (typically a Python ``if`` on a tensor *value*), the error names the
offending line of the user's code and says how to fix it.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import torch
from torch import fx, nn

from alphac.errors import CaptureWarning, InvalidInputShapeError, TraceError
from alphac.frontends.export_regions import inline_disabled_autocast
from alphac.frontends.locate import user_location
from alphac.frontends.modes_capture import (
    capture_fx,
    export_structure_differs,
    follow_mode_in_export,
    undone_side_effects,
)
from alphac.ir import annotate_shapes as annotate_shapes  # re-exported: frontends' public name
from alphac.modes import ModeValue, training_mode
from alphac.rewriter import Rewriter

FX = "fx"
EXPORT = "export"


def trace(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> tuple[fx.GraphModule, str]:
    """``(graph module, frontend used)`` for ``model`` at ``example_inputs``.

    The graph computes the model's function in eval and in train mode, and starts in the
    model's mode; the model's mode and state are unchanged.
    """
    check_runs(model, example_inputs)
    try:
        gm = capture_fx(model)
        _start_in_mode(gm, model.training)
        if not library_functions(gm):
            return gm, FX
        fx_gm: fx.GraphModule | None = gm
    except Exception as fx_exc:  # noqa: BLE001 - any failure falls back to export
        fx_error, fx_gm = fx_exc, None
    try:
        gm = _export(model, tuple(example_inputs))
    except Exception as export_exc:  # noqa: BLE001 - reported with both causes below
        if fx_gm is not None:  # opaque library calls, but a graph: keep it
            return fx_gm, FX
        raise _both_failed(model, fx_error, export_exc) from None
    _warn_if_train_export_differs(model, tuple(example_inputs), gm)
    gm = follow_mode_in_export(gm)
    gm.train(model.training)
    return gm, EXPORT


_TORCH_MODULES = ("torch", "operator", "_operator", "builtins", "math")


def library_functions(gm: fx.GraphModule) -> list[str]:
    """The functions from other libraries ``gm`` calls as single nodes, e.g. torchvision's
    ``shifted_window_attention``, which it ``torch.fx.wrap``s because fx cannot trace it.

    No analysis has a rule for such a call and generated code would import its library, so
    :func:`trace` captures that model through torch.export instead, which traces into it.
    """
    found = []
    for node in gm.graph.nodes:
        module = getattr(node.target, "__module__", None) or ""
        if node.op == "call_function" and module.split(".")[0] not in _TORCH_MODULES:
            found.append(f"{module}.{getattr(node.target, '__qualname__', node.target)}")
    return sorted(set(found))


def _export(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
            training: bool = False) -> fx.GraphModule:
    """``torch.export`` with a dynamic batch dimension, so the module runs at any batch size.

    ``Dim.AUTO`` quietly keeps the example's batch size where the model bakes it in (a reshape to
    a literal 2); an export that fails only because the batch is symbolic is retried statically,
    whose error, if it fails too, is the one reported.
    """
    batch = tuple({0: torch.export.Dim.AUTO} if t.dim() else None for t in example_inputs)
    with _quiet_torch_logs(), training_mode(model, training), undone_side_effects(model):
        try:
            program = torch.export.export(model, example_inputs, dynamic_shapes=batch)
        except Exception:  # noqa: BLE001 - the static export below decides and reports
            program = torch.export.export(model, example_inputs)
    gm = program.module()
    _drop_guard_node(gm)
    inline_disabled_autocast(gm)
    return gm


def _warn_if_train_export_differs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...],
                                  eval_gm: fx.GraphModule) -> None:
    """Export in train mode too; warn if it runs other ops than the eval graph (stochastic
    depth, a train-only branch): the captured graph trains with eval-mode structure there."""
    try:
        train_gm = _export(model, example_inputs, training=True)
    except Exception:  # noqa: BLE001 - nothing to compare with; the eval graph stands
        return
    if export_structure_differs(eval_gm, train_gm):
        warnings.warn(
            f"{type(model).__name__} runs different operations in train mode than in eval mode "
            "(e.g. stochastic depth); alphac captured its eval-mode graph through torch.export, "
            "so training the captured graph uses eval-mode structure (batch-norm and dropout "
            "flags still follow the mode)", CaptureWarning, stacklevel=3)


@contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    # A failing export logs whole graphs at warning level; the TraceError already says what matters.
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with redirect_stdout(sink), redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


def check_runs(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> None:
    """Run the model eagerly once; a failure here is almost always a wrong input shape."""
    shapes = ", ".join("x".join(map(str, t.shape)) for t in example_inputs)
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example_inputs)
    except Exception as exc:
        where = user_location(exc)
        raise InvalidInputShapeError(
            f"the model fails on an input of shape {shapes}{where}: {type(exc).__name__}: "
            f"{_first_line(exc)}",
            hint="pass --input-shape with the full input shape your model expects "
            "(batch first, e.g. --input-shape 2x3x32x32) or pick the matching --target",
        ) from None
    finally:
        model.train(was_training)


def _start_in_mode(gm: fx.GraphModule, training: bool) -> None:
    # Only the graph's own modules: the others are the model's, already in its mode.
    for module in [gm, *(m for m in gm.modules() if isinstance(m, ModeValue))]:
        module.training = training


def _drop_guard_node(gm: fx.GraphModule) -> None:
    # torch.export inserts a call to a guard-checking submodule; it computes nothing we analyse.
    rw = Rewriter(gm, bump=False)  # capture: the graph is handed out at version 0
    guards = [n for n in gm.graph.nodes
              if n.op == "call_module" and str(n.target).startswith("_guards")]
    rw.erase(*guards)
    for node in guards:
        if hasattr(gm, str(node.target)):
            delattr(gm, str(node.target))
    # No dead-code elimination: an export's in-place buffer updates have no users.
    rw.commit(eliminate_dead_code=False)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _both_failed(model: nn.Module, fx_exc: BaseException, export_exc: BaseException) -> TraceError:
    where = user_location(fx_exc) or user_location(export_exc)
    value_branch = "control flow" in str(fx_exc) or "data-dependent" in str(export_exc).lower()
    construct = (
        "a Python `if`/loop that depends on a tensor's value"
        if value_branch
        else "a construct neither torch.fx nor torch.export can capture"
    )
    return TraceError(
        f"cannot capture {type(model).__name__} as a graph: its forward uses {construct}{where}.\n"
        f"  torch.fx: {_first_line(fx_exc)}\n  torch.export: {_first_line(export_exc)}",
        hint="replace value-dependent Python control flow with tensor ops (torch.where, masking, "
        "clamp) or decide it at construction time; branching on shapes is fine",
    )
