"""Image files decoded once per run (data.keep_decoded_mb): the same pixels as a fresh decode, each file
read once over epochs, a budget that bounds the memory, and a run whose results do not change."""

import copy
import pickle

import numpy as np
import pytest
from PIL import Image

from helpers import compose_config
from scenarios import image_folder_dataset
from scenarios.image_folder_dataset import ImageFileDataset, keep_decoded


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = tmp_path / f"image_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(autouse=True)
def _default_budget():
    yield
    keep_decoded(512)


def counting(dataset, monkeypatch):
    reads = []
    original = ImageFileDataset.read

    def read(self, index):
        reads.append(index)
        return original(self, index)
    monkeypatch.setattr(ImageFileDataset, "read", read)
    return reads


def test_each_file_is_decoded_once_and_reads_as_a_fresh_decode(files, monkeypatch):
    dataset = ImageFileDataset(files, list(range(6)))
    reads = counting(dataset, monkeypatch)
    for epoch in range(3):
        for index in range(6):
            with Image.open(files[index]) as handle:
                assert np.array_equal(np.asarray(dataset.image(index)), np.asarray(handle.convert("RGB")))
    assert sorted(reads) == list(range(6))   # three epochs, one decode each


def test_a_transform_that_draws_on_its_image_does_not_change_the_next_read(files):
    dataset = ImageFileDataset(files, list(range(6)))
    first = dataset.image(0)
    first.paste((255, 0, 0), (0, 0, 30, 40))
    with Image.open(files[0]) as handle:
        assert np.array_equal(np.asarray(dataset.image(0)), np.asarray(handle.convert("RGB")))


def test_the_budget_bounds_what_is_kept(files, monkeypatch):
    keep_decoded(0)
    dataset = ImageFileDataset(files, list(range(6)))
    reads = counting(dataset, monkeypatch)
    dataset.image(0), dataset.image(0)
    assert reads == [0, 0] and dataset.kept.bytes == 0
    image_bytes = 40 * 30 * 3
    monkeypatch.setattr(image_folder_dataset, "KEEP_DECODED_BYTES", 2 * image_bytes)
    dataset = ImageFileDataset(files, list(range(6)))
    for index in range(6):
        dataset.image(index)
    assert dataset.kept.bytes == 2 * image_bytes and sorted(dataset.kept.images) == [0, 1]


def test_copies_share_what_is_kept_and_pickles_start_empty(files):
    dataset = ImageFileDataset(files, list(range(6)))
    dataset.image(3)
    assert dataset.with_transform(lambda image: image).kept is dataset.kept
    for other in (pickle.loads(pickle.dumps(dataset)), copy.deepcopy(dataset)):
        assert other.kept.images == {} and other.image(3).size == (30, 40)


def test_a_run_on_image_files_is_the_same_with_and_without_keeping(tmp_path):
    """CoOp on a CoOp-layout dataset (EuroSAT), 3 epochs: the same losses' outcome, the same matrix."""
    from test_coop_datasets import write_coop

    from clprompt.run import run

    write_coop(tmp_path / "data", "eurosat")
    common = ["scenario=eurosat", "model=tiny", "method=coop", "progress=false", "train.epochs=3",
              f"data.root={tmp_path / 'data'}", "cache.dir=null", "train.augmentation=coop"]
    kept = run(compose_config(common), tmp_path / "kept")
    fresh = run(compose_config(common + ["data.keep_decoded_mb=0"]), tmp_path / "fresh")
    assert kept["accuracy_matrix"] == fresh["accuracy_matrix"]
