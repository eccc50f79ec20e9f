"""CoOp's 11 few-shot datasets, read from CoOp's on-disk layout and its fixed train/val/test splits.

Every dataset lives in its own folder under ``data.root``, as CoOp's DATASETS.md
(https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md) lays it out:

=============  ===========================================================================================
ImageNet       ``imagenet/images/{train,val}/<wnid>/*``, ``imagenet/classnames.txt`` ("<wnid> <class name>")
Caltech101     ``caltech-101/101_ObjectCategories/``, ``caltech-101/split_zhou_Caltech101.json``
OxfordPets     ``oxford_pets/images/``, ``oxford_pets/split_zhou_OxfordPets.json``
StanfordCars   ``stanford_cars/{cars_train,cars_test}/``, ``stanford_cars/split_zhou_StanfordCars.json``
Flowers102     ``oxford_flowers/jpg/``, ``oxford_flowers/split_zhou_OxfordFlowers.json``
Food101        ``food-101/images/``, ``food-101/split_zhou_Food101.json``
FGVCAircraft   ``fgvc_aircraft/images/*.jpg``, ``variants.txt``, ``images_variant_{train,val,test}.txt``
SUN397         ``sun397/SUN397/``, ``sun397/split_zhou_SUN397.json``
DTD            ``dtd/images/`` (or ``dtd/dtd/images/``), ``dtd/split_zhou_DescribableTextures.json``
EuroSAT        ``eurosat/2750/``, ``eurosat/split_zhou_EuroSAT.json``
UCF101         ``ucf101/UCF-101-midframes/``, ``ucf101/split_zhou_UCF101.json``
=============  ===========================================================================================

A split file ("zhou" split, made by CoOp's authors) is JSON ``{"train": [[path, label, classname], ...],
"val": [...], "test": [...]}`` with paths relative to the dataset's image folder (StanfordCars: relative
to ``stanford_cars/`` itself). Labels must be 0..n-1 with one class name each; every named image must
exist. ImageNet and FGVCAircraft have no split file: ImageNet trains on ``images/train`` and tests on
``images/val``, which CoOp also uses as its validation split (there is no other); FGVCAircraft uses the
dataset's own ``images_variant_{train,val,test}.txt``.

Without a zhou split file, a split is built from the image folder, where the folder says the classes:
class sub-folders (Caltech101, Food101, DTD, EuroSAT, UCF101), nested scene folders (SUN397) or breed
file names (OxfordPets). As CoOp's ``read_and_split_data`` does, each class's images are shuffled
(``np.random.RandomState(split_seed)``, classes in label order) and cut 50 % train, 20 % val and 30 %
test (CoOp's rounding; a class needs at least 4 images). The split is saved beside where the zhou file
would be, as ``split_clprompt_<Name>.json`` in the same format (plus a ``"clprompt"`` entry with the
seed), written atomically, with a warning; later runs reuse it. It is not CoOp's split, and the stream
description says so (``split_source: "built (seed N)"``). StanfordCars and Flowers102 keep their labels
in MATLAB annotation files, which are not read here: they need the zhou split file.

Class names are those the split file stores (they are what CoOp trains on), cleaned as CoOp's prompt
learners clean them: underscores become spaces (``name.replace("_", " ")``), nothing else. Per dataset,
what the split file stores, hence what a prompt says:

- ImageNet: the names of ``classnames.txt`` (CLIP's cleaned ImageNet names), e.g. "tench".
- Caltech101: the folder names, except airplanes/Faces/Leopards/Motorbikes -> airplane/face/leopard/
  motorbike; BACKGROUND_Google and Faces_easy are not classes.
- OxfordPets: the breed, lower case, from the file name: "american_bulldog" -> "american bulldog".
- StanfordCars: "<year> <make> <model>", e.g. "2012 Tesla Model S" (year moved to the front by CoOp).
- Flowers102: the names of CoOp's ``cat_to_name.json``, e.g. "pink primrose".
- Food101: the folder names, "apple_pie" -> "apple pie".
- FGVCAircraft: the variant names of ``variants.txt`` as they are, e.g. "707-320", "F/A-18".
- SUN397: the folder path without its first letter, reversed: "a/apartment_building/outdoor" ->
  "outdoor apartment_building" -> "outdoor apartment building".
- DTD: the texture folder names, e.g. "banded".
- EuroSAT: CoOp's descriptive names, e.g. "AnnualCrop" -> "Annual Crop Land", "SeaLake" -> "Sea or Lake".
- UCF101: the CamelCase action split into words with underscores: "Apply_Eye_Makeup" -> "Apply Eye Makeup".

The stream description records ``dataset``, ``root``, ``split`` (the file, or files, read),
``split_source`` and ``template``, CoOp's hand-written prompt for the dataset (its CUSTOM_TEMPLATES).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.atomic_write import write_json_atomic
from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.stream import TaskStream, class_incremental_stream

log = logging.getLogger(__name__)

DATASETS_MD = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
SPLITS = ("train", "val", "test")
BUILT_TRAIN, BUILT_VAL = 0.5, 0.2  # the rest is test: CoOp's read_and_split_data defaults


@dataclass(frozen=True)
class CoopDataset:
    """How one of CoOp's datasets lies on disk.

    image_dirs: candidate image folders relative to the dataset folder, first found wins ("" = itself).
    split_name: the ``<Name>`` of ``split_zhou_<Name>.json`` (None: the dataset has no split file).
    build: how to build a split from the image folder without a split file: "folders" (one sub-folder per
    class), "nested" (SUN397's letter/scene[/sub-scene] folders), "filenames" (OxfordPets' breed_N.jpg),
    or None (impossible here).
    """

    name: str
    config: str
    folder: str
    image_dirs: tuple
    template: str
    split_name: Optional[str] = None
    build: Optional[str] = None
    ignored: tuple = ()
    renames: dict = field(default_factory=dict)
    aliases: tuple = ()
    torchvision: str = ""


DATASETS = {spec.name: spec for spec in (
    CoopDataset("ImageNet", "imagenet", "imagenet", ("images",), "a photo of a {}.",
                torchvision="ImageNet (reads the official archives, no download)"),
    CoopDataset("Caltech101", "caltech101", "caltech-101", ("101_ObjectCategories",), "a photo of a {}.",
                "Caltech101", "folders", ignored=("BACKGROUND_Google", "Faces_easy"),
                renames={"airplanes": "airplane", "Faces": "face", "Leopards": "leopard",
                         "Motorbikes": "motorbike"},
                torchvision="Caltech101"),
    CoopDataset("OxfordPets", "oxford_pets", "oxford_pets", ("images",), "a photo of a {}, a type of pet.",
                "OxfordPets", "filenames", aliases=("OxfordIIITPet", "pets"), torchvision="OxfordIIITPet"),
    CoopDataset("StanfordCars", "stanford_cars", "stanford_cars", ("",), "a photo of a {}.",
                "StanfordCars", None, aliases=("cars",), torchvision="StanfordCars"),
    CoopDataset("Flowers102", "flowers102", "oxford_flowers", ("jpg",), "a photo of a {}, a type of flower.",
                "OxfordFlowers", None, aliases=("OxfordFlowers", "flowers"), torchvision="Flowers102"),
    CoopDataset("Food101", "food101", "food-101", ("images",), "a photo of {}, a type of food.",
                "Food101", "folders", aliases=("food",), torchvision="Food101"),
    CoopDataset("FGVCAircraft", "fgvc_aircraft", "fgvc_aircraft", ("images",),
                "a photo of a {}, a type of aircraft.", aliases=("aircraft",), torchvision="FGVCAircraft"),
    CoopDataset("SUN397", "sun397", "sun397", ("SUN397",), "a photo of a {}.", "SUN397", "nested",
                torchvision="SUN397"),
    CoopDataset("DTD", "dtd", "dtd", ("images", "dtd/images"), "{} texture.", "DescribableTextures",
                "folders", aliases=("DescribableTextures",), torchvision="DTD"),
    CoopDataset("EuroSAT", "eurosat", "eurosat", ("2750",), "a centered satellite photo of {}.", "EuroSAT",
                "folders", renames={"AnnualCrop": "Annual Crop Land", "Forest": "Forest",
                                    "HerbaceousVegetation": "Herbaceous Vegetation Land",
                                    "Highway": "Highway or Road", "Industrial": "Industrial Buildings",
                                    "Pasture": "Pasture Land", "PermanentCrop": "Permanent Crop Land",
                                    "Residential": "Residential Buildings", "River": "River",
                                    "SeaLake": "Sea or Lake"},
                torchvision="EuroSAT"),
    CoopDataset("UCF101", "ucf101", "ucf101", ("UCF-101-midframes",), "a photo of a person doing {}.",
                "UCF101", "folders", torchvision="UCF101 (videos, not CoOp's middle frames)"),
)}


@dataclass
class CoopData:
    """A dataset's three splits as (absolute image paths, labels), its class names and its description."""

    splits: dict
    class_names: list
    description: dict


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def dataset_spec(dataset: str) -> CoopDataset:
    """The dataset called ``dataset``: CoOp's name or the scenario config's, in any case."""
    wanted = _key(dataset)
    for spec in DATASETS.values():
        if wanted in {_key(spec.name), _key(spec.config), *(_key(a) for a in spec.aliases)}:
            return spec
    raise StreamConfigError(f"unknown CoOp dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def clean_class_name(raw: str) -> str:
    """A stored class name as CoOp's prompt learners say it: underscores become spaces."""
    return raw.replace("_", " ")


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _image_files(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _is_image(e.name) and e.is_file())


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())


def _layout(spec: CoopDataset) -> str:
    if spec.name == "ImageNet":
        return "imagenet/images/train/<wnid>/*, imagenet/images/val/<wnid>/*, imagenet/classnames.txt"
    if spec.name == "FGVCAircraft":
        return ("fgvc_aircraft/images/*.jpg, fgvc_aircraft/variants.txt, "
                "fgvc_aircraft/images_variant_{train,val,test}.txt (the 'data' folder of fgvc-aircraft-2013b)")
    images = f"{spec.folder}/{spec.image_dirs[0]}/" if spec.image_dirs[0] else f"{spec.folder}/<image folders>/"
    return f"{images} and {spec.folder}/split_zhou_{spec.split_name}.json"


def _where(spec: CoopDataset) -> str:
    return f"See CoOp's DATASETS.md ({DATASETS_MD}), section {spec.name}, for the files and their layout."


# --- split files -------------------------------------------------------------------------------------


def _malformed(path: Path, problem: str, built: bool) -> DatasetNotFoundError:
    remedy = ("delete it to rebuild the split from the image folder" if built else
              f"replace it with CoOp's file (DATASETS.md: {DATASETS_MD})")
    return DatasetNotFoundError(f"split file {path} is malformed: {problem}; {remedy}")


def parse_split(payload, path: Path, built: bool = False) -> tuple[dict, list]:
    """Check a split file's content; returns ({split: [(relative path, label)]}, stored class names by label)."""
    if not isinstance(payload, dict) or any(split not in payload for split in SPLITS):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise _malformed(path, f"expected a JSON object with lists 'train', 'val' and 'test', found {found}", built)
    names: dict[int, set] = {}
    splits = {}
    for split in SPLITS:
        entries = payload[split]
        if not isinstance(entries, list) or not entries:
            raise _malformed(path, f"'{split}' is not a non-empty list", built)
        items = []
        for index, entry in enumerate(entries):
            ok = (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                  and entry[0] and not os.path.isabs(entry[0]) and isinstance(entry[1], int)
                  and not isinstance(entry[1], bool) and isinstance(entry[2], str) and entry[2])
            if not ok:
                raise _malformed(path, f"{split}[{index}] is {entry!r}, expected "
                                       "[relative image path, integer label, class name]", built)
            items.append((entry[0], entry[1]))
            names.setdefault(entry[1], set()).add(entry[2])
        splits[split] = items
    labels = sorted(names)
    if labels != list(range(len(labels))):
        gaps = sorted(set(range(max(labels) + 1)) - set(labels))[:10]
        raise _malformed(path, f"labels must be 0..n-1; found {len(labels)} labels from {labels[0]} to "
                               f"{labels[-1]} (absent: {gaps})", built)
    clashes = {label: sorted(n) for label, n in names.items() if len(n) > 1}
    if clashes:
        first = dict(list(clashes.items())[:3])
        raise _malformed(path, f"{len(clashes)} labels have more than one class name, e.g. {first}", built)
    return splits, [names[label].pop() for label in labels]


def read_split_file(path: Path, built: bool = False) -> tuple[dict, list, dict]:
    """Read and check a split file; returns (splits, stored class names, the whole JSON payload)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _malformed(path, f"not JSON ({error})", built) from None
    splits, names = parse_split(payload, path, built)
    return splits, names, payload


def missing_images(paths: Sequence[str]) -> list[str]:
    """The paths that are not files, reading each folder's listing once (cheap for 100k images)."""
    listings: dict[str, Optional[set]] = {}
    missing = []
    for path in paths:
        parent, name = os.path.split(path)
        if parent not in listings:
            try:
                listings[parent] = set(os.listdir(parent))
            except OSError:
                listings[parent] = None
        names = listings[parent]
        if names is None or name not in names:
            missing.append(path)
    return missing


def _check_images(paths: Sequence[str], image_dir: Path, source: str, remedy: str) -> None:
    missing = missing_images(paths)
    if missing:
        shown = ", ".join(os.path.relpath(p, image_dir) for p in missing[:5])
        raise DatasetNotFoundError(
            f"{len(missing)} of {len(paths)} images named in {source} are missing under {image_dir} "
            f"(first: {shown}). {remedy}"
        )


# --- building a split from the image folder ------------------------------------------------------------


def _classes_from_folder(spec: CoopDataset, image_dir: Path) -> list[tuple[str, list[str]]]:
    """[(class name as CoOp stores it, [image paths relative to image_dir])], in label order."""
    classes = []
    if spec.build == "folders":
        for folder in _subfolders(image_dir):
            if folder not in spec.ignored:
                files = _image_files(image_dir / folder)
                classes.append((spec.renames.get(folder, folder), [f"{folder}/{f}" for f in files]))
    elif spec.build == "nested":
        for dirpath, dirnames, filenames in os.walk(image_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            relative = Path(dirpath).relative_to(image_dir)
            files = sorted(f for f in filenames if _is_image(f))
            if files and relative.parts:
                parts = relative.parts
                name = " ".join(reversed(parts[1:])) if len(parts) > 1 else parts[0]
                classes.append((name, [f"{relative.as_posix()}/{f}" for f in files]))
    elif spec.build == "filenames":
        by_breed: dict[str, list[str]] = {}
        for name in _image_files(image_dir):
            stem = os.path.splitext(name)[0]
            if "_" in stem:
                by_breed.setdefault(stem.rsplit("_", 1)[0].lower(), []).append(name)
        classes = sorted(by_breed.items())
    return classes


def build_split(spec: CoopDataset, image_dir: Path, seed: int) -> dict:
    """A seeded per-class 50/20/30 train/val/test split of the image folder, as a split file's JSON."""
    classes = _classes_from_folder(spec, image_dir)
    if not classes:
        raise DatasetNotFoundError(
            f"{spec.name}: no split file and no classes of images in {image_dir} to build one from. "
            f"Expected {_layout(spec)}. {_where(spec)}"
        )
    rng = np.random.RandomState(seed)
    payload = {split: [] for split in SPLITS}
    too_small = {}
    for label, (name, files) in enumerate(classes):
        order = [files[i] for i in rng.permutation(len(files))]
        n_train, n_val = round(len(files) * BUILT_TRAIN), round(len(files) * BUILT_VAL)
        if min(n_train, n_val, len(files) - n_train - n_val) <= 0:
            too_small[name] = len(files)
            continue
        parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        for split in SPLITS:
            payload[split].extend([path, label, name] for path in parts[split])
    if too_small:
        shown = dict(list(too_small.items())[:10])
        raise DatasetNotFoundError(
            f"{spec.name}: cannot build a train/val/test split from {image_dir}: {len(too_small)} classes have "
            f"fewer than 4 images ({shown}). The image folder looks incomplete; {_where(spec)}"
        )
    payload["clprompt"] = {"seed": int(seed), "fractions": [BUILT_TRAIN, BUILT_VAL, 1 - BUILT_TRAIN - BUILT_VAL],
                           "about": "built by clprompt from the image folder (not CoOp's split): per class, "
                                    "images shuffled with numpy RandomState(seed), cut 50/20/30"}
    return payload


# --- the datasets without a split file -----------------------------------------------------------------


def read_imagenet(dataset_dir: Path) -> tuple[dict, list]:
    """ImageNet: labels in sorted wnid-folder order, names from classnames.txt; val is also the test split."""
    train_dir, val_dir = dataset_dir / "images" / "train", dataset_dir / "images" / "val"
    names_file = dataset_dir / "classnames.txt"
    missing = [str(p) for p in (train_dir, val_dir) if not p.is_dir()] + [str(names_file)] * (not names_file.is_file())
    if missing:
        raise DatasetNotFoundError(
            f"ImageNet is incomplete in {dataset_dir}: missing {', '.join(missing)}. Expected "
            f"{_layout(DATASETS['ImageNet'])}; classnames.txt is CoOp's (CLIP's class names). "
            f"{_where(DATASETS['ImageNet'])}"
        )
    wnid_names = {}
    for number, line in enumerate(names_file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.strip().split(" ", 1)
            if len(parts) != 2 or not parts[1].strip():
                raise DatasetNotFoundError(f"{names_file} line {number} is {line!r}, expected '<wnid> <class name>'")
            wnid_names[parts[0]] = parts[1].strip()
    wnids = _subfolders(train_dir)
    val_wnids = _subfolders(val_dir)
    if wnids != val_wnids:
        only_train, only_val = sorted(set(wnids) - set(val_wnids)), sorted(set(val_wnids) - set(wnids))
        raise DatasetNotFoundError(
            f"ImageNet: {train_dir} and {val_dir} hold different class folders (only in train: {only_train[:5]}, "
            f"only in val: {only_val[:5]}). Extract the validation images into one folder per wnid."
        )
    if not wnids:
        raise DatasetNotFoundError(f"ImageNet: no class folders in {train_dir}. "
                                   f"Expected {_layout(DATASETS['ImageNet'])}")
    unnamed = [w for w in wnids if w not in wnid_names]
    if unnamed:
        raise DatasetNotFoundError(f"ImageNet: {len(unnamed)} class folders have no line in {names_file} "
                                   f"(first: {unnamed[:5]}); use CoOp's classnames.txt")
    splits = {}
    for split, folder in (("train", train_dir), ("test", val_dir)):
        splits[split] = [(str(folder / wnid / name), label)
                         for label, wnid in enumerate(wnids) for name in _image_files(folder / wnid)]
    splits["val"] = splits["test"]
    return splits, [wnid_names[w] for w in wnids]


def read_fgvc_aircraft(dataset_dir: Path) -> tuple[dict, list]:
    """FGVC-Aircraft's own variant splits: labels in variants.txt order, names as variants.txt gives them."""
    image_dir = dataset_dir / "images"
    files = {"variants": dataset_dir / "variants.txt",
             **{split: dataset_dir / f"images_variant_{split}.txt" for split in SPLITS}}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"FGVCAircraft is incomplete in {dataset_dir}: missing {', '.join(missing)}. "
            f"Expected {_layout(DATASETS['FGVCAircraft'])}. {_where(DATASETS['FGVCAircraft'])}"
        )
    variants = [line.strip() for line in files["variants"].read_text(encoding="utf-8").splitlines() if line.strip()]
    repeated = sorted({v for v in variants if variants.count(v) > 1})
    if not variants or repeated:
        raise DatasetNotFoundError(f"{files['variants']} must list each variant once; "
                                   f"{'it is empty' if not variants else f'repeated: {repeated[:5]}'}")
    label_of = {name: label for label, name in enumerate(variants)}
    splits = {}
    for split in SPLITS:
        items = []
        for number, line in enumerate(files[split].read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.strip().split(" ", 1)
            if len(parts) != 2 or parts[1].strip() not in label_of:
                raise DatasetNotFoundError(
                    f"{files[split]} line {number} is {line!r}: expected '<image id> <variant>' with a variant "
                    f"of {files['variants']}"
                )
            items.append((str(image_dir / f"{parts[0]}.jpg"), label_of[parts[1].strip()]))
        splits[split] = items
    return splits, variants


# --- loading -------------------------------------------------------------------------------------------


def _find_image_dir(spec: CoopDataset, dataset_dir: Path) -> Path:
    candidates = [dataset_dir / d if d else dataset_dir for d in spec.image_dirs]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"{spec.name} is incomplete: {dataset_dir} exists but its image folder does not (looked for "
        f"{' and '.join(str(c) for c in candidates)}). Expected {_layout(spec)}. {_where(spec)}"
    )


def _split_from_files(spec: CoopDataset, dataset_dir: Path, image_dir: Path, split_seed: int):
    """(splits with absolute paths, stored names, description entries) from the zhou, saved or built split."""
    zhou = dataset_dir / f"split_zhou_{spec.split_name}.json"
    ours = dataset_dir / f"split_clprompt_{spec.split_name}.json"
    if zhou.is_file():
        splits, names, _ = read_split_file(zhou)
        record = {"split": zhou.name, "split_source": "zhou"}
        source, remedy = zhou, f"Re-extract the images. {_where(spec)}"
    elif ours.is_file():
        splits, names, payload = read_split_file(ours, built=True)
        about = payload.get("clprompt")
        seed = about.get("seed") if isinstance(about, dict) else None
        if seed is not None and seed != split_seed:
            raise StreamConfigError(
                f"{spec.name}: {ours} was built with split seed {seed}, but scenario.split_seed={split_seed}. "
                f"Use scenario.split_seed={seed} to reuse it, or delete it to build one with seed {split_seed}."
            )
        record = {"split": ours.name, "split_source": f"built (seed {seed if seed is not None else 'unknown'})"}
        source, remedy = ours, f"Re-extract the images, or delete {ours} to rebuild the split from what is there"
        log.info("%s: reusing the split %s built from the image folder (not CoOp's)", spec.name, ours)
    elif spec.build is None:
        raise DatasetNotFoundError(
            f"{spec.name}: no split file: looked for {zhou}. This dataset's labels are in annotation files that "
            f"clprompt does not read, so the split cannot be built here; download split_zhou_{spec.split_name}.json "
            f"as CoOp's DATASETS.md says ({DATASETS_MD}) and put it in {dataset_dir}."
        )
    else:
        payload = build_split(spec, image_dir, split_seed)
        splits, names = parse_split(payload, ours, built=True)
        record = {"split": ours.name, "split_source": f"built (seed {split_seed})"}
        try:
            write_json_atomic(ours, payload)
            saved = f"saved it as {ours}; later runs reuse it"
        except OSError as error:
            saved = f"could not save it as {ours} ({error}); it is rebuilt the same way while the folder is unchanged"
            record["split"] = f"{ours.name} (not saved)"
        log.warning(
            "%s: no CoOp split file %s; built a per-class 50/20/30 train/val/test split of %s with seed %d and %s. "
            "It is not CoOp's split: put split_zhou_%s.json there to use theirs.",
            spec.name, zhou, image_dir, split_seed, saved, spec.split_name)
        return {s: [(str(image_dir / p), y) for p, y in items] for s, items in splits.items()}, names, record
    absolute = {s: [(str(image_dir / p), y) for p, y in items] for s, items in splits.items()}
    _check_images([p for items in absolute.values() for p, _ in items], image_dir, str(source), remedy)
    return absolute, names, record


def load_coop_dataset(dataset: str, root: str, split_seed: int = 1) -> CoopData:
    """Read one of CoOp's datasets (see the module docstring): its splits, class names and description."""
    spec = dataset_spec(dataset)
    dataset_dir = Path(root).expanduser() / spec.folder
    if not dataset_dir.is_dir():
        raise DatasetNotFoundError(
            f"{spec.name} not found: no folder {dataset_dir}. Put the dataset there in CoOp's layout "
            f"({_layout(spec)}) or point data.root at the folder that holds {spec.folder}/. {_where(spec)}"
        )
    if spec.name == "ImageNet":
        splits, names = read_imagenet(dataset_dir)
        record = {"split": "images/train, images/val",
                  "split_source": "folders (val is the test split and, as in CoOp, also the validation split)"}
    elif spec.name == "FGVCAircraft":
        image_dir = _find_image_dir(spec, dataset_dir)
        splits, names = read_fgvc_aircraft(dataset_dir)
        _check_images([p for items in splits.values() for p, _ in items], image_dir,
                      "images_variant_{train,val,test}.txt", f"Re-extract the images. {_where(spec)}")
        record = {"split": "images_variant_{train,val,test}.txt", "split_source": "official (FGVC-Aircraft)"}
    else:
        image_dir = _find_image_dir(spec, dataset_dir)
        splits, names, record = _split_from_files(spec, dataset_dir, image_dir, split_seed)
    description = {"dataset": spec.name, "root": str(dataset_dir), **record, "n_classes": len(names),
                   "template": spec.template}
    return CoopData(splits=splits, class_names=[clean_class_name(n) for n in names], description=description)


def coop_stream(dataset: str, root: str, download: bool = False, split_seed: int = 1,
                n_experiences: Optional[int] = 1, class_order_seed: Optional[int] = None,
                class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                increment: Optional[int] = None, train_transform: Optional[Callable] = None,
                eval_transform: Optional[Callable] = None) -> TaskStream:
    """One of CoOp's 11 datasets as a class-incremental stream with train, valid and test splits.

    ``dataset``: ImageNet, Caltech101, OxfordPets, StanfordCars, Flowers102, Food101, FGVCAircraft, SUN397,
    DTD, EuroSAT or UCF101 (the scenario config names, e.g. ``oxford_pets``, work too). ``split_seed`` only
    matters when no split file exists and one is built. ``download=True`` is refused: these datasets have
    no common download (see CoOp's DATASETS.md).
    """
    spec = dataset_spec(dataset)
    if download:
        raise StreamConfigError(
            f"data.download=true: {spec.name} cannot be downloaded by clprompt; CoOp's datasets have no common "
            f"download and need CoOp's split files. Follow CoOp's DATASETS.md ({DATASETS_MD}) to put it under "
            f"{Path(root).expanduser() / spec.folder} ({_layout(spec)}), then run with data.download=false. "
            f"(torchvision.datasets.{spec.torchvision} exists, but not in CoOp's layout nor with its split.)"
        )
    data = load_coop_dataset(spec.name, root, split_seed)

    def dataset_of(split: str, transform: Optional[Callable]) -> ImageFileDataset:
        items = data.splits[split]
        return ImageFileDataset([p for p, _ in items], [y for _, y in items], transform)

    return class_incremental_stream(
        spec.config, dataset_of("train", train_transform), dataset_of("test", eval_transform), data.class_names,
        n_experiences, class_order_seed, class_order, description=data.description,
        valid=dataset_of("val", eval_transform), initial_classes=initial_classes, increment=increment,
    )
