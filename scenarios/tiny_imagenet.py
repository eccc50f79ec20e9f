"""Tiny ImageNet (200 classes of 64x64 images) as Continual-CLIP evaluates it.

Layout: the extracted ``tiny-imagenet-200.zip`` (http://cs231n.stanford.edu/tiny-imagenet-200.zip) under
``data.root``::

    tiny-imagenet-200/wnids.txt                          the 200 wnids, one a line: label i = line i
    tiny-imagenet-200/words.txt                          wnid -> WordNet words (not read)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG         500 training images a class
    tiny-imagenet-200/train/<wnid>/<wnid>_boxes.txt      one line per training image (checked when there)
    tiny-imagenet-200/val/images/*.JPEG                  10,000 validation images ...
    tiny-imagenet-200/val/val_annotations.txt            ... labelled here: <file>\\t<wnid>\\t<box>
    tiny-imagenet-200/test/images/*.JPEG                 no labels: not used

Split: the dataset's own: train/ is the training split, val/ (labelled by ``val_annotations.txt``) the test
split, as in Continual-CLIP (continuum's ``TinyImageNet200``), Avalanche and L2P's code base.

Reader: Avalanche's ``avalanche.benchmarks.datasets.TinyImagenet``; it is right for the protocol: labels in
``wnids.txt`` order (continuum's, hence Continual-CLIP's), test labels from ``val_annotations.txt``, and it
downloads the archive (``data.download=true``, md5-checked) into ``<data.root>/tiny-imagenet-200``. Around it:

- the folder is checked first and what is missing is named (Avalanche answers a missing class folder with
  a bare FileNotFoundError and a missing annotation file with a download attempt or a RuntimeError);
- ``wnids.txt`` must be the published one (``scenarios/class_names/tiny_imagenet_wnids.txt``): the class
  order and the class names are given by label;
- Avalanche lists a class's training images in directory order (``Path.iterdir``), which differs between
  file systems; they are sorted by path here, so that sample ids (the feature cache's keys) and the
  images a seeded few-shot draw picks do not depend on the machine. Files that are not images (a
  ``.DS_Store``) are left out; Avalanche would list them;
- every annotated validation image must exist, every image of ``val/images`` must be annotated, and
  every annotation must name a wnid of ``wnids.txt`` (Avalanche keeps a missing file's path, to fail at
  the first read, and drops annotations of unknown wnids without a word); every image a
  ``<wnid>_boxes.txt`` lists must exist.

``avalanche.benchmarks.classic.SplitTinyImageNet`` is not used: it builds its benchmark with
``nc_benchmark`` from ``n_experiences`` alone (no 100-base-class first experience) and a seeded shuffle,
where Continual-CLIP uses a fixed order and B100 settings; ``class_incremental_stream`` builds both.

Settings (Continual-CLIP's ``configs/class/tinyimagenet_100-{5,10,20}.yaml``): 100 classes in the first
experience, then 5, 10 or 20 a task (``initial_classes=100 increment=10``: 11 experiences, the default);
class order ``continual_clip`` (its ``class_orders/tinyimagenet.yaml``, labels in ``wnids.txt`` order);
prompt template "a bad photo of a {}.". ``n_experiences=10 initial_classes=0 increment=null`` gives the
10 tasks of 20 classes of other papers.

Class names: Continual-CLIP's ``dataset_reqs/tinyimagenet_classes.txt``, which are CLIP's ImageNet names
of these wnids: they are looked up by wnid in ``scenarios/class_names/imagenet_clip_names.tsv``
(see ``scenarios.imagenet100``). ``words.txt`` (WordNet synonyms, e.g. "Egyptian cat") is not used.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from scenarios.coop_datasets import missing_images
from scenarios.errors import DatasetNotFoundError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.imagenet100 import class_order_file, clip_names, data_lines, is_image, resolve_class_order
from scenarios.stream import TaskStream, class_incremental_stream

log = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
NAMED_ORDERS = {"continual_clip": (lambda: class_order_file("tiny_imagenet_order_continual_clip.txt"),
                                   "Continual-CLIP class_orders/tinyimagenet.yaml")}
LAYOUT = (f"{FOLDER}/wnids.txt, {FOLDER}/train/<wnid>/images/*.JPEG, {FOLDER}/val/images/*.JPEG and "
          f"{FOLDER}/val/val_annotations.txt (the extracted tiny-imagenet-200.zip)")


@functools.cache
def tiny_imagenet_wnids() -> list[str]:
    """The published ``wnids.txt``, in its order (``scenarios/class_names/tiny_imagenet_wnids.txt``)."""
    return data_lines("tiny_imagenet_wnids.txt")


def _remedy(root: Path) -> str:
    return (f"Extract {URL} into {root} (giving {root / FOLDER}), or add data.download=true on a machine with "
            "internet (Avalanche's TinyImagenet downloads it)")


def _redo(root: Path) -> str:
    return (f"Re-extract {URL} into {root}, or delete {root / FOLDER} and add data.download=true (a folder that is "
            "there is not downloaded again)")


def _check_folder(root: Path) -> list[str]:
    """What Avalanche's reader needs, checked before it runs; returns wnids.txt's wnids."""
    folder = root / FOLDER
    if not folder.is_dir():
        raise DatasetNotFoundError(f"Tiny ImageNet not found: no folder {folder}. Expected {LAYOUT}. {_remedy(root)}.")
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "images", folder / "val" / "val_annotations.txt"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DatasetNotFoundError(f"Tiny ImageNet is incomplete in {folder}: missing {', '.join(missing)}. "
                                   f"Expected {LAYOUT}. {_redo(root)}.")
    wnids = [line.strip() for line in (folder / "wnids.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    expected = tiny_imagenet_wnids()
    if wnids != expected:
        differ = next((i for i, (a, b) in enumerate(zip(wnids, expected)) if a != b), min(len(wnids), len(expected)))
        raise DatasetNotFoundError(
            f"{folder / 'wnids.txt'} is not the published one: it lists {len(wnids)} wnids, the dataset's has "
            f"{len(expected)}, first different at line {differ + 1}. The class order and names are given by its "
            f"labels; restore the file from {URL}.")
    absent = [w for w in wnids if not (folder / "train" / w / "images").is_dir()]
    if absent:
        raise DatasetNotFoundError(
            f"Tiny ImageNet is incomplete: {len(absent)} class folders train/<wnid>/images are missing in {folder} "
            f"(first: {', '.join(absent[:5])}). {_redo(root)}.")
    return wnids


def _avalanche_split(root: Path, train: bool, download: bool):
    """(paths, targets) as Avalanche's TinyImagenet reads them (its progress lines go to the debug log)."""
    from avalanche.benchmarks.datasets import TinyImagenet

    if download:     # downloads and extracts only if its reading fails; prints its progress
        dataset = TinyImagenet(root, train=train, download=True)
    else:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            dataset = TinyImagenet(root, train=train, download=False)
        if printed.getvalue().strip():
            log.debug("Avalanche TinyImagenet: %s", printed.getvalue().strip())
    return [str(p) for p in dataset.data], [int(t) for t in dataset.targets]


def _check_boxes(folder: Path, wnids: list[str]) -> None:
    """Every training image a class's ``<wnid>_boxes.txt`` lists is there."""
    listed_missing = []
    for wnid in wnids:
        boxes = folder / "train" / wnid / f"{wnid}_boxes.txt"
        if boxes.is_file():
            names = [line.split("\t")[0].strip() for line in boxes.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
            listed_missing += missing_images([str(folder / "train" / wnid / "images" / n) for n in names])
    if listed_missing:
        shown = ", ".join(os.path.relpath(p, folder) for p in listed_missing[:5])
        raise DatasetNotFoundError(f"{len(listed_missing)} training images listed in train/<wnid>/<wnid>_boxes.txt "
                                   f"are missing under {folder} (first: {shown}). Re-extract {URL}.")


def _check_val(folder: Path, wnids: list[str], paths: list[str]) -> None:
    annotations = folder / "val" / "val_annotations.txt"
    known = set(wnids)
    annotated = set()
    for number, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1].strip() not in known:
            raise DatasetNotFoundError(
                f"{annotations} line {number} is {line!r}: expected '<file>\\t<wnid>\\t<box>' with a wnid of "
                f"{folder / 'wnids.txt'}. Restore the file from {URL}.")
        annotated.add(fields[0].strip())
    missing = missing_images(paths)
    if missing:
        shown = ", ".join(os.path.relpath(p, folder) for p in missing[:5])
        raise DatasetNotFoundError(f"{len(missing)} of {len(paths)} validation images named in {annotations} are "
                                   f"missing (first: {shown}). Re-extract {URL}.")
    with os.scandir(folder / "val" / "images") as entries:
        unlabelled = sorted(e.name for e in entries if is_image(e.name) and e.name not in annotated)
    if unlabelled:
        raise DatasetNotFoundError(f"{len(unlabelled)} images of {folder / 'val' / 'images'} have no line in "
                                   f"{annotations} (first: {', '.join(unlabelled[:5])}): the file is truncated. "
                                   f"Restore it from {URL}.")


def load_tiny_imagenet(root: str, download: bool = False) -> tuple[dict, list[str], dict]:
    """({'train': [(path, label)], 'test': [...]}, class names, description entries), sorted by (label, path)."""
    root_path = Path(root).expanduser()
    if download:
        _avalanche_split(root_path, True, True)
    wnids = _check_folder(root_path)
    folder = root_path / FOLDER
    splits = {}
    for split, train in (("train", True), ("test", False)):
        paths, targets = _avalanche_split(root_path, train, False)
        if train:
            kept = [(p, y) for p, y in zip(paths, targets) if is_image(os.path.basename(p))]
        else:
            _check_val(folder, wnids, paths)
            kept = list(zip(paths, targets))
        splits[split] = sorted(kept, key=lambda item: (item[1], item[0]))
    _check_boxes(folder, wnids)
    empty = [wnids[c] for c in sorted(set(range(len(wnids))) - {y for _, y in splits["train"]})]
    if empty:
        raise DatasetNotFoundError(f"Tiny ImageNet: train/<wnid>/images holds no image for {len(empty)} classes "
                                   f"(first: {', '.join(empty[:5])}) in {folder}. Re-extract {URL}.")
    record = {"dataset": "Tiny ImageNet", "root": str(folder),
              "split": "train/<wnid>/images, val/images + val/val_annotations.txt",
              "split_source": "the dataset's (train / val; test/ has no labels), read by Avalanche's TinyImagenet",
              "classes_source": "wnids.txt order; CLIP's ImageNet names (Continual-CLIP's tinyimagenet_classes.txt)"}
    return splits, clip_names(wnids), record


def tiny_imagenet_stream(root: str, download: bool = False, n_experiences: Optional[int] = None,
                         class_order_seed: Optional[int] = None,
                         class_order: Optional[Union[str, Sequence[int]]] = "continual_clip",
                         initial_classes: int = 100, increment: Optional[int] = 10,
                         template: Optional[str] = "a bad photo of a {}.",
                         train_transform: Optional[Callable] = None,
                         eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental Tiny ImageNet (see the module docstring); by default Continual-CLIP's B100-Inc10.

    ``class_order``: ``continual_clip`` (the default), a project-wide name (``icarl``), a list, or None with
    ``class_order_seed``; ``template``: the prompt of methods whose template is "scenario".
    """
    splits, names, record = load_tiny_imagenet(root, download)
    order, source = resolve_class_order(class_order, NAMED_ORDERS, len(names))
    record.update(source)
    if template:
        record["template"] = template

    def dataset(split: str, transform: Optional[Callable]) -> ImageFileDataset:
        return ImageFileDataset([p for p, _ in splits[split]], [y for _, y in splits[split]], transform)

    return class_incremental_stream(
        "tiny_imagenet", dataset("train", train_transform), dataset("test", eval_transform), names, n_experiences,
        class_order_seed, order, description=record, initial_classes=initial_classes, increment=increment)
