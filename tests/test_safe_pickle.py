"""Dataset pickles are read without running code: a crafted CIFAR file is refused, naming the file."""

import os
import pickle

import numpy as np
import pytest

import warm_python
from helpers import REPO, write_cifar100
from scenarios.cifar100 import load_cifar100
from scenarios.errors import DatasetFileError, DatasetNotFoundError
from scenarios.safe_pickle import load_data_pickle


class WritesAMarker:
    """Unpickling this calls os.system: what a crafted dataset file can do with plain pickle.load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_real_layout_loads(tmp_path):
    write_cifar100(tmp_path)
    train_images, train_labels, *_, names = load_cifar100(str(tmp_path))
    assert train_images.dtype == np.uint8 and len(names) == 100
    entry = load_data_pickle(tmp_path / "cifar-100-python" / "train")
    assert set(entry) >= {"data", "fine_labels"}


def test_a_crafted_cifar_pickle_is_refused_and_runs_nothing(tmp_path):
    write_cifar100(tmp_path)
    marker = tmp_path / "ran"
    with open(tmp_path / "cifar-100-python" / "train", "wb") as handle:
        pickle.dump({"data": WritesAMarker(marker), "fine_labels": [0]}, handle)
    with pytest.raises(DatasetFileError, match=r"cifar-100-python/train asks to load posix.system.*refused"):
        load_cifar100(str(tmp_path))
    assert not marker.exists()
    with open(marker.with_name("control"), "wb") as handle:   # plain pickle.load would have run it
        pickle.dump(WritesAMarker(marker), handle)
    with open(marker.with_name("control"), "rb") as handle:
        pickle.load(handle)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage, not a pickle", None])
def test_truncated_or_garbage_files_name_the_file(tmp_path, content):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    if content is None:  # truncated: the first half of a real file
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(DatasetFileError, match=r"cifar-100-python/test is not a readable pickle.*Re-extract"):
        load_cifar100(str(tmp_path))


def test_a_pickle_of_the_wrong_shape_is_named(tmp_path):
    write_cifar100(tmp_path)
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as handle:
        pickle.dump({"label_names": ["a"]}, handle)
    with pytest.raises(DatasetNotFoundError, match="meta has no 'fine_label_names' entry"):
        load_cifar100(str(tmp_path))


def test_the_cli_refuses_a_crafted_file_with_one_line(tmp_path):
    write_cifar100(tmp_path)
    marker = tmp_path / "ran"
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as handle:
        pickle.dump(WritesAMarker(marker), handle)
    done = warm_python.run(["-m", "clprompt.run", "scenario=split_cifar", "model=tiny", f"data.root={tmp_path}",
                            f"hydra.run.dir={tmp_path / 'run'}", "progress=false"], cwd=REPO)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "asks to load posix.system" in done.stderr and not marker.exists()
