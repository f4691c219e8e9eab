from __future__ import annotations

from collections import Counter

import pytest

from alphac.frontends import find_blocks, load


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


def test_nested_blocks_in_vit():
    traced = load("zoo:vit_ti4", (2, 3, 32, 32), num_classes=10)
    kinds = Counter(b.kind for b in traced.blocks)
    assert kinds == {"Block": 12, "Attention": 12, "Mlp": 12}
    outer = next(b for b in traced.blocks if b.kind == "Block")
    inner = next(b for b in traced.blocks if b.kind == "Attention")
    assert set(inner.nodes) < set(outer.nodes)


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
