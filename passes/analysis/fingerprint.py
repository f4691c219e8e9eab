"""Fingerprint analysis: a structural hash of a subgraph that ignores node and module names.

Each node hashes its op (the registry's normalized :class:`~alphac.passes.analysis.registry.OpSpec`:
kind and params, where an operand :class:`~alphac.passes.analysis.registry.Ref` stands as its
operand's hash), a module's own hyperparameters (``extra_repr``, e.g. a norm's ``eps``), and the
hashes of its operands in order, and a call's target and literal arguments and keywords (a form
need not bind every keyword); subgraph inputs hash by position,
parameters read with ``get_attr`` by shape. The subgraph's fingerprint combines its outputs'
hashes in order with the sorted hashes of all its nodes (so a dead node still counts). Used to
reject a child identical to its parent and to deduplicate a population (ALGORITHM.md 2.5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import fx

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.passes.analysis.index import GraphIndex, graph_index
from alphac.passes.analysis.registry import REGISTRY, Ref
from alphac.passes.analysis.shape import traced_shape

__all__ = ["FingerprintAnalysis"]


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _literal(value: Any, hashes: dict[str, str]) -> str:
    if isinstance(value, fx.Node):
        return f"%{hashes.get(value.name, 'outside')}"
    if isinstance(value, list | tuple):
        inner = ",".join(_literal(v, hashes) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_literal(v, hashes)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, slice):
        return f"slice({_literal((value.start, value.stop, value.step), hashes)})"
    if isinstance(value, float | int | bool | str | type(None)) or value is Ellipsis:
        return repr(value)
    return type(value).__qualname__ + ":" + str(value)


def _params_text(spec_params: tuple, operands: tuple[str, ...]) -> str:
    """The params with each ``Ref(i)`` replaced by the hash of operand i."""
    def norm(v: Any) -> Any:
        if isinstance(v, Ref):
            return f"%{operands[v.index]}"
        if isinstance(v, tuple):
            return tuple(norm(x) for x in v)
        return v

    return repr(tuple((k, norm(v)) for k, v in spec_params))


@dataclass(frozen=True)
class FingerprintAnalysis:
    """Hash a subgraph's structure (ops, normalized hyperparameters, wiring), ignoring names.

    Pre: ``subgraph`` names nodes of ``gm``. Post: a hex string, equal for two subgraphs exactly
    when (up to hash collisions) their ops, literal arguments, module hyperparameters and wiring
    agree. Example: the bodies of ``layer1.0`` and ``layer1.1`` of a ResNet-18 get the same
    fingerprint; replacing a ReLU by a GELU in one of them, or ``x + y`` by ``y + x`` where the
    operands differ, changes it.
    """

    name: ClassVar[str] = "fingerprint"

    def compute(self, gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager) -> str:
        index = graph_index(gm, am)
        hashes = {name: _digest(f"input:{i}") for i, name in enumerate(subgraph.inputs)}
        for name in subgraph.nodes:
            node = index.nodes[name]
            hashes[name] = _digest(self._token(index, node, hashes))
        outputs = ",".join(hashes[n] for n in subgraph.outputs)
        members = ",".join(sorted(hashes[n] for n in subgraph.nodes))
        return _digest(f"out:{outputs};nodes:{members}")

    @staticmethod
    def _token(index: GraphIndex, node: fx.Node, hashes: dict[str, str]) -> str:
        if node.op == "get_attr":
            return f"get_attr:{traced_shape(node)}"
        op = index.op(node)
        module = index.modules.get(str(node.target)) if node.op == "call_module" else None
        extra = f"{type(module).__qualname__}({module.extra_repr()})" if module is not None else ""
        if op.spec.kind not in REGISTRY:
            return _unknown_token(node, hashes, extra)
        operands = tuple(hashes.get(o.name, "outside") for o in op.operands)
        return (f"{op.spec.kind}|{_params_text(op.spec.params, operands)}|{','.join(operands)}|"
                f"{_call_text(node, hashes, extra)}")


def _call_text(node: fx.Node, hashes: dict[str, str], extra: str) -> str:
    """The call itself: target and literal arguments (a form may not bind every keyword, e.g.
    gelu's ``approximate``), or a module's hyperparameters."""
    if node.op == "call_module":
        return extra
    target = str(getattr(node.target, "__name__", node.target))
    return f"{target}|{_literal(node.args, hashes)}|{_literal(dict(node.kwargs), hashes)}"


def _unknown_token(node: fx.Node, hashes: dict[str, str], extra: str) -> str:
    """An op no rule knows: its call target and literal arguments stand for its params."""
    return f"unknown|{_call_text(node, hashes, extra)}"


