"""The Rewriter's verbs, and every registered op kind materialised and normalised back."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import fx, nn

from alphac.frontends.trace import annotate_shapes
from alphac.passes.analysis.registry import REGISTRY, NotMaterialisable, materialise, normalize
from alphac.passes.transform.splice import insert_built
from alphac.rewriter import Rewriter, graph_version


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_verbs_insert_replace_erase_and_bump_once() -> None:
    gm = fx.symbolic_trace(Net())
    rw = Rewriter(gm)
    relu = next(n for n in gm.graph.nodes if n.target is torch.relu)
    conv = relu.args[0]
    with rw.session():
        sig = rw.call_function(torch.sigmoid, (conv,), after=conv)
        extra = rw.call_module(nn.Identity(), (sig,), name="conv_extra", after=sig)
        rw.replace_all_uses(relu, extra)
        rw.erase(relu)
    assert graph_version(gm) == 1
    assert [n.name for n in gm.graph.nodes] == ["x", "conv", "sigmoid", "conv_extra_0", "output"]
    assert hasattr(gm, "conv_extra_0")
    assert gm(torch.randn(1, 3, 4, 4)).shape == (1, 3, 4, 4)


def test_session_that_changes_nothing_does_not_bump() -> None:
    gm = fx.symbolic_trace(Net())
    with Rewriter(gm).session() as rw:
        relu = rw.node("relu")
        assert rw.replace_all_uses(relu, relu) == 0
    assert graph_version(gm) == 0


def test_erase_refuses_a_used_node() -> None:
    gm = fx.symbolic_trace(Net())
    rw = Rewriter(gm)
    with pytest.raises(ValueError, match="still used"):
        rw.erase(rw.node("conv"))


sys.path.insert(0, str(Path(__file__).parents[1] / "passes"))
from test_mixing_ops import CASES  # noqa: E402

#: kinds no materialise rule can build, and why (the test checks the rule says so)
UNBUILDABLE = {"drop_path": "library", "mode_value": "train value"}


class _Extra(nn.Module):
    """Ops no mixing case covers (as modules, where the cases use the functional forms)."""

    def __init__(self) -> None:
        super().__init__()
        self.norms = nn.Sequential(nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.LayerNorm(5))

    def forward(self, x, y):
        x = self.norms(x)
        a = torch.neg(x) + torch.floor_divide(x, 2) + torch.remainder(x, 3)
        b = torch.roll(a, 1, 2).masked_fill(x > y, 0.0)
        c = torch.unflatten(b, 1, (1, 4))
        d = torch.tensor_split(c, 3, 3)[0] + torch.unbind(c, 2)[0].unsqueeze(2)[..., :1]
        e = nn.functional.hardsigmoid(d) + torch.arange(x.size(3)) + torch.zeros(x.size(3))
        return e


class _Math(nn.Module):
    """Elementwise math, norms, clamps, resizes and repeats (the kinds added for timm)."""

    def forward(self, x):
        a = torch.sqrt(torch.abs(x) + 1) + torch.rsqrt(x * x + 1) + x ** 2
        b = torch.exp(a) + torch.log(a) + torch.sin(a) + torch.cos(a) + torch.erf(a)
        c = torch.reciprocal(b) + torch.clamp(b, -1.0, 1.0)
        d = nn.functional.normalize(c, dim=1) + torch.linalg.vector_norm(c, dim=1, keepdim=True)
        e = nn.functional.interpolate(d, scale_factor=2.0, mode="nearest")
        return e.repeat_interleave(2, dim=1)


def _traced_cases():
    for name, (factory, shapes) in sorted(CASES.items()):
        try:
            gm = fx.symbolic_trace(factory())
        except Exception:  # noqa: BLE001 - a case fx cannot trace is covered by another
            continue
        yield name, gm, [torch.randn(s) for s in shapes]
    yield "extra", fx.symbolic_trace(_Extra()), [torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)]
    yield "math", fx.symbolic_trace(_Math()), [torch.randn(2, 4, 3, 5)]


def test_every_kind_materialises_and_normalises_back() -> None:
    seen: set[str] = set()
    refused: set[str] = set()  # kinds one of whose forms is not built
    wrong: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, gm, inputs in _traced_cases():
            annotate_shapes(gm, inputs)
            modules = dict(gm.named_modules())
            rw = Rewriter(gm)
            for node in [n for n in gm.graph.nodes if n.op.startswith("call")]:
                op = normalize(node, modules)
                if op.spec.kind not in REGISTRY:
                    continue
                shapes = tuple(tuple(n.meta["tensor_meta"].shape) if hasattr(
                    n.meta.get("tensor_meta"), "shape") else None for n in op.operands)
                try:
                    built = materialise(op.spec, shapes)
                except NotMaterialisable:
                    refused.add(op.spec.kind)
                    continue
                new = insert_built(rw, built, list(op.operands), after=node)
                new.meta["tensor_meta"] = node.meta.get("tensor_meta")
                again = normalize(new, dict(gm.named_modules()))
                if (again.spec, again.operands) != (op.spec, op.operands):
                    wrong.append(f"{name}: {node.name}: {op.spec} -> {again.spec}")
                seen.add(op.spec.kind)
    assert wrong == [], "\n".join(wrong)
    assert set(REGISTRY) - seen == set(UNBUILDABLE)
    assert refused == {"conv"}  # F.conv_transpose2d (see conv_pool._conv_build)


@pytest.mark.parametrize("kind", sorted(UNBUILDABLE))
def test_unbuildable_kinds_say_why(kind: str) -> None:
    from alphac.passes.analysis.registry import OpSpec

    with pytest.raises(NotMaterialisable, match=UNBUILDABLE[kind]):
        materialise(OpSpec.of(kind, p=0.1, value=True))


# ---- set_arg, keep_submodules, bump=False, and the edits routed through them -------------
class _Clamp(nn.Module):
    def forward(self, x):
        return torch.clamp(torch.relu(x), 0.0, max=6.0)


def test_set_arg_sets_a_positional_or_keyword_argument_and_says_whether_it_changed() -> None:
    gm = fx.symbolic_trace(_Clamp())
    rw = Rewriter(gm)
    clamp, relu, x = rw.node("clamp"), rw.node("relu"), rw.node("x")
    assert not rw.set_arg(clamp, 1, 0.0) and not rw.set_arg(clamp, "max", 6.0)
    assert not rw.commit() and graph_version(gm) == 0
    assert rw.set_arg(clamp, 1, -1.0) and rw.set_arg(clamp, "max", 1.0)
    assert rw.commit() and graph_version(gm) == 1
    assert clamp.args == (relu, -1.0) and clamp.kwargs["max"] == 1.0
    assert gm(torch.full((3,), 5.0)).tolist() == [1.0, 1.0, 1.0]
    assert rw.set_arg(clamp, 0, x)  # a node argument: the use lists follow
    assert clamp in x.users and clamp not in relu.users
    assert rw.commit() and graph_version(gm) == 2  # DCE erased the relu
    assert "relu" not in {n.name for n in gm.graph.nodes}
    assert gm(torch.full((3,), -5.0)).tolist() == [-1.0, -1.0, -1.0]


def test_set_arg_compares_containers_and_never_tensors_by_value() -> None:
    gm = fx.symbolic_trace(Net())
    rw = Rewriter(gm)
    relu, conv = rw.node("relu"), rw.node("conv")
    assert rw.set_arg(relu, 0, (conv, [1, 2], {"k": None}))
    assert not rw.set_arg(relu, 0, (conv, [1, 2], {"k": None}))  # fx made them immutable
    assert rw.set_arg(relu, 0, (conv, [1, 2.0], {"k": None}))  # 2 and 2.0: different constants
    assert rw.set_arg(relu, 0, (conv, (1, 2.0), {"k": None}))  # a tuple is not a list
    t = torch.zeros(2)
    assert rw.set_arg(relu, 0, t) and not rw.set_arg(relu, 0, t)
    assert rw.set_arg(relu, 0, torch.zeros(2))  # an equal but different tensor
    assert rw.set_arg(relu, 0, slice(None, t)) and not rw.set_arg(relu, 0, slice(None, t))
    assert rw.set_arg(relu, "out", None) and relu.kwargs == {"out": None}  # a new keyword


def test_commit_can_keep_submodules_that_dead_code_elimination_uncalled() -> None:
    class Dead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            self.unused(x)
            return self.used(x)

    kept, pruned = fx.symbolic_trace(Dead()), fx.symbolic_trace(Dead())
    assert Rewriter(kept).commit(keep_submodules=True) and Rewriter(pruned).commit()
    assert [n.target for n in kept.graph.nodes if n.op == "call_module"] == ["used"]
    assert hasattr(kept, "unused") and not hasattr(pruned, "unused")


def test_bump_false_commits_without_a_version_and_refuses_a_handed_out_graph() -> None:
    gm = fx.symbolic_trace(Net())
    rw = Rewriter(gm, bump=False)
    rw.call_function(torch.sigmoid, (rw.node("relu"),), after=rw.node("relu"))
    assert rw.commit(eliminate_dead_code=False)
    assert graph_version(gm) == 0 and "sigmoid" in gm.code
    Rewriter(gm).finish()
    with pytest.raises(ValueError, match="version 1"):
        Rewriter(gm, bump=False)


class _Branchy(nn.Module):
    """Branches on a shape (fx fails, export captures it) and has mode-dependent ops."""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.drop = nn.BatchNorm2d(3), nn.Dropout(0.5)

    def forward(self, x):
        if x.shape[-1] > 2:
            x = x * 2
        return self.drop(self.bn(x))


class _Bound(nn.Module):
    """fx keeps placeholders for bound arguments and asserts on them; capture drops both."""

    def forward(self, x, mask=None, flag=False):
        return nn.functional.dropout(x, 0.5, training=self.training)


@pytest.mark.parametrize(("model", "frontend"), [(_Bound, "fx"), (_Branchy, "export")])
def test_capture_edits_leave_the_graph_at_version_0(model, frontend) -> None:
    from alphac.frontends.trace import trace
    from alphac.modes import MODE_VALUES, is_mode_value

    gm, used = trace(model(), (torch.randn(2, 3, 4, 4),))
    assert used == frontend and graph_version(gm) == 0
    assert [n.name for n in gm.graph.nodes if n.op == "placeholder"] == ["x"]
    assert not any(str(n.target).startswith("_guards") for n in gm.graph.nodes)
    assert any(is_mode_value(n) for n in gm.graph.nodes) and hasattr(gm, MODE_VALUES)
    gm.graph.lint()


def test_flipping_an_exported_graphs_baked_mode_bumps_its_version_once_per_change() -> None:
    from alphac.modes import set_training, training_mode

    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5))
    gm = torch.export.export(model, (torch.randn(2, 3, 4, 4),)).module()
    with training_mode(gm, False):
        assert graph_version(gm) == 1 and "dropout.default(batch_norm, 0.5, False)" in gm.code
    assert graph_version(gm) == 2 and "dropout.default(batch_norm, 0.5, True)" in gm.code
    set_training(gm, True)  # already in training mode: nothing changes
    assert graph_version(gm) == 2


def test_annotate_shapes_lives_in_the_core_and_is_re_exported_by_the_frontend() -> None:
    import importlib

    from alphac import ir

    # by name: `alphac.frontends.trace` as an attribute is the package's `trace` function
    frontend = importlib.import_module("alphac.frontends.trace")
    assert frontend.annotate_shapes is ir.annotate_shapes is annotate_shapes
    gm = fx.symbolic_trace(Net())
    ir.annotate_shapes(gm, (torch.randn(1, 3, 4, 4),))
    assert all(n.meta["tensor_meta"].shape == (1, 3, 4, 4) for n in gm.graph.nodes
               if n.op == "call_module")
    assert gm.meta["alphac.input_shapes"] == [(1, 3, 4, 4)] and graph_version(gm) == 0
