"""DomainNet (Peng et al. 2019, http://ai.bu.edu/M3SDA/) as a domain-incremental stream: one domain per experience.

Layout under ``data.root`` (the six image archives extracted into ``<data.root>/domainnet``, beside the official
list files)::

    domainnet/<domain>/<class folder>/<file>.jpg       domains clipart infograph painting quickdraw real sketch
    domainnet/<domain>_train.txt                       lines "<domain>/<class folder>/<file>.jpg <label>"
    domainnet/<domain>_test.txt

The protocol is S-Prompts' (Wang et al. 2022, iamwangyabin/S-Prompts ``utils/data.py::iDomainNet``,
``configs/domainnet_slip.json``): 6 experiences in the order clipart, infograph, painting, quickdraw, real,
sketch; experience d trains on ``<domain>_train.txt`` and every domain's ``<domain>_test.txt`` is a test
domain (a 6 x 6 accuracy matrix). Labels are the list files' (0..344); all 345 classes are candidates at
every step (``eval.protocol=domain_incremental``).

Class names: the class folders in label order, as S-Prompts prompts with them (its ``utils/class_names.py``
``domainnet_classnames``, kept in ``scenarios/class_names/domainnet.txt``; its prompt learner, like CoOp's,
replaces "_" by " "): "aircraft carrier", ..., "The Eiffel Tower", "t-shirt", "teddy-bear". The list order is
the lists' own, not a plain sort (cello before cell_phone).

Every list is checked before a stream is built, and every problem is named: a missing list file or domain
folder; a malformed line; a path outside its domain; a label that is not its class folder's (the first
mismatches and their number); a listed image that is not on disk (the first ones and their number); a class
absent from a domain's test list or training list. One gap is published and accepted: ``painting_train.txt``
has no t-shirt (label 327; noted by Dassl.pytorch ``dassl/data/datasets/da/domainnet.py``); the painting
experience then trains without it, and should painting_test.txt lack it too, that test domain is scored
without it (recorded in the description as ``list_gaps``, keyed ``<domain>_<split>``).

No download: DomainNet is in neither torchvision nor Avalanche; the error names the archives' and lists' URLs.
Use the "cleaned" clipart and painting archives (the ``groundtruth/`` URLs), which the lists describe.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from scenarios.coop_datasets import missing_images
from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.stream import TaskStream

log = logging.getLogger(__name__)

FOLDER = "domainnet"
PAGE = "http://ai.bu.edu/M3SDA/"
DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")   # S-Prompts' order
SPLITS = ("train", "test")
_BASE = "http://csr.bu.edu/ftp/visda/2019/multi-source"
ARCHIVE_URLS = {
    "clipart": f"{_BASE}/groundtruth/clipart.zip",     # the cleaned version
    "infograph": f"{_BASE}/infograph.zip",
    "painting": f"{_BASE}/groundtruth/painting.zip",   # the cleaned version
    "quickdraw": f"{_BASE}/quickdraw.zip",
    "real": f"{_BASE}/real.zip",
    "sketch": f"{_BASE}/sketch.zip",
}
LIST_URL = _BASE + "/domainnet/txt/{domain}_{split}.txt"
KNOWN_GAPS = {"painting": ("t-shirt",)}   # class folders a published list lacks (painting_train.txt; its test list too, if so)
LAYOUT = (f"{FOLDER}/<domain>/<class>/*.jpg and {FOLDER}/<domain>_train.txt, {FOLDER}/<domain>_test.txt "
          "(lines '<domain>/<class>/<file>.jpg <label>')")
NAMES_FILE = Path(__file__).resolve().parent / "class_names" / "domainnet.txt"


@functools.cache
def domainnet_class_folders() -> list[str]:
    """DomainNet's 345 class folders, index = the list files' label."""
    lines = NAMES_FILE.read_text(encoding="utf-8").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(names) != 345:
        raise RuntimeError(f"{NAMES_FILE} lists {len(names)} class folders, expected 345")
    return names


def clean_class_name(folder: str) -> str:
    """A class folder as a prompt says it (S-Prompts' and CoOp's cleaning): 'aircraft_carrier' -> 'aircraft carrier'."""
    return folder.replace("_", " ")


def download_help(domains: Sequence[str]) -> str:
    """Where each domain's archive and lists are published."""
    parts = [f"{d}: {ARCHIVE_URLS[d]}, {LIST_URL.format(domain=d, split='train')}, "
             f"{LIST_URL.format(domain=d, split='test')}" for d in domains]
    return f"DomainNet is published at {PAGE} ({'; '.join(parts)})"


def _domain_list(value: Sequence[str]) -> list[str]:
    domains = [str(d) for d in value] if not isinstance(value, str) else [value]
    unknown = [d for d in domains if d not in DOMAINS]
    if not domains or unknown or len(set(domains)) != len(domains):
        raise StreamConfigError(f"scenario.domains={domains}: give distinct domains, each one of {', '.join(DOMAINS)}"
                                + (f" ({unknown} are not)" if unknown else ""))
    return domains


def _shown(items: Sequence[str], limit: int = 5) -> str:
    return "; ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def read_list(path: Path, domain: str, folders: Sequence[str]) -> tuple[list[str], list[int]]:
    """A list file's (relative image paths, labels), each line checked: two fields, an integer label, a path
    '<domain>/<class folder>/<file>' whose class folder is the label's (``folders[label]``)."""
    index = {name: label for label, name in enumerate(folders)}
    paths, labels, malformed, mismatched = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            parts = fields[0].split("/")
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or len(parts) != 3 or parts[0] != domain:
                malformed.append(f"line {number}: {line.strip()!r}")
                continue
            label, folder = int(fields[1]), parts[1]
            if index.get(folder) != label:
                expected = index.get(folder)
                mismatched.append(f"line {number}: {fields[0]} has label {label}, its folder {folder!r} is "
                                  + (f"label {expected}" if expected is not None else "not a DomainNet class"))
            paths.append(fields[0])
            labels.append(label)
    if malformed:
        raise DatasetNotFoundError(
            f"{path}: {len(malformed)} malformed line(s), expected '{domain}/<class>/<file>.jpg <label>' (first: "
            f"{_shown(malformed)}). Replace it with {LIST_URL.format(domain=domain, split=path.stem.split('_')[-1])}")
    if mismatched:
        raise DatasetNotFoundError(
            f"{path}: {len(mismatched)} line(s) whose label is not their class folder's (labels follow "
            f"{NAMES_FILE.name}, S-Prompts' order; first: {_shown(mismatched)}). Use the official list "
            f"{LIST_URL.format(domain=domain, split=path.stem.split('_')[-1])}")
    if not paths:
        raise DatasetNotFoundError(f"{path} lists no images. Replace it with the official list "
                                   f"({LIST_URL.format(domain=domain, split=path.stem.split('_')[-1])})")
    return paths, labels


def missing_files(folder: Path, relative: Sequence[str]) -> list[str]:
    """The listed paths (relative to ``folder``) that are not files under it."""
    absent = set(missing_images([str(folder / path) for path in relative]))
    return [path for path in relative if str(folder / path) in absent]


def load_domainnet(root: str, domains: Sequence[str] = DOMAINS) -> tuple[dict, list[str], dict]:
    """Read and check the lists of ``domains``; returns ({domain: {split: (absolute paths, labels)}},
    class names, {domain: class folders its training list lacks})."""
    base = Path(root).expanduser()
    folder = base / FOLDER
    if not folder.is_dir():
        raise DatasetNotFoundError(f"DomainNet not found: no folder {folder}. Expected {LAYOUT}. "
                                   f"{download_help(domains)}; put the extracted archives and the lists in {folder}.")
    absent, wanted = [], []
    for domain in domains:
        lacking = [str(folder / f"{domain}_{s}.txt") for s in SPLITS if not (folder / f"{domain}_{s}.txt").is_file()]
        lacking += [] if (folder / domain).is_dir() else [f"{folder / domain}/ (the images)"]
        absent += lacking
        wanted += [domain] if lacking else []
    if absent:
        raise DatasetNotFoundError(f"DomainNet is incomplete in {folder}: missing {', '.join(absent)}. Expected "
                                   f"{LAYOUT}. {download_help(wanted)}.")
    folders = domainnet_class_folders()
    read = {d: {s: read_list(folder / f"{d}_{s}.txt", d, folders) for s in SPLITS} for d in domains}

    for domain in domains:
        for split in SPLITS:
            relative = read[domain][split][0]
            missing = missing_files(folder, relative)
            if missing:
                raise DatasetNotFoundError(
                    f"{len(missing)} of {len(relative)} images listed in {folder / f'{domain}_{split}.txt'} are not "
                    f"in {folder} (first: {_shown(missing)}). Extract {ARCHIVE_URLS[domain]} into {folder} (the "
                    f"cleaned archive for clipart and painting, which the lists describe)")

    labels = sorted({y for d in domains for s in SPLITS for y in read[d][s][1]})
    n_classes = labels[-1] + 1
    gaps = {}
    for domain in domains:
        for split in SPLITS:
            lacking = sorted(set(range(n_classes)) - set(read[domain][split][1]))
            known = set(KNOWN_GAPS.get(domain, ()))
            unexpected = [folders[c] for c in lacking if folders[c] not in known]
            if unexpected:
                raise DatasetNotFoundError(
                    f"{folder / f'{domain}_{split}.txt'} lists no image of {len(unexpected)} of the {n_classes} "
                    f"classes (first: {', '.join(unexpected[:10])}); a domain-incremental stream needs every class "
                    f"in every domain. Replace it with the official list {LIST_URL.format(domain=domain, split=split)}")
            if lacking:
                gaps[f"{domain}_{split}"] = [folders[c] for c in lacking]
    if n_classes != len(folders):
        log.warning("DomainNet: the lists of %s name %d of the %d classes (labels 0..%d); the stream has %d",
                    ", ".join(domains), n_classes, len(folders), n_classes - 1, n_classes)
    for listed, lacking in gaps.items():
        log.info("DomainNet: %s.txt has no %s (a published gap); that split goes without it", listed, ", ".join(lacking))
    data = {d: {s: ([str(folder / p) for p in read[d][s][0]], read[d][s][1]) for s in SPLITS} for d in domains}
    return data, [clean_class_name(f) for f in folders[:n_classes]], gaps


def domainnet_stream(root: str, download: bool = False, domains: Sequence[str] = DOMAINS,
                     template: Optional[str] = None, train_transform: Optional[Callable] = None,
                     eval_transform: Optional[Callable] = None) -> TaskStream:
    """DomainNet as S-Prompts runs it: one experience per domain (``domains``, in order), each domain's
    official train list its training set and its test list a test domain. ``download=True`` is refused
    (no library downloads DomainNet); ``template``: the prompt of methods whose template is "scenario"."""
    from scenarios.domain_stream import domain_incremental_stream

    chosen = _domain_list(domains)
    if download:
        raise StreamConfigError(
            f"data.download=true: DomainNet cannot be downloaded by clprompt (it is in neither torchvision nor "
            f"Avalanche). {download_help(chosen)}; extract them into {Path(root).expanduser() / FOLDER} beside the "
            "lists, then run with data.download=false.")
    data, class_names, gaps = load_domainnet(root, chosen)
    built = {d: {"train": ImageFileDataset(*data[d]["train"], train_transform),
                 "test": ImageFileDataset(*data[d]["test"], eval_transform)} for d in chosen}
    description = {
        "dataset": "DomainNet", "root": str(Path(root).expanduser() / FOLDER),
        "split": "official <domain>_train.txt / <domain>_test.txt", "protocol": "S-Prompts",
        "domain_order_source": "iamwangyabin/S-Prompts utils/data.py (iDomainNet.domain_names)",
        "class_names_source": "iamwangyabin/S-Prompts utils/class_names.py (domainnet_classnames), '_' -> ' '",
        **({"list_gaps": gaps} if gaps else {}),
        **({"template": template} if template else {}),
    }
    return domain_incremental_stream("domainnet", built, class_names, description=description,
                                     allow_missing_train_classes=any(k.endswith("_train") for k in gaps),
                                     allow_missing_test_classes=any(k.endswith("_test") for k in gaps))
