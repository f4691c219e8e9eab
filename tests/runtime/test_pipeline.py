"""The data pipeline: seeded disjoint splits, subsets, batched crop/flip, normalization."""

from __future__ import annotations

import pytest
import torch

from alphac.runtime.datasets import Dataset, TensorImages
from alphac.runtime.pipeline import (
    Normalizer,
    prepare_data,
    random_crop,
    random_flip,
    split_indices,
    train_batches,
)
from alphac.runtime.targets import get_target


def _dataset(n_train: int = 100, n_test: int = 30) -> Dataset:
    target = get_target("synthetic")
    images = torch.arange(n_train, dtype=torch.int64).view(-1, 1, 1, 1).expand(-1, 3, 32, 32)
    train = TensorImages(images.to(torch.uint8).contiguous(), torch.arange(n_train) % 10)
    test = TensorImages(torch.zeros(n_test, 3, 32, 32, dtype=torch.uint8), torch.zeros(n_test).long())
    return Dataset(target, train, test, "test")


def test_splits_are_disjoint_cover_everything_and_are_seeded():
    train, val = split_indices(1000, 0.1, seed=5)
    assert len(val) == 100 and len(train) == 900
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    again_train, again_val = split_indices(1000, 0.1, seed=5)
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, split_indices(1000, 0.1, seed=6)[1])


def test_prepared_splits_hold_the_right_images():
    data = prepare_data(_dataset(), val_fraction=0.2, seed=1)
    train_ids = data.train.source.images[:, 0, 0, 0].tolist()
    val_ids = data.val.source.images[:, 0, 0, 0].tolist()
    assert len(train_ids) == 80 and len(val_ids) == 20
    assert sorted(train_ids + val_ids) == list(range(100))
    assert data.train.labels.tolist() == [i % 10 for i in train_ids]
    assert len(data.test) == 30


def test_subset_trains_on_images_outside_the_validation_split_and_keeps_the_test_set():
    a = prepare_data(_dataset(), val_fraction=0.1, subset=40, seed=3)
    b = prepare_data(_dataset(), val_fraction=0.1, subset=40, seed=3)
    train_ids = set(a.train.source.images[:, 0, 0, 0].tolist())
    val_ids = set(a.val.source.images[:, 0, 0, 0].tolist())
    # val is 10% of the whole training set, never a slice of the subset; test is untouched
    assert len(train_ids) == 40 and len(val_ids) == 10 and not train_ids & val_ids
    assert len(a.test) == 30
    assert torch.equal(a.train.source.images, b.train.source.images)
    assert torch.equal(a.val.source.images, b.val.source.images)
    # the validation split does not depend on the subset, so runs at any --subset compare
    full = prepare_data(_dataset(), val_fraction=0.1, seed=3)
    assert torch.equal(full.val.source.images, a.val.source.images)


def test_test_subset_is_asked_for_explicitly():
    assert len(prepare_data(_dataset(), val_fraction=0.1, subset=40, seed=0, test_subset=7).test) == 7


def test_val_subset_keeps_part_of_the_held_out_images_and_trains_on_none_of_them():
    whole = prepare_data(_dataset(), val_fraction=0.2, subset=40, seed=2)
    part = prepare_data(_dataset(), val_fraction=0.2, subset=40, seed=2, val_subset=6)
    held = set(whole.val.source.images[:, 0, 0, 0].tolist())
    kept = set(part.val.source.images[:, 0, 0, 0].tolist())
    assert len(kept) == 6 and kept <= held
    # the training subset is the same, outside the whole validation split
    assert torch.equal(part.train.source.images, whole.train.source.images)
    assert not set(part.train.source.images[:, 0, 0, 0].tolist()) & held


def test_a_subset_too_large_to_hold_out_carves_validation_from_itself():
    data = prepare_data(_dataset(), val_fraction=0.1, subset=95, seed=0)
    train_ids = set(data.train.source.images[:, 0, 0, 0].tolist())
    val_ids = set(data.val.source.images[:, 0, 0, 0].tolist())
    assert len(train_ids) + len(val_ids) == 95 and not train_ids & val_ids


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randint(0, 255, (64, 2, 6, 7), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(x)):
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[i, :, dy:dy + 6, dx:dx + 7], out[i])]
        assert windows, f"image {i} is not a crop of its padded input"
        shifts.add(windows[0])
    assert len(shifts) > 5  # offsets really vary over the batch


def test_random_flip_mirrors_about_half_the_images():
    x = torch.randint(0, 255, (400, 1, 4, 5), dtype=torch.uint8)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [bool(torch.equal(o, xi.flip(2))) for o, xi in zip(out, x, strict=True)]
    kept = [bool(torch.equal(o, xi)) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 150 < sum(flipped) < 250


def test_normalizer_matches_the_textbook_formula():
    target = get_target("cifar10")
    x = torch.randint(0, 256, (3, 3, 4, 4), dtype=torch.uint8)
    out = Normalizer(target, torch.device("cpu"), channels_last=True)(x)
    mean = torch.tensor(target.mean).view(1, 3, 1, 1)
    std = torch.tensor(target.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("augment", [False, True])
def test_train_batches_cover_an_epoch_once(augment):
    data = prepare_data(_dataset(), val_fraction=0.0, seed=0)
    target = get_target("cifar10")  # pad 4 + flip: labels must still follow their images
    norm = Normalizer(target, torch.device("cpu"), channels_last=False)
    seen = []
    for images, labels in train_batches(data.train, batch_size=32, target=target, augment=augment,
                                        generator=torch.Generator().manual_seed(0),
                                        normalize=norm):
        assert images.shape == (32, 3, 32, 32) and images.dtype == torch.float32
        seen.extend(labels.tolist())
    assert len(seen) == 96  # three full batches, the partial one dropped
    assert len(set(seen)) == 10
