"""synthesize: progressive property-guided synthesis of a replacement program (ALGORITHM.md 4).

Every candidate is a :class:`~alphac.passes.analysis.program.Program` evaluated in its contexts
(one per block instance it will be spliced into); no fx graph is built here. The subgraph's
junctions are kept and each chain between them is grown op by op from the
:mod:`~alphac.passes.transform.vocabulary`: at each step every template is appended, the last
conv/linear is resized to the target width, the whole program is inferred in every context and
the mean summed distance ``d`` to the targets is computed (infeasible candidates pruned); the next
op is drawn with weight ``1/(d+0.1)^2``, first an op type (its best op's weight) then an op of
that type, where candidates that tie on distance count once, as the cheapest. A chain of original
length ``n`` gets ``max(1, n-2) .. n+2`` ops and stops once satisfied (continuing with
probability 0.2 while there is room). Then concretization tries the wider grid (kernel, stride,
groups, dilation, pool window, norm groups) in random order per op, keeping the first value that
still satisfies every target; a chain that replaced a normalising chain and holds no norm gets
its norm back where the old chain had it (:func:`restored_norms`, alphac's addition: the child
keeps the parent's trained norm); and with probability 0.2 one operand branch of an add/mul is
dropped when the targets still hold. The whole program is re-verified in every context at the end.

``strategy="enumerate"`` is the baseline that draws ops uniformly (random-order enumeration) but
still requires the targets. Attempts retry with fresh seeds within a wall-clock budget; giving up
raises :class:`~alphac.errors.SynthesisFailed` naming the property that was furthest off.

Example::

    result = synthesize(Problem(program, contexts, targets), random.Random(0))
    result.program        # satisfies targets[i] in contexts[i] for every i
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from alphac.analysis import AnalysisManager
from alphac.errors import SynthesisFailed
from alphac.passes.analysis.program import Program, ProgramOp, value_at
from alphac.passes.analysis.program_infer import (
    Context,
    cost_of,
    depth_of,
    mixing_of,
    shape_of,
    value_shapes,
)
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.analysis.shape import ShapeFact, ShapeProperty, TensorShape
from alphac.passes.analysis.shape_dims import SPATIAL, dims_same
from alphac.passes.transform.chains import Chain, chains, drop_operand, with_chains
from alphac.passes.transform.mutate_properties import Targets, distances
from alphac.passes.transform.vocabulary import (
    Template,
    chain_specs,
    family_of,
    fit_width,
    layout_kind,
    vocabulary,
)

__all__ = ["Problem", "Slot", "Synthesis", "SynthesisConfig", "chain_slots", "restored_norms",
           "slot_shape_distance", "slot_specs", "synthesize"]

_SHAPE = ShapeProperty()
_INF = float("inf")
#: The wider grid tried per op after synthesis (ALGORITHM.md 4, concretize).
_GRID: dict[str, dict[str, tuple[Any, ...]]] = {
    "conv": {"kernel": (1, 3, 5), "stride": (1, 2, 3), "groups": (1, 2, 4, 16, 64, "depthwise"),
             "dilation": (1, 2, 3)},
    "avg_pool": {"window": (2, 3)},
    "max_pool": {"window": (2, 3)},
    "group_norm": {"groups": (1, 2, 4, 8, 16, 32)},
}


@dataclass(frozen=True)
class SynthesisConfig:
    """Synthesis settings (reference defaults)."""

    budget_s: float = 5.0
    max_attempts: int = 4
    continue_p: float = 0.2
    drop_branch_p: float = 0.2
    strategy: str = "property"
    #: The op-type draw's prior (alphac, beyond the reference): the replaced chain's own op
    #: types weigh ``own_family_weight`` times more, and the types in ``family_weights`` are
    #: scaled, so a conv chain is rebuilt mostly from convs, norms and activations rather than
    #: parameter-free ops that happen to meet relaxed targets.
    own_family_weight: float = 4.0
    family_weights: tuple[tuple[str, float], ...] = (("dropout", 0.25), ("scale", 0.25),
                                                      ("softmax", 0.25), ("pool", 0.5))
    #: The probability that concretization tries the wider grid on an op (else it keeps the
    #: vocabulary's plain kernel 1/3, stride 1, groups 1, dilation 1).
    concretize_p: float = 0.3
    #: Put a replaced chain's normalisation back where the synthesized chain has none (alphac,
    #: beyond the reference; :func:`restored_norms`), so the child keeps its parent's trained
    #: norm and its fine-tune starts from normalised activations.
    restore_norms: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in ("property", "enumerate"):
            raise ValueError(f"unknown synthesis strategy {self.strategy!r}: property|enumerate")


@dataclass(frozen=True)
class Problem:
    """What to synthesize: the subgraph lifted in each of its instances (primary first; the same
    structure, each with its own sources and traced constants), their contexts and targets."""

    programs: tuple[Program, ...]
    contexts: tuple[Context, ...]
    targets: tuple[Targets, ...]

    def __post_init__(self) -> None:
        if not len(self.programs) == len(self.contexts) == len(self.targets) >= 1:
            raise ValueError("a Problem needs one program, context and target per instance")

    @property
    def program(self) -> Program:
        return self.programs[0]


@dataclass(frozen=True)
class Synthesis:
    """A replacement satisfying every target: new chains (and a dropped branch), what it took.

    :meth:`program_for` applies it to the subgraph as lifted in any instance; ``program`` is the
    primary instance's.
    """

    program: Program
    chains: tuple[tuple[Chain, tuple[Template, ...], tuple[OpSpec, ...]], ...]
    distances: tuple[dict[str, float], ...]
    attempts: int
    candidates: int
    seconds: float
    dropped: tuple[int, int] | None = None

    def program_for(self, lifted: Program) -> Program:
        """The replacement in an instance whose subgraph lifts to ``lifted``."""
        program = with_chains(lifted, {chain: specs for chain, _, specs in self.chains})
        if self.dropped is not None:
            program = drop_operand(program, *self.dropped)
        return program


@dataclass
class Slot:
    """A chain to resynthesize: its layout, input width and target output width (None where
    the layout has no width axis), vocabulary, and per context its input and output values."""

    chain: Chain
    layout: str
    width: Any
    out_width: Any
    vocab: tuple[Template, ...]
    values: tuple[tuple[TensorShape, TensorShape], ...]
    families: frozenset[str] = frozenset()  # the op types of the chain as it was
    kinds: frozenset[str] = frozenset()  # and its op kinds (relu over gelu on a tie)


@dataclass
class _Search:
    problem: Problem
    rng: random.Random
    config: SynthesisConfig
    deadline: float
    slots: list[Slot] = field(default_factory=list)
    memo: dict[Any, tuple[float, Any]] = field(default_factory=dict)
    candidates: int = 0
    best: tuple[float, dict[str, float]] = (_INF, {})
    am: AnalysisManager = field(default_factory=AnalysisManager)  # its memo tables: every
    # candidate shares the prefixes it has in common with those scored before


# ---- setting up -------------------------------------------------------------------------------
def _value_name(program: Program, v: int) -> str:
    n = len(program.inputs)
    return program.inputs[v] if v < n else f"%{v - n}"


def chain_slots(problem: Problem, am: AnalysisManager | None = None) -> list[Slot]:
    program = problem.program
    shapes = [shape_of(program, ctx, am).node_shapes for ctx in problem.contexts]
    bindings0 = problem.contexts[0].bindings
    slots = []
    for chain in chains(program):
        pairs = [(s.get(_value_name(program, chain.input)), s.get(_value_name(program, chain.output)))
                 for s in shapes]
        if not all(isinstance(a, TensorShape) and isinstance(b, TensorShape) for a, b in pairs):
            continue
        x, y = pairs[0]
        where = layout_kind(x.layout, x.rank)
        axis = 1 if where == "channel_first" else -1
        width = x.dims[axis] if where != "other" else None
        out_width = y.dims[axis] if where != "other" and y.rank == x.rank else None
        width_value = value_at(x.dims[axis], bindings0)
        downsample = y.rank == x.rank and any(
            not dims_same(a, b) for a, b, role in zip(x.dims, y.dims, x.layout, strict=True)
            if role in SPATIAL)
        vocab = vocabulary(x.layout, x.rank, width_value if isinstance(width_value, int) else None,
                           downsample=downsample)
        kinds = frozenset(program.ops[k].spec.kind for k in chain.ops)
        slots.append(Slot(chain, x.layout, width, out_width, vocab, tuple(pairs),
                          frozenset(map(family_of, kinds)), kinds))
    return slots


# ---- scoring ----------------------------------------------------------------------------------
def slot_specs(slot: Slot, templates: Sequence[Template], contexts: Sequence[Context]
               ) -> tuple[Any, ...] | None:
    fitted = fit_width(templates, slot.out_width) if slot.out_width is not None else templates
    return chain_specs(fitted, slot.width, slot.layout, [c.bindings for c in contexts])


def slot_shape_distance(slot: Slot, specs: Sequence[Any], contexts: Sequence[Context],
                        am: AnalysisManager | None = None) -> float:
    """How far the chain alone is from its original output shape (max over contexts)."""
    worst = 0.0
    for ctx, (x, y) in zip(contexts, slot.values, strict=True):
        prog = Program(("x",), tuple(ProgramOp(s, (i,)) for i, s in enumerate(specs)),
                       (len(specs),))
        got = shape_of(prog, Context((x,), (True,), ctx.bindings), am).node_shapes.get(
            f"%{len(specs) - 1}") if specs else x
        if not isinstance(got, TensorShape):
            return _INF
        d = _SHAPE.distance(ShapeFact((x,), (y,), ctx.bindings), ShapeFact((x,), (got,), ctx.bindings))
        worst = max(worst, d)
    return worst


def _whole_distances(programs: Sequence[Program], problem: Problem, am: AnalysisManager
                     ) -> list[dict[str, float]]:
    return [distances(target, SimpleNamespace(shape=shape_of(program, ctx, am),
                                              depth=depth_of(program, ctx, am),
                                              mixing=mixing_of(program, ctx, am)))
            for program, ctx, target in zip(programs, problem.contexts, problem.targets,
                                            strict=True)]


def _score(search: _Search, assignment: Mapping[int, tuple[Template, ...]]) -> tuple[float, Any]:
    """Mean summed distance of the program with these chains, and the program (or None)."""
    key = tuple(sorted(assignment.items()))
    hit = search.memo.get(key)
    if hit is not None:
        return hit
    if time.monotonic() > search.deadline:
        raise _OutOfTime
    search.candidates += 1
    contexts = search.problem.contexts
    replacements, shape_gap = {}, 0.0
    for index, templates in assignment.items():
        slot = search.slots[index]
        specs = slot_specs(slot, templates, contexts)
        if specs is None:
            return search.memo.setdefault(key, (_INF, None))
        gap = slot_shape_distance(slot, specs, contexts, search.am)
        if gap == _INF:
            return search.memo.setdefault(key, (_INF, None))
        shape_gap = max(shape_gap, gap)
        replacements[slot.chain] = specs
    if shape_gap > 0:  # the junctions cannot read it yet: shape first, the rest unknown (<= 2)
        if 2.0 + shape_gap < search.best[0]:
            search.best = (2.0 + shape_gap, {"shape": shape_gap})
        return search.memo.setdefault(key, (2.0 + shape_gap, None))
    programs = [with_chains(p, replacements) for p in search.problem.programs]
    parts = _whole_distances(programs, search.problem, search.am)
    program = programs[0]
    total = sum(sum(p.values()) for p in parts) / len(parts)
    if total < search.best[0]:
        search.best = (total, _worst(parts))
    return search.memo.setdefault(key, (total, program))


def _worst(parts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {k: max(p[k] for p in parts) for k in parts[0]}


class _OutOfTime(Exception):
    pass


# ---- growing a chain --------------------------------------------------------------------------
def _cost(search: _Search, slot: Slot, templates: tuple[Template, ...]) -> tuple[float, float]:
    ctx = search.problem.contexts[0]
    specs = slot_specs(slot, templates, [ctx]) or ()
    x = slot.values[0][0]
    prog = Program(("x",), tuple(ProgramOp(s, (i,)) for i, s in enumerate(specs)), ())
    cost = cost_of(prog, Context((x,), (True,), ctx.bindings), search.am)
    return (float(value_at(cost.flops, ctx.bindings) or 0),
            float(value_at(cost.params, ctx.bindings) or 0))


def _choose(search: _Search, slot: Slot, current: tuple[Template, ...],
            scored: list[tuple[Template, float]]) -> Template:
    rng = search.rng
    if search.config.strategy == "enumerate":
        return rng.choice(scored)[0]
    families: dict[str, dict[float, list[Template]]] = {}
    for t, d in scored:
        families.setdefault(t.family, {}).setdefault(d, []).append(t)
    names = sorted(families)
    scaled = dict(search.config.family_weights)
    weights = [max(1.0 / (d + 0.1) ** 2 for d in families[f])
               * (search.config.own_family_weight if f in slot.families else scaled.get(f, 1.0))
               for f in names]
    family = families[rng.choices(names, weights)[0]]
    ds = sorted(family)
    options = [min(family[d], key=lambda t: (*_cost(search, slot, (*current, t)),
                                             t.kind not in slot.kinds, t.label()))
               if len(family[d]) > 1 else family[d][0] for d in ds]
    return rng.choices(options, [1.0 / (d + 0.1) ** 2 for d in ds])[0]


def _grow(search: _Search, index: int, assignment: dict[int, tuple[Template, ...]]) -> float:
    """Grow chain ``index`` from nothing (ALGORITHM.md 4's loop); its final distance."""
    slot = search.slots[index]
    n = len(slot.chain.ops)
    low, high = max(1, n - 2), n + 2
    current: tuple[Template, ...] = ()
    distance, satisfied = _INF, None
    while len(current) < high:
        scored = []
        for t in slot.vocab:
            d, _ = _score(search, {**assignment, index: (*current, t)})
            if d != _INF:
                scored.append((t, d))
        if not scored:
            break
        pick = _choose(search, slot, current, scored)
        current = (*current, pick)
        distance = dict(scored)[pick]
        if distance == 0 and len(current) >= low:
            satisfied = current
            if len(current) == high or search.rng.random() >= search.config.continue_p:
                break
    if distance != 0 and satisfied is not None:  # continuing lost it: back to the last success
        current, distance = satisfied, 0.0
    assignment[index] = current
    return distance


# ---- after growing ----------------------------------------------------------------------------
def _concretize(search: _Search, assignment: dict[int, tuple[Template, ...]]) -> None:
    """Try the wider grid per op, in random order; keep the first value that satisfies all."""
    for index in sorted(assignment):
        for i, t in enumerate(assignment[index]):
            if t.kind in _GRID and search.rng.random() >= search.config.concretize_p:
                continue
            for param, values in _GRID.get(t.kind, {}).items():
                order = list(values)
                search.rng.shuffle(order)
                for v in order:
                    if v == getattr(t, param):
                        break
                    chain = list(assignment[index])
                    chain[i] = replace(t, **{param: v})
                    if _score(search, {**assignment, index: tuple(chain)})[0] == 0:
                        assignment[index] = tuple(chain)
                        t = chain[i]
                        break


def _drop_branch(search: _Search, replacements: Mapping[Chain, Sequence[OpSpec]]
                 ) -> tuple[int, int] | None:
    """(value, operand kept) of an add/mul whose other operand can go with every target still
    holding; else None."""
    program = with_chains(search.problem.program, replacements)
    n = len(program.inputs)
    junctions = [n + k for k, op in enumerate(program.ops)
                 if op.spec.kind in ("add", "mul") and len(op.operands) == 2
                 and len(set(op.operands)) == 2]
    if not junctions:
        return None
    value, keep = search.rng.choice(junctions), search.rng.randrange(2)
    kept = program.ops[value - n].operands[keep]
    if value_shapes(program, search.problem.contexts[0], search.am)[kept] is None:
        return None  # a scalar (``q @ k * d ** -0.5``'s size arithmetic) is no branch to keep
    programs = [drop_operand(with_chains(p, replacements), value, keep)
                for p in search.problem.programs]
    if not programs[0].ops:
        return None
    for program, ctx in zip(programs, search.problem.contexts, strict=True):
        shapes = value_shapes(program, ctx, search.am)
        if any(shapes[v] is None for v in program.outputs):
            return None  # an output is no tensor once the branch is gone: nothing to compare
    parts = _whole_distances(programs, search.problem, search.am)
    return (value, keep) if all(sum(p.values()) == 0 for p in parts) else None


def restored_norms(slot: Slot, old: Sequence[OpSpec], new: Sequence[Template]
                   ) -> tuple[Template, ...] | None:
    """``new`` with the norms of the replaced chain ``old`` put back, or None when ``new``
    holds a norm or no conv/linear (then dropping the norm is the edit itself), ``old`` no
    norm, or the slot's vocabulary no such norm.

    A norm of ``old`` before its first conv/linear (it normalised the chain's input) goes
    first; one after a conv/linear (it normalised that op's output) goes after the last
    conv/linear of ``new``. Example: ``bn relu`` replaced by ``relu conv3x3 relu conv3x3``
    gives ``bn relu conv3x3 relu conv3x3``; ``conv bn relu`` replaced by ``conv1x1 gelu``
    gives ``conv1x1 bn gelu``. Norms are linear and elementwise at inference, so the chain
    loses no depth or mixing (a lower bound); the caller re-scores it all the same.
    """
    last = max((i for i, t in enumerate(new) if t.resizes), default=None)
    if last is None or any(t.family == "norm" for t in new):
        return None
    resizing = [i for i, s in enumerate(old) if s.kind in ("conv", "linear")]
    norms = [(i, s) for i, s in enumerate(old) if s.kind in ("batch_norm", "layer_norm",
                                                              "group_norm")]
    lead = next((s for i, s in norms if not resizing or i < resizing[0]), None)
    trail = next((s for i, s in reversed(norms) if resizing and i > resizing[0]), None)
    chain = list(new)
    for spec, at in ((trail, last + 1), (lead, 0)):
        template = _norm_template(slot, spec) if spec is not None else None
        if template is not None:
            chain.insert(at, template)
    return tuple(chain) if len(chain) > len(new) else None


def _norm_template(slot: Slot, spec: OpSpec) -> Template | None:
    """The vocabulary norm of ``spec``'s kind (a group norm with its group count)."""
    found = next((t for t in slot.vocab if t.kind == spec.kind), None)
    if found is not None and spec.kind == "group_norm":
        found = replace(found, groups=spec.get("num_groups"))
    return found


def _restore_norms(search: _Search, assignment: dict[int, tuple[Template, ...]]) -> None:
    """:func:`restored_norms` for every chain, kept where every target still holds and the
    chain does not become the replaced one (the child must be a different function)."""
    program, contexts = search.problem.program, search.problem.contexts
    for index in sorted(assignment):
        slot = search.slots[index]
        old = tuple(program.ops[k].spec for k in slot.chain.ops)
        chain = restored_norms(slot, old, assignment[index])
        if (chain is not None and slot_specs(slot, chain, contexts[:1]) != old
                and _score(search, {**assignment, index: chain})[0] == 0):
            assignment[index] = chain


def _attempt(search: _Search) -> Synthesis | None:
    assignment: dict[int, tuple[Template, ...]] = {}
    for index in range(len(search.slots)):
        _grow(search, index, assignment)
    if _score(search, assignment)[0] != 0:
        return None
    _concretize(search, assignment)
    if search.config.restore_norms:
        _restore_norms(search, assignment)
    contexts = search.problem.contexts
    made = []
    for i in sorted(assignment):
        slot = search.slots[i]
        fitted = (fit_width(assignment[i], slot.out_width) if slot.out_width is not None
                  else assignment[i])
        made.append((slot.chain, tuple(fitted), slot_specs(slot, assignment[i], contexts)))
    dropped = None
    if search.rng.random() < search.config.drop_branch_p:
        dropped = _drop_branch(search, {chain: specs for chain, _, specs in made})
    result = Synthesis(search.problem.program, tuple(made), (), 0, 0, 0.0, dropped)
    return replace(result, program=result.program_for(search.problem.program))


def synthesize(problem: Problem, rng: random.Random,
               config: SynthesisConfig | None = None,
               am: AnalysisManager | None = None) -> Synthesis:
    """A program meeting ``problem.targets[i]`` in ``problem.contexts[i]`` for every i.

    Pre: ``problem.program`` is the lifted subgraph (its junctions are kept), contexts are its
    block instances (primary first) and targets their perturbed properties. Post: the returned
    program's shape, depth and mixing have distance 0 to every target (re-verified); its chains
    hold only vocabulary ops with widths in the contexts' symbols. Raises
    :class:`~alphac.errors.SynthesisFailed` when no attempt succeeds within the budget.
    Program inference is memoised in ``am`` (a fresh manager when None).
    """
    config = config or SynthesisConfig()
    if os.environ.get("ALPHAC_BENCH_SLOWDOWN_S"):  # only bench/compare.py's acceptance check
        time.sleep(float(os.environ["ALPHAC_BENCH_SLOWDOWN_S"]))
    start = time.monotonic()
    search = _Search(problem, rng, config, start + config.budget_s,
                     am=am if am is not None else AnalysisManager())
    search.slots = chain_slots(problem, search.am)
    if not search.slots:
        raise SynthesisFailed("the selected subgraph has no chain of vocabulary ops to "
                              "resynthesize (only junctions: adds, reshapes, size queries...)",
                              prop="structure")
    attempts = 0
    try:
        while attempts < config.max_attempts:
            attempts += 1
            found = _attempt(search)
            if found is not None:  # re-verify the whole replacement in every instance
                parts = _whole_distances([found.program_for(p) for p in problem.programs],
                                         problem, search.am)
                if all(sum(p.values()) == 0 for p in parts):
                    return replace(found, distances=tuple(parts), attempts=attempts,
                                   candidates=search.candidates,
                                   seconds=time.monotonic() - start)
            search.rng = random.Random(rng.random())
    except _OutOfTime:
        pass
    raise _failure(search, attempts, time.monotonic() - start)


def _failure(search: _Search, attempts: int, seconds: float) -> SynthesisFailed:
    total, parts = search.best
    if not parts:
        return SynthesisFailed(f"no feasible candidate in {attempts} attempt(s), {seconds:.1f} s: "
                               "every vocabulary op broke the exact shape", prop="shape")
    if total == 0:
        return SynthesisFailed(
            f"no complete candidate met every target in {attempts} attempt(s), {seconds:.1f} s: "
            "chains met them only before reaching their minimum length", prop="length",
            distance=0.0)
    prop = max(parts, key=parts.get)
    return SynthesisFailed(
        f"no candidate met every target in {attempts} attempt(s), {seconds:.1f} s; the closest "
        f"was {parts[prop]:.3g} away in {prop} (summed distance {total:.3g})",
        prop=prop, distance=parts[prop])
