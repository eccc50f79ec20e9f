"""Task streams: class partition, class order, Avalanche benchmarks, dataset loaders and their errors."""

import numpy as np
import pytest
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark

from helpers import write_cifar100, write_fashion_mnist
from scenarios import DatasetNotFoundError, StreamConfigError, make_class_order, split_classes
from scenarios.array_dataset import ArrayImageDataset
from scenarios.cifar100 import split_cifar100
from scenarios.fashion_mnist import read_idx, split_fashion_mnist
from scenarios.tiny_colors import tiny_colors_stream


def _dataset(n_classes, per_class):
    labels = np.repeat(np.arange(n_classes), per_class)
    return ArrayImageDataset(np.zeros((len(labels), 4, 4), dtype=np.uint8), labels)


def test_even_split():
    assert split_classes(list(range(6)), 3) == [[0, 1], [2, 3], [4, 5]]


def test_remainder_is_spread_over_the_first_experiences():
    groups = split_classes(list(range(100)), 7)
    assert [len(g) for g in groups] == [15, 15, 14, 14, 14, 14, 14]
    assert sorted(c for g in groups for c in g) == list(range(100))


@pytest.mark.parametrize("n", [0, 11])
def test_impossible_experience_counts_are_refused(n):
    with pytest.raises(StreamConfigError, match="n_experiences must be between 1 and"):
        split_classes(list(range(10)), n)


def test_avalanche_drops_leftover_classes():
    """Why we partition classes ourselves: Avalanche loses 10 % 3 = 1 class without a word."""
    data = {"train": _dataset(10, 2), "test": _dataset(10, 1)}
    benchmark = class_incremental_benchmark(data, num_experiences=3, seed=1)
    seen = set().union(*(e.classes_in_this_experience for e in benchmark.train_stream))
    assert len(seen) == 9


def test_our_stream_keeps_every_class_when_classes_do_not_divide():
    stream = tiny_colors_stream(n_classes=10, n_experiences=3, train_per_class=2, test_per_class=1)
    sizes = [len(e.classes_in_this_experience) for e in stream.benchmark.train_stream]
    assert sizes == [4, 3, 3]
    seen = set().union(*(e.classes_in_this_experience for e in stream.benchmark.train_stream))
    assert seen == set(range(10))
    assert sum(len(e.dataset) for e in stream.benchmark.test_stream) == 10


def test_class_order_from_seed_is_deterministic_and_a_permutation():
    first, second = make_class_order(100, seed=1993), make_class_order(100, seed=1993)
    assert first == second and sorted(first) == list(range(100))
    assert first != make_class_order(100, seed=1994)
    assert first == np.random.RandomState(1993).permutation(100).tolist()  # iCaRL-style order
    assert make_class_order(5) == [0, 1, 2, 3, 4]


def test_explicit_class_order_must_be_a_permutation():
    assert make_class_order(3, class_order=[2, 0, 1]) == [2, 0, 1]
    with pytest.raises(StreamConfigError, match=r"missing: \[2\].*repeated: \[1\]"):
        make_class_order(3, class_order=[0, 1, 1])


def test_stream_experiences_hold_their_classes_only():
    stream = tiny_colors_stream(n_classes=6, n_experiences=3, train_per_class=4, test_per_class=2,
                                class_order=[5, 4, 3, 2, 1, 0])
    assert stream.experience_classes == [[5, 4], [3, 2], [1, 0]]
    for experience, classes in zip(stream.benchmark.train_stream, stream.experience_classes):
        assert set(experience.classes_in_this_experience) == set(classes)
        assert sorted({int(y) for _, y, *_ in experience.dataset}) == sorted(classes)
        assert len(experience.dataset) == 8
    for experience in stream.benchmark.test_stream:
        assert len(experience.dataset) == 4


def test_generated_stream_is_deterministic():
    a = tiny_colors_stream(seed=3).benchmark.test_stream[0].dataset
    b = tiny_colors_stream(seed=3).benchmark.test_stream[0].dataset
    assert np.array_equal(np.asarray(a[0][0]), np.asarray(b[0][0]))


def test_fashion_mnist_reads_torchvision_layout(tmp_path):
    write_fashion_mnist(tmp_path, train_per_class=3, test_per_class=2, gz=False)
    stream = split_fashion_mnist(str(tmp_path))
    assert stream.n_experiences == 5 and stream.class_names[0] == "t-shirt"
    assert [len(e.dataset) for e in stream.benchmark.train_stream] == [6] * 5
    assert [len(e.dataset) for e in stream.benchmark.test_stream] == [4] * 5
    image, label, *_ = stream.benchmark.test_stream[0].dataset[0]
    assert image.mode == "RGB" and image.size == (28, 28)
    assert stream.description["root"].endswith("FashionMNIST/raw")


def test_idx_reader_handles_gzip_and_checks_length(tmp_path):
    folder = write_fashion_mnist(tmp_path, gz=True)
    assert read_idx(folder / "t10k-labels-idx1-ubyte.gz").shape == (20,)
    broken = tmp_path / "broken-idx"
    broken.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 5)
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        read_idx(broken)


def test_incomplete_fashion_mnist_names_the_missing_files(tmp_path):
    folder = write_fashion_mnist(tmp_path, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"incomplete in .*missing t10k-labels-idx1-ubyte"):
        split_fashion_mnist(str(tmp_path))


def test_missing_fashion_mnist_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr("scenarios.fashion_mnist.DEBIAN_FOLDER", str(tmp_path / "no-debian"))
    with pytest.raises(DatasetNotFoundError) as error:
        split_fashion_mnist(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message


def test_cifar100_reads_pickle_layout_with_readable_names(tmp_path):
    write_cifar100(tmp_path, train_per_class=2, test_per_class=1)
    stream = split_cifar100(str(tmp_path))
    assert stream.n_experiences == 10
    assert stream.class_names[1] == "aquarium fish"
    assert stream.experience_classes[0] == np.random.RandomState(1993).permutation(100).tolist()[:10]
    assert [len(e.dataset) for e in stream.benchmark.train_stream] == [20] * 10
    image, *_ = stream.benchmark.test_stream[3].dataset[0]
    assert image.size == (32, 32)


def test_cifar100_uneven_split_keeps_all_classes(tmp_path):
    write_cifar100(tmp_path)
    stream = split_cifar100(str(tmp_path), n_experiences=7)
    assert [len(c) for c in stream.experience_classes] == [15, 15, 14, 14, 14, 14, 14]


def test_missing_cifar100_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        split_cifar100(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "cifar-100-python" / "train") in message and "data.download=true" in message


def test_class_missing_from_a_split_is_reported(tmp_path):
    folder = write_cifar100(tmp_path)
    import pickle

    with open(folder / "test", "rb") as handle:
        test = pickle.load(handle)
    keep = [i for i, y in enumerate(test["fine_labels"]) if y != 7]
    test["data"], test["fine_labels"] = test["data"][keep], [test["fine_labels"][i] for i in keep]
    with open(folder / "test", "wb") as handle:
        pickle.dump(test, handle)
    with pytest.raises(StreamConfigError, match=r"test split has no images of classes \[7\]"):
        split_cifar100(str(tmp_path))
