"""Reading datasets: IDX, CIFAR pickles (real format, corrupt, missing, malicious), folders, synthetic."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_writers import write_cifar, write_idx

from alphac.errors import DatasetError
from alphac.runtime import fetch as fetch_module
from alphac.runtime.datasets import load_dataset, read_cifar_pickle, read_idx, synthetic_images
from alphac.runtime.targets import get_target


def test_real_fashion_mnist_has_the_official_sizes(fashion_mnist):
    assert len(fashion_mnist.train) == 60000 and len(fashion_mnist.test) == 10000
    assert fashion_mnist.train.images.dtype == torch.uint8
    assert fashion_mnist.train.images.shape[1:] == (1, 28, 28)
    assert sorted(fashion_mnist.train.labels.unique().tolist()) == list(range(10))


def _write_mnist_like(directory: Path, n_train: int = 30, n_test: int = 10, gz: bool = True):
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{stem}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        write_idx(directory / f"{stem}-labels-idx1-ubyte", rng.integers(0, 10, (n,)), gz=gz)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reads_gzipped_and_raw_files(tmp_path, gz):
    _write_mnist_like(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path)
    assert (len(data.train), len(data.test)) == (30, 10)
    assert data.train.images.shape == (30, 1, 28, 28)


def test_truncated_idx_is_a_clear_error(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((5, 28, 28)), gz=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x0d\x03" + bytes(20))  # float32 magic: not unsigned bytes
    with pytest.raises(DatasetError, match="magic"):
        read_idx(path)


def test_missing_mnist_names_the_folder_searched(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in info.value.message
    assert info.value.hint and "--data-dir" in info.value.hint


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_reads_the_official_pickle_format(tmp_path, classes):
    write_cifar(tmp_path, classes=classes, per_batch=20)
    data = load_dataset(f"cifar{classes}", tmp_path, download=False)
    n_train = 100 if classes == 10 else 20
    assert (len(data.train), len(data.test)) == (n_train, 20)
    assert data.train.images.shape == (n_train, 3, 32, 32)
    assert data.train.images.dtype == torch.uint8
    assert int(data.train.labels.max()) < classes


def test_cifar_pixel_layout_is_channel_major(tmp_path):
    folder = write_cifar(tmp_path, per_batch=2)
    raw = read_cifar_pickle(folder / "test_batch")[b"data"]
    data = load_dataset("cifar10", folder, download=False)  # the batches folder itself works too
    red_plane = torch.from_numpy(raw[0, :1024].reshape(32, 32))
    assert torch.equal(data.test.images[0, 0], red_plane)


def test_corrupt_cifar_batch_is_a_clear_error(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DatasetError, match="data_batch_3.*corrupt"):
        load_dataset("cifar10", tmp_path, download=False)


def test_cifar_batch_with_wrong_contents_is_rejected(tmp_path):
    folder = write_cifar(tmp_path)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"labels": [1, 2]}, f, protocol=2)
    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path, download=False)


class _Evil:
    def __reduce__(self):
        # os.system, not print: Ray replaces builtins.print once imported in the test process
        import os

        return (os.system, ("echo pwned",))


def test_cifar_pickle_cannot_run_code(tmp_path, capfd):
    path = tmp_path / "evil"
    with open(path, "wb") as f:
        pickle.dump({b"data": _Evil()}, f, protocol=2)
    with pytest.raises(DatasetError, match=r"refusing to load (posix|os|nt)\.system"):
        read_cifar_pickle(path)
    assert "pwned" not in capfd.readouterr().out


def test_missing_cifar_names_every_place_looked(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar100", tmp_path / "empty", download=False)
    assert str(tmp_path / "empty") in info.value.message
    assert "cifar-100-python" in info.value.message
    assert "alphac data fetch cifar100" in info.value.hint


def test_cifar_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    # Port 9 (discard) on localhost refuses at once: the same path as an offline machine.
    refused = fetch_module.Resource("http://127.0.0.1:9/cifar-10-python.tar.gz", "0" * 32, True)
    monkeypatch.setitem(fetch_module.RESOURCES, "cifar10", (refused,))
    with pytest.raises(DatasetError) as info:
        load_dataset("cifar10", tmp_path / "dl", download=True)
    assert "could not download http://127.0.0.1:9/" in info.value.message
    assert "is not in" in info.value.message
    assert str(tmp_path / "dl") in info.value.hint
    assert not list((tmp_path / "dl").glob("*.part"))


def test_synthetic_is_deterministic_under_a_seed():
    a = synthetic_images((3, 8, 8), 4, 50, seed=3)
    b = synthetic_images((3, 8, 8), 4, 50, seed=3)
    c = synthetic_images((3, 8, 8), 4, 50, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    data = load_dataset("synthetic", synthetic_size=(40, 8), seed=1)
    again = load_dataset("synthetic", synthetic_size=(40, 8), seed=1)
    assert torch.equal(data.train.images, again.train.images)
    assert data.train.images.shape == (40, *get_target("synthetic").input_shape)


def test_image_folders_decode_resize_and_crop(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for index, name in enumerate(("cat", "dog")):
            (tmp_path / split / name).mkdir(parents=True)
            colour = (255, 0, 0) if index == 0 else (0, 0, 255)
            Image.new("RGB", (300, 250), colour).save(tmp_path / split / name / "a.jpg")
            Image.new("RGB", (250, 300), colour).save(tmp_path / split / name / "b.png")
    data = load_dataset("imagenet", tmp_path)
    assert (len(data.train), len(data.test)) == (4, 4)
    images = data.train.take(torch.tensor([0, 2]))
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.uint8
    assert data.train.labels.tolist() == [0, 0, 1, 1]
    assert images[0, 0].float().mean() > 200 and images[1, 2].float().mean() > 200


def test_undecodable_image_is_a_clear_error(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        (tmp_path / split / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    data = load_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="broken.jpg"):
        data.train.take(torch.tensor([0]))
