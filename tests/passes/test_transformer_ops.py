"""Transformer ops: shape, mixing and cost rules against the trace and the Jacobian ground truth.

The op families of timm/transformers attention blocks: ``unbind``/``chunk``/``split``, every
``scaled_dot_product_attention`` signature (masks, causal, dropout, scale, grouped-query heads),
``roll``, windowed-attention reshapes with sizes computed from ``x.shape``, tables of parameters
indexed by constant tensors, class tokens expanded to the batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from test_mixing_ops import Wrap
from torch import fx, nn

from alphac.analysis import AnalysisManager
from alphac.frontends.trace import annotate_shapes
from alphac.ir import Subgraph
from alphac.passes.analysis.cost import CostAnalysis
from alphac.passes.analysis.ground_truth import check_mixing
from alphac.passes.analysis.mixing import Mix, MixingAnalysis
from alphac.passes.analysis.shape import ShapeAnalysis, TensorShape, evaluate_dim, traced_shape
from alphac.symbols import dim, same

B, C, H, W, N = (dim(s) for s in "BCHWN")
NO, ONE, MANY, ALL = Mix.NONE, Mix.ONE_TO_ONE, Mix.MANY_TO_ONE, Mix.ALL_TO_ONE


def sdpa(**kwargs: object) -> Callable[..., torch.Tensor]:
    return lambda p, q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs)


class WithBuffers(nn.Module):
    """``fn(self, x)`` with named constant buffers and parameters (fx reads them by get_attr)."""

    def __init__(self, fn: Callable[..., torch.Tensor], buffers: dict[str, torch.Tensor],
                 params: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.fn = fn
        for name, value in buffers.items():
            self.register_buffer(name, value)
        for name, value in (params or {}).items():
            setattr(self, name, nn.Parameter(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def window_partition(p: object, x: torch.Tensor) -> torch.Tensor:
    """Swin's window partition and reverse around a linear, sizes read from ``x.shape``."""
    x = p.norm(x)
    b, h, w, c = x.shape
    ws = 2
    pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    _, hp, wp, _ = x.shape
    win = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous()
    win = win.view(-1, ws * ws, c)
    win = p.proj(win)
    num_win = (hp // ws) * (wp // ws)
    win = win.view(win.shape[0] // num_win, hp // ws, wp // ws, ws, ws, -1)
    out = win.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return out[:, :h, :w, :].contiguous()


def _qkv_attention(p: nn.Module, x: torch.Tensor) -> torch.Tensor:
    qkv = p.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
    q, k, v = qkv[0], qkv[1], qkv[2]
    return F.scaled_dot_product_attention(q, k, v)


def _causal_mask(length: int, keys: int) -> torch.Tensor:
    return torch.ones(length, keys, dtype=torch.bool).tril()


def _bias_mask(length: int, keys: int) -> torch.Tensor:
    mask = torch.zeros(length, keys)
    mask[:, 0] = float("-inf")
    mask[0, 0] = 0.0
    return mask


def _relative_bias(p: nn.Module, x: torch.Tensor) -> torch.Tensor:
    bias = p.table[p.index].view(4, 4, -1).permute(2, 0, 1).unsqueeze(0)
    return (x * 0.5 + bias).softmax(-1)


QKV = [(2, 2, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)]
#: id -> (module factory, input shapes)
CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]]]] = {
    "unbind": (lambda: Wrap(lambda p, x: x.unbind(-1)[0] * 2 + x.unbind(-1)[2]), [(2, 4, 3)]),
    "unbind_tuple_output": (lambda: Wrap(lambda p, x: x.unbind(-1)), [(2, 3, 2)]),
    "qkv_unbind_sdpa": (lambda: Wrap(_qkv_attention, qkv=nn.Linear(8, 24)), [(2, 5, 8)]),
    "chunk_last": (lambda: Wrap(lambda p, x: x.chunk(3, -1)[1].relu()), [(2, 3, 6)]),
    "split_int": (lambda: Wrap(lambda p, x: x.split(3, dim=-1)[1]), [(2, 5, 4)]),
    "split_computed_size": (lambda: Wrap(lambda p, x: p.qkv(x).split(x.shape[-1], -1)[2],
                                         qkv=nn.Linear(6, 18)), [(2, 5, 6)]),
    "split_list_levit": (lambda: Wrap(lambda p, x: x.split([1, 1, 2], dim=3)[2].permute(0, 2, 1, 3)),
                         [(2, 3, 4, 4)]),
    "tensor_split_sections": (lambda: Wrap(lambda p, x: torch.tensor_split(x, 3, dim=2)[0]),
                              [(2, 3, 4)]),
    "tensor_split_indices": (lambda: Wrap(lambda p, x: torch.tensor_split(x, [1, 3], dim=1)[1]),
                             [(2, 5, 3)]),
    "unflatten": (lambda: Wrap(lambda p, x: x.unflatten(1, (2, -1)).transpose(1, 2)), [(2, 6, 4)]),
    "flatten_mean_dims": (lambda: Wrap(lambda p, x: x.flatten(2).mean(dim=(1, -1))), [(2, 3, 4, 5)]),
    "transpose_negative": (lambda: Wrap(lambda p, x: x.transpose(-2, -1)), [(2, 3, 4, 5)]),
    "permute_negative": (lambda: Wrap(lambda p, x: x.permute(0, -1, 1, -2)), [(2, 3, 4, 5)]),
    "expand_minus_one": (lambda: Wrap(lambda p, x: x.expand(-1, 4, -1) * 1.5), [(2, 1, 5)]),
    "repeat_tokens": (lambda: Wrap(lambda p, x: x.repeat(1, 2, 1)), [(2, 3, 4)]),
    "pad_computed": (lambda: Wrap(lambda p, x: F.pad(x, (0, 0, 0, (4 - x.shape[2] % 4) % 4))),
                     [(2, 3, 5, 4)]),
    "masked_fill": (lambda: Wrap(lambda p, x: x.masked_fill(x > 0, 0.0) + x.contiguous()),
                    [(2, 3, 4)]),
    "size_arithmetic_reshape": (lambda: Wrap(lambda p, x: x.reshape(
        x.size(0) * x.size(1), x.dim() * 2, -1)), [(2, 3, 4, 2)]),
    "window_partition": (lambda: Wrap(window_partition, norm=nn.LayerNorm(3),
                                      proj=nn.Linear(3, 5)), [(2, 5, 4, 3)]),
    "roll": (lambda: Wrap(lambda p, x: torch.roll(x, shifts=(-1, 2), dims=(1, 2))),
             [(2, 4, 5, 3)]),
    "roll_single": (lambda: Wrap(lambda p, x: x.roll(1, 1)), [(2, 4, 3)]),
    "cls_token_cat": (lambda: WithBuffers(lambda p, x: torch.cat(
        (p.cls.expand(x.shape[0], -1, -1), x), dim=1) + p.pos, {},
        {"cls": torch.zeros(1, 1, 4), "pos": torch.zeros(1, 6, 4)}), [(2, 5, 4)]),
    "layer_norm_gelu_functional": (lambda: Wrap(lambda p, x: F.gelu(F.layer_norm(x, (4,)))),
                                   [(2, 3, 4)]),
    "scaled_softmax": (lambda: Wrap(lambda p, x: (x * 0.125).softmax(dim=-1)), [(2, 3, 4)]),
    "relative_position_bias": (lambda: WithBuffers(
        _relative_bias, {"index": torch.randint(0, 9, (16,))}, {"table": torch.randn(9, 3)}),
        [(2, 3, 4, 4)]),
    "constant_index_on_data": (lambda: WithBuffers(
        lambda p, x: x[:, p.index], {"index": torch.tensor([3, 0, 0, -1])}), [(2, 5, 3)]),
    "sdpa_float_mask": (lambda: Wrap(lambda p, q, m: F.scaled_dot_product_attention(
        q, q, q, attn_mask=m)), [(2, 2, 5, 4), (2, 1, 5, 5)]),
    "sdpa_float_mask_2d": (lambda: Wrap(lambda p, q, m: F.scaled_dot_product_attention(
        q, q, q, m)), [(2, 2, 5, 4), (5, 5)]),
    "sdpa_bool_mask_constant": (lambda: WithBuffers(
        lambda p, q: F.scaled_dot_product_attention(q, q, q, attn_mask=p.mask),
        {"mask": _causal_mask(5, 5)}), [(2, 2, 5, 4)]),
    "sdpa_inf_mask_constant": (lambda: WithBuffers(
        lambda p, q: F.scaled_dot_product_attention(q, q, q, attn_mask=p.mask),
        {"mask": _bias_mask(5, 5)}), [(2, 2, 5, 4)]),
    "sdpa_computed_bool_mask": (lambda: Wrap(lambda p, q: F.scaled_dot_product_attention(
        q, q, q, attn_mask=q.sum(-1, keepdim=True) > 0)), [(2, 2, 5, 4)]),
    "sdpa_dropout_scale": (lambda: Wrap(sdpa(dropout_p=0.1, scale=0.3)), QKV),
    "sdpa_causal_rectangular": (lambda: Wrap(sdpa(is_causal=True)), QKV),
    "sdpa_causal_false_kwarg": (lambda: Wrap(sdpa(is_causal=False, attn_mask=None)), QKV),
    "sdpa_gqa": (lambda: Wrap(sdpa(enable_gqa=True)),
                 [(2, 4, 5, 4), (2, 2, 6, 4), (2, 2, 6, 3)]),
    "sdpa_broadcast_batch": (lambda: Wrap(sdpa()), [(2, 2, 5, 4), (1, 2, 6, 4), (2, 1, 6, 3)]),
}


def _trace(case: str) -> fx.GraphModule:
    factory, shapes = CASES[case]
    torch.manual_seed(0)
    module = factory()
    root = nn.Sequential(module) if len(shapes) == 1 and not isinstance(module, WithBuffers) \
        else module
    gm = fx.symbolic_trace(root.eval())
    gen = torch.Generator().manual_seed(0)
    annotate_shapes(gm, [torch.randn(s, generator=gen) for s in shapes])
    return gm


@pytest.mark.parametrize("case", sorted(CASES))
def test_mixing_equals_jacobian(case: str) -> None:
    gm = _trace(case)
    sub, am = Subgraph.whole(gm), AnalysisManager()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no op falls back to top
        am.get(MixingAnalysis(), gm, sub)
    problems = check_mixing(gm, sub, am)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_rules_are_exact_without_fallback(case: str) -> None:
    gm = _trace(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
        AnalysisManager().get(CostAnalysis(), gm, Subgraph.whole(gm))
    nodes = {n.name: n for n in gm.graph.nodes}
    for name, value in fact.node_shapes.items():
        if isinstance(value, TensorShape):
            got = tuple(evaluate_dim(d, fact.bindings) for d in value.dims)
            assert got == traced_shape(nodes[name]), name


def _mixing(case: str, i: int = 0, o: int = 0):
    gm = _trace(case)
    return AnalysisManager().get(MixingAnalysis(), gm, Subgraph.whole(gm)).matrix(i, o)


def test_attention_mixes_tokens_but_never_the_batch() -> None:
    m = _mixing("qkv_unbind_sdpa")  # (B, N, C) -> (B, heads, N, d)
    assert m[0] == (ONE, NO, NO, NO)
    assert m[1] == (ALL,) * 4 and m[2] == (ALL,) * 4  # every query reads every key


def test_causal_and_masked_attention_read_only_allowed_keys() -> None:
    causal = _mixing("sdpa_causal_rectangular", 1)  # keys: query 2 of 5 sees keys 0..2 of 6
    assert causal[2][2] == NO and causal[0] == (ONE, NO, NO, NO)  # key 5: never read
    assert _mixing("sdpa_causal_rectangular", 2)[2][2] == NO
    assert _mixing("sdpa_bool_mask_constant")[2][2] == MANY  # the same mask, square, constant
    assert _mixing("sdpa_causal_false_kwarg", 1)[2][2] == ALL
    assert _mixing("sdpa_inf_mask_constant")[2][2] == ALL  # a float mask is a parameter


def test_roll_and_relative_bias_are_not_top() -> None:
    rolled = _mixing("roll")
    assert rolled == tuple(tuple(ONE if a == k else NO for k in range(4)) for a in range(4))
    bias = _mixing("relative_position_bias")  # the table is a parameter: no data operand
    assert bias[0] == (ONE, NO, NO, NO) and bias[3][3] == ALL and bias[2][3] == NO


def test_window_partition_sizes_stay_symbolic() -> None:
    gm = _trace("window_partition")
    fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
    assert fact.inputs[0].layout == "NHWC"  # read by a linear: channels last
    (out,) = fact.outputs
    assert same(out.dims[0], B) and same(out.dims[1], H) and same(out.dims[2], W)
    proj = next(n.name for n in gm.graph.nodes if n.op == "call_module" and "proj" in n.name)
    windows = fact.node_shapes[proj].dims[0]
    assert windows.free_symbols == {B, H, W} and evaluate_dim(windows, fact.bindings) == 2 * 3 * 2


def test_cls_token_expanded_to_the_batch_is_symbolic() -> None:
    gm = _trace("cls_token_cat")
    fact = AnalysisManager().get(ShapeAnalysis(), gm, Subgraph.whole(gm))
    (out,) = fact.outputs
    assert same(out.dims[0], B) and same(out.dims[1], N + 1)
