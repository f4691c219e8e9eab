"""mutate: one child of a parent model, by property-guided synthesis or a block mutation.

ALGORITHM.md section 3. A mutation is drawn from the mix [40% rewrite, 30% width, 15% duplicate a
block, 15% delete a block; a width mutation only where the model has an internal width
(:mod:`.width_mutation`), the block mutations only where some block keeps its shape; else a
rewrite]. A *width* mutation narrows or widens one internal width (a hidden layer's channels)
and, with probability 0.5 each, the same layer in the other instances of its block; the kept
channels inherit their weights by magnitude (the record's ``weight_plan``). A *rewrite* picks a
block instance, selects a connected subgraph in it (:mod:`.select_subgraph`), lifts it to a
program, perturbs its depth and mixing once (:mod:`.mutate_properties`), synthesizes a
replacement meeting the perturbed targets in every context (:mod:`.synthesize`), and splices it
into that instance and, with probability 0.2 each, into the other instances of the same block type
(each at its own widths). The child must pass the gates (:mod:`.gates`); an attempt that fails
retries with a fresh seed, and giving up raises :class:`~alphac.errors.SynthesisFailed` with the
last reason. The parent is never modified.

Mutators, selectable by name: ``property`` (the synthesizer), ``enumerate`` (random-order
enumeration that still requires the targets) and ``random`` (a random edit of one chain that
ignores the properties: :mod:`.random_edit`).

Example::

    am = AnalysisManager()                    # one manager: every analysis and memo of the call
    child = mutate(traced.gm, traced.blocks, traced.example_inputs, seed=3, am=am)
    child.record.kind, child.record.block     # ('rewrite', 'layer2.1')
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.channels import ChannelStep, apply_channel_plan
from alphac.errors import SynthesisFailed
from alphac.ir import Boundary, Subgraph, annotate_shapes
from alphac.passes.analysis.cost import model_cost
from alphac.passes.analysis.program import Program, ProgramOp
from alphac.passes.analysis.program_infer import Context, fingerprint_of, infer, lift
from alphac.passes.transform.block_mutations import delete_block, duplicate_block, eligible_blocks
from alphac.passes.transform.chains import drop_operand, with_chains
from alphac.passes.transform.gates import (
    Gate,
    annotated_output_shape,
    gate_fingerprint,
    gate_properties,
    gate_runs,
    model_fingerprint,
)
from alphac.passes.transform.keep_weights import (
    aligned_chains,
    channel_plan,
    start_fresh_near_identity,
)
from alphac.passes.transform.mutate_properties import Targets, mutate_properties
from alphac.passes.transform.random_edit import random_edit
from alphac.passes.transform.select_subgraph import select_subgraph, whole_model_region
from alphac.passes.transform.splice import ORIGIN_KEY, splice, spliced_part
from alphac.passes.transform.synthesize import Problem, Synthesis, SynthesisConfig, synthesize
from alphac.passes.transform.width_mutation import (
    new_width,
    resize_group,
    same_role,
    width_groups,
)
from alphac.rewriter import Rewriter

__all__ = ["MUTATORS", "Child", "MutationConfig", "MutationRecord", "draw_kind", "mutate"]

MUTATORS = ("property", "enumerate", "random")


@dataclass(frozen=True)
class MutationConfig:
    """Mutation settings; defaults are the reference's CIFAR-10 values (ALGORITHM.md 3)."""

    select_p: float = 0.75
    max_fraction: float = 0.8
    sequential: bool = False
    depth_p: float = 0.5
    delta_max: int = 2
    mixing_p: float = 0.2  # the reference 0.5 freed half the chains of every mixing target
    other_instances_p: float = 0.2
    rewrite_p: float = 0.4
    width_p: float = 0.3
    duplicate_p: float = 0.15
    width_ratios: tuple[float, ...] = (0.25, 0.5, 0.5, 0.75, 0.75, 1.5)
    width_others_p: float = 0.5
    max_contexts: int = 4
    attempts: int = 6
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)


@dataclass(frozen=True)
class MutationRecord:
    """What a mutation did, JSON-ready through :meth:`as_dict`."""

    kind: str
    mutator: str
    seed: int
    block: str | None
    block_type: str | None
    instances: tuple[str, ...]
    subgraph: tuple[str, ...]
    chains: tuple[tuple[str, ...], ...]
    targets: dict[str, Any] | None
    achieved: dict[str, Any] | None
    replaced_code: str
    attempts: int
    candidates: int
    seconds: float
    params_parent: int
    params_child: int
    flops_parent: int
    flops_child: int
    fingerprint_parent: str
    fingerprint_child: str
    synthesis_seconds: float = 0.0
    #: How the child's changed modules start from the parent's trained ones (channels kept by
    #: magnitude, unchanged ops under new names): :func:`alphac.codegen.inherit_weights`'s plan.
    weight_plan: tuple[ChannelStep, ...] = ()
    #: Where each changed region of the child meets the parent (rewrite and width mutations):
    #: what block-wise distillation (:func:`alphac.runtime.distill.distill`) trains.
    boundaries: tuple[Boundary, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Child:
    """The mutated model (shape-annotated) and its record."""

    gm: fx.GraphModule
    record: MutationRecord


@dataclass
class _Instance:
    path: str | None
    subgraph: Subgraph
    program: Program
    context: Context


def _walk(blocks: Sequence[Any]) -> Iterator[Any]:
    for block in blocks:
        yield block
        yield from _walk(getattr(block, "children", ()))


def mutate(gm: fx.GraphModule, blocks: Sequence[Any], example_inputs: Sequence[torch.Tensor], *,
           seed: int = 0, mutator: str = "property", config: MutationConfig | None = None,
           kind: str | None = None, am: AnalysisManager | None = None) -> Child:
    """A child of ``gm`` (see the module docstring); ``gm`` is left unchanged.

    Pre: ``gm`` is shape-annotated at ``example_inputs``; ``blocks`` are its block instances (as
    the frontends find them: ``.path``, ``.type``, ``.nodes``, ``.children``), possibly empty.
    ``kind`` forces ``rewrite``/``width``/``duplicate``/``delete``. Post: the child passed every
    gate, and its modules start from the parent's weights (``record.weight_plan`` applied); the
    same arguments give the same child, byte for byte (unless a wall-clock budget ran out).
    Every analysis of the parent and the children, and program inference, goes through ``am``
    (default: a fresh manager); a caller making many children passes one, so the parent's facts
    and the memo tables are reused, and ``am.clear()`` forgets them.
    """
    if mutator not in MUTATORS:
        raise ValueError(f"unknown mutator {mutator!r}: choose one of {', '.join(MUTATORS)}")
    config = config or MutationConfig()
    start = time.monotonic()
    if annotated_output_shape(gm) is None:
        raise ValueError("mutate needs a shape-annotated parent: run alphac.ir.annotate_shapes(gm, "
                         "example_inputs) first")
    rng = random.Random(f"alphac-mutate-{seed}")
    am = am if am is not None else AnalysisManager()
    parent = _Parent(gm, list(_walk(blocks)), tuple(example_inputs), model_fingerprint(gm, am),
                     model_cost(gm, example_inputs, am), annotated_output_shape(gm), am)
    chosen = kind or draw_kind(gm, parent.blocks, rng, config, am)
    last: SynthesisFailed | None = None
    for attempt in range(1, config.attempts + 1):
        arng = random.Random(rng.random())
        try:
            child, record = _ATTEMPTS[chosen](parent, arng, mutator, config)
            return _accept(parent, child, record, seed, mutator, attempt, start)
        except SynthesisFailed as exc:
            last = exc
    assert last is not None
    raise SynthesisFailed(f"{chosen} failed in {config.attempts} attempts; last: {last.reason}",
                          prop=last.prop, distance=last.distance)


@dataclass
class _Parent:
    gm: fx.GraphModule
    blocks: list[Any]
    example_inputs: tuple[torch.Tensor, ...]
    fingerprint: str
    cost: Any
    output_shape: tuple[int, ...]
    am: AnalysisManager  # the one manager of the whole call (parent, attempts, children)


def draw_kind(gm: fx.GraphModule, blocks: Sequence[Any], rng: random.Random,
              config: MutationConfig, am: AnalysisManager | None = None) -> str:
    """``rewrite``, ``width``, ``duplicate`` or ``delete`` by the mix (rewrite where the drawn
    kind has nothing to act on)."""
    r = rng.random()
    if r < config.rewrite_p:
        return "rewrite"
    if r < config.rewrite_p + config.width_p:
        return "width" if width_groups(gm) else "rewrite"
    if not eligible_blocks(gm, list(_walk(blocks)), am):
        return "rewrite"
    return "duplicate" if r < config.rewrite_p + config.width_p + config.duplicate_p else "delete"


def _annotate(child: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> None:
    """``annotate_shapes``; a child that fails to run there is refused as gate (b) would refuse
    it (an elementwise op in place of a ``contiguous`` leaves a later ``view`` a strided value)."""
    try:
        annotate_shapes(child, example_inputs)
    except Exception as exc:  # noqa: BLE001 - any failure of the child is the gate's verdict
        cause = exc.__cause__ or exc  # ShapeProp wraps the op's own error
        text = str(cause).strip().splitlines()
        detail = f"{type(cause).__name__}: {text[0][:200]}" if text else type(cause).__name__
        raise SynthesisFailed(f"gate runs: {detail}", prop="gate") from exc


def _check(gates: Sequence[Gate]) -> None:
    for gate in gates:
        if not gate.passed:
            raise SynthesisFailed(f"gate {gate.name}: {gate.detail}", prop="gate")


# ---- rewrite ----------------------------------------------------------------------------------
def _instances(parent: _Parent, block: Any, sub: Subgraph, am: AnalysisManager
               ) -> list[_Instance]:
    """The selected subgraph in its block instance, then in every other instance of its type
    where the same positions lift to the same program and select none of the nodes already
    found (a container nested in one of its own class holds the same nodes)."""
    program, ctx = lift(parent.gm, sub, am)
    found = [_Instance(getattr(block, "path", None), sub, program, ctx)]
    if block is None:
        return found
    where = {name: i for i, name in enumerate(block.nodes)}
    positions = [where[n] for n in sub.nodes if n in where]
    shape = fingerprint_of(program, am=am)
    taken = set(sub.nodes)
    for other in parent.blocks:
        if other is block or other.type != block.type or len(other.nodes) != len(block.nodes):
            continue
        try:
            mapped = Subgraph.from_nodes(parent.gm, [other.nodes[i] for i in positions])
            p, c = lift(parent.gm, mapped, am)
        except (KeyError, ValueError):
            continue
        if (fingerprint_of(p, am=am) == shape and len(mapped.inputs) == len(sub.inputs)
                and taken.isdisjoint(mapped.nodes)):
            found.append(_Instance(other.path, mapped, p, c))
            taken.update(mapped.nodes)
    return found


def _rewrite(parent: _Parent, rng: random.Random, mutator: str, config: MutationConfig):
    am = parent.am
    began = time.monotonic()
    block = rng.choice(parent.blocks) if parent.blocks else None
    region = block.nodes if block is not None else whole_model_region(parent.gm)
    sub = select_subgraph(parent.gm, region, rng, p=config.select_p,
                          max_fraction=config.max_fraction, sequential=config.sequential)
    try:
        instances = _instances(parent, block, sub, am)
    except ValueError as exc:
        raise SynthesisFailed(f"cannot lift the selected subgraph: {exc}", prop="structure") \
            from exc
    others = instances[1:]
    applied = [instances[0], *[i for i in others if rng.random() < config.other_instances_p]]
    spare = [i for i in others if i not in applied]
    used = applied + spare[:max(0, config.max_contexts - len(applied))]
    facts = [infer(i.program, i.context, am) for i in used]
    targets: list[Targets] | None = None
    problem_programs = tuple(i.program for i in used)
    if mutator == "random":
        result = random_edit(Problem(problem_programs, tuple(i.context for i in used),
                                     tuple(Targets(f.shape, f.depth, f.mixing) for f in facts)),
                             rng, am=am)
    else:
        perturbation = mutate_properties(facts[0], rng, depth_p=config.depth_p,
                                         delta_max=config.delta_max, mixing_p=config.mixing_p)
        targets = [perturbation.apply(f) for f in facts]
        synth = SynthesisConfig(**{**asdict(config.synthesis), "strategy": mutator})
        result = synthesize(Problem(problem_programs, tuple(i.context for i in used),
                                    tuple(targets)), rng, synth, am)
    synthesis_seconds = time.monotonic() - began
    child, made, plan = _splice_all(parent, applied, result, rng.randrange(2**31))
    parts = [part for _, part in made]
    gates = [gate_runs(child, parent.example_inputs, parent.output_shape),
             gate_fingerprint(parent.fingerprint, child, am)]
    if targets is not None:
        gates.insert(0, gate_properties(child, parts, targets[:len(applied)], am))
    _check(gates)
    record = _rewrite_record(parent, block, applied, sub, result, targets, child, parts)
    return child, {**record, "synthesis_seconds": synthesis_seconds, "weight_plan": plan,
                   "boundaries": rewrite_boundaries(parent.gm, made)}


def rewrite_boundaries(parent: fx.GraphModule, made: Sequence[tuple[Subgraph, Subgraph]]
                       ) -> tuple[Boundary, ...]:
    """Each spliced part's :class:`~alphac.ir.Boundary`: ``made`` pairs the replaced subgraph
    (its inputs named as in the child) with the part that replaced it. An input that an earlier
    part computes stands for the parent's node that part replaced; a part whose inputs or
    outputs have no parent node (a pass-through of an input) or that computes nothing is left
    out."""
    back: dict[str, str] = {}  # the child's node -> the parent's node it stands for
    found = []
    names = {n.name for n in parent.graph.nodes}
    for old, part in made:
        inputs = tuple(back.get(n, n) for n in part.inputs)
        back.update(zip(part.outputs, old.outputs, strict=True))
        if set(inputs) <= names and set(part.outputs).isdisjoint(part.inputs) \
                and set(part.outputs) <= set(part.nodes):
            found.append(Boundary(part, inputs, tuple(old.outputs)))
    return tuple(found)


def _splice_all(parent: _Parent, applied: Sequence[_Instance], result: Synthesis, seed: int
                ) -> tuple[fx.GraphModule, list[tuple[Subgraph, Subgraph]],
                           tuple[ChannelStep, ...]]:
    """The child with ``result`` spliced into every applied instance; each replaced subgraph
    with the part now in its place; the channel plan."""
    child = copy.deepcopy(parent.gm)
    rw = Rewriter(child)
    made = []
    with torch.random.fork_rng(devices=[]):  # fresh modules' init follows the seed, not history
        torch.manual_seed(seed)
        plan = _splice_each(child, rw, applied, result, made)
    rw.commit()
    start_fresh_near_identity(child, parent.gm)  # fresh convs pass channels, not shrink them
    _annotate(child, parent.example_inputs)
    parts = [(old, spliced_part(child, old, list(p.nodes), list(p.outputs))) for old, p in made]
    return child, parts, tuple(plan)


def _splice_each(child: fx.GraphModule, rw: Rewriter, applied: Sequence[_Instance],
                 result: Synthesis, made: list) -> list[ChannelStep]:
    """Splice the replacement into each applied instance, keeping the parent's modules where
    the synthesis wrote an op as it was and mapping channels where only widths changed
    (:mod:`.keep_weights`); the channel plan of every instance."""
    renamed: dict[str, str] = {}  # an instance's old output -> the node now standing for it
    plan: list[ChannelStep] = []
    for inst in applied:
        program, chain_ops = _kept_weights_program(result, inst.program)
        old = inst.subgraph
        # consecutive blocks: this instance may read the output of one spliced before it
        sub = Subgraph(old.nodes, tuple(renamed.get(n, n) for n in old.inputs), old.outputs)
        try:
            part = splice(child, sub, program, inst.context.bindings, rewriter=rw,
                          context=inst.context)
        except ValueError as exc:
            raise SynthesisFailed(f"cannot splice into {inst.path}: {exc}", prop="structure") \
                from exc
        renamed.update(zip(old.outputs, part.outputs, strict=True))
        made.append((sub, part))
        created = set(part.nodes)
        origins = {n.meta[ORIGIN_KEY]: str(n.target) for n in child.graph.nodes
                   if n.name in created and ORIGIN_KEY in n.meta}
        old_specs = {op.source: op.spec for op in inst.program.ops if op.source}
        for ops in chain_ops:
            steps, _ = channel_plan(ops, [origins.get(op.origin or "") for op in ops], old_specs,
                                    len(plan))
            plan += steps
    return plan


def _kept_weights_program(result: Synthesis, lifted: Program
                          ) -> tuple[Program, list[tuple[ProgramOp, ...]]]:
    """``result`` applied to an instance lifted as ``lifted``, each new chain aligned with the
    old one (:func:`~.keep_weights.aligned_chains`); the aligned ops of each chain."""
    chain_ops = {chain: aligned_chains([lifted.ops[k] for k in chain.ops], specs)
                 for chain, _, specs in result.chains}
    program = with_chains(lifted, chain_ops)
    if result.dropped is not None:
        program = drop_operand(program, *result.dropped)
    return program, list(chain_ops.values())


def _rewrite_record(parent: _Parent, block: Any, applied: Sequence[_Instance], sub: Subgraph,
                    result: Synthesis, targets: list[Targets] | None, child: fx.GraphModule,
                    parts: list[Subgraph]) -> dict[str, Any]:
    achieved = None
    if targets is not None:
        facts = infer(result.program_for(applied[0].program), applied[0].context, parent.am)
        achieved = Targets(facts.shape, facts.depth, facts.mixing).summary()
    return {"kind": "rewrite", "block": getattr(block, "path", None),
            "block_type": getattr(block, "type", None),
            "instances": tuple(i.path or "<model>" for i in applied), "subgraph": sub.nodes,
            "chains": tuple(tuple(t.label() for t in templates)
                            for _, templates, _ in result.chains),
            "targets": targets[0].summary() if targets else None, "achieved": achieved,
            "replaced_code": _code_of(child, parts), "candidates": result.candidates}


def _code_of(gm: fx.GraphModule, parts: Sequence[Subgraph]) -> str:
    """The child's forward lines that compute the spliced nodes."""
    names = {n for p in parts for n in p.nodes}
    lines = []
    for line in gm.code.splitlines():
        statement = line.strip().split(";  ", 1)[0]  # drop fx's "x = None" bookkeeping
        if set(statement.split(" = ", 1)[0].split(", ")) & names:
            lines.append(statement)
    return "\n".join(lines)


# ---- block mutations --------------------------------------------------------------------------
def _block_mutation(kind: str):
    def run(parent: _Parent, rng: random.Random, mutator: str, config: MutationConfig):
        eligible = eligible_blocks(parent.gm, parent.blocks, parent.am)
        if not eligible:
            raise SynthesisFailed(f"no block keeps its shape, so none can be {kind}d",
                                  prop="structure")
        block = rng.choice(eligible)
        child = copy.deepcopy(parent.gm)
        part = duplicate_block(child, block) if kind == "duplicate" else None
        if kind == "delete":
            delete_block(child, block)
        _annotate(child, parent.example_inputs)
        _check([gate_runs(child, parent.example_inputs, parent.output_shape),
                gate_fingerprint(parent.fingerprint, child, parent.am)])
        code = _code_of(child, [part]) if part is not None else f"# {block.path} removed"
        return child, {"kind": kind, "block": block.path, "block_type": block.type,
                       "instances": (block.path,), "subgraph": tuple(block.nodes), "chains": (),
                       "targets": None, "achieved": None, "replaced_code": code,
                       "candidates": 0}

    return run


# ---- width ------------------------------------------------------------------------------------
def _width(parent: _Parent, rng: random.Random, mutator: str, config: MutationConfig):
    groups = width_groups(parent.gm)
    if not groups:
        raise SynthesisFailed("the model has no internal width (a conv/linear output read only "
                              "by other convs/linears through channel-wise ops)",
                              prop="structure")
    group, ratio = rng.choice(groups), rng.choice(config.width_ratios)
    chosen = [group, *[g for g in same_role(groups, group) if rng.random() < config.width_others_p]]
    child = copy.deepcopy(parent.gm)
    rw = Rewriter(child)
    plan: list[ChannelStep] = []
    widths: dict[str, list[int]] = {}
    with torch.random.fork_rng(devices=[]):  # fresh modules' init follows the seed
        torch.manual_seed(rng.randrange(2**31))
        for gid, g in enumerate(chosen):
            width = new_width(g.width, ratio)
            if width is not None:
                plan += resize_group(rw, g, width, gid)
                widths[g.producer] = [g.width, width]
    if not widths:
        raise SynthesisFailed(f"width x{ratio} leaves {group.producer}'s {group.width} channels "
                              "as they are", prop="structure")
    rw.commit()
    _annotate(child, parent.example_inputs)
    _check([gate_runs(child, parent.example_inputs, parent.output_shape),
            gate_fingerprint(parent.fingerprint, child, parent.am)])
    block = next((b for b in parent.blocks if group.producer in b.nodes), None)
    nodes = tuple(n for g in chosen if g.producer in widths for n in g.nodes)
    region = Subgraph.from_nodes(child, nodes)
    code = _code_of(child, [region])
    return child, {"kind": "width", "block": getattr(block, "path", None),
                   "block_type": getattr(block, "type", None),
                   "instances": tuple(widths), "subgraph": nodes, "chains": (),
                   "targets": None, "achieved": {"widths": widths}, "replaced_code": code,
                   "candidates": len(groups), "weight_plan": tuple(plan),
                   "boundaries": (Boundary(region, region.inputs, region.outputs),)}


_ATTEMPTS = {"rewrite": _rewrite, "width": _width, "duplicate": _block_mutation("duplicate"),
             "delete": _block_mutation("delete")}


def _accept(parent: _Parent, child: fx.GraphModule, fields: dict[str, Any], seed: int,
            mutator: str, attempt: int, start: float) -> Child:
    cost = model_cost(child, parent.example_inputs, parent.am)
    if fields.get("weight_plan"):  # the child starts from the parent's weights as given
        apply_channel_plan(child, parent.gm.state_dict(), fields["weight_plan"])
    record = MutationRecord(
        mutator={"rewrite": mutator, "width": "width"}.get(fields["kind"], "block"), seed=seed,
        attempts=attempt,
        seconds=time.monotonic() - start, params_parent=parent.cost.params,
        params_child=cost.params, flops_parent=parent.cost.flops_per_sample,
        flops_child=cost.flops_per_sample, fingerprint_parent=parent.fingerprint,
        fingerprint_child=model_fingerprint(child, parent.am), **fields)
    return Child(child, record)
