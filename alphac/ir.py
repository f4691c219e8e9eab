"""IR helpers over torch.fx: the frozen :class:`Subgraph` value and small graph queries.

torch.fx ``GraphModule`` is alphac's only IR. Code refers to a part of a graph by a
:class:`Subgraph` (node *names*), never by live ``Node`` objects held across rewrites, because a
rewrite may erase and recreate nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import fx
from torch.fx.passes.shape_prop import ShapeProp

from alphac.modes import training_mode

#: Node ops that compute something (placeholders, get_attr and output only move values around).
COMPUTE_OPS = frozenset({"call_module", "call_function", "call_method"})


def node_map(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """Name -> node for every node of ``gm``'s graph."""
    return {n.name: n for n in gm.graph.nodes}


def compute_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    """The nodes that compute something, in topological (graph) order."""
    return [n for n in gm.graph.nodes if n.op in COMPUTE_OPS]


def producers(node: fx.Node) -> list[fx.Node]:
    """The nodes whose values ``node`` reads, in argument order, without repeats."""
    return list(dict.fromkeys(node.all_input_nodes))


def consumers(node: fx.Node) -> list[fx.Node]:
    """The nodes that read ``node``'s value, in graph order."""
    return list(node.users)


def count_params(module: torch.nn.Module) -> int:
    """Number of parameter elements, counting each shared parameter once."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class Subgraph:
    """A set of nodes of a graph, named, with its boundary.

    ``nodes`` are in graph (topological) order; ``inputs`` are values produced outside the set and
    read inside it (placeholders and computed nodes; parameters fetched by ``get_attr`` count as
    part of the set, not as inputs); ``outputs`` are nodes of the set read outside it or returned by
    the graph. Example: for ``x -> conv -> relu -> add(relu, x) -> out`` the subgraph
    ``{conv, relu}`` has inputs ``(x,)`` and outputs ``(relu,)``.
    """

    nodes: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a Subgraph needs at least one node")

    @classmethod
    def from_nodes(cls, gm: fx.GraphModule, names: Iterable[str]) -> Subgraph:
        """The subgraph of ``gm`` made of the named nodes, with its boundary computed."""
        by_name = node_map(gm)
        wanted = set(names)
        unknown = wanted - by_name.keys()
        if unknown:
            raise KeyError(f"no node named {sorted(unknown)} in the graph")
        members = {n for n in wanted if by_name[n].op in COMPUTE_OPS or by_name[n].op == "get_attr"}
        # Parameters and buffers read inside the set belong to it: they are constants, not inputs.
        for name in list(members):
            members.update(p.name for p in by_name[name].all_input_nodes if p.op == "get_attr")
        ordered = [n for n in gm.graph.nodes if n.name in members]
        inputs: dict[str, None] = {}
        outputs: dict[str, None] = {}
        for node in ordered:
            for p in producers(node):
                if p.name not in members:
                    inputs[p.name] = None
            if node.op != "get_attr" and any(u.name not in members for u in node.users):
                outputs[node.name] = None
        return cls(tuple(n.name for n in ordered), tuple(inputs), tuple(outputs))

    @classmethod
    def whole(cls, gm: fx.GraphModule) -> Subgraph:
        """Every computing node of ``gm``: inputs are its placeholders, outputs what it returns."""
        names = [n.name for n in gm.graph.nodes if n.op in COMPUTE_OPS or n.op == "get_attr"]
        if not names:
            raise ValueError("the graph computes nothing")
        return cls.from_nodes(gm, names)

    def node_objects(self, gm: fx.GraphModule) -> list[fx.Node]:
        """The live nodes of this subgraph in ``gm``; KeyError if a rewrite removed one."""
        by_name = node_map(gm)
        return [by_name[n] for n in self.nodes]

    def compute_node_names(self, gm: fx.GraphModule) -> tuple[str, ...]:
        """The names of the nodes that compute (no get_attr)."""
        return tuple(n.name for n in self.node_objects(gm) if n.op in COMPUTE_OPS)

    def is_connected(self, gm: fx.GraphModule) -> bool:
        """Whether the computing nodes form one weakly connected component."""
        names = set(self.compute_node_names(gm))
        if not names:
            return False
        by_name = node_map(gm)
        start = next(iter(names))
        seen, stack = {start}, [start]
        while stack:
            node = by_name[stack.pop()]
            for other in [*producers(node), *consumers(node)]:
                if other.name in names and other.name not in seen:
                    seen.add(other.name)
                    stack.append(other.name)
        return seen == names


@dataclass(frozen=True)
class Boundary:
    """Where a child model's changed region meets its parent: ``part``, a subgraph of the
    child, and the parent's nodes whose values its inputs and outputs stand for, in
    ``part.inputs`` and ``part.outputs`` order. A rewrite's part replaced the parent's
    subgraph with inputs ``parent_inputs`` and outputs ``parent_outputs``; a width mutation's
    part keeps its nodes' names, so both sides name the same nodes. Block-wise distillation
    (:func:`alphac.runtime.distill.distill`) trains ``part`` to map the parent's values at
    ``parent_inputs`` to its values at ``parent_outputs``."""

    part: Subgraph
    parent_inputs: tuple[str, ...]
    parent_outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.parent_inputs) != len(self.part.inputs) \
                or len(self.parent_outputs) != len(self.part.outputs):
            raise ValueError("a Boundary pairs each input and output of its part with one "
                             "parent node")

    @classmethod
    def from_json(cls, data: dict) -> Boundary:
        """The inverse of ``dataclasses.asdict`` (as the journal stores it)."""
        part = data["part"]
        return cls(Subgraph(tuple(part["nodes"]), tuple(part["inputs"]), tuple(part["outputs"])),
                   tuple(data["parent_inputs"]), tuple(data["parent_outputs"]))


def annotate_shapes(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """Run ``gm`` once (eval mode, no grad) so every node carries ``meta['tensor_meta']``.

    Pre: ``gm`` runs on ``example_inputs``. Post: each node's ``meta['tensor_meta']`` describes
    its value at these inputs, ``gm.meta['alphac.input_shapes']`` lists their shapes, and every
    buffer holds its old value (an exported graph still counts ``num_batches_tracked`` in eval
    mode). Only metadata is written, so a captured graph keeps its version (a raw torch.export
    graph with baked train-mode flags has them flipped and put back, two edits: see
    :mod:`alphac.modes`). Frontends call it after capture; transform passes call it again on a
    spliced child, whose new nodes have none.
    Example: after ``annotate_shapes(gm, (torch.randn(2, 3, 8, 8),))`` a conv node's
    ``meta['tensor_meta'].shape`` is ``torch.Size([2, C, 8, 8])``.
    """
    buffers = {name: b.detach().clone() for name, b in gm.named_buffers()}
    try:
        with training_mode(gm, False), torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        with torch.no_grad():
            for name, b in gm.named_buffers():
                b.copy_(buffers[name])
    gm.meta["alphac.input_shapes"] = [tuple(t.shape) for t in example_inputs]


def flop_counter_flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass as counted by ``torch.utils.flop_counter`` (1 MAC = 2 FLOPs).

    It counts matrix work (conv, linear, matmul, attention) only; the cost analysis counts every op
    and is cross-checked against this on the ops both count.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with training_mode(module, False), torch.no_grad(), counter:
        module(*inputs)
    return int(counter.get_total_flops())


def extract(gm: fx.GraphModule, subgraph: Subgraph) -> fx.GraphModule:
    """A standalone GraphModule computing ``subgraph``: one placeholder per input (in
    ``subgraph.inputs`` order), returning its outputs (a tuple when there are several).

    Parameters and submodules it uses are shared with ``gm`` (not copied). Node metadata
    (``tensor_meta``, ``nn_module_stack``) is carried over.
    """
    by_name = node_map(gm)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for name in subgraph.inputs:
        src = by_name[name]
        ph = graph.placeholder(name)
        ph.meta = dict(src.meta)
        env[name] = ph
    for name in subgraph.nodes:
        src = by_name[name]
        env[name] = graph.node_copy(src, lambda n: env[n.name])
    outs = [env[name] for name in subgraph.outputs]
    graph.output(outs[0] if len(outs) == 1 else tuple(outs))
    return fx.GraphModule(gm, graph, class_name="Extracted")
