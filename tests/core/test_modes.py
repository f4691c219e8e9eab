"""Train/eval mode of any module, including exported graphs whose mode is baked into the graph."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from alphac.modes import follows_mode, is_training, set_training, training_mode


def exported(dropout: float = 0.5, running_stats: bool = True) -> fx.GraphModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1),
                          nn.BatchNorm2d(4, track_running_stats=running_stats), nn.ReLU(),
                          nn.Dropout(dropout))
    return torch.export.export(model, (torch.randn(2, 3, 6, 6),)).module()


def flags(gm: fx.GraphModule) -> list[object]:
    return [n.args[5] if "batch_norm" in str(n.target) else n.args[2]
            for n in gm.graph.nodes if "batch_norm" in str(n.target) or "dropout" in str(n.target)]


def test_eval_mode_of_an_exported_graph_is_deterministic_and_keeps_stats():
    gm = exported()
    with pytest.raises(NotImplementedError):
        gm.eval()
    x = torch.randn(2, 3, 6, 6)
    mean_name = next(k for k, _ in gm.named_buffers() if k.endswith("running_mean"))
    before = dict(gm.named_buffers())[mean_name].clone()
    assert is_training(gm) and flags(gm) == [True, True]
    with training_mode(gm, False):
        assert not is_training(gm) and flags(gm) == [False, False]
        assert torch.equal(gm(x), gm(x))
        assert torch.equal(before, dict(gm.named_buffers())[mean_name])
    assert is_training(gm) and flags(gm) == [True, True]
    assert not torch.equal(gm(x), gm(x))  # dropout is back on
    assert not torch.equal(before, dict(gm.named_buffers())[mean_name])  # stats update again


def test_batch_norm_without_running_stats_keeps_batch_statistics():
    gm = exported(running_stats=False)
    bn = next(n for n in gm.graph.nodes if "batch_norm" in str(n.target))
    assert not follows_mode(bn)
    set_training(gm, False)
    assert flags(gm) == [True, False]  # only dropout has an eval form
    gm(torch.randn(2, 3, 6, 6))  # and the graph still runs (eval batch_norm needs stats)


def test_exported_graph_inside_a_plain_module_is_switched_too():
    inner = exported()
    outer = nn.Sequential(inner, nn.Dropout(0.5))
    with training_mode(outer, False):
        assert flags(inner) == [False, False] and not outer[1].training
    assert flags(inner) == [True, True] and outer[1].training and is_training(outer)


def test_training_mode_restores_each_submodule_exactly():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5))
    model[1].eval()  # a mixed state that model.train() would not reproduce
    with training_mode(model, False):
        assert not any(m.training for m in model.modules())
    assert model.training and model[0].training and not model[1].training


def test_plain_modules_use_train_and_eval():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
    set_training(model, False)
    assert not is_training(model) and not model[1].training
    with training_mode(model, True):
        assert is_training(model)
    assert not is_training(model)


def test_mode_values_follow_train_and_eval_and_are_never_baked():
    from alphac.modes import MODE_VALUES, ModeValue, is_mode_value

    gm = exported()
    node = next(n for n in gm.graph.nodes if "dropout" in str(n.target))
    gm.add_submodule(f"{MODE_VALUES}.0", ModeValue(False, True))
    with gm.graph.inserting_before(node):
        mode = gm.graph.call_module(f"{MODE_VALUES}.0")
    node.update_arg(2, mode)
    gm.recompile()
    assert is_mode_value(mode) and not is_mode_value(node)
    with training_mode(gm, False):
        assert node.args[2] is mode and not gm.get_submodule(f"{MODE_VALUES}.0")()
        assert flags(gm)[0] is False  # the baked batch-norm flag is flipped as before
    assert node.args[2] is mode and gm.get_submodule(f"{MODE_VALUES}.0")()
