"""The data pipeline: seeded splits, device-resident uint8 data, batched augmentation.

Small datasets live on the training device as uint8 tensors; each step indexes a batch, crops
and flips it with a few batched tensor ops and normalizes it to float, so the training loop runs
no per-sample Python. The validation split is carved from the training set with a seeded
permutation; the test split is kept for final reports only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alphac.runtime.datasets import Dataset, ImageSource, TensorImages
from alphac.runtime.targets import Target


@dataclass
class Split:
    """Some images of a source (``index`` into it), on ``device``."""

    source: ImageSource
    index: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def batch(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and int64 labels at ``positions`` (0..len-1) of this split."""
        return self.source.take(self.index[positions]), self.labels[positions]


@dataclass
class TaskData:
    """What training needs: the target and its train, validation and test splits on a device."""

    target: Target
    train: Split
    val: Split
    test: Split
    device: torch.device


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint ``(train, val)`` index tensors covering ``range(n)``, from a seeded shuffle."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    if val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _on_device(source: ImageSource, index: torch.Tensor, device: torch.device) -> Split:
    if isinstance(source, TensorImages):
        # Gather once so each split is a contiguous device tensor indexed by position.
        moved = TensorImages(source.images[index].to(device), source.labels[index].to(device))
        return Split(moved, torch.arange(len(index), device=device), moved.labels)
    return Split(source, index.to(device), source.labels[index].to(device))


def prepare_data(
    dataset: Dataset,
    *,
    val_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    test_subset: int | None = None,
    val_subset: int | None = None,
) -> TaskData:
    """Split ``dataset`` (seeded) and move it to ``device``.

    The validation split is ``val_fraction`` of the whole training set, drawn (seeded) first;
    ``subset`` then keeps a seeded random ``subset`` of the *remaining* images for training, so a
    small training subset still gets a large validation split from images it never trains on
    (60,000 Fashion-MNIST images at 0.1: 6,000 validation images for any subset). Where the
    rest cannot hold ``subset`` images (a small dataset), the validation split is carved from
    the subset instead. ``val_subset`` keeps a seeded random part of the validation split (its
    other images are not trained on either), for quick runs. The test split is the whole test
    set unless ``test_subset`` is given.
    Example: ``subset=3000`` on Fashion-MNIST gives 3,000 train, 6,000 val and 10,000 test.
    """
    device = torch.device(device)
    n = len(dataset.train)
    rest, val = split_indices(n, val_fraction, seed)
    if val_subset is not None and val_subset < len(val):
        keep = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed + 104729))
        val = val[keep[:val_subset]].sort().values
    if subset is not None and subset < len(rest):
        pick = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 7919))
        train = rest[pick[:subset]].sort().values
    elif subset is not None and subset < n:  # too small to hold out: carve val from the subset
        pool = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))[:subset]
        train_pos, val_pos = split_indices(len(pool), val_fraction, seed)
        train, val = pool[train_pos], pool[val_pos]
    else:
        train = rest
    n_test = len(dataset.test) if test_subset is None else min(test_subset, len(dataset.test))
    return TaskData(
        dataset.target,
        _on_device(dataset.train, train, device),
        _on_device(dataset.train, val, device),
        _on_device(dataset.test, torch.arange(n_test), device),
        device,
    )


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to ``pad`` pixels (zero padding), as one gather over the batch."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)).flatten(2)
    offsets = torch.randint(0, 2 * pad + 1, (2, n, 1, 1), generator=generator, device=x.device)
    rows = offsets[0] + torch.arange(h, device=x.device).view(1, h, 1)
    cols = offsets[1] + torch.arange(w, device=x.device).view(1, 1, w)
    flat = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, flat).view(n, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


class Normalizer:
    """uint8 images -> float ``(x / 255 - mean) / std`` as one fused multiply-add per element."""

    def __init__(self, target: Target, device: torch.device, channels_last: bool) -> None:
        std = torch.tensor(target.std, device=device).view(1, -1, 1, 1)
        mean = torch.tensor(target.mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        return torch.addcmul(self.shift, x.float(), self.scale)


def augment_batch(x: torch.Tensor, target: Target, generator: torch.Generator) -> torch.Tensor:
    """The target's augmentation (random crop with padding, then flip) of a uint8 batch."""
    if target.pad:
        x = random_crop(x, target.pad, generator)
    if target.flip:
        x = random_flip(x, generator)
    return x


def train_batches(
    split: Split,
    *,
    batch_size: int,
    target: Target,
    augment: bool,
    generator: torch.Generator,
    normalize: Normalizer,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented, normalized full batches (the last partial one dropped).

    For in-memory data the whole epoch is shuffled and augmented in a few large tensor ops up
    front, so each step only slices and normalizes: fewer, bigger ops are faster on a GPU and
    on a CPU shared with other jobs.
    """
    device = split.labels.device
    perm = torch.randperm(len(split), generator=generator, device=device)
    whole_epoch = isinstance(split.source, TensorImages)
    if whole_epoch:
        epoch_images, epoch_labels = split.batch(perm)
        if augment:
            epoch_images = augment_batch(epoch_images, target, generator)
    for start in range(0, len(split) - batch_size + 1, batch_size):
        if whole_epoch:
            images = epoch_images[start : start + batch_size]
            labels = epoch_labels[start : start + batch_size]
        else:
            images, labels = split.batch(perm[start : start + batch_size])
            if augment:
                images = augment_batch(images, target, generator)
        yield normalize(images), labels


def eval_batches(
    split: Split, *, batch_size: int, normalize: Normalizer
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split in order, normalized, without augmentation."""
    device = split.labels.device
    for start in range(0, len(split), batch_size):
        positions = torch.arange(start, min(start + batch_size, len(split)), device=device)
        images, labels = split.batch(positions)
        yield normalize(images), labels
