"""Reading datasets from disk into memory: IDX (MNIST-like), CIFAR pickles, image folders, synthetic.

Every reader returns a :class:`Dataset` of a ``train`` and a ``test`` :class:`ImageSource`. Small
datasets are whole uint8 tensors (:class:`TensorImages`); ImageNet-style folders decode lazily with
Pillow (:class:`FolderImages`). A missing or corrupt dataset raises :class:`DatasetError` naming the
places searched and how to get the files.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from alphac.errors import DatasetError
from alphac.runtime.targets import Target, get_target

#: Where Debian's dataset-fashion-mnist package puts the files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}


class ImageSource(Protocol):
    """Images and labels addressable by index; ``take`` returns uint8 ``(N, C, H, W)``."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    def take(self, index: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TensorImages:
    """A dataset held as one uint8 image tensor and one int64 label tensor (any device)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` (a tensor on the same device)."""
        return self.images[index]


@dataclass(frozen=True)
class Dataset:
    """The train and test splits of a target, and where they were read from."""

    target: Target
    train: ImageSource
    test: ImageSource
    location: str


def default_dirs(target: Target) -> list[Path]:
    """Where a target's data is looked for when no ``--data-dir`` is given, in order."""
    root = Path(os.environ.get("ALPHAC_DATA_HOME", Path.home() / ".cache" / "alphac"))
    dirs = [root / target.name]
    if target.name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    return dirs


def search_dirs(target: Target, data_dir: str | os.PathLike | None) -> list[Path]:
    """``[data_dir]`` when given (``~`` expanded), else :func:`default_dirs`."""
    return [Path(data_dir).expanduser()] if data_dir is not None else default_dirs(target)


def load_dataset(
    target: str | Target,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    synthetic_size: tuple[int, int] = (5000, 1000),
    seed: int = 0,
) -> Dataset:
    """Read ``target``'s train and test splits into memory (folders: lazily).

    CIFAR is downloaded into the first searched folder when missing and ``download`` is set and
    the network allows; everything else reads local files only.
    """
    spec = target if isinstance(target, Target) else get_target(target)
    if spec.name == "synthetic":
        return synthetic_dataset(spec, *synthetic_size, seed=seed)
    dirs = search_dirs(spec, data_dir)
    if spec.name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(spec, dirs)
    if spec.name in CIFAR_LAYOUT:
        return _load_cifar_dataset(spec, dirs, download)
    from alphac.runtime.folders import load_image_folders

    return load_image_folders(spec, dirs)


def missing_error(target: Target, dirs: Sequence[Path], wanted: str) -> DatasetError:
    """The error for a dataset found nowhere: where we looked and how to get it."""
    looked = ", ".join(str(d) for d in dirs)
    return DatasetError(
        f"{target.name} data not found: looked for {wanted} in {looked}",
        hint=f"{_HOW_TO_GET[target.name]}, or pass --data-dir pointing at a folder that holds it",
    )


_HOW_TO_GET = {
    "fashion-mnist": "run `alphac data fetch fashion-mnist` (or `make data`)",
    "cifar10": "run `alphac data fetch cifar10`",
    "cifar100": "run `alphac data fetch cifar100`",
    "mnist": "download the four MNIST IDX files (train-images-idx3-ubyte.gz ...) yourself",
    "imagenet": "arrange images as DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg",
}


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (raw or .gz) as a numpy array; DatasetError when it is not valid IDX uint8."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}",
                           hint="if it is truncated or corrupt, delete it and fetch the dataset "
                           "again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(
            f"{path} is not an IDX file of unsigned bytes (bad magic number)",
            hint="delete it and fetch the dataset again",
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DatasetError(
            f"{path} is truncated or corrupt: header says {dims}, file has {len(raw)} bytes",
            hint="delete it and fetch the dataset again",
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _load_idx_split(target: Target, directory: Path, split: str) -> TensorImages:
    image_stem, label_stem = IDX_FILES[split]
    images = read_idx(_find_idx(directory, image_stem))  # type: ignore[arg-type]
    labels = read_idx(_find_idx(directory, label_stem))  # type: ignore[arg-type]
    c, h, w = target.input_shape
    if images.ndim != 3 or images.shape[1:] != (h, w) or labels.shape != images.shape[:1]:
        raise DatasetError(
            f"{target.name} {split} files in {directory} have shapes {images.shape} and "
            f"{labels.shape}, expected (N, {h}, {w}) images and N labels",
            hint="check that --data-dir points at the right dataset",
        )
    if labels.size and labels.max() >= target.num_classes:
        raise DatasetError(f"{target.name} {split} labels in {directory} exceed the class count")
    return TensorImages(
        torch.from_numpy(images.copy()).view(-1, c, h, w), torch.from_numpy(labels.astype(np.int64))
    )


def idx_complete(directory: Path) -> bool:
    """Whether ``directory`` holds all four IDX files (raw or gzipped)."""
    return all(_find_idx(directory, stem) for pair in IDX_FILES.values() for stem in pair)


def _load_idx_dataset(target: Target, dirs: Sequence[Path]) -> Dataset:
    for directory in dirs:
        if idx_complete(directory):
            train = _load_idx_split(target, directory, "train")
            test = _load_idx_split(target, directory, "test")
            return Dataset(target, train, test, str(directory))
    partial = next((d for d in dirs if d.is_dir() and _idx_missing(d) != _IDX_STEMS), None)
    if partial is not None:  # some files there: say which are missing, not "not found"
        missing = ", ".join(f"{stem}[.gz]" for stem in _idx_missing(partial))
        raise DatasetError(
            f"{target.name} data in {partial} is incomplete: {missing} missing",
            hint=f"{_HOW_TO_GET[target.name]}, or copy the missing files into {partial}",
        )
    raise missing_error(target, dirs, "train-images-idx3-ubyte[.gz] and the other IDX files")


_IDX_STEMS = [stem for pair in IDX_FILES.values() for stem in pair]


def _idx_missing(directory: Path) -> list[str]:
    return [stem for stem in _IDX_STEMS if _find_idx(directory, stem) is None]


# --- CIFAR (python pickle batches) ----------------------------------------------------------


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":
            from numpy._core import multiarray

            return multiarray._reconstruct
        return getattr(np, name)


def read_cifar_pickle(path: Path) -> dict:
    """A CIFAR batch file as a dict with bytes keys, loaded without running any code."""
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError,
            KeyError, AttributeError) as exc:
        raise DatasetError(
            f"{path} is corrupt or not a CIFAR batch file ({type(exc).__name__}: {exc})",
            hint="delete the folder and fetch the dataset again",
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path} does not hold a CIFAR batch (a dict)", hint="fetch it again")
    return obj


def _cifar_arrays(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = read_cifar_pickle(path)
    data, labels = batch.get(b"data"), batch.get(label_key)
    try:
        images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        targets = np.asarray(labels, dtype=np.int64).reshape(-1)
        valid = images.shape[0] == targets.shape[0] and (targets < num_classes).all()
    except (TypeError, ValueError):
        valid = False
    if data is None or labels is None or not valid or targets.min(initial=0) < 0:
        raise DatasetError(
            f"{path} lacks valid b'data' (N x 3072 uint8) and {label_key!r} entries",
            hint="delete the folder and fetch the dataset again",
        )
    return images, targets


def cifar_folder(target: Target, directory: Path) -> Path | None:
    """The folder holding ``target``'s CIFAR batches under ``directory`` (or it itself), if any."""
    sub, train_files, test_files, _ = CIFAR_LAYOUT[target.name]
    for candidate in (directory / sub, directory):
        if all((candidate / f).is_file() for f in [*train_files, *test_files]):
            return candidate
    return None


def _load_cifar_split(target: Target, folder: Path, files: list[str]) -> TensorImages:
    label_key = CIFAR_LAYOUT[target.name][3]
    parts = [_cifar_arrays(folder / f, label_key, target.num_classes) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return TensorImages(torch.from_numpy(images), torch.from_numpy(labels))


def _load_cifar_dataset(target: Target, dirs: Sequence[Path], download: bool) -> Dataset:
    sub, train_files, test_files, _ = CIFAR_LAYOUT[target.name]
    folder = next((f for d in dirs if (f := cifar_folder(target, d)) is not None), None)
    if folder is None and download:
        from alphac.runtime.fetch import fetch

        fetch(target, dirs[0])
        folder = cifar_folder(target, dirs[0])
    if folder is None:
        raise missing_error(target, dirs, f"{sub}/{train_files[0]} ... {test_files[0]}")
    train = _load_cifar_split(target, folder, train_files)
    test = _load_cifar_split(target, folder, test_files)
    return Dataset(target, train, test, str(folder))


# --- synthetic ------------------------------------------------------------------------------


def synthetic_images(
    shape: tuple[int, int, int], num_classes: int, n: int, *, seed: int, prototypes_seed: int = 0
) -> TensorImages:
    """``n`` random uint8 images of ``shape``, deterministic under ``seed``.

    Each class has a fixed random prototype (from ``prototypes_seed``) that its images blend with
    noise, so a model can learn the task and tests can see the loss fall.
    """
    g = torch.Generator().manual_seed(prototypes_seed)
    prototypes = torch.rand((num_classes, *shape), generator=g)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    noise = torch.rand((n, *shape), generator=g)
    images = (0.5 * prototypes[labels] + 0.5 * noise).mul_(255).round_().to(torch.uint8)
    return TensorImages(images, labels)


def synthetic_dataset(target: Target, n_train: int, n_test: int, *, seed: int = 0) -> Dataset:
    """The synthetic target: train and test splits drawn from the same class prototypes."""
    train = synthetic_images(target.input_shape, target.num_classes, n_train, seed=2 * seed + 1)
    test = synthetic_images(target.input_shape, target.num_classes, n_test, seed=2 * seed + 2)
    return Dataset(target, train, test, f"synthetic(seed={seed})")
