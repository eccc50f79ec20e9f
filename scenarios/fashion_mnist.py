"""Split-Fashion-MNIST, from idx files: torchvision's layout under ``data.root`` or the Debian package.

Looks in ``<root>/FashionMNIST/raw`` first, then in ``/usr/share/datasets/fashion-mnist`` (Debian's
``dataset-fashion-mnist``). Files may be gzipped or not.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetNotFoundError
from scenarios.stream import TaskStream, class_incremental_stream

DEBIAN_FOLDER = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
               "sandal", "shirt", "sneaker", "bag", "ankle boot"]
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, into a uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    n_dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(n_dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims)
    if body.size != int(np.prod(shape)):
        raise DatasetNotFoundError(f"{path} is truncated: header says {shape}, found {body.size} bytes")
    return body.reshape(shape)


def _find(folder: Path, stem: str) -> Optional[Path]:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_folders(root: Optional[str]) -> list[Path]:
    folders = [Path(root).expanduser() / "FashionMNIST" / "raw"] if root else []
    return folders + [Path(DEBIAN_FOLDER)]


def load_fashion_mnist(root: Optional[str], download: bool = False):
    """Returns (train_images, train_labels, test_images, test_labels, folder); images uint8 [N, 28, 28]."""
    if download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(Path(root).expanduser()), train=True, download=True)
    searched = fashion_mnist_folders(root)
    for folder in searched:
        paths = {key: _find(folder, stem) for key, stem in FILES.items()}
        if all(paths.values()):
            arrays = {key: read_idx(path) for key, path in paths.items()}
            for split in ("train", "test"):
                if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
                    raise DatasetNotFoundError(f"{folder}: {split} images and labels differ in count")
            return (arrays["train_images"], arrays["train_labels"],
                    arrays["test_images"], arrays["test_labels"], folder)
        if any(paths.values()):
            absent = [FILES[key] for key, path in paths.items() if path is None]
            raise DatasetNotFoundError(
                f"Fashion-MNIST is incomplete in {folder}: missing {', '.join(absent)} (or .gz). "
                "Supply all four idx files there."
            )
    raise DatasetNotFoundError(
        "Fashion-MNIST not found; looked in: " + ", ".join(str(f) for f in searched) + ". "
        "Install the Debian package (apt-get install dataset-fashion-mnist), or put the four idx files "
        "in torchvision's layout under <data.root>/FashionMNIST/raw, or add data.download=true on a "
        "machine with internet."
    )


def split_fashion_mnist(root: Optional[str] = None, download: bool = False, n_experiences: Optional[int] = 5,
                        class_order_seed: Optional[int] = None,
                        class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                        increment: Optional[int] = None,
                        train_transform: Optional[Callable] = None,
                        eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental Split-Fashion-MNIST (5 experiences of 2 classes by default)."""
    train_images, train_labels, test_images, test_labels, folder = load_fashion_mnist(root, download)
    return class_incremental_stream(
        "split_fmnist",
        ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform),
        CLASS_NAMES, n_experiences, class_order_seed, class_order,
        description={"dataset": "Fashion-MNIST", "root": str(folder)},
        initial_classes=initial_classes, increment=increment,
    )
