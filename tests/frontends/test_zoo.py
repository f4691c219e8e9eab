"""Tests for the model zoo: registry, parameter counts, fx traceability and structure."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import fx, nn

from alphac.errors import InvalidInputShapeError, UnknownModelError
from alphac.frontends import zoo
from alphac.frontends.zoo.efficientnet import MBConv, SqueezeExcitation
from alphac.frontends.zoo.mobilenet import InvertedResidual
from alphac.frontends.zoo.resnet import BasicBlock, Bottleneck
from alphac.frontends.zoo.small_cnn import ConvBlock
from alphac.frontends.zoo.vit import Attention, Block, Mlp

ALL_NAMES = {
    "resnet18",
    "resnet34",
    "resnet50",
    "vit_ti16",
    "vit_s16",
    "vit_ti4",
    "vit_s4",
    "efficientnet_b0",
    "mobilenet_v2",
    "small_cnn",
}

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)
FMNIST = (1, 28, 28)


@functools.cache
def _model(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Build each (name, classes, shape) combination once per test session, in eval mode."""
    torch.manual_seed(0)
    return zoo.build(name, num_classes=num_classes, input_shape=input_shape).eval()


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_names_sorted_and_complete() -> None:
    got = zoo.names()
    assert got == sorted(got)
    assert set(got) >= ALL_NAMES


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_describe_is_one_line(name: str) -> None:
    text = zoo.describe(name)
    assert text and "\n" not in text
    assert name in text


def test_unknown_name_lists_available_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        zoo.build("resnet9000")
    message = str(info.value)
    assert "resnet9000" in message
    for name in ALL_NAMES:
        assert name in message
    with pytest.raises(UnknownModelError):
        zoo.describe("resnet9000")


@pytest.mark.parametrize("shape", [(3, 32), (0, 32, 32), (3, -1, 32)])
def test_bad_input_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputShapeError):
        zoo.build("small_cnn", input_shape=shape)  # type: ignore[arg-type]


def test_vit_rejects_input_smaller_than_patch() -> None:
    with pytest.raises(InvalidInputShapeError):
        zoo.build("vit_ti16", num_classes=10, input_shape=(3, 8, 8))


# ---------------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------------

EXPECTED_PARAMS = [
    ("resnet50", 1000, IMAGENET, 25.56e6),
    ("resnet34", 1000, IMAGENET, 21.80e6),
    ("resnet18", 1000, IMAGENET, 11.69e6),
    ("vit_s16", 1000, IMAGENET, 22.05e6),
    ("vit_ti16", 1000, IMAGENET, 5.72e6),
    ("efficientnet_b0", 1000, IMAGENET, 5.29e6),
    ("mobilenet_v2", 1000, IMAGENET, 3.50e6),
    ("resnet34", 10, CIFAR, 21.28e6),
]


@pytest.mark.parametrize(("name", "num_classes", "shape", "expected"), EXPECTED_PARAMS)
def test_standard_parameter_counts(
    name: str, num_classes: int, shape: tuple[int, int, int], expected: float
) -> None:
    got = _params(_model(name, num_classes, shape))
    assert abs(got - expected) / expected < 0.005, f"{name}: {got} params, expected ~{expected}"


def test_small_cnn_is_small() -> None:
    assert 0.1e6 <= _params(_model("small_cnn", 10, FMNIST)) <= 0.3e6


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v2"])
def test_small_input_stem_keeps_parameter_count(name: str) -> None:
    assert _params(_model(name, 10, CIFAR)) == _params(zoo.build(name, num_classes=10))


# ---------------------------------------------------------------------------------------------
# Tracing and forward
# ---------------------------------------------------------------------------------------------

TRACE_CASES = [
    ("resnet18", CIFAR),
    ("resnet34", CIFAR),
    ("resnet50", CIFAR),
    ("vit_ti4", CIFAR),
    ("vit_s4", CIFAR),
    ("vit_ti16", IMAGENET),
    ("vit_s16", IMAGENET),
    ("efficientnet_b0", CIFAR),
    ("mobilenet_v2", CIFAR),
    ("small_cnn", CIFAR),
    ("small_cnn", FMNIST),
]


def test_trace_cases_cover_every_model() -> None:
    assert {name for name, _ in TRACE_CASES} == set(zoo.names())


@pytest.mark.parametrize(
    ("name", "shape"), TRACE_CASES, ids=[f"{n}-{s[1]}" for n, s in TRACE_CASES]
)
def test_symbolic_trace_matches_eager(name: str, shape: tuple[int, int, int]) -> None:
    num_classes = 10
    model = _model(name, num_classes, shape)
    graph_module = fx.symbolic_trace(model)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model(x)
        traced = graph_module(x)
    assert eager.shape == (2, num_classes)
    assert traced.shape == (2, num_classes)
    assert torch.isfinite(eager).all()
    assert torch.allclose(traced, eager, rtol=1e-5, atol=1e-6)


def test_resnet_adapts_to_one_channel_input() -> None:
    model = zoo.build("resnet18", num_classes=10, input_shape=FMNIST).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *FMNIST)).shape == (2, 10)


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def _count(model: nn.Module, cls: type[nn.Module]) -> int:
    return sum(isinstance(m, cls) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "block", "count"),
    [("resnet18", BasicBlock, 8), ("resnet34", BasicBlock, 16), ("resnet50", Bottleneck, 16)],
)
def test_resnet_structure(name: str, block: type[nn.Module], count: int) -> None:
    model = _model(name, 1000, IMAGENET)
    assert _count(model, block) == count
    for i in range(1, 5):
        layer = getattr(model, f"layer{i}")
        assert isinstance(layer, nn.Sequential)
        assert all(isinstance(b, block) for b in layer)
    first = model.layer2[0]
    assert isinstance(first.downsample, nn.Sequential)
    assert isinstance(first.downsample[0], nn.Conv2d) and first.downsample[0].kernel_size == (1, 1)
    assert isinstance(first.downsample[1], nn.BatchNorm2d)
    assert model.layer2[1].downsample is None
    assert isinstance(model.fc, nn.Linear)


def test_bottleneck_strides_on_3x3() -> None:
    block = _model("resnet50", 1000, IMAGENET).layer2[0]
    assert block.conv1.stride == (1, 1)
    assert block.conv2.kernel_size == (3, 3) and block.conv2.stride == (2, 2)


def test_resnet_stem_depends_on_input_size() -> None:
    big = _model("resnet34", 1000, IMAGENET).stem
    small = _model("resnet34", 10, CIFAR).stem
    assert big[0].kernel_size == (7, 7) and big[0].stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in big)
    assert small[0].kernel_size == (3, 3) and small[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small)


def test_residual_add_is_in_the_block_graph() -> None:
    for block in (
        BasicBlock(64, 64),
        Bottleneck(256, 64),
        InvertedResidual(16, 16, stride=1, expand_ratio=6),
    ):
        graph = fx.symbolic_trace(block).graph
        adds = [n for n in graph.nodes if n.op == "call_function" and "add" in str(n.target)]
        assert adds, type(block).__name__


def test_vit_structure() -> None:
    model = _model("vit_s4", 10, CIFAR)
    assert isinstance(model.blocks, nn.Sequential) and len(model.blocks) == 12
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert isinstance(block.attn, Attention) and isinstance(block.mlp, Mlp)
    assert block.attn.qkv.bias is not None and block.attn.num_heads == 6
    assert isinstance(model.patch_embed.proj, nn.Conv2d)
    assert model.patch_embed.proj.stride == (4, 4)
    assert model.pos_embed.shape == (1, 8 * 8 + 1, 384)
    assert 0 < model.pos_embed.std().item() < 0.05


def test_vit_attention_is_explicit() -> None:
    graph = fx.symbolic_trace(Attention(192, 3)).graph
    targets = {str(n.target) for n in graph.nodes}
    assert "softmax" in targets
    assert not any("scaled_dot_product" in t for t in targets)


def test_efficientnet_structure() -> None:
    model = _model("efficientnet_b0", 10, CIFAR)
    assert _count(model, MBConv) == 16
    assert _count(model, SqueezeExcitation) == 16
    assert model.stem[0].stride == (1, 1)
    assert _model("efficientnet_b0", 1000, IMAGENET).stem[0].stride == (2, 2)


def test_mobilenet_structure() -> None:
    model = _model("mobilenet_v2", 10, CIFAR)
    assert _count(model, InvertedResidual) == 17
    assert model.features[0][0].stride == (1, 1)
    assert _model("mobilenet_v2", 1000, IMAGENET).features[0][0].stride == (2, 2)


def test_small_cnn_structure() -> None:
    model = _model("small_cnn", 10, FMNIST)
    assert _count(model, ConvBlock) == 5
    assert _count(model, nn.BatchNorm2d) == 5


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_no_inplace_activations(name: str) -> None:
    shape = IMAGENET if name.endswith("16") else CIFAR
    for m in _model(name, 10, shape).modules():
        assert not getattr(m, "inplace", False), f"{name}: in-place {type(m).__name__}"


def test_batchnorm_bias_starts_at_zero() -> None:
    for m in _model("resnet18", 10, CIFAR).modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.bias == 0) and torch.all(m.weight == 1)
