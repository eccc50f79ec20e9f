"""SVHN (Street View House Numbers, cropped digits) from its MATLAB files: ``<data.root>/svhn/{train,test}_32x32.mat``.

A member of 5-datasets (``configs/scenario/five_datasets.yaml``); alone, ``scenario=svhn`` is one
experience of the 10 digits. The files are the format-2 ones of http://ufldl.stanford.edu/housenumbers/
as torchvision's ``SVHN`` stores them: ``X`` uint8 [32, 32, 3, N], ``y`` [N, 1] with the digits 1..9 as
themselves and **10 for the digit 0**; here, as in torchvision, label 10 becomes 0, so label d is the
digit d. The ``extra_32x32.mat`` split is not used (nor by L2P).

Where: ``<data.root>/svhn/`` (torchvision's ``SVHN(root=<data.root>/svhn)``), else ``<data.root>/``
itself, where L2P's code (``SVHN(args.data_path)``) keeps the two files. The files are read here with
``scipy.io.loadmat``; torchvision's class is not used to read because it refuses any file whose md5 is not
the published one. ``data.download=true`` downloads them with torchvision's ``SVHN`` (md5-checked) into
``<data.root>/svhn/``.

Class names: the digits' words ("zero" ... "nine"), as scenarios/mnist.py names MNIST's; 5-datasets
renames them (see scenarios/five_datasets.py) so that they differ from MNIST's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetFileError, DatasetNotFoundError
from scenarios.mnist import CLASS_NAMES
from scenarios.stream import TaskStream, class_incremental_stream

FOLDER = "svhn"
FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
URL = "http://ufldl.stanford.edu/housenumbers/"


def _remedy() -> str:
    return (f"Replace it with the file of {URL} (format 2, cropped digits), or use data.download=true on a "
            "machine with internet.")


def svhn_folder(root: str) -> Path:
    """The folder holding the .mat files: <root>/svhn if it holds any of them, else <root>; an error when
    neither holds both."""
    base = Path(root).expanduser()
    candidates = [base / FOLDER, base]
    for folder in candidates:
        present = [name for name in FILES.values() if (folder / name).is_file()]
        if len(present) == len(FILES):
            return folder
        if present:
            absent = [name for name in FILES.values() if name not in present]
            raise DatasetNotFoundError(
                f"SVHN is incomplete in {folder}: it has {', '.join(present)} but not {', '.join(absent)}. "
                f"Put both {' and '.join(FILES.values())} there ({URL}), or add data.download=true on a machine "
                "with internet.")
    raise DatasetNotFoundError(
        f"SVHN not found: looked for {' and '.join(FILES.values())} in {candidates[0]} and in {candidates[1]}. "
        f"Put the two files of {URL} (format 2, cropped digits) in {candidates[0]} (torchvision's SVHN with "
        f"root={candidates[0]}), or add data.download=true on a machine with internet.")


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN .mat file: (images uint8 [N, 32, 32, 3], labels int64 [N] with 0 for the digit 0)."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except Exception as error:   # scipy raises ValueError, TypeError, NotImplementedError (v7.3 files), OSError ...
        raise DatasetFileError(f"{path} is not a readable MATLAB file ({type(error).__name__}: {error}). "
                               f"{_remedy()}") from None
    if "X" not in content or "y" not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DatasetNotFoundError(f"{path} has no 'X' and 'y' arrays (found {found}): not SVHN's file. {_remedy()}")
    images, labels = np.asarray(content["X"]), np.asarray(content["y"]).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[:3] != (32, 32, 3) \
            or images.shape[3] != len(labels):
        raise DatasetNotFoundError(
            f"{path}: X is {images.dtype} {images.shape} with {len(labels)} labels; SVHN's is uint8 [32, 32, 3, N] "
            f"with N labels. {_remedy()}")
    labels = labels.astype(np.int64)
    outside = np.flatnonzero((labels < 1) | (labels > 10))
    if len(outside):
        raise DatasetNotFoundError(
            f"{path}: {len(outside)} labels are outside 1..10 (SVHN's digits, 10 meaning 0), e.g. y[{outside[0]}] = "
            f"{labels[outside[0]]}. {_remedy()}")
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels % 10


def load_svhn(root: str, download: bool = False):
    """Returns (train_images, train_labels, test_images, test_labels, folder); images uint8 [N, 32, 32, 3]."""
    if download:
        base = Path(root).expanduser()
        if not any(all((folder / name).is_file() for name in FILES.values()) for folder in (base / FOLDER, base)):
            from torchvision.datasets import SVHN

            for split in FILES:
                SVHN(str(base / FOLDER), split=split, download=True)
    folder = svhn_folder(root)
    (train_images, train_labels), (test_images, test_labels) = (read_svhn_mat(folder / FILES[s]) for s in FILES)
    return train_images, train_labels, test_images, test_labels, folder


def svhn_stream(root: str, download: bool = False, n_experiences: Optional[int] = 1,
                class_order_seed: Optional[int] = None, class_order: Optional[Union[str, Sequence[int]]] = None,
                initial_classes: int = 0, increment: Optional[int] = None,
                train_transform: Optional[Callable] = None, eval_transform: Optional[Callable] = None) -> TaskStream:
    """SVHN as a class-incremental stream (one experience of the 10 digits by default)."""
    train_images, train_labels, test_images, test_labels, folder = load_svhn(root, download)
    return class_incremental_stream(
        "svhn", ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform), CLASS_NAMES, n_experiences,
        class_order_seed, class_order,
        description={"dataset": "SVHN", "root": str(folder), "split": ", ".join(FILES.values()),
                     "labels": "the .mat files' 10 (digit 0) read as 0"},
        initial_classes=initial_classes, increment=increment,
    )
