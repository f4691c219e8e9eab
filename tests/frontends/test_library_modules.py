"""Library code in a captured graph: torchvision's stochastic depth becomes a torch-only DropPath,
and a graph that would call a library function as one opaque node is captured by torch.export."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.codegen import generate_code
from alphac.diagnostics import collect
from alphac.frontends.library_modules import DropPath
from alphac.frontends.trace import EXPORT, FX, annotate_shapes, library_functions, trace
from alphac.ir import Subgraph
from alphac.passes.analysis import DepthAnalysis, MixingAnalysis, ShapeAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import libmodels  # noqa: E402


def window_pad(x: torch.Tensor) -> torch.Tensor:
    """Pads the last axis to a multiple of 4: fx cannot trace the branch, so it is wrapped, as
    torchvision wraps Swin's ``shifted_window_attention``."""
    pad = (4 - x.shape[-1] % 4) % 4
    if pad:
        x = F.pad(x, (0, pad))
    return x


def value_gate(x: torch.Tensor) -> torch.Tensor:
    """A branch on a value: neither tracer can go into it."""
    return x if x.sum() > 0 else -x


torch.fx.wrap("window_pad")
torch.fx.wrap("value_gate")


class _Residual(nn.Module):
    def __init__(self) -> None:
        libmodels._define_torchvision_schemas()
        from torchvision.ops import StochasticDepth

        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = StochasticDepth(0.5, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.conv(x))


class _Padded(nn.Module):
    def __init__(self, gate: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = window_pad(self.conv(x))
        return value_gate(y) if self.gate else y


def test_torchvision_stochastic_depth_becomes_a_torch_only_drop_path():
    model = _Residual().train()
    x = torch.randn(8, 4, 6, 6)
    gm, frontend = trace(model, (x,))
    assert frontend == FX
    assert isinstance(gm.get_submodule("drop"), DropPath)
    assert gm.get_submodule("drop").drop_prob == 0.5
    assert type(model.drop).__name__ == "StochasticDepth"  # the model keeps its own module
    assert library_functions(gm) == []
    for training in (True, False):  # same function in both modes, draw for draw
        model.train(training)
        gm.train(training)
        torch.manual_seed(3)
        want = model(x)
        torch.manual_seed(3)
        assert torch.equal(gm(x), want)
    assert "torchvision" not in generate_code(gm)


def test_drop_path_has_exact_rules():
    model = _Residual().eval()
    x = torch.randn(2, 4, 6, 6)
    gm, _ = trace(model, (x,))
    annotate_shapes(gm, (x,))
    am = AnalysisManager()
    with collect() as diag:
        for analysis in (ShapeAnalysis(), MixingAnalysis(), DepthAnalysis()):
            am.get(analysis, gm, Subgraph.whole(gm))
    assert diag.findings() == ()


def test_a_wrapped_library_function_is_captured_through_export():
    model = _Padded().eval()
    x = torch.randn(2, 3, 9, 9)  # the conv's 7 columns are padded to 8
    gm, frontend = trace(model, (x,))
    assert frontend == EXPORT
    assert library_functions(gm) == []
    assert torch.equal(gm(x), model(x))
    assert "window_pad" not in generate_code(gm)


def test_an_opaque_call_export_cannot_capture_keeps_the_fx_graph():
    model = _Padded(gate=True).eval()
    x = torch.randn(2, 3, 9, 9)
    gm, frontend = trace(model, (x,))
    assert frontend == FX
    assert library_functions(gm) == [f"{__name__}.value_gate", f"{__name__}.window_pad"]
    assert torch.equal(gm(x), model(x))


class _CheckedNorm(nn.Module):
    """timm's ``BatchNormAct2d`` pattern: an assert whose message formats a proxy, after a
    train-only op that dead-code elimination drops (so the two traces number nodes apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            _ = x.ndim + 1  # unused: dropped, but it took the name getattr
        torch._assert(x.ndim == 4, f"expected 4D input (got {x.ndim}D input)")
        return F.batch_norm(x, self.bn.running_mean, self.bn.running_var, self.bn.weight,
                            self.bn.bias, self.training)


def test_an_assert_message_naming_a_proxy_does_not_make_a_leaf():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), _CheckedNorm()).train()
    x = torch.randn(2, 3, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no CaptureWarning
        gm, frontend = trace(model, (x,))
    assert frontend == FX
    assert not [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "1"]
    for training in (False, True):
        model.train(training)
        gm.train(training)
        assert torch.allclose(gm(x), model(x))


class _LinearAttention(nn.Module):
    """timm EfficientViT's pattern: attention under a disabled autocast, and a branch on a shape
    (so torch.fx fails and torch.export captures it)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if x.shape[1] > 1:
            q = F.relu(q)
        with torch.autocast(device_type="cpu", enabled=False):
            out = (q @ k.transpose(-1, -2)).float() @ v
        return out + x


def test_a_disabled_autocast_region_of_an_export_is_inlined():
    model = _LinearAttention().eval()
    x = torch.randn(2, 5, 8)
    gm, frontend = trace(model, (x,))
    assert frontend == EXPORT
    assert not [n for n in gm.graph.nodes if "autocast" in str(n.target)]
    assert not [m for name, m in gm.named_children() if isinstance(m, torch.fx.GraphModule)]
    assert torch.allclose(gm(x), model(x))
    assert "autocast" not in generate_code(gm)
    annotate_shapes(gm, (x,))
    with collect() as diag:
        AnalysisManager().get(MixingAnalysis(), gm, Subgraph.whole(gm))
    assert diag.findings() == ()
