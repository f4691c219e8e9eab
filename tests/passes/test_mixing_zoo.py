"""Abstract mixing equals the Jacobian ground truth on every block of every zoo model, on 500
seeded random connected subgraphs of the zoo, and on models captured through torch.export."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
import torch

from alphac.analysis import AnalysisManager
from alphac.frontends import EXPORT, load, zoo
from alphac.frontends.blocks import find_blocks
from alphac.frontends.trace import _drop_guard_node, annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import MixingAnalysis

MODELS = zoo.names()
#: Random subgraphs per model, 500 in all; the wide models (2048 channels, 384-dim tokens) get
#: fewer because their Jacobians cost ten times more, the small ones make up the count.
RANDOM_SUBGRAPHS = {
    "resnet50": 12, "resnet34": 12, "resnet18": 25, "vit_s4": 20, "vit_s16": 50, "vit_ti4": 60,
    "vit_ti16": 80, "efficientnet_b0": 85, "mobilenet_v2": 86, "small_cnn": 70,
}


def _disagreements(gm, subgraphs) -> list[str]:
    am = AnalysisManager()
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every zoo op is in the table: no top
        for sub in subgraphs:
            found += [f"{sub.nodes[:4]}...: {p}" for p in check_mixing(gm, sub, am)[:3]]
    return found


def _signature(gm, block) -> tuple:
    """Blocks with equal structure (Block.type) and equal boundary shapes have the very same
    ground truth: it redraws every weight from the seed, so trained values never enter."""
    sub = block.subgraph(gm)
    meta = {n.name: n.meta.get("tensor_meta") for n in gm.graph.nodes}
    shapes = tuple(tuple(getattr(meta[n], "shape", ())) for n in (*sub.inputs, *sub.outputs))
    return block.type, shapes


def _block_disagreements(gm, blocks, extra=()) -> list[str]:
    """Ground truth once per block class; every block's abstract fact compared with it."""
    classes: dict[tuple, list] = {}
    for block in blocks:
        classes.setdefault(_signature(gm, block), []).append(block.subgraph(gm))
    problems = _disagreements(gm, [subs[0] for subs in classes.values()] + list(extra))
    am = AnalysisManager()
    for subs in classes.values():
        first = am.get(MixingAnalysis(), gm, subs[0])
        problems += [f"{s.nodes[:3]} differs from {subs[0].nodes[:3]}" for s in subs[1:]
                     if am.get(MixingAnalysis(), gm, s) != first]
    return problems


def test_random_subgraph_budget() -> None:
    assert set(RANDOM_SUBGRAPHS) == set(MODELS) and sum(RANDOM_SUBGRAPHS.values()) >= 500


@pytest.mark.parametrize("name", MODELS)
def test_every_block_matches_the_jacobian(name: str, zoo_model) -> None:
    tm = zoo_model(name)
    assert tm.blocks, f"{name} has no blocks"
    assert _block_disagreements(tm.gm, tm.blocks) == []


@pytest.mark.parametrize("name", MODELS)
def test_random_subgraphs_match_the_jacobian(name: str, zoo_model, grow_subgraph) -> None:
    tm = zoo_model(name)
    rng = random.Random(f"mixing-{name}")
    whole = {n.name for n in tm.gm.graph.nodes}
    blocks = [set(b.nodes) for b in tm.blocks]
    count = RANDOM_SUBGRAPHS[name]
    subs = [grow_subgraph(tm.gm, rng.choice(blocks) if rng.random() < 0.5 else whole, rng)
            for _ in range(count)]
    assert len({s.nodes for s in subs}) >= count // 3  # really different subgraphs
    problems = _disagreements(tm.gm, subs)
    assert problems == [], "\n".join(problems[:20])


def test_random_subgraphs_are_reproducible(zoo_model, grow_subgraph) -> None:
    tm = zoo_model("resnet18")
    pool = {n.name for n in tm.gm.graph.nodes}
    first = [grow_subgraph(tm.gm, pool, random.Random(7)) for _ in range(3)]
    again = [grow_subgraph(tm.gm, pool, random.Random(7)) for _ in range(3)]
    assert first == again and all(s.is_connected(tm.gm) for s in first)


def test_small_models_whole_graph(zoo_model) -> None:
    for name in ("small_cnn", "vit_ti16"):
        tm = zoo_model(name)
        assert _disagreements(tm.gm, [Subgraph.whole(tm.gm)]) == []


_EXPORT_ONLY = '''
import torch
import torch.nn.functional as F
from torch import nn


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        if x.shape[-1] > 8:  # a Python branch on a shape: torch.fx fails, torch.export works
            x = F.max_pool2d(x, 2)
        y = F.relu(self.bn(self.conv(x)))
        t = y.flatten(2).transpose(1, 2)
        q = self.proj(self.norm(t))
        a = (q @ t.transpose(1, 2)).softmax(-1)
        s = torch.cat([a @ t, t[:, :, :1].expand_as(t)], dim=1)
        return s.chunk(2, dim=1)[0].mean(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Mixer()
        self.b = Mixer()

    def forward(self, x):
        return self.a(x) + self.b(x)


def build_model():
    return Net()
'''


def test_model_traced_through_torch_export(tmp_path: Path, grow_subgraph) -> None:
    path = tmp_path / "export_only.py"
    path.write_text(_EXPORT_ONLY)
    tm = load(str(path), (2, 3, 16, 16))
    assert tm.frontend == EXPORT
    before = {k: v.clone() for k, v in tm.gm.state_dict().items()}
    rng = random.Random(3)
    pool = {n.name for n in tm.gm.graph.nodes}
    subs = [Subgraph.whole(tm.gm)] + [grow_subgraph(tm.gm, pool, rng) for _ in range(20)]
    assert _block_disagreements(tm.gm, tm.blocks, subs) == []
    # the graph hard-codes train-mode batch norm: analysed and checked in eval mode, and the
    # checks left the running statistics alone
    assert all(torch.equal(before[k], v) for k, v in tm.gm.state_dict().items())


def test_zoo_model_through_torch_export() -> None:
    model = zoo.build("vit_ti4", num_classes=10, input_shape=(3, 16, 16)).eval()
    x = torch.randn(2, 3, 16, 16)
    gm = torch.export.export(model, (x,)).module()
    _drop_guard_node(gm)
    annotate_shapes(gm, (x,))
    blocks = find_blocks(gm)
    assert blocks
    assert _block_disagreements(gm, blocks, [Subgraph.whole(gm)]) == []
    fact = MixingAnalysis().compute(gm, blocks[0].subgraph(gm), AnalysisManager())
    assert fact.matrices()  # the aten graph is analysed, not skipped
