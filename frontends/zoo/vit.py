"""Vision Transformers: ViT-Ti and ViT-S with 16x16 patches (ImageNet) or 4x4 patches (CIFAR).

Class token, learned position embedding, pre-norm blocks, final LayerNorm and a linear head. The
attention is written out explicitly (``softmax(q @ k^T * scale) @ v``) rather than with a fused
kernel, so every step is visible in the traced graph.
"""

from __future__ import annotations

import torch
from torch import nn

from alphac.errors import InvalidInputShapeError


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches with a strided conv and flatten to tokens."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` to tokens ``(N, num_patches, dim)``."""
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and an output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the tokens of ``x`` (``(N, T, dim)``) and return the same shape."""
        batch, tokens, dim = x.shape[0], x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1) * self.scale
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class Mlp(nn.Module):
    """The transformer feed-forward network: Linear, GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply ``fc2(gelu(fc1(x)))``."""
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the two residual sub-layers."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier: patch embedding, class token, position embedding, blocks, norm, head."""

    def __init__(
        self,
        *,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        input_shape: tuple[int, int, int] = (3, 224, 224),
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height < patch_size or width < patch_size:
            raise InvalidInputShapeError(
                f"input {height}x{width} is smaller than the {patch_size}x{patch_size} patch",
                hint="use a larger --input-shape or a ViT with smaller patches (vit_ti4, vit_s4)",
            )
        self.num_patches = (height // patch_size) * (width // patch_size)
        self.patch_embed = PatchEmbed(channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Trunc-normal(0.02) tokens and linears, zero biases, unit LayerNorms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                # Patch projection: treat it like the linear layer it is.
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(N, C, H, W)`` to logits ``(N, num_classes)``."""
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        return self.head(x[:, 0])


def vit_ti16(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> VisionTransformer:
    """ViT-Ti/16: dim 192, depth 12, 3 heads, 16x16 patches."""
    return VisionTransformer(
        patch_size=16,
        dim=192,
        depth=12,
        num_heads=3,
        num_classes=num_classes,
        input_shape=input_shape,
    )


def vit_s16(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> VisionTransformer:
    """ViT-S/16: dim 384, depth 12, 6 heads, 16x16 patches."""
    return VisionTransformer(
        patch_size=16,
        dim=384,
        depth=12,
        num_heads=6,
        num_classes=num_classes,
        input_shape=input_shape,
    )


def vit_ti4(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> VisionTransformer:
    """ViT-Ti/4: dim 192, depth 12, 3 heads, 4x4 patches (for 32x32 inputs)."""
    return VisionTransformer(
        patch_size=4,
        dim=192,
        depth=12,
        num_heads=3,
        num_classes=num_classes,
        input_shape=input_shape,
    )


def vit_s4(
    *, num_classes: int = 1000, input_shape: tuple[int, int, int] = (3, 224, 224)
) -> VisionTransformer:
    """ViT-S/4: dim 384, depth 12, 6 heads, 4x4 patches (for 32x32 inputs)."""
    return VisionTransformer(
        patch_size=4,
        dim=384,
        depth=12,
        num_heads=6,
        num_classes=num_classes,
        input_shape=input_shape,
    )
