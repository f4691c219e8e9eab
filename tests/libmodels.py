"""Models from timm, torchvision and Hugging Face transformers, built offline without weights.

A test helper, never imported by alphac: the suite checks every stage on the models our users
bring, not only on the zoo. ``build(name)`` returns the model in the mode its library leaves it
(timm and torchvision: train mode) with 10 classes, sized for ``INPUT`` (CIFAR-sized inputs);
configs are shrunk (fewer blocks) where that keeps each family's structure and the suite fast.

torchvision's only wheel here is linked against CUDA torch, and importing it on the CPU build fails
with ``operator torchvision::nms does not exist``. Defining the schemas of ``torchvision::nms``
and ``torchvision::qnms`` with ``torch.library`` first makes it importable for building models
(no detection op is ever called). timm imports torchvision, so the same applies to timm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

INPUT = (2, 3, 32, 32)
_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY: list[torch.library.Library] = []


def _define_torchvision_schemas() -> None:
    if _LIBRARY:
        return
    try:
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
    except RuntimeError:  # already defined (a working torchvision build registered them)
        return
    _LIBRARY.append(lib)  # the registration lives as long as the Library object


def _timm(name: str, **kwargs) -> nn.Module:
    _define_torchvision_schemas()
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


def _timm_class(module: str, cls: str, **kwargs) -> nn.Module:
    """A timm architecture class built directly, for a config no registered name has."""
    _define_torchvision_schemas()
    import importlib

    return getattr(importlib.import_module(f"timm.models.{module}"), cls)(num_classes=10, **kwargs)


def _torchvision(name: str, **kwargs) -> nn.Module:
    _define_torchvision_schemas()
    import torchvision

    return getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs)


class Logits(nn.Module):
    """A transformers classifier returning its logits tensor, as a user would wrap it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def _hf(kind: str, **config) -> nn.Module:
    _define_torchvision_schemas()  # transformers' vision models import torchvision when present
    import transformers

    cfg = getattr(transformers, f"{kind}Config")(num_labels=10, **config)
    return Logits(getattr(transformers, f"{kind}ForImageClassification")(cfg))


_VIT = dict(img_size=32, patch_size=4, depth=2)
MODELS: dict[str, Callable[[], nn.Module]] = {
    "timm:resnet18": lambda: _timm("resnet18"),
    "timm:resnet26d": lambda: _timm("resnet26d"),
    "torchvision:resnet18": lambda: _torchvision("resnet18"),
    "timm:regnetx_002": lambda: _timm("regnetx_002"),
    "timm:efficientnet_b0": lambda: _timm("efficientnet_b0"),
    "timm:mobilenetv3_small_100": lambda: _timm("mobilenetv3_small_100"),
    "torchvision:mobilenet_v3_small": lambda: _torchvision("mobilenet_v3_small"),
    "timm:ghostnet_100": lambda: _timm("ghostnet_100"),
    "timm:repvgg_a0": lambda: _timm("repvgg_a0"),
    "timm:densenet121": lambda: _timm("densenet121"),
    "timm:convnext_atto": lambda: _timm("convnext_atto"),
    "timm:vit_tiny": lambda: _timm("vit_tiny_patch16_224", **_VIT),
    "timm:deit_tiny_distilled": lambda: _timm("deit_tiny_distilled_patch16_224", **_VIT),
    "timm:swin_tiny": lambda: _timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4,
                                    depths=(2, 2), num_heads=(3, 6), embed_dim=48),
    "timm:levit_128s": lambda: _timm("levit_128s", img_size=32),
    "timm:poolformer_s12": lambda: _timm("poolformer_s12"),
    "timm:mixer": lambda: _timm_class("mlp_mixer", "MlpMixer", img_size=32, patch_size=4,
                                     num_blocks=2, embed_dim=64),
    "transformers:vit": lambda: _hf("ViT", image_size=32, patch_size=4, hidden_size=64,
                                    num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=128),
    "transformers:swin": lambda: _hf("Swin", image_size=32, patch_size=2, embed_dim=24,
                                     depths=[1, 1], num_heads=[2, 4], window_size=4),
    "transformers:convnext": lambda: _hf("ConvNext", image_size=32, hidden_sizes=[16, 32],
                                         depths=[1, 1], num_stages=2),
}


def build(name: str, *, seed: int = 0) -> nn.Module:
    """The library model ``name`` (a key of :data:`MODELS`), weights seeded by ``seed``."""
    torch.manual_seed(seed)
    return MODELS[name]()
