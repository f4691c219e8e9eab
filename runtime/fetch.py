"""Downloading datasets where allowed (CIFAR-10/100, Fashion-MNIST), with checksums.

Files are fetched with urllib into a temporary name, checked (md5, and IDX structure for
Fashion-MNIST), then moved into place; archives are extracted with tarfile's ``data`` filter so no
member can escape the target folder. When the network refuses, a DatasetError says what to
download by hand and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from alphac.errors import DatasetError
from alphac.runtime.targets import Target, get_target

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class Resource:
    """One downloadable file: its URL, its md5 and whether it is a tar archive to extract."""

    url: str
    md5: str
    archive: bool = False

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


RESOURCES: dict[str, tuple[Resource, ...]] = {
    "cifar10": (Resource(CIFAR_URL + "cifar-10-python.tar.gz",
                         "c58f30108f718f92721af3b95e74349a", archive=True),),
    "cifar100": (Resource(CIFAR_URL + "cifar-100-python.tar.gz",
                          "eb9058c3a382ffc7106e4002c42a8d85", archive=True),),
    "fashion-mnist": (
        Resource(FASHION_MNIST_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource(FASHION_MNIST_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        Resource(FASHION_MNIST_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        Resource(FASHION_MNIST_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
}


def md5_of(path: Path) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(resource: Resource, dest_dir: Path, *, timeout: float = 30.0) -> Path:
    """Fetch ``resource`` into ``dest_dir`` (atomically) and verify its md5; the file's path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / resource.filename
    if final.is_file() and md5_of(final) == resource.md5:
        return final
    partial = final.with_name(final.name + ".part")
    try:
        with urllib.request.urlopen(resource.url, timeout=timeout) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f, length=1 << 20)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DatasetError(
            f"the data is not in {dest_dir}, and alphac could not download {resource.url}: "
            f"{reason}",
            hint=f"the network may be unreachable: fetch {resource.filename} on a machine that "
            f"can and unpack it into {dest_dir} (or pass --data-dir pointing at a folder that "
            "holds the data)",
        ) from None
    got = md5_of(partial)
    if got != resource.md5:
        partial.unlink(missing_ok=True)
        raise DatasetError(
            f"{resource.url} has md5 {got}, expected {resource.md5} (corrupt download)",
            hint="run the command again; if it persists, download the file by hand",
        )
    os.replace(partial, final)
    return final


def extract(archive: Path, dest_dir: Path) -> None:
    """Extract a tar archive into ``dest_dir``, refusing members that would escape it."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest_dir, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"cannot extract {archive}: {exc}", hint="delete it and fetch again") from None


def fetch(target: str | Target, data_dir: str | os.PathLike) -> Path:
    """Download (and unpack) ``target``'s data into ``data_dir``; that folder.

    Only CIFAR-10, CIFAR-100 and Fashion-MNIST can be downloaded; other targets raise a
    DatasetError that says how to provide the files.
    """
    spec = target if isinstance(target, Target) else get_target(target)
    dest = Path(data_dir).expanduser()
    if spec.name not in RESOURCES:
        raise DatasetError(
            f"alphac does not download {spec.name}",
            hint="synthetic needs no files; for mnist put the four IDX files, for imagenet "
            "DIR/train/<class>/ and DIR/val/<class>/ image folders, in --data-dir",
        )
    for resource in RESOURCES[spec.name]:
        path = download(resource, dest)
        if resource.archive:
            extract(path, dest)
    if spec.name == "fashion-mnist":
        from alphac.runtime.datasets import read_idx

        for resource in RESOURCES[spec.name]:
            read_idx(dest / resource.filename)  # structure check on top of the md5
    return dest
