"""ImageNet-style folders: ``DIR/train/<class>/*.jpg`` and ``DIR/val/<class>/*.jpg``, via Pillow.

Correct rather than fast: images are decoded when a batch asks for them, resized so the shorter
side is ``size * 256 / 224`` and center-cropped to ``size``. Class indices follow the sorted
class-folder names of the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alphac.errors import DatasetError
from alphac.runtime.datasets import IMAGE_SUFFIXES, Dataset, missing_error
from alphac.runtime.targets import Target

TEST_SPLIT_NAMES = ("val", "test")


@dataclass
class FolderImages:
    """Image files and their labels; ``take`` decodes, resizes and center-crops on demand."""

    paths: list[Path]
    labels: torch.Tensor
    size: tuple[int, int]
    channels: int = 3

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 ``(len(index), C, H, W)`` images, on ``index``'s device."""
        batch = [decode_image(self.paths[int(i)], self.size, self.channels) for i in index.cpu()]
        return torch.stack(batch).to(index.device)


def decode_image(path: Path, size: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """One image file as uint8 ``(C, H, W)``: shorter side resized, then center-cropped."""
    from PIL import Image, UnidentifiedImageError

    h, w = size
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            scale = max(h, w) * 256 / 224 / min(img.size)
            resized = img.resize(
                (max(w, round(img.width * scale)), max(h, round(img.height * scale))),
                Image.Resampling.BILINEAR,
            )
            left, top = (resized.width - w) // 2, (resized.height - h) // 2
            array = np.asarray(resized.crop((left, top, left + w, top + h)), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path}: {exc}", hint="remove or replace it") from None
    array = array.reshape(h, w, channels)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def list_images(split_dir: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    """Every image file under ``split_dir/<class>/`` for the known classes, in sorted order."""
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([index] * len(files))
    return paths, labels


def load_image_folders(target: Target, dirs: Sequence[Path]) -> Dataset:
    """The first of ``dirs`` holding ``train/`` and ``val/`` (or ``test/``) class folders."""
    for directory in dirs:
        train_dir = directory / "train"
        test_dir = next((directory / n for n in TEST_SPLIT_NAMES if (directory / n).is_dir()), None)
        if not train_dir.is_dir() or test_dir is None:
            continue
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        if not classes:
            raise DatasetError(f"{train_dir} has no class subfolders", hint="add DIR/train/<class>/")
        if len(classes) > target.num_classes:
            raise DatasetError(
                f"{train_dir} has {len(classes)} classes, more than {target.name}'s "
                f"{target.num_classes}",
                hint="use a model/target with enough classes",
            )
        size = target.input_shape[1:]
        splits = []
        for split_dir in (train_dir, test_dir):
            paths, labels = list_images(split_dir, classes)
            if not paths:
                raise DatasetError(f"no images found under {split_dir}", hint="add image files")
            splits.append(FolderImages(paths, torch.tensor(labels), size, target.input_shape[0]))
        return Dataset(target, splits[0], splits[1], str(directory))
    raise missing_error(target, dirs, "train/<class>/*.jpg and val/<class>/*.jpg")
