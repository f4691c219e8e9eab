"""Random small models for the pipeline fuzz: a hypothesis strategy of specs and their modules.

A :class:`ModelSpec` is a layout (``image``: ``(B, C, H, W)``, or ``tokens``: ``(B, N, C)``), an
input shape and a list of stages; a stage repeats one kind of unit (conv, linear, norm,
residual, concat, attention, mha) ``depth`` times at one width, with its norm (batch, layer,
group) and activation. Every kind is its own ``nn.Module`` class, so a stage of two or more units
(or one kind used by two stages) is what :func:`~alphac.frontends.find_blocks` finds as a block;
a kind used once is no block, and a model made of such stages mutates as a whole. :func:`build`
turns a spec into a seeded, deterministic module in eval mode.

Example::

    spec = ModelSpec("image", (2, 3, 8, 8), (StageSpec("residual", 8, 2, "batch", "relu"),), 10)
    build(spec)      # FuzzNet: stem conv 3->8, ResidualUnit x2, pool, linear head
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

IMAGE, TOKENS = "image", "tokens"
KINDS = ("conv", "linear", "norm", "residual", "concat", "attention", "mha")
NORMS = ("batch", "layer", "group")
ACTIVATIONS = ("relu", "gelu", "silu", "sigmoid", "tanh", "none")
WIDTHS = (4, 6, 8, 12, 16)


@dataclass(frozen=True)
class StageSpec:
    """``depth`` units of ``kind`` at ``width``; ``pool`` halves an image's H and W first,
    ``stride`` 2 makes a first conv unit do it; ``dropout`` follows linear units' activation."""

    kind: str
    width: int
    depth: int
    norm: str
    act: str
    kernel: int = 3
    heads: int = 1
    pool: bool = False
    stride: int = 1
    dropout: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A random model: layout, input shape (batch first), stages, classes and the init seed."""

    layout: str
    input_shape: tuple[int, ...]
    stages: tuple[StageSpec, ...]
    classes: int = 10
    seed: int = 0


# ---- building blocks ------------------------------------------------------------------------
def _activation(name: str, x: torch.Tensor, module: nn.Module | None) -> torch.Tensor:
    """Modules for some activations and functions for others, so both forms are traced."""
    if module is not None:
        return module(x)
    if name == "silu":
        return F.silu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    return x


def _activation_module(name: str) -> nn.Module | None:
    return {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}.get(name)


def _norm_module(kind: str, c: int, layout: str) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c) if layout == IMAGE else nn.BatchNorm1d(c)
    if kind == "group":
        return nn.GroupNorm(2, c)
    return nn.LayerNorm(c)


def _normed(norm: nn.Module, x: torch.Tensor, layout: str) -> torch.Tensor:
    """Apply ``norm`` over the channels of ``x``, moving them where the norm expects them."""
    channels_last = isinstance(norm, nn.LayerNorm)
    if layout == IMAGE and channels_last:  # ConvNeXt's way: permute, normalize, permute back
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    if layout == TOKENS and not channels_last:
        return norm(x.transpose(1, 2)).transpose(1, 2)
    return norm(x)


def _conv(cin: int, cout: int, kernel: int, layout: str, stride: int = 1) -> nn.Module:
    cls = nn.Conv2d if layout == IMAGE else nn.Conv1d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2)


def _conved(conv: nn.Module, x: torch.Tensor, layout: str) -> torch.Tensor:
    return conv(x) if layout == IMAGE else conv(x.transpose(1, 2)).transpose(1, 2)


def _linear_over_channels(linear: nn.Linear, x: torch.Tensor, layout: str) -> torch.Tensor:
    return linear(x) if layout == TOKENS else linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _as_tokens(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2) if layout == IMAGE else x


def _from_tokens(t: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    return t.transpose(1, 2).reshape(like.shape) if layout == IMAGE else t


class ConvUnit(nn.Module):
    """conv (``cin -> cout``) -> norm -> activation."""

    def __init__(self, cin: int, cout: int, s: StageSpec, layout: str, stride: int = 1) -> None:
        super().__init__()
        self.layout, self.act_name = layout, s.act
        self.conv = _conv(cin, cout, s.kernel, layout, stride)
        self.norm = _norm_module(s.norm, cout, layout)
        self.act = _activation_module(s.act)

    def forward(self, x):
        y = _normed(self.norm, _conved(self.conv, x, self.layout), self.layout)
        return _activation(self.act_name, y, self.act)


class LinearUnit(nn.Module):
    """linear over the channels (``cin -> cout``) -> activation (-> dropout) -> norm."""

    def __init__(self, cin: int, cout: int, s: StageSpec, layout: str, stride: int = 1) -> None:
        super().__init__()
        self.layout, self.act_name = layout, s.act
        self.fc = nn.Linear(cin, cout)
        self.act = _activation_module(s.act)
        self.drop = nn.Dropout(0.1) if s.dropout else nn.Identity()
        self.norm = _norm_module(s.norm, cout, layout)

    def forward(self, x):
        y = _activation(self.act_name, _linear_over_channels(self.fc, x, self.layout), self.act)
        return _normed(self.norm, self.drop(y), self.layout)


class NormUnit(nn.Module):
    """norm -> activation (relu when the stage has none) -> a constant scale."""

    def __init__(self, c: int, s: StageSpec, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.act_name = s.act if s.act != "none" else "relu"
        self.norm = _norm_module(s.norm, c, layout)
        self.act = _activation_module(self.act_name)

    def forward(self, x):
        return _activation(self.act_name, _normed(self.norm, x, self.layout), self.act) * 0.5


class ResidualUnit(nn.Module):
    """``x + conv2(act(norm(conv1(x))))`` for images, ``x + fc2(act(fc1(norm(x))))`` for tokens."""

    def __init__(self, c: int, s: StageSpec, layout: str) -> None:
        super().__init__()
        self.layout, self.act_name = layout, s.act
        self.norm = _norm_module(s.norm, c, layout)
        self.act = _activation_module(s.act)
        if layout == IMAGE:
            self.a, self.b = _conv(c, c, s.kernel, layout), _conv(c, c, 1, layout)
        else:
            self.a, self.b = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)

    def forward(self, x):
        if self.layout == IMAGE:
            y = _activation(self.act_name, _normed(self.norm, self.a(x), self.layout), self.act)
        else:
            y = _activation(self.act_name, self.a(_normed(self.norm, x, self.layout)), self.act)
        return x + self.b(y)


class ConcatUnit(nn.Module):
    """Two branches concatenated on the channels (``c//2`` and ``c - c//2`` wide), then a norm."""

    def __init__(self, c: int, s: StageSpec, layout: str) -> None:
        super().__init__()
        self.layout, self.act_name = layout, s.act
        half = c // 2
        self.left = _conv(c, half, 1, layout) if layout == IMAGE else nn.Linear(c, half)
        self.right = _conv(c, c - half, s.kernel, layout)
        self.act = _activation_module(s.act)
        self.norm = _norm_module(s.norm, c, layout)

    def forward(self, x):
        left = self.left(x)
        right = _activation(self.act_name, _conved(self.right, x, self.layout), self.act)
        dim = 1 if self.layout == IMAGE else -1
        return _normed(self.norm, torch.cat([left, right], dim=dim), self.layout)


class AttentionUnit(nn.Module):
    """Pre-norm multi-head self-attention written out (qkv, softmax(q k^T) v, proj), residual."""

    def __init__(self, c: int, s: StageSpec, layout: str) -> None:
        super().__init__()
        self.layout, self.heads = layout, s.heads
        self.norm = nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        t = self.norm(_as_tokens(x, self.layout))
        b, n, c = t.shape
        qkv = self.qkv(t).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5, dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + _from_tokens(out, x, self.layout)


class MhaUnit(nn.Module):
    """``nn.MultiheadAttention`` over the tokens, residual, then the stage's norm."""

    def __init__(self, c: int, s: StageSpec, layout: str) -> None:
        super().__init__()
        self.layout = layout
        self.attn = nn.MultiheadAttention(c, s.heads, batch_first=True)
        self.norm = _norm_module(s.norm, c, layout)

    def forward(self, x):
        t = _as_tokens(x, self.layout)
        out, _ = self.attn(t, t, t, need_weights=False)
        return _normed(self.norm, x + _from_tokens(out, x, self.layout), self.layout)


_SAME_WIDTH = {"norm": NormUnit, "residual": ResidualUnit, "concat": ConcatUnit,
               "attention": AttentionUnit, "mha": MhaUnit}
_RESIZING = {"conv": ConvUnit, "linear": LinearUnit}


def _unit(kind: str, cin: int, s: StageSpec, layout: str, stride: int = 1) -> nn.Module:
    if kind in _RESIZING:
        return _RESIZING[kind](cin, s.width, s, layout, stride)
    return _SAME_WIDTH[kind](s.width, s, layout)


class FuzzNet(nn.Module):
    """stem -> stages -> global average (over H, W or the tokens) -> linear head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.layout = spec.layout
        first = spec.stages[0].width
        if spec.layout == IMAGE:
            self.stem = nn.Conv2d(spec.input_shape[1], first, 3, padding=1)
        else:
            self.stem = nn.Linear(spec.input_shape[-1], first)
        stages, width, side = [], first, spec.input_shape[-1]
        for s in spec.stages:
            pool = s.pool and spec.layout == IMAGE and side >= 2
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
            side = side // 2 if pool else side
            if width != s.width and s.kind not in _RESIZING:  # a transition, no block
                layers.append(_conv(width, s.width, 1, spec.layout) if spec.layout == IMAGE
                              else nn.Linear(width, s.width))
                width = s.width
            for i in range(s.depth):
                down = i == 0 and s.stride == 2 and s.kind == "conv" and spec.layout == IMAGE
                layers.append(_unit(s.kind, width, s, spec.layout, 2 if down else 1))
                side = (side + 1) // 2 if down else side
                width = s.width
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(width, spec.classes)

    def forward(self, x):
        y = self.stages(self.stem(x))
        pooled = y.mean(dim=(2, 3)) if self.layout == IMAGE else y.mean(dim=1)
        return self.head(pooled)


def build(spec: ModelSpec) -> nn.Module:
    """The spec's module in eval mode, initialised from ``spec.seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        return FuzzNet(spec).eval()


def example_input(spec: ModelSpec) -> torch.Tensor:
    return torch.randn(spec.input_shape, generator=torch.Generator().manual_seed(spec.seed))


# ---- the strategy -----------------------------------------------------------------------------
@st.composite
def stage_specs(draw, layout: str) -> StageSpec:
    kind = draw(st.sampled_from(KINDS))
    width = draw(st.sampled_from(WIDTHS))
    return StageSpec(kind, width, depth=draw(st.integers(1, 3)), norm=draw(st.sampled_from(NORMS)),
                     act=draw(st.sampled_from(ACTIVATIONS)), kernel=draw(st.sampled_from((1, 3))),
                     heads=draw(st.sampled_from((1, 2))),
                     pool=layout == IMAGE and draw(st.booleans()),
                     stride=draw(st.sampled_from((1, 2))), dropout=draw(st.booleans()))


@st.composite
def model_specs(draw) -> ModelSpec:
    """A small random model: 1-3 stages of 1-3 units, widths 4-16, inputs of a few hundred
    values, so one trace, mutation and backward pass take well under a second."""
    layout = draw(st.sampled_from((IMAGE, TOKENS)))
    if layout == IMAGE:
        side = draw(st.sampled_from((4, 6, 8)))
        shape = (2, draw(st.sampled_from((1, 3))), side, side)
    else:
        shape = (2, draw(st.sampled_from((3, 4, 7))), draw(st.sampled_from((5, 8))))
    stages = tuple(draw(st.lists(stage_specs(layout), min_size=1, max_size=3)))
    return ModelSpec(layout, shape, stages, classes=draw(st.sampled_from((3, 10))),
                     seed=draw(st.integers(0, 2**16)))
