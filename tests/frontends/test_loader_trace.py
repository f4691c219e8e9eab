from __future__ import annotations

import pytest
import torch

from alphac.errors import InvalidInputShapeError, ModelLoadError, TraceError, UnknownModelError
from alphac.frontends import EXPORT, FX, load, load_module, parse_shape
from alphac.frontends.trace import trace


def test_build_model_file(model_file):
    traced = load(model_file("residual_net"), (2, 3, 32, 32))
    assert traced.frontend == FX
    assert traced.output_shape == (2, 10)
    x = traced.example_inputs[0]
    traced.module.eval()
    traced.gm.eval()
    assert torch.allclose(traced.gm(x), traced.module(x), atol=1e-6)


def test_module_level_instance(model_file):
    traced = load(model_file("instance"), (2, 1, 28, 28))
    assert traced.output_shape == (2, 10)


def test_single_class_constructible_without_arguments(model_file):
    assert type(load_module(model_file("shape_branch"))).__name__ == "ShapeBranch"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ambiguous", "A, B"),
        ("needs_args", "0 constructible without arguments"),
        ("syntax_error", "syntax error"),
        ("import_error", "not_a_real_package_xyz"),
        ("returns_int", "returned int"),
    ],
)
def test_bad_model_files_explain_what_to_add(model_file, name, fragment):
    with pytest.raises(ModelLoadError) as info:
        load_module(model_file(name))
    assert fragment in str(info.value)
    assert info.value.hint


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(ModelLoadError, match="no model file"):
        load_module(str(tmp_path / "nope.py"))
    text = tmp_path / "model.txt"
    text.write_text("x")
    with pytest.raises(ModelLoadError, match="not a Python file"):
        load_module(str(text))


def test_unknown_zoo_name_lists_models():
    with pytest.raises(UnknownModelError, match="resnet18"):
        load_module("zoo:resnet9000")


def test_shape_branch_traces_through_export(model_file):
    traced = load(model_file("shape_branch"), (2, 3, 32, 32))
    assert traced.frontend == EXPORT
    assert traced.output_shape == (2, 10)
    assert not any(str(n.target).startswith("_guards") for n in traced.gm.graph.nodes)
    # every node carries a concrete shape
    assert all("tensor_meta" in n.meta for n in traced.gm.graph.nodes if n.op == "call_function")


@pytest.mark.parametrize("batch", [1, 5])
def test_export_fallback_has_a_dynamic_batch(model_file, batch):
    traced = load(model_file("shape_branch"), (2, 3, 32, 32))
    x = torch.randn(batch, 3, 32, 32)
    assert traced.gm(x).shape == (batch, 10)
    assert torch.allclose(traced.gm(x), traced.module(x), atol=1e-5)


class _BakedBatch(torch.nn.Module):
    """Branches on a shape (fx fails) and reshapes to a literal batch of 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 2:
            x = x * 2
        return x.reshape(2, -1)


def test_export_keeps_a_batch_size_the_model_bakes_in():
    gm, frontend = trace(_BakedBatch(), (torch.randn(2, 3, 4, 4),))
    assert frontend == EXPORT
    assert gm(torch.ones(2, 3, 4, 4)).shape == (2, 48)
    with pytest.raises(RuntimeError, match="shape"):
        gm(torch.ones(3, 3, 4, 4))


def test_export_fallback_keeps_buffers_untouched(model_file):
    traced = load(model_file("shape_branch"), (2, 3, 32, 32))
    y1 = traced.gm(traced.example_inputs[0])
    y2 = traced.gm(traced.example_inputs[0])
    assert torch.allclose(y1, y2)


def test_value_branch_names_the_line(model_file):
    with pytest.raises(TraceError) as info:
        load(model_file("value_branch"), (2, 3, 32, 32))
    message = str(info.value)
    assert "value_branch.py:14" in message
    assert "if x.sum() > 0" in message
    assert "torch.where" in (info.value.hint or "")


def test_wrong_input_shape_is_a_clear_error(model_file):
    with pytest.raises(InvalidInputShapeError, match="2x1x28x28") as info:
        load(model_file("residual_net"), (2, 1, 28, 28))
    assert "--input-shape" in info.value.hint


@pytest.mark.parametrize(
    ("text", "shape"), [("2x3x32x32", (2, 3, 32, 32)), ("4, 1, 28, 28", (4, 1, 28, 28))]
)
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "abc", "3", "2x0x4", "2x-1"])
def test_parse_shape_rejects(text):
    with pytest.raises(InvalidInputShapeError):
        parse_shape(text)


@pytest.mark.parametrize("spec", ["zoo:small_cnn", "FILE"])
def test_the_same_seed_builds_the_same_initial_weights(spec, model_file):
    spec, shape = ((model_file("residual_net"), (2, 3, 32, 32)) if spec == "FILE"
                   else (spec, (2, 1, 28, 28)))
    a, b = (load(spec, shape, num_classes=10, seed=4) for _ in range(2))
    other = load(spec, shape, num_classes=10, seed=5)
    torch.manual_seed(123)  # the caller's generator neither decides nor is disturbed
    before = torch.rand(1)
    torch.manual_seed(123)
    load(spec, shape, num_classes=10, seed=4)
    assert torch.equal(torch.rand(1), before)
    state_a, state_b, state_o = (m.gm.state_dict() for m in (a, b, other))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert any(not torch.equal(state_a[k], state_o[k]) for k in state_a
               if state_a[k].is_floating_point())
