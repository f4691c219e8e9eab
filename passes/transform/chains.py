"""Chains and junctions of a program: what synthesis rewrites and what it keeps.

A *chain* is a maximal path of single-operand ops that the vocabulary can replace (conv, linear,
norms, activations, pools, dropout, a scale), each value but the last read only by the next op;
every other op (add, mul of two tensors, matmul, einsum, cat, reshape, permute, size queries,
getitem, constants, ops the vocabulary cannot write) is a *junction*, kept as it is (ALGORITHM.md
section 4, non-sequential subgraphs). :func:`chains` finds them; :func:`with_chains` rebuilds the
program with some chains replaced; :func:`drop_operand` and :func:`pruned` serve branch dropping.

Example: a ResNet basic block ``conv bn relu conv bn add(., x) relu`` has the chains
``[conv bn relu conv bn]`` (input x, output the second bn) and ``[relu]`` (after the add); the add
is a junction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from alphac.passes.analysis.program import Program, ProgramOp
from alphac.passes.analysis.registry import OpSpec

__all__ = ["Chain", "chains", "drop_operand", "pruned", "users", "with_chains"]

#: Registry kinds a chain may hold (the vocabulary writes them; a lifted op of these kinds with
#: one tensor operand may be replaced).
_CHAIN_KINDS = frozenset({
    "conv", "linear", "batch_norm", "layer_norm", "group_norm", "relu", "relu6", "gelu", "silu",
    "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu", "softmax", "avg_pool",
    "max_pool", "adaptive_avg_pool", "dropout", "identity", "drop_path",
})


@dataclass(frozen=True)
class Chain:
    """A chain of ``program``: the value it reads, its op indices (in order), its output value,
    and the op indices of the constants only its ops read (a torch.export graph's functional
    conv fetches its weight: replaced with the chain, the fetch goes too)."""

    input: int
    ops: tuple[int, ...]
    output: int
    constants: tuple[int, ...] = ()


def users(program: Program) -> dict[int, list[int]]:
    """Value index -> the values (op results) reading it; a program output counts as user -1."""
    out: dict[int, list[int]] = {v: [] for v in range(program.size)}
    n = len(program.inputs)
    for k, op in enumerate(program.ops):
        for v in dict.fromkeys(op.operands):
            out[v].append(n + k)
    for v in program.outputs:
        out[v].append(-1)
    return out


def _own_constants(program: Program, k: int, readers: Mapping[int, list[int]]) -> list[int] | None:
    """The get_attr ops among op k's operands after the first, each read by k alone; None if
    another operand is not such a constant."""
    n = len(program.inputs)
    found = []
    for v in program.ops[k].operands[1:]:
        if v < n or program.ops[v - n].spec.kind != "get_attr" or readers[v] != [n + k]:
            return None
        found.append(v - n)
    return found


def _chainable(program: Program, k: int, readers: Mapping[int, list[int]]) -> bool:
    op = program.ops[k]
    if not op.operands or op.fallback is not None or op.floats not in (None, True):
        return False
    if op.spec.kind == "mul":  # a scale by a constant
        other = op.spec.get("other")
        return len(op.operands) == 1 and isinstance(other, (int, float)) \
            and not isinstance(other, bool)
    if op.spec.kind not in _CHAIN_KINDS:
        return False
    return len(op.operands) == 1 or _own_constants(program, k, readers) is not None


def chains(program: Program) -> list[Chain]:
    """The program's chains, in program order (see the module docstring)."""
    n = len(program.inputs)
    readers = users(program)
    taken: set[int] = set()
    found = []
    for k, op in enumerate(program.ops):
        if k in taken or not _chainable(program, k, readers):
            continue
        src = op.operands[0]
        if (src >= n and _chainable(program, src - n, readers)
                and readers[src] == [n + k]):
            continue  # k continues the chain of its operand
        path = [k]
        while True:
            nxt = readers[n + path[-1]]
            if (len(nxt) != 1 or nxt[0] < 0 or not _chainable(program, nxt[0] - n, readers)
                    or program.ops[nxt[0] - n].operands[0] != n + path[-1]):
                break
            path.append(nxt[0] - n)
        taken.update(path)
        constants = tuple(c for j in path for c in _own_constants(program, j, readers) or ())
        found.append(Chain(src, tuple(path), n + path[-1], constants))
    return found


def _copy(op: ProgramOp, remap: Mapping[int, int]) -> ProgramOp:
    return replace(op, operands=tuple(remap[v] for v in op.operands))


def with_chains(program: Program,
                replacements: Mapping[Chain, Sequence[OpSpec | ProgramOp]]) -> Program:
    """``program`` with each chain of ``replacements`` replaced by fresh ops of those specs
    (no source: splice builds new modules), or by those ops (their ``source``/``origin`` kept,
    operands set here); an empty replacement makes the chain an identity."""
    n = len(program.inputs)
    first = {c.ops[0]: c for c in replacements}
    inside = {k for c in replacements for k in (*c.ops, *c.constants)}
    remap = {v: v for v in range(n)}
    ops: list[ProgramOp] = []
    for k, op in enumerate(program.ops):
        chain = first.get(k)
        if chain is not None:
            value = remap[chain.input]
            for spec in replacements[chain]:
                ops.append(replace(spec, operands=(value,)) if isinstance(spec, ProgramOp)
                           else ProgramOp(spec, (value,)))
                value = n + len(ops) - 1
            remap[chain.output] = value
        elif k not in inside:
            ops.append(_copy(op, remap))
            remap[n + k] = n + len(ops) - 1
    return Program(program.inputs, tuple(ops), tuple(remap[v] for v in program.outputs))


def drop_operand(program: Program, value: int, keep: int) -> Program:
    """``program`` where the op computing ``value`` (an add or mul) is bypassed: its users read
    its operand ``keep`` instead; ops left unused are pruned."""
    n = len(program.inputs)
    op = program.ops[value - n]
    source = op.operands[keep]
    ops = [replace(o, operands=tuple(source if v == value else v for v in o.operands))
           for o in program.ops]
    outputs = tuple(source if v == value else v for v in program.outputs)
    return pruned(Program(program.inputs, tuple(ops), outputs))


def pruned(program: Program) -> Program:
    """``program`` without the ops no output depends on (values renumbered)."""
    n = len(program.inputs)
    live = set(program.outputs)
    for k in range(len(program.ops) - 1, -1, -1):
        if n + k in live:
            live.update(program.ops[k].operands)
    remap = {v: v for v in range(n)}
    ops: list[ProgramOp] = []
    for k, op in enumerate(program.ops):
        if n + k in live:
            ops.append(_copy(op, remap))
            remap[n + k] = n + len(ops) - 1
    return Program(program.inputs, tuple(ops), tuple(remap[v] for v in program.outputs))
