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


def _traced_cases():
    for name, (factory, shapes) in sorted(CASES.items()):
        try:
            gm = fx.symbolic_trace(factory())
        except Exception:  # noqa: BLE001 - a case fx cannot trace is covered by another
            continue
        yield name, gm, [torch.randn(s) for s in shapes]
    yield "extra", fx.symbolic_trace(_Extra()), [torch.randn(2, 4, 3, 5), torch.randn(2, 4, 3, 5)]


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
