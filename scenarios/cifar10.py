"""CIFAR-10 in torchvision's layout: ``<data.root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

A member of 5-datasets (``configs/scenario/five_datasets.yaml``); alone, ``scenario=cifar10`` is one
experience of its 10 classes. The pickles are read without running code (scenarios.safe_pickle), as
CIFAR-100's are. Class names are ``batches.meta``'s ``label_names`` (airplane, automobile, bird, ...),
the names CLIP's own CIFAR-10 evaluation uses. ``data.download=true`` fetches the archive with
torchvision's ``CIFAR10`` (https://www.cs.toronto.edu/~kriz/cifar.html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetNotFoundError
from scenarios.safe_pickle import load_data_pickle
from scenarios.stream import TaskStream, class_incremental_stream

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = (*TRAIN_BATCHES, "test_batch", "batches.meta")
N_CLASSES = 10
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _remedy() -> str:
    return f"Re-extract cifar-10-python.tar.gz ({URL}) or use data.download=true on a machine with internet."


def _entry(path: Path, key: str):
    entry = load_data_pickle(path)
    if not isinstance(entry, dict) or key not in entry:
        found = sorted(entry)[:6] if isinstance(entry, dict) else type(entry).__name__
        raise DatasetNotFoundError(f"{path} is not CIFAR-10's file: no {key!r} entry (found {found}). {_remedy()}")
    return entry


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _entry(path, "data")
    if "labels" not in entry:
        raise DatasetNotFoundError(f"{path} is not a CIFAR-10 batch: no 'labels' entry. {_remedy()}")
    images = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise DatasetNotFoundError(
            f"{path} is not a CIFAR-10 batch: data {images.shape}, {len(labels)} labels. {_remedy()}")
    if len(labels) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DatasetNotFoundError(
            f"{path} has labels outside 0..{N_CLASSES - 1} (from {labels.min()} to {labels.max()}). {_remedy()}")
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def load_cifar10(root: str, download: bool = False):
    """Returns (train_images, train_labels, test_images, test_labels, class names, folder).

    Images are uint8 [N, 32, 32, 3]; ``download=True`` fetches the archive with torchvision first.
    """
    base = Path(root).expanduser()
    folder = base / FOLDER
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(base), train=True, download=True)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        what = "CIFAR-10 not found" if len(missing) == len(FILES) else "CIFAR-10 is incomplete"
        raise DatasetNotFoundError(
            f"{what}: looked for {', '.join(str(folder / m) for m in missing)}. Put the extracted "
            f"'{FOLDER}' folder (torchvision's layout, {URL}) under data.root={root}, or add data.download=true "
            "on a machine with internet.")
    names = [str(n).replace("_", " ") for n in _entry(folder / "batches.meta", "label_names")["label_names"]]
    if len(names) != N_CLASSES:
        raise DatasetNotFoundError(f"{folder / 'batches.meta'} lists {len(names)} class names, expected {N_CLASSES}")
    train = [_batch(folder / name) for name in TRAIN_BATCHES]
    test_images, test_labels = _batch(folder / "test_batch")
    return (np.concatenate([i for i, _ in train]), np.concatenate([y for _, y in train]), test_images, test_labels,
            names, folder)


def cifar10_stream(root: str, download: bool = False, n_experiences: Optional[int] = 1,
                   class_order_seed: Optional[int] = None,
                   class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                   increment: Optional[int] = None, train_transform: Optional[Callable] = None,
                   eval_transform: Optional[Callable] = None) -> TaskStream:
    """CIFAR-10 as a class-incremental stream (one experience of its 10 classes by default)."""
    train_images, train_labels, test_images, test_labels, names, folder = load_cifar10(root, download)
    return class_incremental_stream(
        "cifar10", ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform), names, n_experiences, class_order_seed,
        class_order, description={"dataset": "CIFAR-10", "root": str(folder)},
        initial_classes=initial_classes, increment=increment,
    )
