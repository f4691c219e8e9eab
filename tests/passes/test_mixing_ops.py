"""Abstract mixing equals the Jacobian ground truth op by op, including the exactness edge cases."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alphac.analysis import AnalysisManager
from alphac.frontends.zoo.efficientnet import SqueezeExcitation
from alphac.frontends.zoo.vit import Attention
from alphac.ir import Subgraph
from alphac.passes.analysis import mixing
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import Mix, MixingAnalysis, MixingFact

NO, ONE, MANY, ALL = Mix.NONE, Mix.ONE_TO_ONE, Mix.MANY_TO_ONE, Mix.ALL_TO_ONE


class _Wrap(nn.Module):
    """A function of tensors, with ``parts`` registered so fx keeps them as call_module."""

    def __init__(self, fn: Callable[..., object], **parts: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.parts = nn.ModuleDict(parts)


class _Wrap1(_Wrap):
    def forward(self, x: torch.Tensor) -> object:
        return self.fn(self.parts, x)


class _Wrap2(_Wrap):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> object:
        return self.fn(self.parts, x, y)


class _Wrap3(_Wrap):
    def forward(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> object:
        return self.fn(self.parts, x, y, z)


def Wrap(fn: Callable[..., object], **parts: nn.Module) -> nn.Module:  # noqa: N802
    """``fn(parts, *tensors)`` as a traceable module (fx cannot trace ``*args`` forwards)."""
    arity = len(inspect.signature(fn).parameters) - 1
    return {1: _Wrap1, 2: _Wrap2, 3: _Wrap3}[arity](fn, **parts)


def conv(*args: object, **kwargs: object) -> nn.Module:
    return nn.Conv2d(*args, **kwargs)


#: id -> (module factory, input shapes)
CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    "conv3x3": (lambda: conv(3, 4, 3, padding=1), [(2, 3, 8, 8)]),
    "conv3x3_twice_4x4": (lambda: nn.Sequential(conv(3, 4, 3, padding=1), conv(4, 4, 3, padding=1)),
                          [(2, 3, 4, 4)]),
    "conv3x3_size3": (lambda: conv(3, 4, 3, padding=1), [(2, 3, 3, 3)]),
    "conv1x1_stride2": (lambda: conv(3, 4, 1, stride=2), [(2, 3, 4, 4)]),
    "conv3x3_stride2": (lambda: conv(3, 4, 3, stride=2, padding=1), [(2, 3, 8, 8)]),
    "conv2x2_stride3": (lambda: conv(3, 4, 2, stride=3), [(2, 3, 8, 8)]),
    "conv_dilated": (lambda: conv(3, 4, 3, padding=2, dilation=2), [(2, 3, 8, 8)]),
    "conv_dilated_strided": (lambda: conv(3, 4, 3, stride=2, dilation=2), [(2, 3, 9, 9)]),
    "conv_depthwise": (lambda: conv(4, 4, 3, padding=1, groups=4), [(2, 4, 6, 6)]),
    "conv_depthwise_x2": (lambda: conv(4, 8, 3, padding=1, groups=4), [(2, 4, 6, 6)]),
    "conv_grouped": (lambda: conv(4, 6, 1, groups=2), [(2, 4, 5, 5)]),
    "conv_rect": (lambda: conv(3, 4, (1, 3), padding=(0, 1)), [(2, 3, 5, 7)]),
    "conv_same_even": (lambda: conv(3, 4, 4, padding="same"), [(2, 3, 6, 6)]),
    "conv_circular": (lambda: conv(3, 4, 3, padding=1, padding_mode="circular"), [(2, 3, 5, 5)]),
    "conv_reflect": (lambda: conv(3, 4, 3, padding=2, padding_mode="reflect"), [(2, 3, 5, 5)]),
    "conv_replicate": (lambda: conv(3, 4, 3, padding=2, padding_mode="replicate"), [(2, 3, 6, 6)]),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), [(2, 3, 10)]),
    "conv_transposed": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1), [(2, 3, 4, 4)]),
    "conv_transposed_functional": (lambda: Wrap(lambda p, x: F.conv_transpose2d(
        x, torch.ones(3, 2, 2, 2), stride=2)), [(2, 3, 3, 3)]),
    "pad_functional": (lambda: Wrap(lambda p, x: F.pad(x, (1, 2, -1, 0))), [(2, 3, 4, 4)]),
    "pad_reflect_conv": (lambda: Wrap(lambda p, x: p.c(F.pad(x, (2, 2, 2, 2), mode="reflect")),
                                      c=conv(3, 4, 3, stride=2)), [(2, 3, 5, 5)]),
    "max_pool_2x2": (lambda: nn.MaxPool2d(2), [(2, 3, 4, 4)]),
    "avg_pool_2x2": (lambda: nn.AvgPool2d(2), [(2, 3, 4, 4)]),
    "max_pool_3x3_s2_p1": (lambda: nn.MaxPool2d(3, 2, 1), [(2, 3, 8, 8)]),
    "max_pool_ceil": (lambda: nn.MaxPool2d(2, 2, ceil_mode=True), [(2, 3, 5, 5)]),
    "avg_pool_3x3_p1": (lambda: nn.AvgPool2d(3, 1, 1), [(2, 3, 5, 5)]),
    "global_avg_pool": (lambda: nn.AdaptiveAvgPool2d(1), [(2, 3, 4, 4)]),
    "adaptive_avg_pool_3": (lambda: nn.AdaptiveAvgPool2d(3), [(2, 3, 8, 8)]),
    "adaptive_max_pool_2": (lambda: nn.AdaptiveMaxPool2d(2), [(2, 3, 4, 4)]),
    "mean_hw_keepdim": (lambda: Wrap(lambda p, x: x.mean((2, 3), keepdim=True)), [(2, 3, 4, 4)]),
    "sum_last": (lambda: Wrap(lambda p, x: x.sum(-1)), [(2, 3, 4, 5)]),
    "sum_channels_rows": (lambda: Wrap(lambda p, x: torch.sum(x, dim=(1, 2))), [(2, 3, 4, 5)]),
    "softmax_last": (lambda: nn.Softmax(-1), [(2, 3, 5)]),
    "softmax_dim1": (lambda: Wrap(lambda p, x: F.softmax(x, dim=1)), [(2, 3, 5)]),
    "softmax_batch": (lambda: Wrap(lambda p, x: x.softmax(0)), [(2, 3, 5)]),
    "log_softmax": (lambda: nn.LogSoftmax(1), [(2, 3, 5)]),
    "softmax_size1": (lambda: nn.Softmax(-1), [(2, 3, 1)]),
    "layer_norm_last": (lambda: nn.LayerNorm(5), [(2, 4, 5)]),
    "layer_norm_last2": (lambda: nn.LayerNorm((4, 5)), [(2, 3, 4, 5)]),
    "layer_norm_size1": (lambda: nn.LayerNorm(1), [(2, 4, 1)]),
    "group_norm": (lambda: nn.GroupNorm(2, 4), [(2, 4, 3, 3)]),
    "group_norm_instance": (lambda: nn.GroupNorm(4, 4), [(2, 4, 3, 3)]),
    "group_norm_functional": (lambda: Wrap(lambda p, x: F.group_norm(x, 1)), [(2, 4, 3, 3)]),
    "batch_norm_eval": (lambda: nn.BatchNorm2d(3), [(2, 3, 4, 4)]),
    "batch_norm_no_running_stats": (
        lambda: nn.BatchNorm2d(3, track_running_stats=False), [(2, 3, 4, 4)]),
    "batch_norm_training_functional": (
        lambda: Wrap(lambda p, x: F.batch_norm(x, None, None, training=True)), [(2, 3, 4, 4)]),
    "flatten_1": (lambda: nn.Flatten(), [(2, 3, 4, 4)]),
    "flatten_hw": (lambda: Wrap(lambda p, x: x.flatten(2)), [(2, 3, 4, 5)]),
    "view_regroup": (lambda: Wrap(lambda p, x: x.view(2, 2, 6, 5)), [(2, 4, 3, 5)]),
    "reshape_split_merge": (lambda: Wrap(lambda p, x: x.reshape(2, 3, 2, 10).reshape(2, 6, 10)),
                            [(2, 3, 4, 5)]),
    "permute": (lambda: Wrap(lambda p, x: x.permute(0, 2, 3, 1)), [(2, 3, 4, 5)]),
    "transpose": (lambda: Wrap(lambda p, x: x.transpose(1, 3)), [(2, 3, 4, 5)]),
    "unsqueeze_squeeze": (lambda: Wrap(lambda p, x: x.unsqueeze(1).squeeze(1).unsqueeze(-1)),
                          [(2, 3, 4)]),
    "cat_channels": (lambda: Wrap(lambda p, x, y: torch.cat([x, y], dim=1)),
                     [(2, 3, 4, 4), (2, 5, 4, 4)]),
    "cat_rows": (lambda: Wrap(lambda p, x, y: torch.cat((x, y), 2)), [(2, 3, 2, 4), (2, 3, 5, 4)]),
    "stack": (lambda: Wrap(lambda p, x, y: torch.stack([x, y], 1)), [(2, 3, 4), (2, 3, 4)]),
    "chunk": (lambda: Wrap(lambda p, x: (x.chunk(2, dim=1)[0], x.chunk(2, dim=1)[1])), [(2, 4, 3)]),
    "chunk_tuple_output": (lambda: Wrap(lambda p, x: x.chunk(2, dim=1)), [(2, 4, 3)]),
    "split": (lambda: Wrap(lambda p, x: x.split([1, 3], dim=2)[1] * 2), [(2, 3, 4)]),
    "add_broadcast": (lambda: Wrap(lambda p, x, y: x + y), [(2, 4, 5, 5), (4, 1, 5)]),
    "mul_broadcast": (lambda: Wrap(lambda p, x, y: x * y), [(2, 4, 5, 5), (1, 4, 1, 1)]),
    "sub_div": (lambda: Wrap(lambda p, x, y: (x - y) / (y * y + 1)), [(2, 3, 4), (3, 1)]),
    "matmul_4d_2d": (lambda: Wrap(lambda p, x, y: x @ y), [(2, 3, 4, 5), (5, 6)]),
    "matmul_broadcast_batch": (lambda: Wrap(lambda p, x, y: torch.matmul(x, y)),
                               [(2, 1, 4, 5), (3, 5, 2)]),
    "bmm": (lambda: Wrap(lambda p, x, y: torch.bmm(x, y)), [(2, 3, 4), (2, 4, 5)]),
    "matmul_vector": (lambda: Wrap(lambda p, x, v: x @ v), [(2, 4, 5), (5,)]),
    "einsum": (lambda: Wrap(lambda p, x, y: torch.einsum("bij,bkj->bik", x, y)),
               [(2, 3, 4), (2, 5, 4)]),
    "einsum_outer": (lambda: Wrap(lambda p, x, y: torch.einsum("i,j->ij", x, y)), [(3,), (4,)]),
    "attention": (lambda: Attention(16, 2), [(2, 5, 16)]),
    "sdpa": (lambda: Wrap(lambda p, q, k, v: F.scaled_dot_product_attention(q, k, v)),
             [(2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)]),
    "sdpa_causal": (lambda: Wrap(lambda p, q: F.scaled_dot_product_attention(q, q, q, is_causal=True)),
                    [(2, 2, 5, 4)]),
    "linear_3d": (lambda: nn.Linear(5, 3), [(2, 4, 5)]),
    "getitem_select": (lambda: Wrap(lambda p, x: x[:, 0]), [(2, 3, 4)]),
    "getitem_step": (lambda: Wrap(lambda p, x: x[:, :, ::2]), [(2, 3, 5)]),
    "getitem_none_ellipsis": (lambda: Wrap(lambda p, x: x[..., None, 1:3]), [(2, 3, 4)]),
    "getitem_batch": (lambda: Wrap(lambda p, x: x[0]), [(2, 3, 4)]),
    "expand": (lambda: Wrap(lambda p, x: x.expand(2, 4, 5)), [(2, 1, 5)]),
    "repeat": (lambda: Wrap(lambda p, x: x.repeat(1, 2, 1)), [(2, 3, 4)]),
    "size1_dims": (lambda: conv(3, 4, 3, padding=1), [(1, 3, 1, 5)]),
    "activations": (lambda: nn.Sequential(
        nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(), nn.ReLU6(),
        nn.LeakyReLU(), nn.ELU(), nn.Dropout(0.5), nn.Identity()), [(2, 3, 4)]),
    "squeeze_excitation": (lambda: SqueezeExcitation(8, 2), [(2, 8, 4, 4)]),
    "residual": (lambda: Wrap(lambda p, x: torch.relu(p.c(x)) + x, c=conv(3, 3, 3, padding=1)),
                 [(2, 3, 5, 5)]),
    "two_outputs": (lambda: Wrap(lambda p, x, y: (x + y, x.mean(1))), [(2, 3), (2, 3)]),
    "size_query_reshape": (lambda: Wrap(lambda p, x: x.reshape(x.size(0), -1, x.shape[-1])),
                           [(2, 3, 4, 5)]),
}


def _analyse(module: nn.Module, shapes: list[tuple[int, ...]], traced) -> tuple[MixingFact, list[str]]:
    root = nn.Sequential(module) if len(shapes) == 1 else module  # nn leaves stay call_module
    gm = traced(root, *shapes)
    sub, am = Subgraph.whole(gm), AnalysisManager()
    return am.get(MixingAnalysis(), gm, sub), check_mixing(gm, sub, am)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", sorted(CASES))
def test_abstract_equals_jacobian(case: str, traced) -> None:
    factory, shapes = CASES[case]
    torch.manual_seed(0)
    fact, problems = _analyse(factory(), shapes, traced)
    assert problems == [], "\n".join(problems)


def _matrix(case: str, traced, i: int = 0, o: int = 0):
    factory, shapes = CASES[case]
    torch.manual_seed(0)
    fact, problems = _analyse(factory(), shapes, traced)
    assert problems == []
    return fact.matrix(i, o)


def test_conv3x3_matrix(traced) -> None:
    assert _matrix("conv3x3", traced) == (
        (ONE, NO, NO, NO), (ALL, ALL, ALL, ALL), (NO, NO, MANY, NO), (NO, NO, NO, MANY))


def test_receptive_field_covering_the_map_is_all(traced) -> None:
    twice = _matrix("conv3x3_twice_4x4", traced)
    assert twice[2][2] == ALL and twice[3][3] == ALL
    assert _matrix("conv3x3_size3", traced)[2][2] == ALL  # 3x3 pad 1 covers a size-3 map whole
    assert _matrix("conv3x3", traced)[2][2] == MANY


def test_stride_larger_than_kernel_leaves_positions_unpaired(traced) -> None:
    m = _matrix("conv1x1_stride2", traced)
    assert m[2] == (NO, NO, NO, NO) and m[3] == (NO, NO, NO, NO)
    assert m[0] == (ONE, NO, NO, NO) and m[1] == (ALL, ALL, ALL, ALL)
    assert _matrix("conv2x2_stride3", traced)[2][2] == NO
    assert _matrix("conv3x3_stride2", traced)[2][2] == MANY


def test_dilation_grouping_and_pools(traced) -> None:
    assert _matrix("conv_dilated", traced)[2][2] == MANY
    assert _matrix("conv_dilated_strided", traced)[2][2] == NO  # taps hit even rows only
    depthwise = _matrix("conv_depthwise", traced)
    assert depthwise[1] == (NO, ONE, NO, NO)
    assert _matrix("conv_grouped", traced)[1] == (NO, MANY, NO, NO)
    assert _matrix("max_pool_2x2", traced)[2] == (NO, NO, MANY, NO)
    assert _matrix("avg_pool_2x2", traced)[1] == (NO, ONE, NO, NO)
    glob = _matrix("global_avg_pool", traced)
    assert glob[2] == (ALL, ALL, ALL, ALL) and glob[1] == (NO, ONE, NO, NO)


def test_softmax_norms_and_layout(traced) -> None:
    assert _matrix("softmax_last", traced) == ((ONE, NO, NO), (NO, ONE, NO), (ALL, ALL, ALL))
    assert _matrix("softmax_dim1", traced) == ((ONE, NO, NO), (ALL, ALL, ALL), (NO, NO, ONE))
    assert _matrix("layer_norm_last2", traced)[2] == (ALL, ALL, ALL, ALL)
    assert _matrix("layer_norm_size1", traced) == ((NO, NO, NO),) * 3  # constant output
    assert _matrix("softmax_size1", traced) == ((NO, NO, NO),) * 3
    assert _matrix("batch_norm_eval", traced) == (
        (ONE, NO, NO, NO), (NO, ONE, NO, NO), (NO, NO, ONE, NO), (NO, NO, NO, ONE))
    assert _matrix("transpose", traced)[1] == (NO, NO, NO, ONE)
    flat = _matrix("flatten_hw", traced)
    assert flat[2] == (NO, NO, ONE) and flat[3] == (NO, NO, ONE)


def test_size1_dims_are_one_to_one_when_paired(traced) -> None:
    m = _matrix("size1_dims", traced)
    assert m[0][0] == ONE  # batch of one
    assert m[2][2] == ONE  # a height of one
    assert m[3][3] == MANY


def test_unknown_op_is_top_with_one_warning(traced) -> None:
    mixing._WARNED.discard("cumsum")
    gm = traced(Wrap(lambda p, x: torch.cumsum(x, 1) * 2), (2, 3, 4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fact = MixingAnalysis().compute(gm, Subgraph.whole(gm), AnalysisManager())
        MixingAnalysis().compute(gm, Subgraph.whole(gm), AnalysisManager())
    assert [str(w.message) for w in caught if "cumsum" in str(w.message)] == [
        "mixing analysis does not know the op 'cumsum'; assuming every input dim mixes into "
        "every output dim (top)"]
    assert fact.matrix(0, 0) == ((ALL, ALL, ALL),) * 3
