"""Block-wise distillation (alphac.runtime.distill): a child's changed parts learn what its
trained parent computed there, on real Fashion-MNIST, for zoo and library models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import fx, nn

from alphac.codegen import inherit_weights
from alphac.errors import SynthesisFailed
from alphac.frontends import find_blocks, load
from alphac.frontends.trace import trace
from alphac.ir import Boundary, Subgraph, annotate_shapes
from alphac.passes.transform.mutate import mutate
from alphac.runtime.distill import _recorder, distill
from alphac.runtime.evaluate import evaluate
from alphac.runtime.pipeline import Normalizer, prepare_data
from alphac.runtime.recipe import Recipe
from alphac.runtime.targets import get_target
from alphac.runtime.train import train_and_evaluate

SHAPE = (2, 1, 28, 28)


@pytest.fixture(scope="module")
def data(fashion_mnist):
    return prepare_data(fashion_mnist, val_fraction=0.1, subset=3000, seed=0, val_subset=1000)


@pytest.fixture(scope="module")
def parent(data):
    """zoo:small_cnn trained briefly on real Fashion-MNIST (well above chance)."""
    traced = load("zoo:small_cnn", SHAPE, num_classes=10, seed=0)
    recipe = Recipe(steps=120, batch_size=64, lr=0.05, subset=3000)
    metrics = train_and_evaluate(traced.gm, "fashion-mnist", recipe, seed=0, data=data,
                                 test=False)
    assert metrics.val_accuracy > 0.6
    return traced


def _accuracy(gm, data) -> float:
    return evaluate(gm, data.val, normalize=Normalizer(data.target, data.device, False)).accuracy


def _fresh_child(parent, kind="rewrite"):
    """The first seeded child whose changed part holds a module the parent lacks."""
    names = {n for n, _ in parent.gm.named_modules()}
    for seed in range(30):
        try:
            child = mutate(parent.gm, parent.blocks, parent.example_inputs, seed=seed,
                           kind=kind)
        except SynthesisFailed:
            continue
        fresh = {str(n.target) for n in child.gm.graph.nodes if n.op == "call_module"
                 for b in child.record.boundaries if n.name in b.part.nodes} - names
        if child.record.boundaries and (fresh or kind == "width"):
            inherit_weights(child.gm, parent.gm.state_dict(), plan=child.record.weight_plan)
            return child
    raise AssertionError("no child with a fresh part in 30 seeds")


def test_a_fresh_part_learns_its_parents_values_and_the_child_recovers(parent, data):
    child = _fresh_child(parent)
    before_acc = _accuracy(child.gm, data)
    parent_state = copy.deepcopy(parent.gm.state_dict())
    part_nodes = {n for b in child.record.boundaries for n in b.part.nodes}
    part_modules = {str(n.target) for n in child.gm.graph.nodes
                    if n.op == "call_module" and n.name in part_nodes}
    outside = {k: v.clone() for k, v in child.gm.state_dict().items()
               if not any(k.startswith(m + ".") for m in part_modules)}
    result = distill(parent.gm, child.gm, child.record.boundaries, data, steps=150, seed=0)
    assert result.steps > 0 and not result.skipped and not result.diverged
    assert all(a < 0.7 * b for a, b in zip(result.error_after, result.error_before, strict=True))
    assert result.images == (result.steps + 1) * 64
    assert _accuracy(child.gm, data) > before_acc + 0.05
    now = child.gm.state_dict()
    assert all(torch.equal(now[k], v) for k, v in outside.items()), "only the parts train"
    assert all(torch.equal(parent.gm.state_dict()[k], v) for k, v in parent_state.items())
    assert parent.gm.training, "the parent's mode is restored"


def test_distillation_is_deterministic_under_its_seed(parent, data):
    child = _fresh_child(parent)
    twin = copy.deepcopy(child.gm)
    a = distill(parent.gm, child.gm, child.record.boundaries, data, steps=15, seed=3)
    b = distill(parent.gm, twin, child.record.boundaries, data, steps=15, seed=3)
    assert a.error_after == b.error_after
    assert all(torch.equal(x, y) for x, y in zip(child.gm.state_dict().values(),
                                                 twin.state_dict().values(), strict=True))


def test_width_children_are_distilled_at_the_resized_layers(parent, data):
    child = _fresh_child(parent, kind="width")
    (b,) = child.record.boundaries
    assert set(b.part.nodes) >= {n for n in child.record.subgraph}
    assert b.parent_inputs == b.part.inputs  # a width mutation keeps its nodes' names
    result = distill(parent.gm, child.gm, child.record.boundaries, data, steps=60, seed=0)
    assert not result.skipped
    assert result.error_after[0] <= result.error_before[0]


def test_a_part_that_already_matches_keeps_its_weights(parent, data):
    """An unchanged part (error 0) comes out exactly as it went in, though BN's batch
    statistics in train mode would have moved it."""
    child = copy.deepcopy(parent.gm)
    part = Subgraph.from_nodes(child, ["features_0_conv", "features_0_bn"])
    start = {k: v.clone() for k, v in child.state_dict().items()}
    result = distill(parent.gm, child, [Boundary(part, part.inputs, part.outputs)], data,
                     steps=10, seed=0)
    assert result.error_before == (0.0,) and result.steps == 0  # no step was needed
    assert all(torch.equal(child.state_dict()[k], v) for k, v in start.items())


def test_unpairable_boundaries_are_skipped_and_named(parent, data):
    child = copy.deepcopy(parent.gm)
    part = Subgraph.from_nodes(child, ["features_0_conv"])
    missing = Boundary(part, ("no_such_node",), part.outputs)
    wrong = Boundary(part, part.inputs, ("features_3_conv",))  # 64 channels at 14x14
    result = distill(parent.gm, child, [missing, wrong], data, steps=5)
    assert result.steps == 0
    assert len(result.skipped) == 2
    assert result.skipped[0] == "features_0_conv: no node no_such_node"
    assert "features_0_conv's shape differs from the parent's" in result.skipped[1]


def test_boundaries_round_trip_through_json(parent):
    child = _fresh_child(parent)
    stored = child.record.as_dict()["boundaries"]
    assert tuple(Boundary.from_json(b) for b in stored) == child.record.boundaries
    with pytest.raises(ValueError, match="pairs each input"):
        Boundary(Subgraph(("a",), ("x",), ("a",)), (), ("a",))


class _InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x))).mean((2, 3))


def test_recorded_values_are_taken_before_a_later_in_place_op():
    model = _InPlace().eval()
    gm = fx.symbolic_trace(model)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    values = _recorder(gm, ["bn"])(x)
    expected = model.bn(model.conv(x))
    assert (expected < 0).any()
    assert torch.allclose(values["bn"], expected)


def test_a_library_model_child_is_distilled():
    """timm's resnet18 (fx capture), a rewrite child, synthetic CIFAR-shaped images."""
    from alphac.runtime.datasets import synthetic_dataset
    from tests.libmodels import INPUT, build

    model = build("timm:resnet18").eval()
    x = torch.randn(INPUT, generator=torch.Generator().manual_seed(0))
    gm, used = trace(model, (x,))
    annotate_shapes(gm, (x,))
    blocks = find_blocks(gm, model if used == "fx" else None)
    target = get_target("cifar10")
    data = prepare_data(synthetic_dataset(target, 256, 32, seed=0), val_fraction=0.1, seed=0)
    for seed in range(10):
        try:
            child = mutate(gm, blocks, (x,), seed=seed, kind="rewrite")
        except SynthesisFailed:
            continue
        inherit_weights(child.gm, gm.state_dict(), plan=child.record.weight_plan)
        result = distill(gm, child.gm, child.record.boundaries, data, steps=5, batch_size=16)
        if result.error_before:
            assert not result.skipped, result.skipped
            assert all(a <= b for a, b in zip(result.error_after, result.error_before,
                                              strict=True))
            return
    raise AssertionError("no resnet18 rewrite child with a part to distil in 10 seeds")
