"""notMNIST (Bulatov 2011: glyphs of the letters A-J in many fonts, 28x28 grayscale PNGs), in the split
5-datasets uses: ``<data.root>/notMNIST/{Train,Test}/{A..J}/*.png``.

Which notMNIST: 5-datasets comes from Adversarial Continual Learning (Ebrahimi et al. 2020), whose
repository ships ``data/notMNIST.zip`` ("included here as it was used in our experiments"): a folder
``notMNIST`` with ``Train`` and ``Test``, one sub-folder per letter. L2P's PyTorch code (JH-LEE-KR/
l2p-pytorch ``continual_datasets.py``, class ``NotMNIST``) downloads that zip from
https://github.com/facebookresearch/Adversarial-Continual-Learning/raw/main/data/notMNIST.zip, extracts it
into its data path and reads ``notMNIST/Train`` and ``notMNIST/Test``; so does this reader, and
``data.download=true`` fetches and extracts the same zip (torchvision's download utility; no checksum is
published). L2P's original JAX code (google-research/l2p) instead builds a TFDS dataset of its own from
Bulatov's archives (http://yaroslavvb.com/upload/notMNIST/, small or large, not said) and splits its
'train' 80/20 in record order; that split cannot be rebuilt, and ``notMNIST_small`` / ``notMNIST_large``
(no Train/Test folders) are not read here.

Labels: the letter's place, A=0 ... J=9 (L2P: ``ord(folder) - 65``). Images are read whole into a uint8
[N, 28, 28] array (L2P reads them into memory too) and become 3-channel RGB like every dataset here
(``ArrayImageDataset``: grayscale is repeated over three channels, as L2P's ``convert('RGB')`` does).
Class names: "letter A" ... "letter J".

Unreadable files: Bulatov's notMNIST has a few PNGs that no decoder reads (two in notMNIST_small); L2P's
reader catches the error, prints "File A/xxx.png is broken" and leaves the file out. Here
``skip_unreadable=true`` (the default, and the configs') does the same but never silently: each skipped
file is logged as a warning and listed in the stream description (``unreadable_skipped``), and more than
``MAX_UNREADABLE`` (10) unreadable files are refused as a damaged folder. ``skip_unreadable=false`` makes
any unreadable file an error. A PNG that is not 28x28 is always an error (it is not notMNIST's).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

from scenarios.array_dataset import ArrayImageDataset
from scenarios.errors import DatasetFileError, DatasetNotFoundError
from scenarios.stream import TaskStream, class_incremental_stream

log = logging.getLogger(__name__)

FOLDER = "notMNIST"
SPLITS = {"train": "Train", "test": "Test"}
LETTERS = "ABCDEFGHIJ"
CLASS_NAMES = [f"letter {letter}" for letter in LETTERS]
URL = "https://github.com/facebookresearch/Adversarial-Continual-Learning/raw/main/data/notMNIST.zip"
SIZE = (28, 28)
MAX_UNREADABLE = 10
LAYOUT = f"{FOLDER}/Train/<A..J>/*.png and {FOLDER}/Test/<A..J>/*.png"


def _where(base: Path) -> str:
    return (f"Download {URL} (Adversarial Continual Learning's notMNIST, the one L2P reads) and extract it in "
            f"{base}, or add data.download=true on a machine with internet")


def _png_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries
                      if not e.name.startswith(".") and e.name.lower().endswith(".png") and e.is_file())


def _check_layout(base: Path) -> Path:
    folder = base / FOLDER
    if not folder.is_dir():
        others = [name for name in ("notMNIST_small", "notMNIST_large") if (base / name).is_dir()]
        hints = []
        if (base / "notMNIST.zip").is_file():
            hints.append(f"{base / 'notMNIST.zip'} is there: extract it (unzip notMNIST.zip -d {base})")
        if others:
            hints.append(f"{', '.join(others)} (Bulatov's unsplit archives) are not read: 5-datasets uses the "
                         "Train/Test split of Adversarial Continual Learning's notMNIST.zip")
        raise DatasetNotFoundError(
            f"notMNIST not found: no folder {folder} (expected {LAYOUT}). " + "; ".join(hints + [_where(base)]) + ".")
    for split in SPLITS.values():
        if not (folder / split).is_dir():
            raise DatasetNotFoundError(
                f"notMNIST is incomplete: no folder {folder / split} (expected {LAYOUT}). {_where(base)}.")
        letters = [name for name in os.listdir(folder / split) if not name.startswith(".")
                   and (folder / split / name).is_dir()]
        missing = [letter for letter in LETTERS if letter not in letters]
        unexpected = sorted(set(letters) - set(LETTERS))
        if missing or unexpected:
            raise DatasetNotFoundError(
                f"notMNIST is incomplete in {folder / split}: "
                + (f"letter folders {', '.join(missing)} are missing" if missing else "")
                + ("; " if missing and unexpected else "")
                + (f"unexpected folders {', '.join(unexpected)} (notMNIST has A..J)" if unexpected else "")
                + f". {_where(base)}.")
        empty = [letter for letter in LETTERS if not _png_files(folder / split / letter)]
        if empty:
            raise DatasetNotFoundError(
                f"notMNIST is incomplete: no PNG in {', '.join(str(folder / split / e) for e in empty)}. "
                f"{_where(base)}.")
    return folder


def _read_png(path: Path) -> Optional[np.ndarray]:
    """The image as uint8 [28, 28], or None when no decoder reads it; a readable image of another size is an error."""
    try:
        with Image.open(path) as handle:
            pixels = np.asarray(handle.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError):   # PIL: UnidentifiedImageError, truncated or broken files
        return None
    if pixels.shape != SIZE:
        raise DatasetFileError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]} pixels, notMNIST's images are 28x28: "
                               "not notMNIST's file. Re-extract notMNIST.zip.")
    return pixels


def read_notmnist(root: str, skip_unreadable: bool = True):
    """Returns ({split: (images uint8 [N, 28, 28], labels int64 [N])}, skipped files relative to the folder, folder)."""
    base = Path(root).expanduser()
    folder = _check_layout(base)
    arrays, unreadable = {}, []
    for split, name in SPLITS.items():
        images, labels = [], []
        for label, letter in enumerate(LETTERS):
            for file in _png_files(folder / name / letter):
                pixels = _read_png(folder / name / letter / file)
                if pixels is None:
                    unreadable.append(f"{name}/{letter}/{file}")
                    continue
                images.append(pixels)
                labels.append(label)
        arrays[split] = (np.stack(images) if images else np.zeros((0, *SIZE), np.uint8), np.asarray(labels, np.int64))
    if unreadable:
        shown = ", ".join(unreadable[:MAX_UNREADABLE])
        if not skip_unreadable:
            raise DatasetFileError(
                f"notMNIST: {len(unreadable)} PNGs in {folder} cannot be decoded: {shown}"
                f"{' ...' if len(unreadable) > MAX_UNREADABLE else ''}. Set skip_unreadable=true to leave them out "
                "as L2P does (each is logged and listed in the run's description), or replace them.")
        if len(unreadable) > MAX_UNREADABLE:
            raise DatasetFileError(
                f"notMNIST: {len(unreadable)} PNGs in {folder} cannot be decoded (first: {shown}): more than the "
                f"{MAX_UNREADABLE} a sound copy may have; the folder looks damaged. Re-extract notMNIST.zip "
                f"({URL}).")
        for path in unreadable:
            log.warning("notMNIST: %s cannot be decoded; left out (skip_unreadable=true, as L2P does)", folder / path)
    return arrays, unreadable, folder


def download_notmnist(root: str) -> None:
    """Fetch and extract Adversarial Continual Learning's notMNIST.zip into ``root`` (needs internet)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, str(Path(root).expanduser()), filename="notMNIST.zip")


def notmnist_stream(root: str, download: bool = False, skip_unreadable: bool = True,
                    n_experiences: Optional[int] = 1, class_order_seed: Optional[int] = None,
                    class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                    increment: Optional[int] = None, train_transform: Optional[Callable] = None,
                    eval_transform: Optional[Callable] = None) -> TaskStream:
    """notMNIST as a class-incremental stream (one experience of the letters A-J by default)."""
    if download and not (Path(root).expanduser() / FOLDER).is_dir():
        download_notmnist(root)
    arrays, skipped, folder = read_notmnist(root, skip_unreadable)
    (train_images, train_labels), (test_images, test_labels) = arrays["train"], arrays["test"]
    return class_incremental_stream(
        "notmnist", ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform), CLASS_NAMES, n_experiences,
        class_order_seed, class_order,
        description={"dataset": "notMNIST", "root": str(folder), "split": "Train/, Test/",
                     "split_source": "Adversarial Continual Learning's notMNIST.zip (as L2P's PyTorch code reads it)",
                     "unreadable_skipped": list(skipped)},
        initial_classes=initial_classes, increment=increment,
    )
