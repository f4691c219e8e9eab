"""Evaluation: top-1 accuracy and mean cross-entropy of a model on a split."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alphac.modes import training_mode
from alphac.runtime.pipeline import Normalizer, Split, eval_batches


@dataclass(frozen=True)
class Evaluation:
    """Top-1 accuracy in [0, 1], mean loss (no label smoothing) and the number of images."""

    accuracy: float
    loss: float
    images: int


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, nothing on CPU (fp32 is faster there for small convnets)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def channels_last(model: nn.Module, device: torch.device, sample_shape: tuple[int, ...]) -> bool:
    """Whether to run ``model`` channels_last (CUDA and image inputs only); if so, its 4-D
    parameters and buffers are converted in place. Each tensor on its own: ``model.to(
    memory_format=...)`` fails on a model with 5-D buffers (swin's attention masks)."""
    if device.type != "cuda" or len(sample_shape) != 3:
        return False
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return True


#: The largest evaluation batch on a CPU. A batch of 1000 images spills a CPU's caches; at 128
#: (one thread, 28x28 inputs) zoo:small_cnn evaluated 1.47x faster, mobilenet_v2 1.77x,
#: resnet18 1.42x and vit_ti4 1.34x, with the same accuracy. A GPU keeps the recipe's batch.
CPU_EVAL_BATCH = 128


def eval_batch_size(batch_size: int, device: torch.device) -> int:
    """The batch :func:`evaluate` uses on ``device`` for a recipe's ``batch_size``."""
    return min(batch_size, CPU_EVAL_BATCH) if device.type == "cpu" else batch_size


def evaluate(
    model: nn.Module, split: Split, *, normalize: Normalizer, batch_size: int = 1000
) -> Evaluation:
    """Accuracy and loss of ``model`` (in eval mode, restored after) over all of ``split``, in
    batches of ``batch_size`` (at most :data:`CPU_EVAL_BATCH` on a CPU)."""
    device = split.labels.device
    batch_size = eval_batch_size(batch_size, device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    with training_mode(model, False), torch.no_grad(), autocast_for(device):
        for images, labels in eval_batches(split, batch_size=batch_size, normalize=normalize):
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
    n = len(split)
    if n == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    return Evaluation(correct.item() / n, loss_sum.item() / n, n)
