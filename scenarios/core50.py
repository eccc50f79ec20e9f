"""CORe50 (Lomonaco & Maltoni 2017), New Instances (NI): one training session per experience, held-out test sessions.

Layout under ``data.root`` (the published ``core50_128x128.zip`` extracted into ``<data.root>/core50``)::

    core50/core50_128x128/s<session>/o<object>/C_<ss>_<oo>_<fff>.png

sessions s1..s11, objects o1..o50, ``ss`` / ``oo`` the session and object as two digits, ``fff`` the frame
(about 300 frames per object and session, 164,866 images in all). Object o<k> is class k - 1.

The protocol is S-Prompts' (Wang et al. 2022, iamwangyabin/S-Prompts ``utils/data.py::iCore50``), which reads
CORe50 through Lomonaco's own loader (``utils/datautils/core50data.py::CORE50(scenario="ni")``, run 0):

- 8 experiences, one per training session, in the order of NI run 0: s11, s4, s2, s9, s1, s6, s5, s8. That
  order is the run-0 permutation of the official generator (vlomonaco/core50 ``core/core50_inc_finetuning.py``:
  ``np.random.seed(1)`` then ``np.random.shuffle`` of the 8 training sessions 1, 2, 4, 5, 6, 8, 9, 11 for
  scenario NI; run 0 is the first shuffle); its first session, s11, is the first line of the published
  ``batches_filelists/NI_inc/run0/train_batch_00_filelist.txt`` (``s11/o1/C_11_01_000.png 0``). When those
  published filelists are under ``<data.root>/core50`` (Avalanche's download puts them there), their session
  order is compared with ``train_sessions`` and a disagreement is logged as a warning.
- the test set is sessions 3, 7 and 10, never trained; here one test domain per session, so the accuracy
  matrix is 8 x 3 and Last is the held-out accuracy after the last session (S-Prompts scores the three
  sessions pooled; they hold 14,992, 14,994 and 14,986 images, so the mean of the three is the pooled
  accuracy to within 0.03 points).
- every frame: S-Prompts takes NI run 0's batches whole (``LUP.pkl``; the published run-0 filelists hold
  119,894 training and 44,972 test images, every frame of the sessions), no subsampling.
  ``train_frame_step`` / ``test_frame_step`` = k keep every k-th frame of each object's video (by frame
  order) for faster runs; the default 1 is S-Prompts'. (The official reduced test list, vlomonaco/core50
  ``extras/test_filelist_reduced.txt``, keeps 1 frame in 20 of the test sessions, 2,249 images;
  ``test_frame_step=20`` gives a set of that size, not the same frames.)
- 50 classes, the objects; names from S-Prompts' prompts (``scenarios/class_names/core50.txt``: "plug adapter 1"
  ... "remote control 5").

Avalanche. ``avalanche.benchmarks.classic.CORe50(scenario="ni", run=0)`` reads the same run-0 filelists (the
same 8 sessions in the same order) and has the same 50 classes, but is not used to build the stream: (1) it
gives one test experience holding all three test sessions (``complete_test_set_only=True``), not one per
session, so no per-session matrix; (2) it, and ``avalanche.benchmarks.datasets.CORe50Dataset`` under it, need
files the published image archive does not hold (``paths.pkl``, ``LUP.pkl``, ``labels.pkl``,
``labels2names.pkl`` and ``batches_filelists/``), which they would otherwise download again (about 6 GB with
the images) and which they unpickle; (3) neither can subsample frames.
``tests/test_domain_benchmarks.py::test_avalanche_core50_ni_pools_the_test_sessions`` shows (1) and (2).
``data.download=true`` does use ``CORe50Dataset(download=True)``, which fetches ``core50_128x128.zip`` (plus
those files) into ``<data.root>/core50`` and extracts it in this layout.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Callable, Optional, Sequence

from scenarios.errors import DatasetNotFoundError, StreamConfigError
from scenarios.image_folder_dataset import ImageFileDataset
from scenarios.stream import TaskStream

log = logging.getLogger(__name__)

FOLDER = "core50"
IMAGES = "core50_128x128"
PAGE = "https://vlomonaco.github.io/core50/"
ARCHIVE_URL = "http://bias.csr.unibo.it/maltoni/download/core50/core50_128x128.zip"
N_SESSIONS = 11
N_OBJECTS = 50
TRAIN_SESSIONS = (11, 4, 2, 9, 1, 6, 5, 8)   # NI run 0 (S-Prompts); as a set: 1, 2, 4, 5, 6, 8, 9, 11
TEST_SESSIONS = (3, 7, 10)
FRAME = re.compile(r"^C_(\d{2})_(\d{2})_(\d{3})\.png$")
LAYOUT = f"{FOLDER}/{IMAGES}/s<session>/o<object>/C_<ss>_<oo>_<frame>.png (sessions s1..s11, objects o1..o50)"
NAMES_FILE = Path(__file__).resolve().parent / "class_names" / "core50.txt"


@functools.cache
def core50_class_names() -> list[str]:
    """The 50 object names S-Prompts prompts with, index = label = object - 1."""
    lines = NAMES_FILE.read_text(encoding="utf-8").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if len(names) != N_OBJECTS:
        raise RuntimeError(f"{NAMES_FILE} lists {len(names)} names, expected {N_OBJECTS}")
    return names


def _remedy(root: Path) -> str:
    return (f"Download {ARCHIVE_URL} (the 128x128 images; see {PAGE}) and extract it into {root / FOLDER}, "
            f"giving {root / FOLDER / IMAGES}/s1 ... s11, or add data.download=true on a machine with internet "
            "(Avalanche's CORe50Dataset downloads it, about 6 GB)")


def _session_list(value: Sequence[int], key: str) -> list[int]:
    try:
        sessions = [int(s) for s in value]
    except (TypeError, ValueError):
        raise StreamConfigError(f"scenario.{key}={value!r}: give a list of session numbers 1..{N_SESSIONS}") from None
    bad = [s for s in sessions if not 1 <= s <= N_SESSIONS]
    if not sessions or bad or len(set(sessions)) != len(sessions):
        raise StreamConfigError(f"scenario.{key}={sessions}: give distinct session numbers 1..{N_SESSIONS}"
                                + (f" ({bad} are not sessions)" if bad else ""))
    return sessions


def _object_list(value: Optional[Sequence[int]]) -> list[int]:
    if value is None:
        return list(range(1, N_OBJECTS + 1))
    try:
        objects = [int(o) for o in value]
    except (TypeError, ValueError):
        raise StreamConfigError(f"scenario.objects={value!r}: give a list of object numbers 1..{N_OBJECTS}") from None
    bad = [o for o in objects if not 1 <= o <= N_OBJECTS]
    if not objects or bad or len(set(objects)) != len(objects):
        raise StreamConfigError(f"scenario.objects={objects}: give distinct object numbers 1..{N_OBJECTS} "
                                "(null: all 50)")
    return objects


def _frame_step(value: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StreamConfigError(f"scenario.{key}={value!r}: keep every k-th frame, k >= 1 (1: every frame, S-Prompts')")
    return int(value)


def official_ni_order(folder: Path, run: int = 0) -> Optional[list[int]]:
    """The sessions of the published NI filelists of ``run`` (``batches_filelists/NI_inc/run<run>/``), in batch
    order, read from each batch's first line; None when the files are not there."""
    run_dir = Path(folder) / "batches_filelists" / "NI_inc" / f"run{run}"
    sessions = []
    for batch in range(len(TRAIN_SESSIONS)):
        path = run_dir / f"train_batch_{batch:02d}_filelist.txt"
        try:
            with open(path, encoding="utf-8") as handle:
                first = handle.readline().split()
        except OSError:
            return None
        match = re.match(r"^s(\d+)/", first[0]) if first else None
        if match is None:
            return None
        sessions.append(int(match.group(1)))
    return sessions


def session_images(images: Path, session: int, objects: Sequence[int], frame_step: int = 1
                   ) -> tuple[list[str], list[int]]:
    """The frames of ``objects`` in session ``session`` (every ``frame_step``-th of each object's video, in
    frame order) and their labels (the position of the object in ``objects``)."""
    paths, labels, absent, empty, misnamed = [], [], [], [], []
    for label, obj in enumerate(objects):
        folder = images / f"s{session}" / f"o{obj}"
        try:
            names = [n for n in os.listdir(folder) if not n.startswith(".") and n.lower().endswith(".png")]
        except OSError:
            absent.append(f"o{obj}")
            continue
        frames = []
        for name in names:
            match = FRAME.match(name)
            if match is None or (int(match.group(1)), int(match.group(2))) != (session, obj):
                misnamed.append(f"o{obj}/{name}")
            else:
                frames.append((int(match.group(3)), name))
        if not names:
            empty.append(f"o{obj}")
        for _, name in sorted(frames)[::frame_step]:
            paths.append(str(folder / name))
            labels.append(label)
    problems = []
    if absent:
        problems.append(f"no object folder {', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''} "
                        f"({len(absent)} of the {len(objects)} objects)")
    if empty:
        problems.append(f"no frames in {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}")
    if misnamed:
        problems.append(f"{len(misnamed)} file(s) not named C_{session:02d}_<object>_<frame>.png for their folder "
                        f"(first: {', '.join(misnamed[:5])})")
    if problems:
        raise DatasetNotFoundError(
            f"CORe50 session s{session} is incomplete or damaged in {images / f's{session}'}: {'; '.join(problems)}. "
            f"Expected {LAYOUT}; re-extract {ARCHIVE_URL} (see {PAGE})")
    return paths, labels


def _download(root: Path) -> None:
    """Avalanche's CORe50Dataset(download=True) into <root>/core50, only while the images are not there."""
    folder = root / FOLDER
    if (folder / IMAGES).is_dir():
        return
    from avalanche.benchmarks.datasets import CORe50Dataset

    try:
        CORe50Dataset(root=str(folder), download=True)
    except Exception as error:   # the images may be in place even if a later metadata file failed
        if not (folder / IMAGES).is_dir():
            raise DatasetNotFoundError(f"CORe50 download into {folder} failed ({type(error).__name__}: {error}). "
                                       f"{_remedy(root)}") from None
        log.warning("CORe50: Avalanche's download stopped after the images (%s: %s); the images are in %s, which "
                    "is all this scenario reads", type(error).__name__, error, folder / IMAGES)


def core50_stream(root: str, download: bool = False, train_sessions: Sequence[int] = TRAIN_SESSIONS,
                  test_sessions: Sequence[int] = TEST_SESSIONS, objects: Optional[Sequence[int]] = None,
                  train_frame_step: int = 1, test_frame_step: int = 1, template: Optional[str] = None,
                  train_transform: Optional[Callable] = None,
                  eval_transform: Optional[Callable] = None) -> TaskStream:
    """CORe50 NI as S-Prompts runs it: one experience per training session, the test sessions held out.

    ``train_sessions`` in stream order (default NI run 0: 11, 4, 2, 9, 1, 6, 5, 8); ``test_sessions`` one test
    domain each (default 3, 7, 10); ``objects``: the object numbers to classify (null: all 50, labels 0..49);
    ``train_frame_step`` / ``test_frame_step``: keep every k-th frame (1: all, S-Prompts'); ``template``: the
    prompt of methods whose template is "scenario" (default "a photo of a {}.").
    """
    from scenarios.domain_stream import domain_incremental_stream

    base = Path(root).expanduser()
    train = _session_list(train_sessions, "train_sessions")
    test = _session_list(test_sessions, "test_sessions")
    shared = sorted(set(train) & set(test))
    if shared:
        raise StreamConfigError(f"sessions {shared} are both training (scenario.train_sessions={train}) and test "
                                f"(scenario.test_sessions={test}) sessions; the NI protocol never tests a trained one")
    chosen = _object_list(objects)
    steps = _frame_step(train_frame_step, "train_frame_step"), _frame_step(test_frame_step, "test_frame_step")
    if download:
        _download(base)
    folder = base / FOLDER
    images = folder / IMAGES
    if not images.is_dir():
        raise DatasetNotFoundError(f"CORe50 not found: no folder {images}. Expected {LAYOUT}. {_remedy(base)}.")
    absent = [f"s{s}" for s in train + test if not (images / f"s{s}").is_dir()]
    if absent:
        raise DatasetNotFoundError(f"CORe50 is incomplete in {images}: no session folder {', '.join(absent)}. "
                                   f"Expected {LAYOUT}. {_remedy(base)}.")
    official = official_ni_order(folder)
    if official is not None and sorted(official) == sorted(train) and official != train:
        log.warning("CORe50: the published NI run-0 filelists in %s order the sessions %s, the stream %s "
                    "(scenario.train_sessions)", folder / "batches_filelists", official, train)

    names = core50_class_names()

    def session(number: int, step: int, transform: Optional[Callable]) -> ImageFileDataset:
        paths, labels = session_images(images, number, chosen, step)
        return ImageFileDataset(paths, labels, transform)

    domains = {f"s{s}": {"train": session(s, steps[0], train_transform)} for s in train}
    held_out = {f"s{s}": session(s, steps[1], eval_transform) for s in test}
    description = {
        "dataset": "CORe50 (NI)", "root": str(images), "protocol": "S-Prompts / CORe50 NI run 0",
        "train_sessions": train, "test_sessions": test, "objects": chosen,
        "train_frame_step": steps[0], "test_frame_step": steps[1],
        "session_order_source": ("CORe50 NI run 0 (vlomonaco/core50 core50_inc_finetuning.py, seed 1), as S-Prompts"
                                 if tuple(train) == TRAIN_SESSIONS else "scenario.train_sessions"),
        "class_names_source": "iamwangyabin/S-Prompts utils/class_names.py (core50_classnames)",
        **({"template": template} if template else {}),
    }
    return domain_incremental_stream("core50", domains, [names[o - 1] for o in chosen], test_domains=held_out,
                                     description=description)
