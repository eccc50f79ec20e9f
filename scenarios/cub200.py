"""Split CUB-200-2011: 200 bird species in 10 experiences of 20, read from the published archive.

Layout (``CUB_200_2011.tgz`` of https://data.caltech.edu/records/65de6-vp158, extracted under
``data.root``)::

    <data.root>/CUB_200_2011/
        images/<nnn.Class_Name>/*.jpg      e.g. images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
        images.txt                         "<image id> <path under images/>"
        image_class_labels.txt             "<image id> <class id 1..200>"
        train_test_split.txt               "<image id> <1: train, 0: test>"
        classes.txt                        "<class id> <nnn.Class_Name>"

(``bounding_boxes.txt``, ``attributes/``, ``parts/`` are in the archive too; they are not read.)

Split: the official one of ``train_test_split.txt`` (5,994 train / 5,794 test images), as SLCA
(GengDavid/SLCA ``split_cub.py``) builds its folders. There is no validation split. LAMDA-PILOT,
RanPAC and APER (RevisitingCIL) read another split instead: a re-split CUB folder that Zhou et al.
distribute on Google Drive (RanPAC's README: "specific splits and/or subsets of the full original
datasets"); it cannot be rebuilt from the archive, and results on it are not comparable to ours.

Labels: class id - 1, the order of ``classes.txt``. SLCA and PILOT label by torchvision's ImageFolder
over the ``nnn.Class_Name`` folders, whose sorted order is the same (the ids are zero-padded), so the
class order they draw with ``np.random.seed(1993); np.random.permutation(200)`` is our default
``class_order_seed=1993`` (it starts 168, 136, 51, 9, 183: PROOF's CUB log prints the same list).
Each experience gets 20 classes (SLCA ``slca_cub.json``, RanPAC ``cub_publish.csv``: init_cls =
increment = 20).

Class names: the folder name without its number, underscores as spaces ("001.Black_footed_Albatross"
-> "Black footed Albatross", case kept), exactly the 200 names of PROOF's ``utils/labels.json``
(zhoudw-zdw/PROOF, a CLIP-based learner from PILOT's group). The prompt template CLIP-based works use
for CUB, PROOF's ``templates.json`` among them, is "a photo of a {}, a type of bird."; it is recorded in
the stream description for methods whose template is "scenario".

Avalanche's ``avalanche.benchmarks.datasets.CUB200`` reads this layout and the official split with the
same labels, but every item it returns is the image cropped to its ``bounding_boxes.txt`` box
(``PathsDataset`` crops when a box is given), while SLCA / PILOT / PROOF train and test on whole images;
it also gives no class names. Avalanche's ``SplitCUB200`` builds on it with its own defaults (11
experiences, 100 classes in the first, class order from seed 0). So neither is used to read
(``tests/test_cub_five.py::test_avalanche_cub200_crops_to_the_bounding_box`` shows the difference);
``data.download=true`` uses ``CUB200`` to download and extract the archive (official URL, then its
Google Drive copy, md5-checked).

Checked when reading: the four text files and ``images/`` exist; each line parses; the three per-image
files list the same image ids; every class id is one of ``classes.txt``; every image lies in the folder
of its class; every class folder and every listed image exists. Each problem is named in the error.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from scenarios.coop_datasets import missing_images
from scenarios.errors import DatasetNotFoundError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.stream import TaskStream, class_incremental_stream

FOLDER = "CUB_200_2011"
URL = "https://data.caltech.edu/records/65de6-vp158"
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
TEMPLATE = "a photo of a {}, a type of bird."
LAYOUT = (f"{FOLDER}/images/<nnn.Class_Name>/*.jpg, {FOLDER}/images.txt, {FOLDER}/image_class_labels.txt, "
          f"{FOLDER}/train_test_split.txt, {FOLDER}/classes.txt")


def class_name(folder: str) -> str:
    """A class folder name as a prompt says it: '001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    number, dot, rest = folder.partition(".")
    name = rest if dot and number.isdigit() else folder
    return name.replace("_", " ")


def _remedy() -> str:
    return (f"Re-extract CUB_200_2011.tgz ({URL}), or add data.download=true on a machine with internet "
            "(Avalanche's CUB200 downloads it)")


def _pairs(path: Path, what: str) -> list[tuple[int, str]]:
    """The lines of a CUB text file as (integer id, rest), in file order; a malformed line is an error."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise DatasetNotFoundError(
                    f"{path} line {number} is {line.rstrip()!r}, expected '<id> <{what}>'. {_remedy()}")
            pairs.append((int(parts[0]), parts[1]))
    if not pairs:
        raise DatasetNotFoundError(f"{path} is empty. {_remedy()}")
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)[:5]
        raise DatasetNotFoundError(f"{path} lists some ids more than once (first: {repeated}). {_remedy()}")
    return pairs


def read_cub200(root: str) -> tuple[dict, list[str], Path]:
    """CUB-200-2011's official split: ({'train': [(path, label)], 'test': [...]}, class names, folder)."""
    folder = Path(root).expanduser() / FOLDER
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"CUB-200-2011 not found: no folder {folder}. Extract CUB_200_2011.tgz ({URL}) under "
            f"data.root={root} so that it holds {LAYOUT}, or add data.download=true on a machine with internet.")
    image_dir = folder / "images"
    missing = [name for name in FILES if not (folder / name).is_file()]
    missing += ["images/"] if not image_dir.is_dir() else []
    if missing:
        raise DatasetNotFoundError(
            f"CUB-200-2011 is incomplete in {folder}: missing {', '.join(missing)}. Expected {LAYOUT}. {_remedy()}")
    classes = _pairs(folder / "classes.txt", "nnn.Class_Name")
    class_ids = [i for i, _ in classes]
    if class_ids != list(range(1, len(classes) + 1)):
        raise DatasetNotFoundError(
            f"{folder / 'classes.txt'} must number its classes 1..{len(classes)} in order; found ids "
            f"{class_ids[:5]}{' ...' if len(class_ids) > 5 else ''}. {_remedy()}")
    class_folders = [raw for _, raw in classes]
    paths = dict(_pairs(folder / "images.txt", "path under images/"))
    labels = dict(_pairs(folder / "image_class_labels.txt", "class id"))
    is_train = dict(_pairs(folder / "train_test_split.txt", "1 or 0"))
    for name, ids in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        if set(ids) != set(paths):
            absent, extra = sorted(set(paths) - set(ids)), sorted(set(ids) - set(paths))
            raise DatasetNotFoundError(
                f"{folder / name} and {folder / 'images.txt'} list different images: {len(absent)} image ids without "
                f"a line in {name} (first: {absent[:5]}), {len(extra)} not in images.txt (first: {extra[:5]}). "
                f"{_remedy()}")
    bad_labels = sorted(i for i, c in labels.items() if not c.isdigit() or not 1 <= int(c) <= len(classes))
    if bad_labels:
        raise DatasetNotFoundError(
            f"{folder / 'image_class_labels.txt'}: {len(bad_labels)} images have a class id outside 1..{len(classes)} "
            f"of classes.txt (first: image {bad_labels[0]} -> {labels[bad_labels[0]]!r}). {_remedy()}")
    bad_split = sorted(i for i, s in is_train.items() if s not in ("0", "1"))
    if bad_split:
        raise DatasetNotFoundError(
            f"{folder / 'train_test_split.txt'}: {len(bad_split)} images are marked neither 1 (train) nor 0 (test) "
            f"(first: image {bad_split[0]} -> {is_train[bad_split[0]]!r}). {_remedy()}")
    misplaced = [i for i, path in paths.items() if path.split("/", 1)[0] != class_folders[int(labels[i]) - 1]]
    if misplaced:
        first = misplaced[0]
        raise DatasetNotFoundError(
            f"{folder}: {len(misplaced)} images of images.txt are not in the folder of their class in "
            f"image_class_labels.txt (first: image {first}, {paths[first]!r}, class {labels[first]} = "
            f"{class_folders[int(labels[first]) - 1]!r}); the text files do not belong together. {_remedy()}")
    absent_folders = [name for name in class_folders if not (image_dir / name).is_dir()]
    if absent_folders:
        raise DatasetNotFoundError(
            f"CUB-200-2011 is incomplete: {len(absent_folders)} of the {len(class_folders)} class folders of "
            f"classes.txt are missing under {image_dir} (first: {', '.join(absent_folders[:5])}). {_remedy()}")
    order = sorted(paths)
    absolute = [str(image_dir / paths[i]) for i in order]
    absent = missing_images(absolute)
    if absent:
        shown = ", ".join(os.path.relpath(p, image_dir) for p in absent[:5])
        raise DatasetNotFoundError(
            f"CUB-200-2011 is incomplete: {len(absent)} of the {len(absolute)} images listed in images.txt are "
            f"missing under {image_dir} (first: {shown}). {_remedy()}")
    splits = {"train": [], "test": []}
    for image_id, path in zip(order, absolute):
        splits["train" if is_train[image_id] == "1" else "test"].append((path, int(labels[image_id]) - 1))
    return splits, [class_name(raw) for raw in class_folders], folder


def download_cub200(root: str) -> None:
    """Download and extract CUB_200_2011.tgz under ``root`` with Avalanche's CUB200 (needs internet)."""
    from avalanche.benchmarks.datasets import CUB200

    CUB200(root=str(Path(root).expanduser()), train=True, download=True)


def cub200_stream(root: str, download: bool = False, n_experiences: Optional[int] = 10,
                  class_order_seed: Optional[int] = 1993,
                  class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                  increment: Optional[int] = None, template: Optional[str] = TEMPLATE,
                  train_transform: Optional[Callable] = None,
                  eval_transform: Optional[Callable] = None) -> TaskStream:
    """Class-incremental CUB-200-2011 (10 experiences of 20 classes, order from seed 1993 by default).

    ``class_order``: ``icarl`` (seed 1993) or an explicit permutation of 0..199; ``initial_classes`` /
    ``increment``: the B-Inc settings (B100-Inc20: initial_classes=100 increment=20 n_experiences=null);
    ``template``: the prompt of methods whose template is "scenario" (null: "a photo of a {}.").
    """
    if download and not (Path(root).expanduser() / FOLDER).is_dir():
        download_cub200(root)
    splits, names, folder = read_cub200(root)

    def dataset(split: str, transform: Optional[Callable]) -> ImageFileDataset:
        return ImageFileDataset([p for p, _ in splits[split]], [y for _, y in splits[split]], transform)

    return class_incremental_stream(
        "cub200", dataset("train", train_transform), dataset("test", eval_transform), names, n_experiences,
        class_order_seed, class_order,
        description={"dataset": "CUB-200-2011", "root": str(folder), "split": "train_test_split.txt",
                     "split_source": "official (CUB-200-2011 train_test_split.txt)",
                     "class_names_source": "classes.txt, number dropped, underscores as spaces",
                     **({"template": template} if template else {})},
        initial_classes=initial_classes, increment=increment,
    )
