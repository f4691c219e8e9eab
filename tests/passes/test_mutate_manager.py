"""mutate goes through one AnalysisManager, and what it memoises never changes the child."""

from __future__ import annotations

import torch

from alphac.analysis import AnalysisManager
from alphac.passes.analysis.program_infer import STATES
from alphac.passes.analysis.shape import SHAPE_RULES
from alphac.passes.transform.mutate import Child, mutate

#: small_cnn: seeds 0-3 draw rewrites and width mutations; the forced kinds cover the rest.
REQUESTS = ((0, None), (1, None), (2, None), (3, None), (0, "rewrite"), (0, "duplicate"))
_TIMES = {"seconds", "synthesis_seconds"}


def _same(a: Child, b: Child) -> None:
    assert a.gm.code == b.gm.code
    sa, sb = a.gm.state_dict(), b.gm.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rb = a.record.as_dict(), b.record.as_dict()
    assert {k: v for k, v in ra.items() if k not in _TIMES} == \
        {k: v for k, v in rb.items() if k not in _TIMES}


def test_one_warm_manager_gives_the_children_fresh_ones_give(zoo_model) -> None:
    t = zoo_model("small_cnn", (2, 1, 28, 28))
    shared = AnalysisManager()
    parent_code = t.gm.code
    for seed, kind in REQUESTS:
        fresh = mutate(t.gm, t.blocks, t.example_inputs, seed=seed, kind=kind)
        warm = mutate(t.gm, t.blocks, t.example_inputs, seed=seed, kind=kind, am=shared)
        _same(fresh, warm)
    sizes = shared.cache.sizes()
    assert sizes[STATES] > 0 and sizes[SHAPE_RULES] > 0  # the rewrites went through it
    assert shared.cached(t.gm) > 0  # and the parent's facts (fingerprint, cost, shapes)
    assert t.gm.code == parent_code
    shared.clear()
    assert not any(shared.cache.sizes().values())
    again = mutate(t.gm, t.blocks, t.example_inputs, seed=0, kind="rewrite", am=shared)
    _same(again, mutate(t.gm, t.blocks, t.example_inputs, seed=0, kind="rewrite"))
