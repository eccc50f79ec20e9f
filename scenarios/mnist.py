"""MNIST from idx files in torchvision's layout (``<root>/MNIST/raw``), gzipped or not.

A member of ZSCL's MTIL sequence (``configs/scenario/mtil.yaml``); alone, ``scenario=mnist`` is one
experience of the 10 digits. Class names are the digits' words ("zero" ... "nine"), as CLIP's own
zero-shot evaluation of MNIST names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetNotFoundError
from scenarios.fashion_mnist import FILES, _find, read_idx
from scenarios.stream import TaskStream, class_incremental_stream

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def load_mnist(root: str, download: bool = False):
    """Returns (train_images, train_labels, test_images, test_labels, folder); images uint8 [N, 28, 28]."""
    if download:
        from torchvision.datasets import MNIST

        MNIST(str(Path(root).expanduser()), train=True, download=True)
    folder = Path(root).expanduser() / "MNIST" / "raw"
    paths = {key: _find(folder, stem) for key, stem in FILES.items()}
    absent = [FILES[key] for key, path in paths.items() if path is None]
    if absent:
        raise DatasetNotFoundError(
            f"MNIST not found: looked in {folder} for {', '.join(absent)} (or .gz). Put the four idx files there "
            f"(torchvision's layout under data.root={root}), or add data.download=true on a machine with internet.")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise DatasetNotFoundError(f"{folder}: {split} images and labels differ in count")
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], folder


def mnist_stream(root: str, download: bool = False, n_experiences: Optional[int] = 1,
                 class_order_seed: Optional[int] = None, class_order: Optional[Union[str, Sequence[int]]] = None,
                 initial_classes: int = 0, increment: Optional[int] = None,
                 train_transform: Optional[Callable] = None, eval_transform: Optional[Callable] = None) -> TaskStream:
    train_images, train_labels, test_images, test_labels, folder = load_mnist(root, download)
    return class_incremental_stream(
        "mnist", ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform), CLASS_NAMES, n_experiences,
        class_order_seed, class_order, description={"dataset": "MNIST", "root": str(folder)},
        initial_classes=initial_classes, increment=increment,
    )
