"""Write Fashion-MNIST as a CIFAR-10 folder (32x32 RGB, the official pickle format).

For ``bench/gpu_search.sh`` where real CIFAR-10 is absent: each 28x28 grey image is padded by 2
pixels to 32x32 and repeated over 3 channels, so a CIFAR-scale search (3x32x32 inputs, the
cifar10 target's augmentation and normalisation) runs on real images. Usage::

    python bench/fmnist_as_cifar.py OUT_DIR      # writes OUT_DIR/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from alphac.runtime.datasets import load_dataset
from alphac.runtime.targets import get_target


def _batch(images: np.ndarray, labels: np.ndarray, name: str) -> dict:
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    rgb = np.repeat(padded[:, None], 3, axis=1).reshape(len(images), 3 * 32 * 32)
    return {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
            b"data": rgb.astype(np.uint8), b"filenames": [b"%d.png" % i
                                                          for i in range(len(images))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data-dir", help="where Fashion-MNIST is (default: alphac's search)")
    args = parser.parse_args()
    data = load_dataset(get_target("fashion-mnist"), args.data_dir)
    folder = args.out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def as_uint8(split) -> tuple[np.ndarray, np.ndarray]:
        images = split.images.numpy()
        images = images[:, 0] if images.ndim == 4 else images
        if images.dtype != np.uint8:
            images = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
        return images, split.labels.numpy()

    train_x, train_y = as_uint8(data.train)
    for i, (xs, ys) in enumerate(zip(np.array_split(train_x, 5), np.array_split(train_y, 5),
                                     strict=True), start=1):
        with open(folder / f"data_batch_{i}", "wb") as handle:
            pickle.dump(_batch(xs, ys, f"data_batch_{i}"), handle, protocol=2)
    test_x, test_y = as_uint8(data.test)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump(_batch(test_x, test_y, "test_batch"), handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"class%d" % i for i in range(10)]}, handle, protocol=2)
    print(f"wrote {len(train_x)} train and {len(test_x)} test images to {folder}")


if __name__ == "__main__":
    main()
