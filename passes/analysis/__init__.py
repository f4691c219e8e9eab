"""Analysis passes: pure, cached facts about subgraphs (ALGORITHM.md section 2).

``ShapeAnalysis`` (symbolic shapes and layouts), ``DepthAnalysis`` (nonlinear depth),
``MixingAnalysis`` (which input dims reach which output dims), ``CostAnalysis`` (params and FLOPs
in the shape symbols; :func:`model_cost` for a whole model at its example batch) and
``FingerprintAnalysis`` (structural hash); each property also comes as a ``Property`` (infer,
distance, mutate) over its lattice.
"""

from __future__ import annotations

from alphac.passes.analysis.cost import (
    OTHER_COST,
    Cost,
    CostAnalysis,
    CostFact,
    ModelCost,
    model_cost,
)
from alphac.passes.analysis.depth import DepthAnalysis, DepthFact, DepthLattice, DepthProperty
from alphac.passes.analysis.fingerprint import FingerprintAnalysis
from alphac.passes.analysis.mixing import (
    Mix,
    MixingAnalysis,
    MixingFact,
    MixingLattice,
    MixingProperty,
    tensor_inputs,
    tensor_outputs,
)
from alphac.passes.analysis.registry import REGISTRY, Op, OpKind, OpSpec, normalize
from alphac.passes.analysis.shape import (
    ShapeAnalysis,
    ShapeFact,
    ShapeLattice,
    ShapeProperty,
    TensorShape,
    evaluate_dim,
)

__all__ = [
    "OTHER_COST",
    "REGISTRY",
    "Cost",
    "CostAnalysis",
    "CostFact",
    "DepthAnalysis",
    "DepthFact",
    "DepthLattice",
    "DepthProperty",
    "FingerprintAnalysis",
    "Mix",
    "MixingAnalysis",
    "MixingFact",
    "MixingLattice",
    "MixingProperty",
    "ModelCost",
    "Op",
    "OpKind",
    "OpSpec",
    "ShapeAnalysis",
    "ShapeFact",
    "ShapeLattice",
    "ShapeProperty",
    "TensorShape",
    "evaluate_dim",
    "model_cost",
    "normalize",
    "tensor_inputs",
    "tensor_outputs",
]
