"""Library models (timm, torchvision, transformers) captured faithfully in eval and in train mode.

Per model: the captured graph computes the model's eval function (deterministic, batch
independent, buffers untouched), and one train-mode SGD step on the graph matches the same step
on an identical copy of the model (outputs, running statistics, weights). Then the mode machinery
itself on small hand-written modules, and the CLI end to end on a few library models.
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from typer.testing import CliRunner

from alphac.cli import app
from alphac.errors import CaptureWarning
from alphac.frontends import EXPORT, FX
from alphac.frontends.modes_capture import concrete_args
from alphac.frontends.trace import trace
from alphac.modes import ModeValue, is_mode_value, is_training, training_mode
from alphac.passes.analysis.registry import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import libmodels  # noqa: E402

libmodels._define_torchvision_schemas()  # transformers imports torchvision too
#: Models whose train mode runs other ops than eval mode where no leaf can capture them.
EVAL_STRUCTURE = {"transformers:swin"}  # HF SwinDropPath, through torch.export


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these tensors are tiny, and on busy shared cores OpenMP threads
    spinning against each other cost several times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _build(name: str) -> nn.Module:
    """The model with every all-zero parameter (zero-initialised heads, layer scales) redrawn
    small, so outputs are not constant and comparisons can fail; the same for every call."""
    model = libmodels.build(name)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def _capture(model: nn.Module) -> tuple[fx.GraphModule, str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm, frontend = trace(model, (torch.randn(libmodels.INPUT),))
    return gm, frontend, [str(w.message) for w in caught if w.category is CaptureWarning]


def _close(out: torch.Tensor, ref: torch.Tensor) -> None:
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(out, ref, atol=1e-5 * scale, rtol=0)


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_buffers()}


def _check_eval_mode(gm: fx.GraphModule, model: nn.Module) -> None:
    """Eval mode: the model's outputs, deterministic, batch independent, buffers untouched,
    and the same after a train()/eval() round trip."""
    model.eval()
    gm.eval()
    x = torch.randn(libmodels.INPUT, generator=torch.Generator().manual_seed(2))
    before = _buffers(gm)
    with torch.no_grad():
        out, ref = gm(x), model(x)
        _close(out, ref)
        assert torch.equal(out, gm(x))
        other = x.clone()
        other[1:] = torch.randn(other[1:].shape)
        _close(gm(other)[0], out[0])
    assert all(torch.equal(v, before[k]) for k, v in gm.named_buffers())
    gm.train()
    assert is_training(gm) and all(m.training for m in gm.modules() if isinstance(m, ModeValue))
    gm.eval()
    with torch.no_grad():
        assert torch.equal(gm(x), out)


def _sgd_step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(3)  # the same dropout and drop-path draws for both
    out = model(x)
    out.square().mean().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    return out.detach()


def _check_train_step(gm: fx.GraphModule, model: nn.Module) -> None:
    """Train mode: one SGD step gives the model's outputs, running statistics and weights."""
    gm.train()
    model.train()
    initial = _buffers(model)
    x = torch.randn(libmodels.INPUT, generator=torch.Generator().manual_seed(4))
    _close(_sgd_step(gm, x), _sgd_step(model, x))
    mine, theirs = _buffers(gm), _buffers(model)
    stats = [k for k in theirs if k.endswith(("running_mean", "running_var"))]
    assert set(stats) <= set(mine)
    assert all(not torch.equal(theirs[k], initial[k]) for k in stats)  # they were updated
    for key in set(mine) & set(theirs):
        torch.testing.assert_close(mine[key], theirs[key], atol=1e-6, rtol=1e-5, msg=key)
    params = dict(model.named_parameters())
    for key, p in gm.named_parameters():
        torch.testing.assert_close(p, params[key], atol=1e-6, rtol=1e-5, msg=key)


def _without_drop_path(model: nn.Module) -> None:
    for module in model.modules():
        if "DropPath" in type(module).__name__:
            module.drop_prob = 0.0


@pytest.mark.parametrize("name", list(libmodels.MODELS))
def test_captured_graph_is_the_model_in_both_modes(name):
    captured = _build(name)
    reference = copy.deepcopy(captured)  # identical, and faster than building again
    gm, frontend, warned = _capture(captured)
    assert frontend == (EXPORT if name.startswith("transformers") else FX)
    assert bool(warned) == (name in EVAL_STRUCTURE), warned
    assert is_training(gm) == captured.training  # it starts in the model's mode
    _check_eval_mode(gm, reference)
    if name in EVAL_STRUCTURE:  # documented: the captured graph trains without them
        _without_drop_path(reference)
    _check_train_step(gm, reference)


# --- the mechanism on small modules -------------------------------------------------------------


class _ModeNet(nn.Module):
    """Reads self.training like timm's BatchNormAct2d and F.dropout users do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.register_buffer("running_mean", torch.zeros(4))
        self.register_buffer("running_var", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(self.conv(x), self.running_mean, self.running_var,
                         training=self.training, momentum=0.1 if self.training else 0.0)
        return F.dropout(x, 0.5, training=self.training)


def _mode_calls(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if is_mode_value(n)]


def test_mode_dependent_constants_read_the_mode_at_run_time():
    model = _ModeNet()
    gm, frontend = trace(model, (torch.randn(2, 3, 8, 8),))
    assert frontend == FX and len(_mode_calls(gm)) == 3  # training twice, momentum once
    x = torch.randn(2, 3, 8, 8)
    for graph in (gm, copy.deepcopy(gm)):  # deepcopy keeps the mechanism
        graph.eval()
        model.eval()
        assert torch.equal(graph(x), model(x))
    assert set(gm.state_dict()) == {"conv.weight", "conv.bias", "running_mean", "running_var"}
    gm.train()
    torch.manual_seed(0)
    out = gm(x)
    assert (out == 0).any() and not torch.equal(model.running_mean, torch.zeros(4))
    with training_mode(gm, False):
        assert not is_training(gm) and torch.equal(gm(x), gm(x))
    assert is_training(gm)


def test_analyses_see_the_eval_value():
    gm, _ = trace(_ModeNet(), (torch.randn(2, 3, 8, 8),))
    modules = dict(gm.named_modules())
    mode = _mode_calls(gm)[0]
    spec = normalize(mode, modules).spec
    assert (spec.kind, spec.cls, spec.get("value")) == ("mode_value", "transparent", False)
    norm = normalize(next(n for n in gm.graph.nodes if n.target is F.batch_norm), modules)
    assert norm.operands[0].name == "conv"
    assert mode not in norm.operands  # the mode is a constant of the spec, not an operand
    assert norm.spec.get("batch_stats") is False  # analysed in eval mode


class _Stochastic(nn.Module):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = x.new_empty(x.shape[0], 1).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class DropPath(_Stochastic):
    """Named like timm's, so the analyses know it."""


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.drop_path = DropPath()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop_path(self.fc(x))


def test_a_submodule_whose_structure_follows_the_mode_becomes_a_leaf():
    model = _Residual()
    gm, _ = trace(model, (torch.randn(8, 4),))
    calls = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert calls == {"fc", "drop_path"}
    x = torch.randn(8, 4)
    gm.train()
    model.train()
    torch.manual_seed(0)
    out = gm(x)
    torch.manual_seed(0)
    assert torch.equal(out, model(x)) and not torch.equal(out, x + model.fc(x))
    node = next(n for n in gm.graph.nodes if n.target == "drop_path")
    assert normalize(node, dict(gm.named_modules())).spec.kind == "drop_path"


class _RootBranch(_Stochastic):
    """The root's own forward differs between modes: nothing to make a leaf of."""


def test_a_root_that_branches_on_the_mode_keeps_eval_structure_with_a_warning():
    with pytest.warns(CaptureWarning, match="eval-mode structure"):
        gm, _ = trace(_RootBranch(), (torch.randn(2, 4),))
    gm.train()
    x = torch.randn(2, 4)
    assert torch.equal(gm(x), x)


class _Optional(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                scale: float = 2.0) -> torch.Tensor:
        if mask is not None:
            x = x + mask
        return x * scale if not causal else x


def test_optional_arguments_are_bound_to_their_defaults():
    assert concrete_args(_Optional()) == {"mask": None, "causal": False, "scale": 2.0}
    assert concrete_args(nn.Linear(2, 2)) == {}
    gm, frontend = trace(_Optional(), (torch.randn(2, 3),))
    assert frontend == FX
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_function", "output"]
    x = torch.randn(2, 3)
    assert torch.equal(gm(x), 2 * x)


class _ShapeBranchNorm(nn.Module):
    """Branches on a shape (fx fails, export works), with batch norm and dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 2:
            x = x * 2
        return self.drop(self.bn(x))


def test_an_exported_graph_switches_modes_with_train_and_eval():
    model = _ShapeBranchNorm()
    gm, frontend = trace(model, (torch.randn(2, 3, 4, 4),))
    assert frontend == EXPORT and len(_mode_calls(gm)) == 2
    x = torch.randn(2, 3, 4, 4)
    gm.eval()
    model.eval()
    torch.testing.assert_close(gm(x), model(x))
    gm.train()
    model.train()
    torch.manual_seed(0)
    out = gm(x)
    torch.manual_seed(0)
    torch.testing.assert_close(out, model(x))
    torch.testing.assert_close(dict(gm.named_buffers())["bn.running_mean"], model.bn.running_mean)


# --- the CLI end to end -------------------------------------------------------------------------

runner = CliRunner()


def _model_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / "model.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(libmodels.__file__).parent)!r})\n"
        "import libmodels\n\n\n"
        "def build_model():\n"
        "    libmodels._define_torchvision_schemas()\n"
        f"    return libmodels.build({name!r})\n")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(libmodels.MODELS))
def test_measure_cli(tmp_path, name):
    result = runner.invoke(app, ["measure", _model_file(tmp_path, name), "--device", "cpu",
                                 "--batch-size", "2", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["latency_ms"] > 0  # batch 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(libmodels.MODELS))
def test_train_cli(tmp_path, name):
    result = runner.invoke(app, ["train", _model_file(tmp_path, name), "--steps", "2",
                                 "--target", "synthetic", "--subset", "64", "--device", "cpu",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 2


def test_properties_check_cli_on_vit(tmp_path):
    result = runner.invoke(app, ["properties", _model_file(tmp_path, "timm:vit_tiny"),
                                 "--check", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["blocks"] and all(b["check"] == [] for b in report["blocks"])


def test_a_crash_of_the_checker_is_not_a_disagreement(tmp_path, monkeypatch):
    import alphac.passes.analysis.ground_truth as ground_truth

    def crash(*args, **kwargs):
        raise KeyError("tensor_meta")

    monkeypatch.setattr(ground_truth, "check_mixing", crash)
    result = runner.invoke(app, ["properties", "zoo:small_cnn", "--target", "fashion-mnist",
                                 "--check"])
    assert result.exit_code == 7, result.output
    assert "crashed" in result.output and "Traceback" not in result.output


def test_example_values_skip_placeholders_without_shapes():
    from alphac.frontends.trace import annotate_shapes
    from alphac.passes.analysis.ground_truth import _example_values

    class Scaled(nn.Module):
        def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
            return x * scale

    gm = fx.symbolic_trace(Scaled())  # plain fx: ``scale`` stays a placeholder
    annotate_shapes(gm, (torch.randn(2, 3),))
    assert "tensor_meta" not in next(n for n in gm.graph.nodes if n.name == "scale").meta
    assert _example_values(gm)["scale"] == 2.0  # its default, not a KeyError


def test_channels_last_converts_only_4d_tensors():
    from alphac.runtime.evaluate import channels_last

    model = nn.Conv2d(3, 4, 3)
    model.register_buffer("mask", torch.zeros(2, 3, 4, 5, 6))  # 5-D, like swin's
    assert not channels_last(model, torch.device("cpu"), (3, 8, 8))
    assert not model.weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last(model, torch.device("cuda"), (3, 8, 8))  # the device type decides
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.mask.dim() == 5
