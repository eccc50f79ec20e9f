"""Split ImageNet-R: ImageNet-R's 200 classes in 5, 10 or 20 tasks, with the 80/20 train/test split of the
prompt-based continual-learning papers.

Layout: ``imagenet-r.tar`` (Hendrycks et al. 2021, https://github.com/hendrycks/imagenet-r; the archive is
https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar) extracted under ``data.root``::

    imagenet-r/<wnid>/*.jpg          200 wnid folders, 30,000 images (README.txt beside them is ignored)

Every one of the 200 folders must be there with the number of images the archive has
(``scenarios/class_names/imagenet_r.tsv``): a partly extracted archive would change the split.

ImageNet-R has no train/test split of its own. The papers' splits (``split``):

``dualprompt`` (the default; reproduced exactly). DualPrompt's and L2P's PyTorch code (JH-LEE-KR/
  dualprompt-pytorch and l2p-pytorch, ``continual_datasets/continual_datasets.py``, ``Imagenet_R``; the
  two files are the same): ``torchvision.datasets.ImageFolder`` lists ``imagenet-r/`` (classes in sorted
  wnid order, files sorted by name), then ``torch.utils.data.random_split`` with lengths
  ``int(0.8 * N)`` and the rest draws one ``torch.randperm(N)`` from the global generator, which
  ``main.py`` has just seeded with ``torch.manual_seed(args.seed)``, 42 (``configs/imr_dualprompt.py``);
  nothing draws from it in between. The first ``int(0.8 N)`` = 24,000 indices are the training
  images, the other 6,000 the test images: one global shuffle, not per class. That code then MOVES the
  files into ``imagenet-r/train/<wnid>/`` and ``imagenet-r/test/<wnid>/`` and reads those folders
  ever after. Here the same permutation is drawn from a ``torch.Generator`` seeded with ``split_seed``
  (42), over the list torchvision's own ``make_dataset`` makes, and nothing is moved. A folder that L2P's
  or DualPrompt's code has already split (``imagenet-r/{train,test}/<wnid>/``) is read as it is: that
  split is the one those runs used.

``coda``. CODA-Prompt (GT-RIPL/CODA-Prompt, ``dataloaders/dataloader.py``, ``iIMAGENET_R``) reads fixed
  lists, ``dataloaders/splits/imagenet-r_train.yaml`` and ``imagenet-r_test.yaml`` (24,000 / 6,000
  paths ``data/imagenet-r/<wnid>/<file>`` with targets; how they were drawn is not published; also a
  global, not a per-class, split). Copy the two files into ``<data.root>/imagenet-r/`` to use them: each
  listed image must exist and each target must be CODA-Prompt's label of its wnid. CODA-Prompt's labels
  are not the sorted-wnid order (``coda_label`` in ``imagenet_r.tsv``); here labels stay in sorted
  wnid order and ``class_order=coda`` gives CODA-Prompt's order.

Class order (``class_order``, ``class_order_seed`` as in ``split_cifar``): DualPrompt's ImageNet-R config
has ``shuffle=False``, so its tasks take the labels in order: sorted wnids, the default here (no seed).
CODA-Prompt's ``trainer.py`` shuffles only when its seed is above 0 (``random.seed(seed);
random.shuffle(class_order)``, seed = the repetition index, 0 for its single-repetition experiments), so
its first run takes its own labels in order: ``class_order=coda`` (the sorted-wnid labels in the order of
CODA-Prompt's labels). Its later repetitions (Python ``random`` seeded 1, 2, ... over its labels) can be
given as an explicit ``class_order`` list. Tasks: ``n_experiences`` 5, 10 (default) or 20, of 40, 20 or
10 classes (CODA-Prompt's 5-, 10- and 20-task settings; DualPrompt's 10).

Class names: CLIP's ImageNet names of the 200 wnids (open_clip's ``IMAGENET_CLASSNAMES``, indexed by the
sorted 1000 ImageNet wnids of hendrycks/imagenet-r ``eval.py``'s ``all_wnids``), looked up in
``scenarios/class_names/imagenet_clip_names.tsv``, shipped rather than imported from open_clip (see
``scenarios.imagenet100``). The prompt template is CLIP's default unless ``template`` is given.

Neither torchvision nor Avalanche has ImageNet-R, so ``data.download=true`` is refused; extract the archive
by hand (``tar -xf imagenet-r.tar -C <data.root>``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from scenarios.coop_datasets import missing_images
from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.imagenet100 import clip_names, data_lines, resolve_class_order
from scenarios.stream import TaskStream, class_incremental_stream

FOLDER = "imagenet-r"
URL = "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
PAGE = "https://github.com/hendrycks/imagenet-r"
CODA_SPLITS = "https://github.com/GT-RIPL/CODA-Prompt/tree/main/dataloaders/splits"
CODA_FILES = {"train": "imagenet-r_train.yaml", "test": "imagenet-r_test.yaml"}
TRAIN_FRACTION = 0.8    # L2P / DualPrompt: train_size = int(0.8 * len(dataset))
SPLITS = ("dualprompt", "coda")
LAYOUT = f"{FOLDER}/<wnid>/*.jpg, the 200 wnid folders of imagenet-r.tar"


@functools.cache
def imagenet_r_classes() -> list[tuple[str, int, int]]:
    """[(wnid, images in imagenet-r.tar, CODA-Prompt's label)] in sorted wnid order (``imagenet_r.tsv``)."""
    rows = [line.split("\t") for line in data_lines("imagenet_r.tsv")]
    return [(wnid, int(images), int(coda)) for wnid, images, coda in rows]


def coda_order() -> list[int]:
    """CODA-Prompt's first-run class order in our labels (sorted wnids): ours sorted by CODA-Prompt's label."""
    classes = imagenet_r_classes()
    return sorted(range(len(classes)), key=lambda label: classes[label][2])


NAMED_ORDERS = {"coda": (coda_order, "CODA-Prompt's labels in order (trainer.py, seed 0: no shuffle), "
                                     "mapped to sorted-wnid labels")}


def _not_found(root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"ImageNet-R {problem}. Expected {LAYOUT} under data.root={root}. Download {URL} (see {PAGE}) and extract "
        f"it there: tar -xf imagenet-r.tar -C {root}. It cannot be downloaded by clprompt (neither torchvision "
        "nor Avalanche has ImageNet-R).")


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def torchvision_file_list(folder: Path, wnids: Sequence[str]) -> list[tuple[str, int]]:
    """What ``torchvision.datasets.ImageFolder(folder)`` lists, (path, label) with labels in ``wnids`` order:
    torchvision's own ``make_dataset``, hence the same files in the same order as L2P's / DualPrompt's code."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    return make_dataset(str(folder), {w: i for i, w in enumerate(wnids)}, extensions=IMG_EXTENSIONS)


def _check_classes(root: Path, found: list[str], wnids: list[str], where: str) -> None:
    """The class folders ``found`` in ``where`` are exactly ImageNet-R's (an extra one would be a class to
    torchvision's ImageFolder, hence change L2P's / DualPrompt's split)."""
    missing, extra = sorted(set(wnids) - set(found)), sorted(set(found) - set(wnids))
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(wnids)} class folders are missing (first: {', '.join(missing[:5])})")
    if extra:
        problems.append(f"folders that are not ImageNet-R classes are there: {extra[:5]}")
    if problems:
        raise _not_found(root, f"in {where} is incomplete: {'; '.join(problems)}")


def _check_counts(items: list[tuple[str, int]], root: Path, where: str) -> None:
    classes = imagenet_r_classes()
    counts = [0] * len(classes)
    for _, label in items:
        counts[label] += 1
    wrong = {wnid: f"{counts[c]} of {images}" for c, (wnid, images, _) in enumerate(classes) if counts[c] != images}
    if wrong:
        shown = ", ".join(f"{w}: {n}" for w, n in list(wrong.items())[:5])
        raise _not_found(root, f"in {where} is incomplete: {len(wrong)} classes do not have the images imagenet-r.tar "
                               f"has ({shown}; {len(items)} images in all, the archive has "
                               f"{sum(c[1] for c in classes)}); the split would not be the papers'")


def dualprompt_split(items: list[tuple[str, int]], seed: int = 42) -> tuple[list, list]:
    """L2P's / DualPrompt's split of ImageFolder's list: ``torch.randperm(N)`` from a generator seeded with
    ``seed``; the first ``int(0.8 N)`` indices train, the rest test; each side in the list's order."""
    import torch

    n = len(items)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    train = set(permutation[:int(TRAIN_FRACTION * n)])
    return ([item for i, item in enumerate(items) if i in train],
            [item for i, item in enumerate(items) if i not in train])


def _read_l2p_folders(folder: Path, root: Path, wnids: list[str]) -> dict:
    """A folder that L2P's / DualPrompt's code has split: imagenet-r/{train,test}/<wnid>/."""
    halves = [folder / "train", folder / "test"]
    absent = [str(p) for p in halves if not p.is_dir()]
    if absent:
        raise _not_found(root, f"in {folder} is half split: {', '.join(absent)} is missing beside the other "
                               "(L2P's / DualPrompt's code writes both); re-extract the archive")
    left = [name for name in _subfolders(folder) if name not in ("train", "test")]
    if left:
        raise _not_found(root, f"in {folder} holds both the split folders train/, test/ and class folders "
                               f"({left[:5]}); re-extract the archive into an empty folder")
    splits = {}
    for split, half in zip(("train", "test"), halves):
        _check_classes(root, _subfolders(half), wnids, str(half))
        splits[split] = torchvision_file_list(half, wnids)
    _check_counts(splits["train"] + splits["test"], root, f"{folder}/{{train,test}}")
    return splits


def _read_coda_file(path: Path, folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    import yaml

    try:
        payload = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise DatasetNotFoundError(f"{path} is not YAML ({error}); use CODA-Prompt's file ({CODA_SPLITS})") from None
    ok = (isinstance(payload, dict) and isinstance(payload.get("data"), list)
          and isinstance(payload.get("targets"), list) and len(payload["data"]) == len(payload["targets"])
          and payload["data"])
    if not ok:
        raise DatasetNotFoundError(f"{path} is not CODA-Prompt's split file: expected lists 'data' (image paths) and "
                                   f"'targets' of one length ({CODA_SPLITS})")
    label_of = {w: i for i, w in enumerate(wnids)}
    coda_label = {wnid: coda for wnid, _, coda in imagenet_r_classes()}
    items = []
    for index, (entry, target) in enumerate(zip(payload["data"], payload["targets"])):
        parts = str(entry).replace("\\", "/").split("/")
        wnid = parts[-2] if len(parts) >= 2 else ""
        if wnid not in label_of or not isinstance(target, int) or isinstance(target, bool):
            raise DatasetNotFoundError(f"{path}: data[{index}] = {entry!r} with target {target!r} is not "
                                       "'<...>/imagenet-r/<wnid>/<file>' with an integer target of an ImageNet-R wnid")
        if target != coda_label[wnid]:
            raise DatasetNotFoundError(
                f"{path}: data[{index}] ({wnid}) has target {target}, but CODA-Prompt's label of {wnid} is "
                f"{coda_label[wnid]} (labels 0..199 out of range or not CODA-Prompt's file; get it from {CODA_SPLITS})")
        items.append((str(folder / wnid / parts[-1]), label_of[wnid]))
    return items


def _read_coda(folder: Path, wnids: list[str]) -> dict:
    paths = {split: folder / name for split, name in CODA_FILES.items()}
    absent = [str(p) for p in paths.values() if not p.is_file()]
    if absent:
        raise DatasetNotFoundError(
            f"scenario.split=coda needs CODA-Prompt's split files: missing {', '.join(absent)}. Copy "
            f"dataloaders/splits/imagenet-r_train.yaml and imagenet-r_test.yaml from {CODA_SPLITS} into {folder}, "
            "or use scenario.split=dualprompt (computed, no file needed).")
    splits = {split: _read_coda_file(path, folder, wnids) for split, path in paths.items()}
    for split, path in paths.items():
        missing = missing_images([p for p, _ in splits[split]])
        if missing:
            shown = ", ".join(os.path.relpath(p, folder) for p in missing[:5])
            raise DatasetNotFoundError(
                f"{len(missing)} of {len(splits[split])} images listed in {path} are missing under {folder} "
                f"(first: {shown}). Re-extract {URL} there (a folder re-arranged into train/ and test/ by L2P's "
                "code does not fit CODA-Prompt's lists).")
    return splits


def load_imagenet_r(root: str, split: str = "dualprompt", split_seed: int = 42) -> tuple[dict, list[str], dict]:
    """({'train': [(path, label)], 'test': [...]}, class names, description entries); labels: sorted wnids."""
    if split not in SPLITS:
        raise StreamConfigError(f"scenario.split={split!r} is not an ImageNet-R split; choose dualprompt (L2P's / "
                                f"DualPrompt's, computed) or coda (CODA-Prompt's files)")
    root_path = Path(root).expanduser()
    folder = root_path / FOLDER
    if not folder.is_dir():
        raise _not_found(root_path, f"not found: no folder {folder}")
    wnids = [wnid for wnid, _, _ in imagenet_r_classes()]
    if split == "coda":
        splits = _read_coda(folder, wnids)
        record = {"split": "coda", "split_source": f"CODA-Prompt's {' / '.join(CODA_FILES.values())} ({CODA_SPLITS})"}
    elif (folder / "train").is_dir() or (folder / "test").is_dir():
        splits = _read_l2p_folders(folder, root_path, wnids)
        record = {"split": "dualprompt",
                  "split_source": "imagenet-r/train and imagenet-r/test as L2P's / DualPrompt's code wrote them"}
    else:
        _check_classes(root_path, _subfolders(folder), wnids, str(folder))
        items = torchvision_file_list(folder, wnids)
        _check_counts(items, root_path, str(folder))
        train, test = dualprompt_split(items, split_seed)
        splits = {"train": train, "test": test}
        record = {"split": "dualprompt", "split_seed": split_seed,
                  "split_source": f"L2P / DualPrompt (JH-LEE-KR continual_datasets.py Imagenet_R): torch.randperm over "
                                  f"ImageFolder's list, generator seeded {split_seed}, first int(0.8 N) train"}
    record = {"dataset": "ImageNet-R", "root": str(folder), **record}
    return splits, clip_names(wnids), record


def split_imagenet_r(root: str, download: bool = False, split: str = "dualprompt", split_seed: int = 42,
                     n_experiences: Optional[int] = 10, class_order_seed: Optional[int] = None,
                     class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                     increment: Optional[int] = None, template: Optional[str] = None,
                     train_transform: Optional[Callable] = None,
                     eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental ImageNet-R (see the module docstring): 10 tasks of 20 classes by default.

    ``split``: ``dualprompt`` (computed with ``split_seed``) or ``coda`` (CODA-Prompt's files);
    ``class_order``: None (sorted wnids, DualPrompt's), ``coda``, a project-wide name (``icarl``) or a list;
    ``template``: the prompt of methods whose template is "scenario" (default "a photo of a {}.").
    """
    if download:
        raise StreamConfigError(
            f"data.download=true: ImageNet-R cannot be downloaded by clprompt (neither torchvision nor Avalanche "
            f"has it). Download {URL} (see {PAGE}), extract it with tar -xf imagenet-r.tar -C "
            f"{Path(root).expanduser()} (giving {LAYOUT}), then run with data.download=false.")
    splits, names, record = load_imagenet_r(root, split, split_seed)
    order, source = resolve_class_order(class_order, NAMED_ORDERS, len(names))
    record.update(source)
    if template:
        record["template"] = template

    def dataset(part: str, transform: Optional[Callable]) -> ImageFileDataset:
        return ImageFileDataset([p for p, _ in splits[part]], [y for _, y in splits[part]], transform)

    return class_incremental_stream(
        "imagenet_r", dataset("train", train_transform), dataset("test", eval_transform), names, n_experiences,
        class_order_seed, order, description=record, initial_classes=initial_classes, increment=increment)
