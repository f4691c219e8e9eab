"""Writers of datasets in their real on-disk formats (IDX, CIFAR python pickles), for tests."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, *, gz: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``gz``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def write_cifar(root: Path, *, classes: int = 10, per_batch: int = 20, seed: int = 0) -> Path:
    """A CIFAR-10 (or -100) python folder in the official pickle format, with random images."""
    rng = np.random.default_rng(seed)
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        label_key, meta = b"labels", ("batches.meta", {b"label_names": [b"c%d" % i for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        files = ["train", "test"]
        label_key, meta = b"fine_labels", ("meta", {b"fine_label_names": [b"c"] * 100})
    folder.mkdir(parents=True)
    for name in files:
        batch = {
            b"batch_label": name.encode(),
            label_key: [int(v) for v in rng.integers(0, classes, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"img%d.png" % i for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f, protocol=2)
    return folder
