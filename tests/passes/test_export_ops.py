"""Ops torch.export writes and torch.fx does not: shape, mixing, depth and cost rules against the
trace and the Jacobian ground truth, on small modules captured with a dynamic batch.

``arange``/``zeros``/``ones``/``full`` (constants made from sizes, symbolic when the sizes are),
comparisons, ``aten.index.Tensor`` (advanced indexing: a parameter table or the data indexed by a
constant tensor) and ``aten.select``/``aten.slice`` (``x[:, 0]``, ``x[:, 1::2]``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from test_transformer_ops import WithBuffers, _relative_bias
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.diagnostics import collect
from alphac.frontends.trace import _export, annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis import CostAnalysis, DepthAnalysis, MixingAnalysis, ShapeAnalysis
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import Mix
from alphac.passes.analysis.registry import normalize
from alphac.passes.analysis.shape import TensorShape, evaluate_dim, traced_shape
from alphac.symbols import dim, same

B = dim("B")
NO, ONE = Mix.NONE, Mix.ONE_TO_ONE


def _fn(fn: Callable[..., torch.Tensor]) -> Callable[[], nn.Module]:
    return lambda: WithBuffers(fn, {})


#: id -> (module factory, input shape); the batch (dim 0) is dynamic in the export.
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "arange_batch": (_fn(lambda p, x: x * (torch.arange(x.shape[0]) + 1).view(-1, 1, 1)),
                     (3, 2, 4)),
    "arange_start_step": (_fn(lambda p, x: x + torch.arange(1, 2 * x.shape[-1], 2)), (2, 3, 4)),
    "zeros_batch": (_fn(lambda p, x: torch.cat((torch.zeros(x.shape[0], 1, 4), x), 1)),
                    (2, 3, 4)),
    "ones_and_full": (_fn(lambda p, x: x * torch.ones(3, 4) + torch.full((1, 3, 4), 2.0)),
                      (2, 3, 4)),
    "compare_mask": (_fn(lambda p, x: x * (x >= 0.5) + x.masked_fill(x.lt(0), 0.0)), (2, 3, 4)),
    "select_and_step_slice": (_fn(lambda p, x: x[:, 0] + x[:, 1::2].sum(1)), (2, 5, 4)),
    "relative_position_bias": (lambda: WithBuffers(
        _relative_bias, {"index": torch.randint(0, 9, (16,))}, {"table": torch.randn(9, 3)}),
        (2, 3, 4, 4)),
    "constant_index_on_data": (lambda: WithBuffers(
        lambda p, x: x[:, p.index], {"index": torch.tensor([3, 0, 0, -1])}), (2, 5, 3)),
}
_EXPORTED: dict[str, fx.GraphModule] = {}


def _trace(case: str) -> fx.GraphModule:
    if case not in _EXPORTED:
        factory, shape = CASES[case]
        torch.manual_seed(0)
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        gm = _export(factory().eval(), (example,))
        annotate_shapes(gm, [example])
        _EXPORTED[case] = gm
    return _EXPORTED[case]


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_ops_are_exact(case: str) -> None:
    gm = _trace(case)
    sub, am = Subgraph.whole(gm), AnalysisManager()
    with collect() as diag:
        for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis(), CostAnalysis()):
            am.get(analysis, gm, sub)
    assert diag.findings() == (), diag.summary()
    fact = am.get(ShapeAnalysis(), gm, sub)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, value in fact.node_shapes.items():
        if isinstance(value, TensorShape):
            got = tuple(evaluate_dim(d, fact.bindings) for d in value.dims)
            assert got == traced_shape(nodes[name]), name
    problems = check_mixing(gm, sub, am)
    assert problems == [], "\n".join(problems)


def _kind_values(case: str, kind: str) -> list[TensorShape]:
    gm = _trace(case)
    fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
    return [fact.node_shapes[n.name] for n in gm.graph.nodes if normalize(n).spec.kind == kind]


def test_constants_sized_by_the_batch_stay_symbolic() -> None:
    (arange,) = _kind_values("arange_batch", "arange")
    assert same(arange.dims[0], B)
    (zeros,) = _kind_values("zeros_batch", "full")
    assert same(zeros.dims[0], B) and zeros.dims[1:] == (1, 4)
    (stepped,) = _kind_values("arange_start_step", "arange")
    assert stepped.dims == (4,)  # 1, 3, 5, 7


def test_index_keeps_the_dims_it_does_not_index() -> None:
    gm = _trace("constant_index_on_data")
    fact = AnalysisManager().get(MixingAnalysis(), gm, Subgraph.whole(gm))
    matrix = fact.matrix(0, 0)  # (B, 5, 3) -> (B, 4, 3): batch and channels one to one
    assert matrix[0] == (ONE, NO, NO) and matrix[2] == (NO, NO, ONE)
    out = _kind_values("constant_index_on_data", "getitem")[-1]  # aten index, a getitem now
    assert same(out.dims[0], B) and out.dims[1:] == (4, 3)
