from __future__ import annotations

from collections import Counter

import libmodels
import pytest
import torch
from torch import fx, nn

from alphac.frontends import FX, TracedModel, find_blocks, load
from alphac.frontends.blocks import walk_blocks
from alphac.frontends.trace import annotate_shapes, trace
from alphac.ir import count_params


@pytest.fixture(scope="module")
def resnet34():
    return load("zoo:resnet34", (2, 3, 32, 32), num_classes=10)


def test_resnet34_has_sixteen_basic_blocks(resnet34):
    blocks = resnet34.blocks
    assert len(blocks) == 16
    assert {b.kind for b in blocks} == {"BasicBlock"}
    assert [b.path for b in blocks[:4]] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]


def test_stride_two_blocks_have_their_own_type(resnet34):
    by_path = {b.path: b for b in resnet34.blocks}
    types = Counter(b.type for b in resnet34.blocks)
    assert len(types) == 2
    down = {by_path[p].type for p in ("layer2.0", "layer3.0", "layer4.0")}
    assert len(down) == 1 and types[down.pop()] == 3
    # same type across stages although widths differ (64 vs 512 channels)
    assert by_path["layer1.1"].type == by_path["layer4.1"].type


def test_block_nodes_include_residual_add(resnet34):
    block = resnet34.blocks[0]
    targets = [n.split("_")[0] for n in block.nodes]
    assert "add" in targets
    sub = block.subgraph(resnet34.gm)
    assert len(sub.inputs) == 1 and len(sub.outputs) == 1


def test_vit_blocks_are_outermost_with_attention_and_mlp_as_children():
    traced = load("zoo:vit_ti4", (2, 3, 32, 32), num_classes=10)
    assert Counter(b.kind for b in traced.blocks) == {"Block": 12}
    outer = traced.blocks[0]
    assert [(c.path, c.kind) for c in outer.children] == [("blocks.0.attn", "Attention"),
                                                          ("blocks.0.mlp", "Mlp")]
    assert all(set(c.nodes) < set(outer.nodes) for c in outer.children)
    assert Counter(b.kind for b in walk_blocks(traced.blocks)) == {"Block": 12, "Attention": 12,
                                                                  "Mlp": 12}


def test_efficientnet_mbconv_blocks_hold_their_squeeze_excitation():
    traced = load("zoo:efficientnet_b0", (2, 3, 32, 32), num_classes=10)
    assert Counter(b.kind for b in traced.blocks) == {"MBConv": 16}
    assert all([c.kind for c in b.children] == ["SqueezeExcitation"] for b in traced.blocks)


def test_user_model_blocks(model_file):
    traced = load(model_file("residual_net"), (2, 3, 32, 32))
    assert [b.path for b in traced.blocks] == ["body.0", "body.1", "body.2", "body.3"]
    types = [b.type for b in traced.blocks]
    assert types[0] == types[1] == types[3] != types[2]


def test_containers_are_blocks_only_as_a_last_resort(model_file):
    traced = load(model_file("instance"), (2, 1, 28, 28))
    assert traced.blocks == []  # one Sequential, nothing repeated
    assert find_blocks(traced.gm) == []


def test_export_graph_blocks(model_file):
    # torch.export graphs carry nn_module_stack too; the loaded model has no repeated modules
    traced = load(model_file("shape_branch"), (2, 3, 32, 32))
    assert traced.blocks == []


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.norm(self.conv(x))) + x


class _SharedCalls(nn.Module):
    """``shared`` runs at two sites (weight tying), ``skip`` (an Identity) too; a, b once each."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.shared, self.skip = _Pair(), _Pair(), _Pair(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.skip(self.a(x))
        x = self.shared(self.shared(x))
        return self.skip(self.b(x))


def test_a_module_called_at_two_sites_is_no_block():
    gm = fx.symbolic_trace(_SharedCalls().eval())
    blocks = find_blocks(gm)
    assert [b.path for b in blocks] == ["a", "b"]
    assert all(len(b.nodes) == 4 and not b.children for b in blocks)


def test_torchvision_relu_called_twice_is_no_block():
    traced = _library("torchvision:resnet18")
    assert Counter(b.kind for b in traced.blocks) == {"BasicBlock": 8}


# Outermost blocks of the library models (eval mode, libmodels.INPUT); the comment says what the
# outermost level is and what is left out of it.
LIBRARY_BLOCKS = {
    "timm:resnet18": {"BasicBlock": 8},
    "timm:resnet26d": {"Bottleneck": 8},
    "torchvision:resnet18": {"BasicBlock": 8},  # not relu: one module called at two sites
    "timm:regnetx_002": {"Bottleneck": 13},  # RegStage only wires its blocks: a stage
    "timm:efficientnet_b0": {"InvertedResidual": 15},  # the one DepthwiseSeparableConv: unique
    "timm:mobilenetv3_small_100": {"InvertedResidual": 10},
    "torchvision:mobilenet_v3_small": {"InvertedResidual": 11},
    "timm:ghostnet_100": {"GhostBottleneck": 16},
    "timm:repvgg_a0": {"RepVggBlock": 22},
    "timm:densenet121": {"DenseLayer": 58, "DenseTransition": 3},  # DenseBlock: a stage
    "timm:convnext_atto": {"ConvNeXtBlock": 12},
    "timm:vit_tiny": {"Block": 2},
    "timm:deit_tiny_distilled": {"Block": 2},
    "timm:swin_tiny": {"SwinTransformerBlock": 4},
    "timm:levit_128s": {"ConvNorm": 4, "LevitBlock": 9, "LevitDownsample": 2, "NormLinear": 2},
    "timm:poolformer_s12": {"MetaFormerBlock": 12, "Downsampling": 3},
    "timm:mixer": {"MixerBlock": 2},
    "transformers:vit": {"ViTLayer": 2},
    "transformers:swin": {"SwinLayer": 2},
    "transformers:convnext": {"ConvNextStage": 2},  # depth-1 stages: the stage is the block
}
_LIBRARY: dict[str, TracedModel] = {}


def _library(name: str) -> TracedModel:
    if name not in _LIBRARY:
        module = libmodels.build(name).eval()
        example = (torch.randn(libmodels.INPUT, generator=torch.Generator().manual_seed(0)),)
        gm, frontend = trace(module, example)
        annotate_shapes(gm, example)
        blocks = find_blocks(gm, module if frontend == FX else None)
        _LIBRARY[name] = TracedModel(name, module, gm, frontend, example, blocks)
    return _LIBRARY[name]


def _block_params(gm: fx.GraphModule, names: tuple[str, ...]) -> int:
    """Parameters the nodes use, each counted once (module calls and parameter attributes)."""
    found: dict[int, int] = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for node in (nodes[name] for name in names):
        if node.op == "call_module":
            found.update((id(p), p.numel()) for p in gm.get_submodule(str(node.target)).parameters())
        for arg in node.all_input_nodes:
            if arg.op == "get_attr" and str(arg.target) in dict(gm.named_parameters()):
                param = gm.get_parameter(str(arg.target))
                found[id(param)] = param.numel()
    return sum(found.values())


def _calls(gm: fx.GraphModule, block) -> set[str]:
    """The nn_module_stack keys naming ``block``'s module on its nodes: one per call site."""
    nodes = {n.name: n for n in gm.graph.nodes}
    return {key for name in block.nodes
            for key, entry in nodes[name].meta["nn_module_stack"].items() if entry[0] == block.path}


@pytest.mark.parametrize("name", sorted(LIBRARY_BLOCKS))
def test_library_model_blocks(name):
    traced = _library(name)
    gm, blocks = traced.gm, traced.blocks
    assert dict(Counter(b.kind for b in blocks)) == LIBRARY_BLOCKS[name]
    owned = [n for b in blocks for n in b.nodes]
    assert len(owned) == len(set(owned))  # each node in at most one outermost block
    assert sum(_block_params(gm, b.nodes) for b in blocks) <= count_params(gm)
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    assert [order[b.nodes[0]] for b in blocks] == sorted(order[b.nodes[0]] for b in blocks)
    for block in walk_blocks(blocks):
        assert len(_calls(gm, block)) == 1, block.path  # one call site, never two
        assert all(set(c.nodes) <= set(block.nodes) for c in block.children), block.path
        assert block.subgraph(gm).outputs, block.path


def test_a_container_around_a_single_container_is_not_a_second_instance():
    from torch import nn

    from alphac.frontends import find_blocks
    from alphac.frontends.trace import trace

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.stages = nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1),
                                                      nn.BatchNorm2d(8), nn.ReLU(),
                                                      nn.Conv2d(8, 8, 1)))
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            return self.head(self.stages(self.stem(x)).mean((2, 3)))

    model = Net()
    gm, _ = trace(model, (torch.randn(2, 3, 8, 8),))
    assert find_blocks(gm, model) == []  # one Sequential stage: nothing is repeated
