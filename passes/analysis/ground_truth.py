"""The Jacobian ground truth of the mixing property, and a checker against the abstract analysis.

Concrete meaning of mixing (ALGORITHM.md section 2.3), in eval mode: for output o and output dim
k, take the 1-D slice of o through its centre (index ``size // 2``) along k; input dim a is paired
with k when every position along a has a nonzero derivative into some element of the slice; the
kind comes from the centre element alone (:func:`alphac.passes.analysis.mixing.mix_label`).

Nonzero patterns are unions over ``draws`` redraws of every parameter and float buffer (through
``torch.func.functional_call``) times ``samples`` inputs each, so an inactive ReLU or an
unselected max-pool position on one evaluation does not hide a dependency. Draws alternate
signed weights and positive (averaging) weights; inputs come in antithetic pairs (x, -x), and
under positive weights also all-positive, which opens every ReLU gate at once. (With signed
weights only, a negative weight in front of a second ReLU kills its channel for every input of
the draw; the tests show one draw fooled that way.) Only the needed rows are computed: one vjp
per query, batched with ``vmap``; a slice query uses one random cotangent over the slice, whose
vjp is nonzero exactly where some slice element's row is (almost surely). An exported graph,
traced in train mode, runs with its training flags flipped to eval on the extracted copy
(:mod:`alphac.modes`); it still counts ``num_batches_tracked`` in place, so it falls back to
plain autograd, which allows that.
It runs in float32: the draws keep every value O(1), so a true dependency never rounds to an
exact zero in practice, and float64 would double the cost of the zoo-wide tests.

Example: ``mixing_ground_truth(nn.Conv2d(3, 4, 1, stride=2), (torch.randn(2, 3, 4, 4),))[0, 0]``
has row H = (none, none, none, none): odd rows never reach the output.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph, extract
from alphac.modes import training_mode
from alphac.passes.analysis.index import graph_index
from alphac.passes.analysis.mixing import (
    Matrix,
    Mix,
    MixingAnalysis,
    MixingFact,
    mix_label,
    tensor_inputs,
    tensor_outputs,
)

__all__ = ["check_mixing", "mixing_ground_truth", "subgraph_inputs"]


def _is_float(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (:func:`alphac.modes.training_mode`: an exported graph's baked
    ``training`` flags are flipped too, and restored exactly after), on one thread: these tensors
    are tiny and OpenMP start-up on busy cores costs 100x the work."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with training_mode(module, False):
            yield
    finally:
        torch.set_num_threads(threads)


def _redraw(module: nn.Module, gen: torch.Generator, dtype: torch.dtype,
            positive: bool) -> dict[str, Any]:
    """Fresh random parameters and float buffers that keep every pre-activation centred.

    Signed draws: weights of variance 1/fan_in, biases and running means within +-0.1, norm
    scales of random sign and magnitude in [0.5, 1.5]. Positive draws: weights in
    [0, 2/fan_in] (averaging), zero biases and means, positive scales; there a channel cannot be
    switched off for every input by a negative weight in front of a second ReLU, the failure
    mode of signed draws. Running variances are in [0.5, 1.5]. Uniform draws cost a quarter of
    normal ones for multi-million-parameter blocks.
    """
    state: dict[str, Any] = {}

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return torch.rand(shape, generator=gen, dtype=dtype) * (high - low) + low

    for name, p in module.named_parameters():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            state[name] = uniform(p.shape, 0.0, 2.0 / fan_in) if positive else uniform(
                p.shape, -bound, bound)
        elif name.endswith("bias"):
            state[name] = torch.zeros(p.shape, dtype=dtype) if positive else uniform(
                p.shape, -0.1, 0.1)
        else:
            sign = 1 if positive else torch.randint(0, 2, p.shape, generator=gen).to(dtype) * 2 - 1
            state[name] = sign * uniform(p.shape, 0.5, 1.5)
    for name, b in module.named_buffers():
        if not b.is_floating_point():
            state[name] = b.clone()  # an exported train-mode graph increments num_batches
        elif name.endswith("running_var"):
            state[name] = uniform(b.shape, 0.5, 1.5)
        else:
            state[name] = uniform(b.shape, -0.1, 0.1) * (not positive)
    return state


def _cotangents(shapes: list[tuple[int, ...]], gen: torch.Generator,
                dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Per output, a (Q, *shape) stack: each output's slice queries, then its centre query."""
    total = sum(len(s) + 1 for s in shapes)
    stacks = [torch.zeros((total, *s), dtype=dtype) for s in shapes]
    q = 0
    for stack, shape in zip(stacks, shapes, strict=True):
        centre = [m // 2 for m in shape]
        for k, m in enumerate(shape):
            index = (q, *centre[:k], slice(None), *centre[k + 1:])
            stack[index] = torch.randn(m, generator=gen, dtype=dtype)
            q += 1
        stack[(q, *centre)] = 1.0
        q += 1
    return tuple(stacks)


def _runner(module: nn.Module, state: dict[str, Any], inputs: Sequence[Any]) -> Any:
    """``run(*float_inputs) -> float outputs`` of ``module`` under the parameters ``state``."""
    positions = [j for j, v in enumerate(inputs) if _is_float(v)]

    def run(*floats: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = list(inputs)
        for j, x in zip(positions, floats, strict=True):
            args[j] = x
        out = torch.func.functional_call(module, state, tuple(args))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o for o in outs if _is_float(o))

    return run


def _nonzero_rows(run: Any, xs: list[torch.Tensor],
                  gen: torch.Generator) -> tuple[list[torch.Tensor], list[int]]:
    """Per float input, a (Q, *shape) bool tensor (which positions reach each query); the
    ranks of the float outputs."""
    try:
        outs, vjp_fn = torch.func.vjp(run, *xs)
    except RuntimeError as exc:  # functorch refuses in-place updates of buffers (num_batches)
        if "in-place" not in str(exc):
            raise
        return _nonzero_rows_autograd(run, xs, gen)
    cots = _cotangents([tuple(o.shape) for o in outs], gen, xs[0].dtype)
    try:
        with warnings.catch_warnings():  # "no batching rule, falling back to a loop" notices
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            grads = torch.func.vmap(vjp_fn)(cots)
    except (RuntimeError, NotImplementedError):  # an op without a batching rule: loop instead
        rows = [vjp_fn(tuple(c[q] for c in cots)) for q in range(cots[0].shape[0])]
        grads = tuple(torch.stack([r[j] for r in rows]) for j in range(len(xs)))
    return [g != 0 for g in grads], [o.dim() for o in outs]


def _nonzero_rows_autograd(run: Any, xs: list[torch.Tensor],
                           gen: torch.Generator) -> tuple[list[torch.Tensor], list[int]]:
    """:func:`_nonzero_rows` with plain autograd, for graphs that mutate their buffers."""
    leaves = [x.detach().requires_grad_() for x in xs]
    outs = run(*leaves)
    cots = _cotangents([tuple(o.shape) for o in outs], gen, xs[0].dtype)
    rows = []
    for q in range(cots[0].shape[0]):
        grads = torch.autograd.grad(outs, leaves, [c[q] for c in cots], retain_graph=True,
                                    allow_unused=True)
        rows.append([torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs, strict=True)])
    stacked = [torch.stack([r[j] for r in rows]) != 0 for j in range(len(xs))]
    return stacked, [o.dim() for o in outs]


def _sample_inputs(floats: list[torch.Tensor], previous: list[torch.Tensor], s: int,
                   positive: bool, gen: torch.Generator, dtype: torch.dtype) -> list[torch.Tensor]:
    """Sample ``s`` of a draw: normal inputs in antithetic pairs (x, -x flips every first-layer
    pre-activation, so one of the two opens each first ReLU); under positive weights, samples
    from the third on are positive, which keeps every later ReLU gate open as well."""
    if positive and s >= 2:
        return [torch.rand(v.shape, generator=gen, dtype=dtype) for v in floats]
    if s % 2:
        return [-x for x in previous]
    return [torch.randn(v.shape, generator=gen, dtype=dtype) for v in floats]


def _union_of_draws(module: nn.Module, inputs: Sequence[Any], draws: int, samples: int,
                    seed: int, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[int]]:
    gen = torch.Generator().manual_seed(seed)
    masks: list[torch.Tensor] | None = None
    floats = [v for v in inputs if _is_float(v)]
    out_ranks: list[int] = []
    for draw in range(max(draws, 1)):
        positive = draw % 2 == 1
        run = _runner(module, _redraw(module, gen, dtype, positive), inputs)
        xs: list[torch.Tensor] = []
        for s in range(max(samples, 2)):
            xs = _sample_inputs(floats, xs, s, positive, gen, dtype)
            if masks is None:
                with torch.no_grad():
                    if not run(*xs):
                        return [], []  # nothing differentiable comes out
            rows, out_ranks = _nonzero_rows(run, xs, gen)
            masks = rows if masks is None else [m | r for m, r in zip(masks, rows, strict=True)]
    return masks or [], out_ranks


def _project(mask: torch.Tensor, dim: int) -> torch.Tensor:
    others = tuple(d for d in range(mask.dim()) if d != dim)
    return mask.any(dim=others) if others else mask


def _labels(mask: torch.Tensor, out_ranks: list[int]) -> list[tuple[tuple[int, int], Matrix]]:
    """Per output, the matrix of one input from its (Q, *shape) mask."""
    result, first = [], 0
    for o, rank in enumerate(out_ranks):
        centre = mask[first + rank]
        rows = []
        for a, n in enumerate(mask.shape[1:]):
            count = int(_project(centre, a).sum())
            rows.append(tuple(mix_label(n, bool(_project(mask[first + k], a).all()), count)
                              for k in range(rank)))
        result.append((o, tuple(rows)))
        first += rank + 1
    return result


def mixing_ground_truth(module_or_gm: nn.Module, inputs: Sequence[Any], *, draws: int = 3,
                        seed: int = 0, samples: int = 4) -> dict[tuple[int, int], Matrix]:
    """The mixing matrices of ``module_or_gm`` at ``inputs``, from Jacobian nonzero patterns.

    Pre: ``inputs`` are the positional arguments; float tensors are the differentiated inputs
    (numbered in order, like :func:`~alphac.passes.analysis.mixing.tensor_inputs`), anything
    else is passed through unchanged. Float tensor outputs are numbered in return order.
    Post: ``{(input i, output o): M[input dim][output dim]}`` for the pairs with any dependency
    (all-NONE pairs are absent); the module's parameters and training flags are unchanged.
    Example: a 3x3 pad-1 conv on (2, 3, 4, 4) gives row C = (all, all, all, all), H ->
    H many. ``draws`` weight redraws times ``samples`` inputs are unioned (seeded: reproducible).
    """
    if not any(_is_float(v) for v in inputs):
        return {}
    with _eval_mode(module_or_gm):
        masks, out_ranks = _union_of_draws(module_or_gm, inputs, draws, samples, seed,
                                           torch.float32)
        pairs = [((i, o), m) for i, mask in enumerate(masks) for o, m in _labels(mask, out_ranks)]
    return MixingFact(tuple(pairs)).matrices()


def _example_values(gm: fx.GraphModule, am: AnalysisManager | None = None) -> dict[str, Any]:
    """Values of the nodes of ``gm`` that are not float tensors (sizes, tuples), from one run
    (kept in the graph's index: once per graph version with a manager)."""
    index = graph_index(gm, am)
    if index.values is not None:
        return index.values
    gen = torch.Generator().manual_seed(0)
    args = []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            meta = node.meta.get("tensor_meta")
            if hasattr(meta, "shape"):
                args.append(torch.randn(meta.shape, generator=gen).to(meta.dtype))
            else:  # not a tensor input (an unbound optional argument): its default, if any
                args.append(node.args[0] if node.args else None)
    values: dict[str, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            if not _is_float(result):
                values[n.name] = result
            return result

    buffers = {name: b.detach().clone() for name, b in gm.named_buffers()}
    try:  # an exported graph counts num_batches_tracked in place, even in eval mode: put it back
        with _eval_mode(gm), torch.no_grad():
            Recorder(gm).run(*args)
    finally:
        with torch.no_grad():
            for name, b in gm.named_buffers():
                b.copy_(buffers[name])
    index.values = values
    return values


def subgraph_inputs(gm: fx.GraphModule, subgraph: Subgraph, seed: int = 0,
                    am: AnalysisManager | None = None) -> list[Any]:
    """Arguments for ``extract(gm, subgraph)``: random float tensors of the recorded shapes, and
    the concrete values of everything else (ints from size queries) from an example run."""
    by_name = graph_index(gm, am).nodes
    floats = set(tensor_inputs(gm, subgraph, am))
    gen = torch.Generator().manual_seed(seed)
    values = None if floats >= set(subgraph.inputs) else _example_values(gm, am)
    args = []
    for name in subgraph.inputs:
        if name in floats:
            meta = by_name[name].meta["tensor_meta"]
            args.append(torch.randn(meta.shape, generator=gen, dtype=meta.dtype))
        else:
            args.append(values[name])
    return args


class _AllOutputs(nn.Module):
    """Always return a tuple of the subgraph's outputs, so a tuple-valued output (a ``split``
    read outside) stays one unnumbered output, as in :func:`tensor_outputs`."""

    def __init__(self, inner: nn.Module, n_outputs: int) -> None:
        super().__init__()
        self.inner, self.n_outputs = inner, n_outputs

    def forward(self, *args: Any) -> tuple[Any, ...]:
        out = self.inner(*args)
        return (out,) if self.n_outputs == 1 else tuple(out)


def check_mixing(gm: fx.GraphModule, subgraph: Subgraph, am: AnalysisManager, *,
                 draws: int = 3) -> list[str]:
    """Disagreements between the abstract mixing of ``subgraph`` and its Jacobian ground truth.

    Pre: ``gm`` is shape-annotated (``alphac.frontends.load``). Post: an empty list means every
    entry of every (input, output) pair agrees; else one line per differing entry, e.g.
    ``"x (input 0) -> relu (output 0): dim 2 -> dim 2: abstract many, Jacobian all"``.
    """
    fact = am.get(MixingAnalysis(), gm, subgraph)
    module = _AllOutputs(extract(gm, subgraph), len(subgraph.outputs))
    truth = mixing_ground_truth(module, subgraph_inputs(gm, subgraph, am=am), draws=draws)
    ins, outs = tensor_inputs(gm, subgraph, am), tensor_outputs(gm, subgraph, am)
    mine_all = fact.matrices()
    problems = []
    for i, o in sorted(set(mine_all) | set(truth)):
        mine, theirs = mine_all.get((i, o)), truth.get((i, o))
        mine = mine or tuple((Mix.NONE,) * len(r) for r in theirs)
        theirs = theirs or tuple((Mix.NONE,) * len(r) for r in mine)
        if [len(r) for r in mine] != [len(r) for r in theirs]:
            problems.append(f"pair {i}->{o}: abstract shape {[len(r) for r in mine]}, Jacobian "
                            f"shape {[len(r) for r in theirs]}")
            continue
        for a, (row, other) in enumerate(zip(mine, theirs, strict=True)):
            for k, (x, y) in enumerate(zip(row, other, strict=True)):
                if x != y:
                    problems.append(f"{ins[i]} (input {i}) -> {outs[o]} (output {o}): dim {a} -> "
                                    f"dim {k}: abstract {x.label}, Jacobian {y.label}")
    return problems
