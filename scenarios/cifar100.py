"""Split-CIFAR-100: CIFAR-100 in torchvision's layout (``<root>/cifar-100-python/{train,test,meta}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetNotFoundError
from scenarios.safe_pickle import load_data_pickle
from scenarios.stream import TaskStream, class_incremental_stream

FOLDER = "cifar-100-python"
N_CLASSES = 100


def class_name(raw: str) -> str:
    """CIFAR's label names as a caption would say them: 'aquarium_fish' -> 'aquarium fish'."""
    return raw.replace("_", " ")


def _unpickle(path: Path) -> dict:
    """A CIFAR pickle, read without running code (scenarios.safe_pickle); a dict or a clear error."""
    entry = load_data_pickle(path)
    if not isinstance(entry, dict):
        raise DatasetNotFoundError(f"{path} holds a {type(entry).__name__}, not CIFAR-100's dict: re-extract "
                                   "the archive or use data.download=true")
    return entry


def _field(entry: dict, key: str, path: Path):
    if key not in entry:
        raise DatasetNotFoundError(f"{path} has no {key!r} entry (it has {sorted(entry)[:6]}): not CIFAR-100's "
                                   "file; re-extract the archive or use data.download=true")
    return entry[key]


def load_cifar100(root: str, download: bool = False):
    """Read CIFAR-100 from ``root``; returns (train_images, train_labels, test_images, test_labels, names).

    Images are uint8 [N, 32, 32, 3]. ``download=True`` fetches the archive with torchvision first
    (needs internet).
    """
    folder = Path(root).expanduser() / FOLDER
    if download:
        from torchvision.datasets import CIFAR100

        CIFAR100(str(Path(root).expanduser()), train=True, download=True)
    missing = [name for name in ("train", "test", "meta") if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"CIFAR-100 not found: looked for {', '.join(str(folder / m) for m in missing)}. "
            f"Put the extracted 'cifar-100-python' folder (torchvision's layout) under data.root={root}, "
            "or add data.download=true on a machine with internet."
        )
    names = [class_name(n) for n in _field(_unpickle(folder / "meta"), "fine_label_names", folder / "meta")]
    if len(names) != N_CLASSES:
        raise DatasetNotFoundError(f"{folder / 'meta'} lists {len(names)} class names, expected {N_CLASSES}")
    splits = []
    for split in ("train", "test"):
        entry = _unpickle(folder / split)
        images = np.asarray(_field(entry, "data", folder / split), dtype=np.uint8)
        labels = np.asarray(_field(entry, "fine_labels", folder / split), dtype=np.int64)
        if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
            raise DatasetNotFoundError(
                f"{folder / split} is not a CIFAR-100 pickle: data {images.shape}, {len(labels)} labels. "
                "Re-extract the archive or use data.download=true."
            )
        splits.append((images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels))
    (train_images, train_labels), (test_images, test_labels) = splits
    return train_images, train_labels, test_images, test_labels, names


def split_cifar100(root: str, download: bool = False, n_experiences: Optional[int] = 10,
                   class_order_seed: Optional[int] = 1993,
                   class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                   increment: Optional[int] = None, template: Optional[str] = None,
                   train_transform: Optional[Callable] = None,
                   eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental Split-CIFAR-100 (10 experiences of 10 classes by default).

    ``class_order``: ``icarl`` (seed 1993), ``continual_clip`` (Continual-CLIP / ZSCL's fixed order) or a
    list; ``initial_classes`` / ``increment``: the B-Inc settings (B0-Inc10, B50-Inc10, ...);
    ``template``: the prompt template for methods whose template is "scenario" (Continual-CLIP: "a bad
    photo of a {}."; default "a photo of a {}.").
    """
    train_images, train_labels, test_images, test_labels, names = load_cifar100(root, download)
    return class_incremental_stream(
        "split_cifar100",
        ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform),
        names, n_experiences, class_order_seed, class_order,
        description={"dataset": "CIFAR-100", "root": str(Path(root).expanduser() / FOLDER),
                     **({"template": template} if template else {})},
        initial_classes=initial_classes, increment=increment,
    )
