"""ImageNet-100 as Continual-CLIP evaluates it, and the ImageNet class data the ImageNet family shares.

ImageNet-100 is the 100-class subset of ImageNet-1k that PODNet published (arthurdouillard/
incremental_learning.pytorch, ``imagenet_split/train_100.txt`` and ``val_100.txt``) and that DER, DyTox and
Continual-CLIP (vgthengane/continual-clip, ``dataset_reqs/imagenet100_splits/``, the same files, read by
continuum's ``ImageNet100(data_subset=...)``) use. Its classes are ImageNet's first 100 wnids in sorted
order, label i = line i of ``scenarios/class_names/imagenet100_wnids.txt`` (taken from ``val_100.txt``).

Layout: an ImageNet folder holding ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` (the validation images
sorted into one folder per wnid), the first of these under ``data.root`` that has both::

    imagenet/images/{train,val}/<wnid>/*   CoOp's layout (scenario=imagenet reads the same folder)
    imagenet/{train,val}/<wnid>/*          the usual ImageNet folder
    imagenet1000/{train,val}/<wnid>/*      Continual-CLIP's name for it (<dataset_root>/imagenet1000)

Only the 100 classes' folders are read; the other 900 may be there or not.

Split: ImageNet's own: training images from ``train/``, test images from ``val/`` (50 a class). When
PODNet's lists ``train_100.txt`` and ``val_100.txt`` lie in that ImageNet folder (lines ``train/<wnid>/<file>
<label>``, paths relative to it), they are read instead, exactly as continuum reads them: every listed
image must exist and each line's label must be its wnid's. Without them every image of the class folders
is used; ``val_100.txt`` lists exactly the 50 validation images of each class, so the test split is the
same, and ``train_100.txt`` is understood to list every training image (it is not shipped here, being
2.5 MB, so that is not checked).

Class order: ``continual_clip`` (the default): the order of Continual-CLIP's ``class_orders/imagenet100.yaml``,
which is PODNet's ``options/data/imagenet100_1order.yaml``. Continual-CLIP's settings: 10 tasks of 10
classes (``imagenet100_10-10.yaml``, the default here) and 50 base classes then 5 a task
(``imagenet100_50-5.yaml``: ``initial_classes=50 increment=5 n_experiences=null``), prompt template
"a good photo of a {}.".

Class names: CLIP's ImageNet names (open_clip's ``IMAGENET_CLASSNAMES``), looked up by wnid in
``scenarios/class_names/imagenet_clip_names.tsv`` (shipped with its sources rather than imported from
open_clip: the data side does not import the model side's library, and the names stay fixed whatever
open_clip version is installed). Continual-CLIP's ``dataset_reqs/imagenet100_classes.txt`` has the same
names. Nothing is cleaned: the names have no underscores.

Not Avalanche's: ``avalanche.benchmarks.datasets.ImageNet`` (and ``SplitImageNet``) is torchvision's
ImageNet reader: it needs the devkit archive ``ILSVRC2012_devkit_t12.tar.gz`` (for ``meta.bin``), which
CoOp's layout and an extracted ImageNet folder do not have, reads all 1000 classes and knows no subset
list. Neither it nor torchvision downloads ImageNet (it is distributed after registration at
https://image-net.org), so ``data.download=true`` is refused.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from scenarios.coop_datasets import DATASETS, IMAGE_EXTENSIONS, missing_images
from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.stream import TaskStream, class_incremental_stream

DATA_DIR = Path(__file__).resolve().parent / "class_names"
IMAGENET_URL = "https://image-net.org/download.php"
PODNET_SPLITS = "https://github.com/arthurdouillard/incremental_learning.pytorch/tree/master/imagenet_split"
VAL_PER_CLASS = 50      # ImageNet's validation set: 50 images of each class
SPLIT_LISTS = ("train_100.txt", "val_100.txt")


# --- shipped data (scenarios/class_names/) -------------------------------------------------------------


def data_lines(name: str) -> list[str]:
    """The lines of a shipped data file, without its ``#`` header and blank lines."""
    path = DATA_DIR / name
    text = path.read_text(encoding="utf-8")
    return [line.rstrip("\n") for line in text.splitlines() if line.strip() and not line.startswith("#")]


@functools.cache
def imagenet_clip_names() -> dict:
    """wnid -> CLIP's class name, for ImageNet-1k's 1000 classes (``imagenet_clip_names.tsv``)."""
    return dict(line.split("\t") for line in data_lines("imagenet_clip_names.tsv"))


def clip_names(wnids: Sequence[str]) -> list[str]:
    """CLIP's names of ``wnids``; an unknown wnid is an error naming it."""
    names = imagenet_clip_names()
    unknown = [w for w in wnids if w not in names]
    if unknown:
        raise DatasetNotFoundError(f"{len(unknown)} class folders are not ImageNet wnids: {unknown[:5]}")
    return [names[w] for w in wnids]


def class_order_file(name: str) -> list[int]:
    """A class order shipped as comma-separated labels."""
    return [int(token) for line in data_lines(name) for token in line.replace(",", " ").split()]


def resolve_class_order(class_order, named: dict, n_classes: int):
    """(the order to hand ``class_incremental_stream``, the description entries for it).

    ``named`` maps this dataset's own order names to (loader, source); other values (None, a list, the
    project-wide names such as ``icarl``) pass through unchanged.
    """
    if isinstance(class_order, str) and class_order in named:
        load, source = named[class_order]
        order = load()
        if len(order) != n_classes:
            raise StreamConfigError(f"scenario.class_order={class_order} is an order of {len(order)} classes, but "
                                    f"the dataset has {n_classes}")
        return order, {"class_order_source": f"{class_order}: {source}"}
    return class_order, {}


@functools.cache
def imagenet100_wnids() -> list[str]:
    """The 100 wnids of ImageNet-100, label order (``imagenet100_wnids.txt``)."""
    return data_lines("imagenet100_wnids.txt")


NAMED_ORDERS = {"continual_clip": (lambda: class_order_file("imagenet100_order_continual_clip.txt"),
                                   "Continual-CLIP class_orders/imagenet100.yaml (PODNet's imagenet100 order)")}


# --- reading ---------------------------------------------------------------------------------------------


def is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: Path) -> list[str]:
    """The image files of a folder, sorted by name."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if is_image(e.name) and e.is_file())


def imagenet_candidates(root: Path) -> list[Path]:
    coop = DATASETS["ImageNet"]
    return [root / coop.folder / coop.image_dirs[0], root / coop.folder, root / "imagenet1000"]


LAYOUT = ("an ImageNet folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (validation images sorted into "
          "wnid folders): <data.root>/imagenet/images (CoOp's layout), <data.root>/imagenet or "
          "<data.root>/imagenet1000 (Continual-CLIP's)")


def find_imagenet_folder(root: Path) -> Path:
    """The first candidate ImageNet folder with both ``train/`` and ``val/``."""
    candidates = imagenet_candidates(root)
    for folder in candidates:
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return folder
    half = [f"{f / s} exists but {f / ('val' if s == 'train' else 'train')} does not"
            for f in candidates for s in ("train", "val") if (f / s).is_dir()]
    raise DatasetNotFoundError(
        f"ImageNet-100 not found: no ImageNet folder with train/ and val/ under data.root={root} (looked in "
        f"{', '.join(str(c) for c in candidates)}){'; ' + '; '.join(half) if half else ''}. Expected {LAYOUT}. "
        f"ImageNet is distributed after registration at {IMAGENET_URL} (CoOp's DATASETS.md describes its "
        f"layout); the 100 classes are PODNet's ({PODNET_SPLITS})."
    )


def _read_split_list(path: Path, folder: Path, label_of: dict) -> list[tuple[str, int]]:
    """PODNet's ``<split>_100.txt``: lines ``<split>/<wnid>/<file> <label>``, checked."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        wnid = Path(parts[0]).parent.name if parts else ""
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or wnid not in label_of:
            raise DatasetNotFoundError(
                f"{path} line {number} is {line!r}: expected '<split>/<wnid>/<file> <label>' with one of the 100 "
                f"ImageNet-100 wnids; use PODNet's file ({PODNET_SPLITS})")
        label = int(parts[1])
        if label != label_of[wnid]:
            raise DatasetNotFoundError(
                f"{path} line {number} gives {wnid} the label {label}, but ImageNet-100's label of {wnid} is "
                f"{label_of[wnid]} (0..99 in sorted wnid order); this is not PODNet's list ({PODNET_SPLITS})")
        items.append((str(folder / parts[0]), label))
    missing_labels = sorted(set(label_of.values()) - {y for _, y in items})
    if missing_labels:
        raise DatasetNotFoundError(f"{path} lists no image of labels {missing_labels[:10]} "
                                   f"({len(missing_labels)} of 100): the file is truncated")
    return items


def load_imagenet100(root: str) -> tuple[dict, list[str], dict]:
    """({'train': [(path, label)], 'test': [...]}, class names, description entries)."""
    folder = find_imagenet_folder(Path(root).expanduser())
    wnids = imagenet100_wnids()
    label_of = {w: i for i, w in enumerate(wnids)}
    lists = [folder / name for name in SPLIT_LISTS]
    present = [p for p in lists if p.is_file()]
    if present and len(present) < len(lists):
        absent = [str(p) for p in lists if not p.is_file()]
        raise DatasetNotFoundError(
            f"ImageNet-100: {present[0]} is there but {', '.join(absent)} is not; put both of PODNet's lists "
            f"({PODNET_SPLITS}) in {folder}, or neither to read the class folders")
    if present:
        splits = {split: _read_split_list(path, folder, label_of) for split, path in zip(("train", "test"), lists)}
        for split, path in zip(("train", "test"), lists):
            missing = missing_images([p for p, _ in splits[split]])
            if missing:
                shown = ", ".join(os.path.relpath(p, folder) for p in missing[:5])
                raise DatasetNotFoundError(
                    f"{len(missing)} of {len(splits[split])} images listed in {path} are missing under {folder} "
                    f"(first: {shown}). Re-extract ImageNet's train/val archives there.")
        record = {"split": " / ".join(SPLIT_LISTS), "split_source": f"PODNet's lists ({PODNET_SPLITS})"}
    else:
        absent = [f"{s}/{w}" for s in ("train", "val") for w in wnids if not (folder / s / w).is_dir()]
        if absent:
            raise DatasetNotFoundError(
                f"ImageNet-100: {len(absent)} class folders are missing in {folder} (first: {', '.join(absent[:5])}). "
                f"Expected {LAYOUT}; every one of the 100 wnids of scenarios/class_names/imagenet100_wnids.txt "
                "needs a train and a val folder.")
        splits = {}
        for split, sub in (("train", "train"), ("test", "val")):
            splits[split] = [(str(folder / sub / w / name), label)
                             for label, w in enumerate(wnids) for name in image_files(folder / sub / w)]
        counts = {w: 0 for w in wnids}
        for _, label in splits["test"]:
            counts[wnids[label]] += 1
        short = {w: n for w, n in counts.items() if n != VAL_PER_CLASS}
        empty_train = sorted(set(wnids) - {wnids[y] for _, y in splits["train"]})
        if short or empty_train:
            problems = []
            if short:
                problems.append(f"val/ holds {dict(list(short.items())[:5])} images of {len(short)} classes, "
                                f"ImageNet has {VAL_PER_CLASS} of each")
            if empty_train:
                problems.append(f"train/ has no images of {empty_train[:5]}")
            raise DatasetNotFoundError(f"ImageNet-100 in {folder} is incomplete: {'; '.join(problems)}. "
                                       "Re-extract ImageNet's train/val archives there.")
        record = {"split": "train/ and val/ class folders",
                  "split_source": "ImageNet's (train / val), all images of the 100 classes, as PODNet's lists"}
    record = {"dataset": "ImageNet-100", "root": str(folder), **record,
              "classes_source": "PODNet's imagenet_split/val_100.txt (ImageNet's first 100 sorted wnids)"}
    return splits, clip_names(wnids), record


def imagenet100_stream(root: str, download: bool = False, n_experiences: Optional[int] = 10,
                       class_order_seed: Optional[int] = None,
                       class_order: Optional[Union[str, Sequence[int]]] = "continual_clip",
                       initial_classes: int = 0, increment: Optional[int] = None,
                       template: Optional[str] = "a good photo of a {}.",
                       train_transform: Optional[Callable] = None,
                       eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental ImageNet-100 (see the module docstring); by default Continual-CLIP's 10 tasks of 10.

    ``class_order``: ``continual_clip`` (PODNet's order, the default), a project-wide name (``icarl``), a list,
    or None with ``class_order_seed``; ``template``: the prompt of methods whose template is "scenario".
    """
    if download:
        raise StreamConfigError(
            "data.download=true: ImageNet cannot be downloaded by clprompt, torchvision or Avalanche; it is "
            f"distributed after registration at {IMAGENET_URL}. Put it under {Path(root).expanduser()} as "
            f"{LAYOUT}, then run with data.download=false.")
    splits, names, record = load_imagenet100(root)
    order, source = resolve_class_order(class_order, NAMED_ORDERS, len(names))
    record.update(source)
    if template:
        record["template"] = template

    def dataset(split: str, transform: Optional[Callable]) -> ImageFileDataset:
        return ImageFileDataset([p for p, _ in splits[split]], [y for _, y in splits[split]], transform)

    return class_incremental_stream(
        "imagenet100", dataset("train", train_transform), dataset("test", eval_transform), names, n_experiences,
        class_order_seed, order, description=record, initial_classes=initial_classes, increment=increment)
