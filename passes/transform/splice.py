"""Splice: materialise a :class:`~alphac.passes.analysis.program.Program` in place of a subgraph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sympy
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.passes.analysis.index import graph_index
from alphac.passes.analysis.program import Program, ProgramOp
from alphac.passes.analysis.program_infer import Context, _floats_of, value_shapes
from alphac.passes.analysis.registry import Built, OpSpec, Ref, materialise
from alphac.passes.analysis.registry.normalize import Op, module_spec
from alphac.passes.analysis.shape import _constant, traced_shape
from alphac.rewriter import Rewriter

__all__ = ["ORIGIN_KEY", "insert_built", "splice", "spliced_part"]

#: ``node.meta`` key of a module call spliced for an op with an ``origin`` (its value).
ORIGIN_KEY = "alphac_origin"


def splice(gm: fx.GraphModule, subgraph: Subgraph, program: Program,
           context_bindings: Mapping[sympy.Symbol, int], am: AnalysisManager | None = None, *,
           rewriter: Rewriter | None = None, context: Context | None = None) -> Subgraph:
    """Replace ``subgraph`` by ``program`` instantiated at ``context_bindings``.

    Pre: ``subgraph`` is convex (no path leaves it and comes back, else ValueError);
    ``program.inputs`` bind to ``subgraph.inputs`` in order and ``program.outputs`` stand for
    ``subgraph.outputs`` in order; every op kind has a materialise rule
    (:func:`~alphac.passes.analysis.registry.materialise`). ``context`` is the instance's (as
    ``lift`` gives it; by default the inputs' traced shapes): materialise reads each operand's
    concrete shape from it, since a node this splice made has no ``tensor_meta`` (a batch
    norm's class follows its input's rank). Post: each op is a fresh module at
    this instance's widths (named ``<block>_syn_<kind>_<i>``, e.g. ``layer1_0_syn_conv_0``) or,
    where its ``source`` names a submodule whose spec equals the op's, that module (weights
    kept), or, where it names a function or method call of ``subgraph`` whose spec equals the
    op's (an op lifted unchanged), a copy of that call as written (so ``splice(gm, s, *lift(gm,
    s))`` keeps the model's code and fingerprint); new nodes carry the block's
    ``nn_module_stack``; uses of the old outputs read the
    new ones; dead code and unused submodules are gone; the graph lints and the version went up
    once (unless ``rewriter`` is given: then its caller commits). Returns the spliced part as a
    Subgraph. ``tensor_meta`` of the new nodes is not computed: re-annotate
    (``alphac.ir.annotate_shapes``) before analyses that need concrete shapes.

    Example: splicing ``conv1x1(C->C/4), relu, conv3x3(C/4->C)`` into ``layer1.0``'s body at
    ``C=64`` gives ``layer1_0_syn_conv_0 = self.layer1_0_syn_conv_0(x)`` ... in its place.
    """
    nodes = {n.name: n for n in gm.graph.nodes}
    _check_convex(nodes, subgraph)
    rw = rewriter or Rewriter(gm)
    specs = program.instantiate(context_bindings)
    stack = _common_stack([nodes[n] for n in subgraph.nodes if n in nodes])
    prefix = next(reversed(stack), "") if stack else ""
    prefix = f"{prefix.replace('.', '_')}_syn" if prefix else "syn"

    calls = _lifted_calls(gm, subgraph, nodes, am) if any(op.source for op in program.ops) else {}
    if context is None:
        context = _traced_context([nodes[n] for n in subgraph.inputs], context_bindings)
    shapes = value_shapes(program, context, am)

    def build(rw: Rewriter, inputs: tuple[fx.Node, ...]) -> list[fx.Node]:
        values = list(inputs)
        for op, spec in zip(program.ops, specs, strict=True):
            operands = [values[i] for i in op.operands]
            copied = _copy_call(rw, calls.get(op.source or ""), spec, operands)
            known = tuple(shapes[i] if shapes[i] is not None else _shape(values[i])
                          for i in op.operands)
            values.append(copied if copied is not None
                          else _insert_op(rw, op, spec, operands, known, prefix, stack))
        return [values[i] for i in program.outputs]

    first = len(rw.created)
    new = rw.splice(subgraph, build, meta={"nn_module_stack": dict(stack)} if stack else None)
    created = [n.name for n in rw.created[first:]]
    if rewriter is None:
        rw.commit()
    return spliced_part(gm, subgraph, created, [n.name for n in new])


def spliced_part(gm: fx.GraphModule, subgraph: Subgraph, created: list[str],
                 outputs: list[str]) -> Subgraph:
    """The replacement of ``subgraph`` as a Subgraph numbered like it: its live ``created``
    nodes, the inputs it reads in ``subgraph.inputs`` order, ``outputs`` in the old outputs'
    order (so depth and mixing pairs compare with the old subgraph's, pair by pair)."""
    alive = {n.name for n in gm.graph.nodes}
    found = Subgraph.from_nodes(gm, [n for n in created if n in alive])
    order = {name: i for i, name in enumerate(subgraph.inputs)}
    inputs = sorted(found.inputs, key=lambda n: (order.get(n, len(order)), n))
    return Subgraph(found.nodes, tuple(inputs), tuple(outputs))


def _check_convex(nodes: Mapping[str, fx.Node], subgraph: Subgraph) -> None:
    """Raise when a path leaves ``subgraph`` and comes back: no place for its replacement."""
    members = set(subgraph.nodes)
    inputs = set(subgraph.inputs)
    seen: set[str] = set()
    stack = [u for name in subgraph.outputs for u in nodes[name].users if u.name not in members]
    while stack:
        node = stack.pop()
        if node.name in inputs:
            raise ValueError(f"splice: the subgraph is not convex: its input {node.name} depends "
                             "on its own outputs through nodes outside it; add those nodes to it")
        if node.name not in seen:
            seen.add(node.name)
            stack.extend(u for u in node.users if u.name not in members)


def _lifted_calls(gm: fx.GraphModule, subgraph: Subgraph, nodes: Mapping[str, fx.Node],
                  am: AnalysisManager | None) -> dict[str, tuple[fx.Node, Op]]:
    """The subgraph's calls an op can be copied from, with their normalised ops, keyed like the
    ops' ``source``: function and method calls by node name, and calls of modules no rule knows
    (kind ``unknown``) by target, which only a copy calls with all their arguments
    (``attn(t, t, t, need_weights=False)``; a rebuilt call would pass the operands alone)."""
    index = graph_index(gm, am)
    calls: dict[str, tuple[fx.Node, Op]] = {}
    for name in subgraph.nodes:
        node = nodes[name]
        if node.op in ("call_function", "call_method"):
            calls[name] = (node, index.op(node))
        elif node.op == "call_module" and index.op(node).spec.kind == "unknown":
            calls[str(node.target)] = (node, index.op(node))
    return calls


def _copy_call(rw: Rewriter, old: tuple[fx.Node, Op] | None, spec: OpSpec,
               operands: list[fx.Node]) -> fx.Node | None:
    """The call ``old`` as written, reading ``operands``, when its spec is the op's (an op
    lifted and spliced back unchanged); None where it is not (then the op is materialised).
    Keeps the spelling (``x + y``, ``x.flatten(1)``), which the fingerprint reads, and the
    literal arguments no spec param holds."""
    if old is None or old[1].spec != spec or len(old[1].operands) != len(operands):
        return None
    node, norm = old
    mapping = dict(zip(norm.operands, operands, strict=True))
    if any(n not in mapping and n.op != "get_attr" for n in node.all_input_nodes):
        return None
    fetched = {n: rw.get_attr(str(n.target)) for n in node.all_input_nodes if n not in mapping}
    mapping.update(fetched)
    args = fx.node.map_arg(node.args, mapping.__getitem__)
    kwargs = fx.node.map_arg(node.kwargs, mapping.__getitem__)
    stack = node.meta.get("nn_module_stack")
    return rw.insert(node.op, node.target, tuple(args), dict(kwargs),
                     meta={"nn_module_stack": stack} if stack else None)


def _insert_op(rw: Rewriter, op: ProgramOp, spec: OpSpec, operands: list[fx.Node],
               shapes: tuple[Any, ...], prefix: str, stack: dict[str, Any]) -> fx.Node:
    source = _reusable(rw.gm, op, spec)
    if source is not None:
        node = rw.insert("call_module", op.source, tuple(operands))
        node.meta["nn_module_stack"] = {**stack, op.source: (op.source, type(source))}
        return node
    if op.source is not None and spec.kind == "get_attr":
        return rw.get_attr(op.source)
    node = insert_built(rw, materialise(spec, shapes), operands, name=f"{prefix}_{spec.kind}")
    if op.origin is not None and node.op == "call_module":
        node.meta[ORIGIN_KEY] = op.origin  # the parent module whose channels it starts from
    if node.op == "call_module":
        node.meta["nn_module_stack"] = {**stack, str(node.target): (
            str(node.target), type(rw.gm.get_submodule(str(node.target))))}
    return node


def _reusable(gm: fx.GraphModule, op: ProgramOp, spec: OpSpec) -> nn.Module | None:
    """The source module when the op's concrete spec is the one it already computes."""
    if op.source is None:
        return None
    try:
        module = gm.get_submodule(op.source)
    except AttributeError:
        return None
    return module if module_spec(module) == spec else None


def insert_built(rw: Rewriter, built: Built, operands: list[fx.Node], *, name: str = "syn",
                 **place: Any) -> fx.Node:
    """Insert the node ``built`` describes, its Refs replaced by ``operands``."""
    args = _bind(built.args, operands)
    kwargs = {k: _bind(v, operands) for k, v in built.kwargs}
    if built.op == "call_module":
        return rw.call_module(built.target, args, kwargs, name=name, **place)
    return rw.insert(built.op, built.target, args, kwargs, **place)


def _bind(value: Any, operands: list[fx.Node]) -> Any:
    if isinstance(value, Ref):
        return operands[value.index]
    if isinstance(value, tuple):
        return tuple(_bind(v, operands) for v in value)
    if isinstance(value, slice):
        return slice(*(_bind(v, operands) for v in (value.start, value.stop, value.step)))
    return value


def _traced_context(inputs: list[fx.Node], bindings: Mapping[sympy.Symbol, int]) -> Context:
    """The inputs' traced shapes as the context (constants: only concrete shapes are read)."""
    return Context(tuple(_constant(traced_shape(n)) for n in inputs),
                   tuple(_floats_of(n) for n in inputs), bindings)


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(int(s) for s in meta.shape) if hasattr(meta, "shape") else None


def _common_stack(nodes: list[fx.Node]) -> dict[str, Any]:
    """The ``nn_module_stack`` entries every node shares, minus a leaf module's own entry."""
    stacks = [list((n.meta.get("nn_module_stack") or {}).items()) for n in nodes]
    if not stacks:
        return {}
    common = []
    for entries in zip(*stacks, strict=False):
        if any(e != entries[0] for e in entries):
            break
        common.append(entries[0])
    if len(nodes) == 1 and nodes[0].op == "call_module" and common:
        common = common[:-1]
    return dict(common)
