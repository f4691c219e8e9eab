"""alphac.codegen: any traced GraphModule written as a standalone, readable PyTorch file.

Every zoo model (torch.fx and torch.export) and a set of timm and transformers models is written
as model.py + weights.pt and loaded in one subprocess in which any import of alphac fails; there
the built model must compute the graph's eval output, with the graph's state_dict keys and shapes
and its mode. Then: the same text in-process and across processes, a golden file for a tiny
module, weights loaded by name and shape, train/eval behaviour (dropout, ModeValue, DropPath,
running statistics), gradients, tied/frozen/non-persistent tensors, imports from other libraries,
and the errors for what cannot be written.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from alphac.codegen import (
    INLINED,
    SIGNATURE,
    SPECIAL,
    CodegenError,
    InheritReport,
    ModuleCode,
    generate_code,
    inherit_weights,
    module_constructors,
    write_model,
)
from alphac.errors import UserError
from alphac.frontends import EXPORT, FX, load, zoo
from alphac.frontends.trace import _export, follow_mode_in_export, trace
from alphac.modes import training_mode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
import libmodels  # noqa: E402

LIBRARY = ("timm:resnet18", "timm:efficientnet_b0", "timm:vit_tiny", "timm:convnext_atto",
           "timm:swin_tiny", "timm:levit_128s", "transformers:vit")
#: ``source:frontend``; transformers models only capture through torch.export.
CASES = [*(f"zoo:{name}:{frontend}" for name in zoo.names() for frontend in (FX, EXPORT)),
         *(f"{name}:{frontend}" for name in LIBRARY
           for frontend in ((EXPORT,) if name.startswith("transformers") else (FX, EXPORT)))]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: the tensors are tiny, and the subprocess uses one too, so outputs
    are computed in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(source: str) -> nn.Module:
    """The zoo or library model with every all-zero parameter (zero-initialised heads, last
    norms of residual blocks, layer scales) redrawn small and running statistics away from
    their initial values, so outputs are not constant and depend on every loaded tensor."""
    if source.startswith("zoo:"):
        model = zoo.build(source[4:], num_classes=10, input_shape=(3, 16, 16))
    else:
        libmodels._define_torchvision_schemas()
        model = libmodels.build(source)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
        for name, b in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                b.add_(0.1 * torch.rand(b.shape, generator=generator))
    return model


def _graph(case: str) -> tuple[fx.GraphModule, torch.Tensor]:
    """The case's graph module, in the mode its frontend leaves it, and an input for it."""
    source, _, frontend = case.rpartition(":")
    model = _model(source)
    x = torch.randn((2, 3, 16, 16) if source.startswith("zoo:") else libmodels.INPUT,
                    generator=torch.Generator().manual_seed(0))
    if frontend == FX:
        gm, used = trace(model, (x,))
        assert used == FX
        return gm, x
    return follow_mode_in_export(_export(model.eval(), (x,))), x


def _load(path: Path) -> types.ModuleType:
    """Import a generated model.py under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"generated_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_without_alphac(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where every import of alphac fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["OMP_NUM_THREADS"] = "1"
    prelude = "import sys\nsys.modules['alphac'] = None  # `import alphac(.x)` raises from here\n"
    return subprocess.run([sys.executable, "-c", prelude + code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


#: Loads each folder's model.py with build_model() and records what the test compares.
_LOAD_ALL = '''
import importlib.util
from pathlib import Path

import torch

torch.set_num_threads(1)
try:
    import alphac  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
for index, folder in enumerate(map(Path, sys.argv[1:])):
    result = {"blocked": blocked, "error": None}
    try:
        spec = importlib.util.spec_from_file_location(f"generated{index}", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.build_model()
        result["training"] = model.training
        result["state"] = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        with torch.no_grad():
            result["output"] = model.eval()(torch.load(folder / "input.pt", weights_only=True))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["alphac"] = sorted(m for m in sys.modules
                              if m.split(".")[0] == "alphac" and sys.modules[m] is not None)
    torch.save(result, folder / "result.pt")
'''


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Iterator[dict[str, dict]]:
    """Per case: the graph's eval output, state and mode, and what the isolated subprocess got."""
    root = tmp_path_factory.mktemp("generated")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the function-scoped fixture has not run yet
    try:
        cases = _write_cases(root)
    finally:
        torch.set_num_threads(threads)
    folders = [str(c["folder"]) for c in cases.values() if "folder" in c]
    run = _run_without_alphac(_LOAD_ALL, *folders, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    for entry in cases.values():
        if "folder" in entry:
            entry["result"] = torch.load(entry["folder"] / "result.pt", weights_only=True)
    yield cases
    shutil.rmtree(root)  # about 1 GB of weights; pytest would keep three runs of them


def _write_cases(root: Path) -> dict[str, dict]:
    """Write every case into its folder with its input; keep the graph's eval output."""
    cases: dict[str, dict] = {}
    for index, case in enumerate(CASES):
        folder = root / f"case{index}"
        try:
            gm, x = _graph(case)
            write_model(gm, folder)
        except Exception as exc:  # noqa: BLE001 - reported by the case's own test
            cases[case] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        torch.save(x, folder / "input.pt")
        with training_mode(gm, False), torch.no_grad():  # after writing: an export counts batches
            output = gm(x)
        cases[case] = {"folder": folder, "output": output, "training": gm.training,
                       "state": [(k, list(v.shape)) for k, v in gm.state_dict().items()]}
    return cases


@pytest.mark.parametrize("case", CASES)
def test_the_file_runs_without_alphac_and_computes_the_graph(generated, case):
    entry = generated[case]
    assert "error" not in entry, entry.get("error")
    result = entry["result"]
    assert result["blocked"] and result["alphac"] == []
    assert result["error"] is None, result["error"]
    assert result["state"] == entry["state"]  # same keys, same order, same shapes
    assert result["training"] == entry["training"]
    reference = entry["output"]
    scale = float(reference.abs().max())
    assert scale > 0  # deep models at random init can map both samples alike, not to zero
    torch.testing.assert_close(result["output"], reference, rtol=1e-5, atol=1e-6 * scale)
    text = (entry["folder"] / "model.py").read_text()
    assert not re.search(r"^\s*(import|from)\s+alphac\b", text, re.MULTILINE)
    assert "pickle" not in text and "weights_only=True" in text


# -------------------------------------------------------------------------------------------
# Determinism and readability


_GENERATE = '''
import sys

import torch

from alphac.codegen import generate_code
from alphac.frontends import load, zoo
from alphac.frontends.trace import _export, follow_mode_in_export

x = torch.randn(2, 3, 16, 16)
resnet = zoo.build("resnet18", num_classes=10, input_shape=(3, 16, 16)).eval()
texts = [generate_code(load("zoo:vit_ti4", (2, 3, 16, 16), num_classes=10).gm),
         generate_code(follow_mode_in_export(_export(resnet, (x,))))]
sys.stdout.write("\\0".join(texts))
'''


def test_the_same_graph_gives_the_same_text_in_any_process():
    vit = load("zoo:vit_ti4", (2, 3, 16, 16), num_classes=10).gm
    resnet = zoo.build("resnet18", num_classes=10, input_shape=(3, 16, 16)).eval()
    exported = follow_mode_in_export(_export(resnet, (torch.randn(2, 3, 16, 16),)))
    texts = [generate_code(vit), generate_code(exported)]
    assert texts == [generate_code(copy.deepcopy(vit)), generate_code(exported)]
    assert "ModeValue(False, True)" in texts[1] and "0x" not in "".join(texts)
    env = dict(os.environ, PYTHONHASHSEED="12345", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _GENERATE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\0") == texts


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x))) + x.mean(1, keepdim=True)
        return self.head(y.mean((2, 3)))


GOLDEN = '''\
"""Tiny: a standalone PyTorch model, written by alphac from a traced graph.

build_model() builds it, loads weights.pt from beside this file when present (tensors matched by
name and shape) and returns it in eval mode. It needs torch only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


#: The mode build_model() returns the model in: the traced graph's.
TRAINING = False


class Tiny(nn.Module):
    """The traced graph as a module; submodules and tensors keep their paths."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=(3, 3), padding=(1, 1), bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        _add(self, "head.0", nn.Linear(8, 4))

    def forward(self, x):
        conv = self.conv(x)
        bn = self.bn(conv);  conv = None
        relu = self.relu(bn);  bn = None
        mean = x.mean(1, keepdim = True);  x = None
        add = relu + mean;  relu = mean = None
        mean_1 = add.mean((2, 3));  add = None
        head_0 = getattr(self.head, "0")(mean_1);  mean_1 = None
        return head_0


def build_model(weights: str | None = "auto") -> nn.Module:
    """A new ``Tiny`` in the traced graph's mode (``TRAINING``), with weights loaded.

    ``weights="auto"`` loads ``weights.pt`` from beside this file if it exists, a path loads that
    file, ``None`` keeps the initial values. Each saved tensor whose name and shape match one of
    the model's is copied; the others keep their initial values.
    """
    model = Tiny()
    if weights == "auto":
        here = globals().get("__file__")
        beside = Path(here).with_name("weights.pt") if here else None
        weights = str(beside) if beside is not None and beside.is_file() else None
    if weights is not None:
        _load_matching(model, torch.load(weights, map_location="cpu", weights_only=True))
    return model.train(TRAINING)


def _submodule(root: nn.Module, path: str) -> nn.Module:
    """The module at the dotted ``path`` under ``root``, creating empty containers on the way."""
    module = root
    for name in path.split(".") if path else ():
        if name not in module._modules:
            module.add_module(name, nn.Module())
        module = module._modules[name]
    return module


def _add(root: nn.Module, path: str, module: nn.Module) -> None:
    """Register ``module`` at the dotted ``path`` under ``root``."""
    parent, _, name = path.rpartition(".")
    _submodule(root, parent).add_module(name, module)


def _load_matching(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy each saved tensor whose name and shape match one of the model's state tensors."""
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in saved.items():
            if name in own and own[name].shape == tensor.shape:
                own[name].copy_(tensor)
'''


def test_a_tiny_module_reads_as_written_by_hand():
    gm = fx.symbolic_trace(_Tiny().eval())
    assert generate_code(gm, class_name="Tiny") == GOLDEN
    assert [(c.path, c.kind) for c in module_constructors(gm)] == [
        ("conv", SIGNATURE), ("bn", SIGNATURE), ("relu", SIGNATURE), ("head.0", SIGNATURE)]


@pytest.mark.parametrize("name", ["", "class", "3d", "build_model", "ModeValue"])
def test_a_class_name_that_cannot_be_used_is_refused(name):
    with pytest.raises(CodegenError, match="cannot name the generated class"):
        generate_code(fx.symbolic_trace(_Tiny()), class_name=name)


# -------------------------------------------------------------------------------------------
# Weights


def test_build_model_loads_each_tensor_that_matches_by_name_and_shape(tmp_path):
    gm = fx.symbolic_trace(_Tiny().eval())
    path = write_model(gm, tmp_path)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert list(saved) == list(gm.state_dict())
    other = dict(saved, **{"head.0.weight": torch.randn(5, 8)})
    torch.save(other, tmp_path / "other.pt")
    generated = _load(path)
    torch.manual_seed(0)
    initial = generated.build_model(weights=None).state_dict()
    torch.manual_seed(0)
    built = generated.build_model(str(tmp_path / "other.pt")).state_dict()
    assert torch.equal(built["head.0.weight"], initial["head.0.weight"])  # stays at init
    assert not torch.equal(initial["conv.weight"], saved["conv.weight"])
    for name in saved.keys() - {"head.0.weight"}:
        assert torch.equal(built[name], saved[name]), name
    assert all(torch.equal(v, saved[k]) for k, v in generated.build_model().state_dict().items())
    assert torch.equal(initial["bn.running_var"], torch.ones(8))


def test_inherit_weights_copies_by_name_and_shape_and_says_why_not():
    child = fx.symbolic_trace(_Tiny())
    parent = {k: torch.randn(v.shape) if v.is_floating_point() else v
              for k, v in _Tiny().state_dict().items()}
    parent["head.0.weight"] = torch.randn(5, 8)
    del parent["bn.running_mean"]
    before = copy.deepcopy(child.state_dict())
    report = inherit_weights(child, parent)
    assert isinstance(report, InheritReport) and hash(report)
    assert report.reasons == {"head.0.weight": "shape (4, 8) != (5, 8)",
                              "bn.running_mean": "missing"}
    assert report.copied == tuple(k for k in before if k not in report.reasons)
    state = child.state_dict()
    assert torch.equal(state["conv.weight"], parent["conv.weight"])
    assert torch.equal(state["head.0.weight"], before["head.0.weight"])
    assert torch.equal(state["bn.running_mean"], before["bn.running_mean"])


# -------------------------------------------------------------------------------------------
# Modes, gradients and special tensors


class _Noisy(nn.Module):
    """Dropout as a module and as a function of the mode (a ModeValue once captured), and batch
    statistics in training."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(self.bn(self.fc(x)), p=0.3, training=self.training)
        return self.out(self.drop(x))


def _twice(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return module(x), module(x)


@pytest.mark.parametrize("frontend", [FX, EXPORT])
def test_the_built_model_trains_and_evaluates_like_the_graph(tmp_path, frontend):
    torch.manual_seed(0)
    model, x = _Noisy(), torch.randn(8, 8)
    if frontend == FX:
        gm, _ = trace(model, (x,))
    else:
        gm = follow_mode_in_export(_export(model.eval(), (x,))).train()
    assert ModuleCode("alphac_modes.0", "ModeValue(False, True)", INLINED) in (
        module_constructors(gm))
    built = _load(write_model(gm, tmp_path)).build_model()
    assert built.training and gm.training
    ours, theirs = _twice(built, x), _twice(gm, x)
    assert not torch.allclose(ours[0], ours[1])  # dropout is active in training
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)  # the same draws
    mine, graph = built.state_dict(), gm.state_dict()
    for name in ("bn.running_mean", "bn.running_var"):
        torch.testing.assert_close(mine[name], graph[name])
    built.eval()
    gm.eval()
    with torch.no_grad():
        out = built(x)
        assert torch.equal(out, built(x))
        torch.testing.assert_close(out, gm(x))


def test_timm_drop_path_becomes_an_inlined_class_with_the_same_draws(tmp_path):
    libmodels._define_torchvision_schemas()
    from timm.layers import DropPath

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.drop_path = DropPath(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.drop_path(self.fc(x))

    torch.manual_seed(0)
    x = torch.randn(16, 8)
    gm, _ = trace(Residual(), (x,))
    assert ModuleCode("drop_path", "DropPath(0.5)", INLINED) in module_constructors(gm)
    built = _load(write_model(gm, tmp_path)).build_model()
    ours, theirs = _twice(built, x), _twice(gm, x)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert not torch.equal(ours[0], ours[1])
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), x + built.fc(x))


@pytest.mark.parametrize("case", ["zoo:small_cnn:fx", "zoo:small_cnn:export",
                                  "zoo:vit_ti4:export"])
def test_gradients_of_the_built_model_are_the_graphs(tmp_path, case):
    gm, x = _graph(case)
    built = _load(write_model(gm, tmp_path)).build_model()
    grads = []
    for module in (gm, built):
        module.train()
        module.zero_grad()
        module(x).square().mean().backward()
        grads.append({n: p.grad for n, p in module.named_parameters()})
    assert grads[1].keys() == grads[0].keys()
    for name, grad in grads[1].items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


class _Stateful(nn.Module):
    """Tied weights, a frozen layer and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 4, bias=False)
        self.head = nn.Linear(4, 4, bias=False)
        self.head.weight = self.embed.weight
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.register_buffer("scale", torch.arange(4.0) + 1, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.head(self.embed(x)) * self.scale)


@pytest.mark.parametrize("frontend", [FX, EXPORT])
def test_tied_frozen_and_non_persistent_tensors_are_kept(tmp_path, frontend):
    torch.manual_seed(0)
    model, x = _Stateful(), torch.randn(3, 4)
    # A plain torch.export module, with its input guard (alphac's frontend drops it).
    gm = fx.symbolic_trace(model) if frontend == FX else torch.export.export(model, (x,)).module()
    generated = _load(write_model(gm, tmp_path))
    built = generated.build_model()
    assert list(built.state_dict()) == list(gm.state_dict())
    assert dict(built.named_buffers()).keys() == dict(gm.named_buffers()).keys()
    assert ([n for n, p in built.named_parameters() if not p.requires_grad]
            == [n for n, p in gm.named_parameters() if not p.requires_grad] == ["frozen.weight",
                                                                                "frozen.bias"])
    assert built.get_parameter("head.weight") is built.get_parameter("embed.weight")
    torch.testing.assert_close(built(x), gm(x))
    if frontend == EXPORT:  # fx registers every buffer as persistent; export keeps the flag
        assert "scale" not in built.state_dict()
        assert torch.equal(generated.build_model(weights=None).scale, model.scale)


def test_attention_modules_are_rebuilt_with_their_special_arguments(tmp_path):
    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True,
                                              batch_first=True)
            self.proj = nn.Conv1d(4, 4, 1, groups=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(self.attn(x, x, x, need_weights=False)[0])

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8)
    gm = fx.symbolic_trace(Attend().eval())
    assert [(c.path, c.kind) for c in module_constructors(gm)] == [
        ("attn", SPECIAL), ("proj", SIGNATURE)]
    assert ("nn.MultiheadAttention(8, 2, bias=False, add_bias_kv=True, batch_first=True)"
            in generate_code(gm))
    built = _load(write_model(gm, tmp_path)).build_model()
    with torch.no_grad():
        torch.testing.assert_close(built(x), gm(x))


def test_functions_from_other_libraries_are_imported_by_name(tmp_path, monkeypatch):
    (tmp_path / "helperlib.py").write_text("def scale(x, factor):\n    return x * factor\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from helperlib import scale

    graph = fx.Graph()  # as a tracer leaves a function it does not trace through (fx.wrap)
    fc = graph.call_module("fc", (graph.placeholder("x"),))
    graph.output(graph.call_function(scale, (fc, 2.0)))
    gm = fx.GraphModule(nn.ModuleDict({"fc": nn.Linear(4, 4)}), graph)
    path = write_model(gm, tmp_path / "out")
    text = path.read_text()
    assert "from helperlib import scale as helperlib_scale\n" in text
    assert "the traced model calls: helperlib.scale." in text
    x = torch.randn(2, 4)
    with torch.no_grad():
        torch.testing.assert_close(_load(path).build_model()(x), gm(x))


# -------------------------------------------------------------------------------------------
# What cannot be written


class _Custom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class _CustomLeaves(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _Custom) or super().is_leaf_module(m, module_qualified_name)


def test_an_unknown_leaf_module_is_refused_naming_its_path_and_class():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), _Custom()))
    gm = fx.GraphModule(model, _CustomLeaves().trace(model))
    with pytest.raises(CodegenError, match=r"'1\.1' \(.*_Custom\)") as info:
        generate_code(gm)
    assert isinstance(info.value, UserError) and info.value.hint


def _tampered_linear() -> nn.Module:
    linear = nn.Linear(4, 4)
    linear.in_features = 5  # its weight says 4: no constructor call rebuilds it
    return linear


@pytest.mark.parametrize("leaf", [nn.LSTM(4, 4), _tampered_linear()], ids=["lstm", "tampered"])
def test_a_torch_module_that_cannot_be_rebuilt_is_refused(leaf):
    gm = fx.symbolic_trace(nn.Sequential(leaf))
    with pytest.raises(CodegenError, match=r"submodule '0' \(torch\.nn\.modules\."):
        generate_code(gm)


def test_a_function_that_cannot_be_imported_or_a_tensor_argument_is_refused():
    def bump(t: torch.Tensor) -> torch.Tensor:
        return t + 1

    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(bump, (x,)))
    with pytest.raises(CodegenError, match="bump.*cannot be imported by name"):
        generate_code(fx.GraphModule(nn.Module(), graph))
    graph = fx.Graph()
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.add, (x, torch.ones(2))))
    with pytest.raises(CodegenError, match="'add'.*a tensor among its arguments"):
        generate_code(fx.GraphModule(nn.Module(), graph))
