"""The Jacobian ground truth of mixing and the checker that compares it with the analysis."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.ir import Subgraph
from alphac.passes.analysis import ground_truth
from alphac.passes.analysis.ground_truth import check_mixing, mixing_ground_truth, subgraph_inputs
from alphac.passes.analysis.mixing import Mix, MixingAnalysis, MixingFact

NO, ONE, MANY, ALL = Mix.NONE, Mix.ONE_TO_ONE, Mix.MANY_TO_ONE, Mix.ALL_TO_ONE


def test_strided_pointwise_conv() -> None:
    truth = mixing_ground_truth(nn.Conv2d(3, 4, 1, stride=2), (torch.randn(2, 3, 4, 4),))
    assert truth == {(0, 0): ((ONE, NO, NO, NO), (ALL, ALL, ALL, ALL), (NO, NO, NO, NO),
                              (NO, NO, NO, NO))}


def test_reproducible_and_side_effect_free() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    x = torch.randn(2, 3, 5, 5)
    first = mixing_ground_truth(model, (x,), seed=1)
    assert first == mixing_ground_truth(model, (x,), seed=1)
    assert first[0, 0][2] == (NO, NO, MANY, NO)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.get_num_threads() == threads


class GatedChain(nn.Module):
    """relu -> depthwise 1x1 -> BN -> relu: with signed weights half the channels are dead for
    every input of a draw (a negative weight in front of the second ReLU)."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 1, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.dw(torch.relu(x))))


def test_positive_draws_open_gates_a_signed_draw_keeps_shut() -> None:
    x = (torch.randn(2, 32, 3, 3),)
    fooled = mixing_ground_truth(GatedChain(), x, draws=1).get((0, 0), ((NO,) * 4,) * 4)
    assert fooled[1][1] == NO  # the centre channel is dead on that draw
    assert mixing_ground_truth(GatedChain(), x)[0, 0][1][1] == ONE


def test_multiple_inputs_and_outputs_are_numbered_in_order() -> None:
    class Two(nn.Module):
        def forward(self, a, n, b):
            return a * n, (a + b).sum(-1), n

    truth = mixing_ground_truth(Two(), (torch.randn(2, 3), 3, torch.randn(2, 3)))
    assert set(truth) == {(0, 0), (0, 1), (1, 1)}  # the int input and output get no index
    assert truth[1, 1] == ((ONE,), (ALL,))
    assert mixing_ground_truth(Two(), (torch.zeros(2, dtype=torch.long), 2, 1)) == {}


def test_check_mixing_reports_each_differing_entry(traced, monkeypatch) -> None:
    gm = traced(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), (2, 3, 6, 6))
    sub = Subgraph.whole(gm)
    assert check_mixing(gm, sub, AnalysisManager()) == []
    good = MixingAnalysis().compute(gm, sub, AnalysisManager())
    rows = [list(r) for r in good.matrix(0, 0)]
    rows[2][2] = ALL
    wrong = dataclasses.replace(good, pairs=(((0, 0), tuple(map(tuple, rows))),))
    monkeypatch.setattr(MixingAnalysis, "compute", lambda self, g, s, am: wrong)
    assert check_mixing(gm, sub, AnalysisManager()) == [
        "input_1 (input 0) -> _0 (output 0): dim 2 -> dim 2: abstract all, Jacobian many"]
    monkeypatch.setattr(MixingAnalysis, "compute", lambda self, g, s, am: MixingFact())
    assert len(check_mixing(gm, sub, AnalysisManager())) == 7  # every non-NONE entry


def test_size_query_inputs_get_their_concrete_values(zoo_model) -> None:
    tm = zoo_model("vit_ti4")
    sub = Subgraph.from_nodes(tm.gm, ["reshape", "permute"])
    args = subgraph_inputs(tm.gm, sub)
    values = dict(zip(sub.inputs, args, strict=True))
    assert values["getitem_1"] == 2 and values["getitem_2"] == 17
    assert values["blocks_0_attn_qkv"].shape == (2, 17, 576)
    assert check_mixing(tm.gm, sub, AnalysisManager()) == []
    am = AnalysisManager()  # the example run is kept in the manager's per-graph index
    assert ground_truth._example_values(tm.gm, am) is ground_truth._example_values(tm.gm, am)


class NormedHead(nn.Module):
    """conv -> BN -> relu -> dropout -> flatten -> linear: batch norm and dropout look the same
    to torch.fx in either mode, while torch.export bakes train mode into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def _mode_flags(gm: torch.fx.GraphModule) -> list[object]:
    return [n.args[5] if "batch_norm" in str(n.target) else n.args[2] for n in gm.graph.nodes
            if "batch_norm" in str(n.target) or "dropout" in str(n.target)]


def test_fx_and_export_graphs_of_one_model_mix_alike() -> None:
    from alphac.frontends.trace import _drop_guard_node, annotate_shapes

    model, x = NormedHead(), torch.randn(2, 3, 4, 4)
    by_fx = torch.fx.symbolic_trace(model)
    by_export = torch.export.export(model, (x,)).module()
    _drop_guard_node(by_export)
    for gm in (by_fx, by_export):
        annotate_shapes(gm, (x,))
    assert _mode_flags(by_export) == [True, True]  # torch.export traced in train mode
    code, state = by_export.code, {k: v.clone() for k, v in by_export.state_dict().items()}
    facts = [MixingAnalysis().compute(gm, Subgraph.whole(gm), AnalysisManager()).matrices()
             for gm in (by_fx, by_export)]
    assert facts[0] == facts[1]
    assert facts[1][0, 0][0] == (ONE, NO)  # eval-mode batch norm: samples do not mix
    assert check_mixing(by_export, Subgraph.whole(by_export), AnalysisManager()) == []
    # the caller's graph is left exactly as it was: code, baked flags, buffers
    assert by_export.code == code and _mode_flags(by_export) == [True, True]
    assert all(torch.equal(state[k], v) for k, v in by_export.state_dict().items())
