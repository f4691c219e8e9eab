"""random_edit: the baseline mutator that ignores properties (Primer / AutoML-Zero style).

One chain of the selected subgraph (:mod:`.chains`) gets one random edit: delete an op, insert a
vocabulary op, swap an op for another, or change one argument of an op (kernel, stride, groups,
dilation, width ratio, pool window, norm groups). The last conv/linear is resized so the shape
stays exact (a child must still run); depth and mixing are not looked at. Same interface as
:func:`~alphac.passes.transform.synthesize.synthesize`: a :class:`Problem` in, a
:class:`Synthesis` out, :class:`~alphac.errors.SynthesisFailed` when no edit keeps the shape.

Example: ``conv3x3 bn relu`` -> (swap 2) ``conv3x3 bn gelu``, or (change kernel) ``conv5x5 bn relu``.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from fractions import Fraction
from typing import Any

from alphac.analysis import AnalysisManager
from alphac.errors import SynthesisFailed
from alphac.passes.analysis.program import value_at
from alphac.passes.analysis.registry import OpSpec
from alphac.passes.transform.synthesize import (
    Problem,
    Slot,
    Synthesis,
    chain_slots,
    slot_shape_distance,
    slot_specs,
)
from alphac.passes.transform.vocabulary import Template, fit_width

__all__ = ["EDITS", "random_edit", "template_of"]

EDITS = ("delete", "insert", "swap", "change")
_CHOICES: dict[str, dict[str, tuple[Any, ...]]] = {
    "conv": {"kernel": (1, 3, 5), "stride": (1, 2), "groups": (1, 2, 4, "depthwise"),
             "dilation": (1, 2), "ratio": (Fraction(1, 2), Fraction(1), Fraction(2))},
    "linear": {"ratio": (Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(4))},
    "avg_pool": {"window": (2, 3)},
    "max_pool": {"window": (2, 3)},
    "group_norm": {"groups": (1, 2, 4, 8)},
}
_SIMPLE = {"batch_norm", "layer_norm", "relu", "gelu", "silu", "sigmoid", "dropout"}


def template_of(spec: OpSpec, bindings: Any) -> Template | None:
    """The vocabulary template an op of a lifted chain is, or None (not expressible)."""
    kind = spec.kind
    if kind in _SIMPLE:
        return Template(kind)
    if kind == "softmax":
        return Template("softmax")
    if kind == "group_norm":
        return Template("group_norm", groups=spec.get("num_groups"))
    if kind == "mul" and isinstance(spec.get("other"), (int, float)):
        return Template("scale", scale=float(spec.get("other")))
    if kind == "adaptive_avg_pool" and spec.get("output_size") == (1, 1):
        return Template("global_avg_pool")
    if kind in ("avg_pool", "max_pool") and spec.get("dims") == 2:
        return _pool_template(spec)
    if kind in ("conv", "linear"):
        return _resizing_template(spec, bindings)
    return None


def _pool_template(spec: OpSpec) -> Template | None:
    k, s, p = spec.get("kernel"), spec.get("stride"), spec.get("padding")
    if k == (2, 2) and s == (2, 2) and p == (0, 0):
        return Template(spec.kind, window=2)
    if k == (3, 3) and p == (1, 1) and s in ((1, 1), (2, 2)):
        return Template(spec.kind, window=3, stride=s[0])
    return None


def _resizing_template(spec: OpSpec, bindings: Any) -> Template | None:
    key = ("in_channels", "out_channels") if spec.kind == "conv" else ("in_features",
                                                                        "out_features")
    w_in, w_out = (value_at(spec.get(k), bindings) for k in key)
    if not isinstance(w_in, int) or not isinstance(w_out, int) or w_in < 1:
        return None
    ratio = Fraction(w_out, w_in)
    if spec.kind == "linear":
        return Template("linear", ratio=ratio)
    k, s, d = spec.get("kernel"), spec.get("stride"), spec.get("dilation")
    if (spec.get("dims") != 2 or spec.get("transposed") or len(set(k)) != 1
            or len(set(s)) != 1 or len(set(d)) != 1
            or spec.get("padding") != ((d[0] * (k[0] - 1)) // 2,) * 2):
        return None
    groups = spec.get("groups")
    groups = "depthwise" if groups == spec.get("in_channels") and groups != 1 else groups
    if not isinstance(groups, (int, str)):
        return None
    return Template("conv", kernel=k[0], stride=s[0], groups=groups, dilation=d[0], ratio=ratio)


def _edit(chain: list[Template], slot: Slot, rng: random.Random) -> list[Template] | None:
    edit = rng.choice(EDITS)
    if edit == "delete":
        if len(chain) < 2:
            return None
        del chain[rng.randrange(len(chain))]
    elif edit == "insert":
        chain.insert(rng.randrange(len(chain) + 1), rng.choice(slot.vocab))
    elif edit == "swap":
        chain[rng.randrange(len(chain))] = rng.choice(slot.vocab)
    else:
        editable = [i for i, t in enumerate(chain) if t.kind in _CHOICES]
        if not editable:
            return None
        i = rng.choice(editable)
        param = rng.choice(sorted(_CHOICES[chain[i].kind]))
        values = [v for v in _CHOICES[chain[i].kind][param] if v != getattr(chain[i], param)]
        chain[i] = replace(chain[i], **{param: rng.choice(values)})
    return chain


def random_edit(problem: Problem, rng: random.Random, *, tries: int = 50,
                am: AnalysisManager | None = None) -> Synthesis:
    """One random edit of one chain that keeps the exact shape in every context.

    Pre: as :func:`~alphac.passes.transform.synthesize.synthesize` (the targets are ignored).
    Post: the program differs from the lifted one in exactly one chain. Program inference is
    memoised in ``am`` (a fresh manager when None)."""
    start = time.monotonic()
    am = am if am is not None else AnalysisManager()
    contexts = problem.contexts
    slots = []
    for slot in chain_slots(problem, am):
        ops = [problem.program.ops[k].spec for k in slot.chain.ops]
        templates = [template_of(s, contexts[0].bindings) for s in ops]
        if all(t is not None for t in templates) and slot_specs(slot, templates, contexts):
            slots.append((slot, templates))  # the chain as it is must be writable here
    if not slots:
        raise SynthesisFailed("no chain of the selected subgraph is made of vocabulary ops, so "
                              "the random-edit mutator has nothing to edit", prop="structure")
    for attempt in range(1, tries + 1):
        slot, templates = rng.choice(slots)
        edited = _edit(list(templates), slot, rng)
        if edited is None:
            continue
        if slot_specs(slot, edited, contexts) == slot_specs(slot, templates, contexts):
            continue  # e.g. a new ratio on the last conv, which the width fit undoes
        specs = slot_specs(slot, edited, contexts)
        if specs is None or slot_shape_distance(slot, specs, contexts, am) != 0:
            continue
        fitted = fit_width(edited, slot.out_width) if slot.out_width is not None else edited
        result = Synthesis(problem.program, ((slot.chain, tuple(fitted), specs),), (), attempt,
                           attempt, 0.0)
        return replace(result, program=result.program_for(problem.program),
                       seconds=time.monotonic() - start)
    raise SynthesisFailed(f"no random edit kept the exact shape in {tries} tries", prop="shape")
