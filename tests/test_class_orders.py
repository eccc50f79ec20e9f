"""Named class orders and the B-Inc partitions of Split-CIFAR-100, and their errors."""

import numpy as np
import pytest

from helpers import compose_config, write_cifar100
from hydra.utils import instantiate
from scenarios import StreamConfigError, make_class_order, split_classes
from scenarios.cifar100 import split_cifar100
from scenarios.stream import CONTINUAL_CLIP_CIFAR100
from scenarios.tiny_colors import tiny_colors_stream


def test_continual_clip_order_is_the_published_permutation():
    order = make_class_order(100, class_order="continual_clip")
    # the first and last ten as Continual-CLIP / ZSCL / MoE-Adapters / RAPF list them
    assert order[:10] == [87, 0, 52, 58, 44, 91, 68, 97, 51, 15]
    assert order[-10:] == [98, 13, 99, 7, 34, 55, 54, 26, 35, 39]
    assert sorted(order) == list(range(100))


def test_icarl_order_is_seed_1993_the_default():
    assert make_class_order(100, class_order="icarl") == np.random.RandomState(1993).permutation(100).tolist()
    assert make_class_order(100, class_order="icarl") == make_class_order(100, seed=1993)
    assert make_class_order(100, class_order="icarl")[:3] == [68, 56, 78]


@pytest.mark.parametrize("order, message", [
    ("fancy", "not a named order; choose one of icarl"),
    ([0, 1, 1], "repeated: [1]"),
    ([0, 1], "missing: [2]"),
    ([0, 1, 2, 3], "out of range: [3]"),
])
def test_bad_orders_name_the_key_and_the_choices(order, message):
    with pytest.raises(StreamConfigError, match="scenario.class_order") as error:
        make_class_order(3, class_order=order)
    assert message in str(error.value)


def test_continual_clip_order_needs_100_classes():
    with pytest.raises(StreamConfigError, match="CIFAR-100's order .100 classes. but this dataset has 6"):
        tiny_colors_stream(n_classes=6, class_order="continual_clip")


@pytest.mark.parametrize("initial, increment, sizes", [
    (0, 10, [10] * 10),          # B0-Inc10
    (0, 5, [5] * 20),            # B0-Inc5
    (0, 20, [20] * 5),           # B0-Inc20
    (50, 10, [50] + [10] * 5),   # B50-Inc10
    (50, 5, [50] + [5] * 10),    # B50-Inc5
])
def test_b_inc_partitions(initial, increment, sizes):
    order = make_class_order(100, class_order="continual_clip")
    groups = split_classes(order, None, initial, increment)
    assert [len(g) for g in groups] == sizes
    assert [c for g in groups for c in g] == order  # consecutive, in the order, none lost


@pytest.mark.parametrize("n_experiences, initial, increment, message", [
    (None, 0, 7, "scenario.increment=7 does not divide the 100 classes"),
    (None, 50, 15, "scenario.increment=15 does not divide the 50 classes after scenario.initial_classes=50"),
    (10, 50, 10, "scenario.n_experiences=10 contradicts"),
    (None, 100, 10, "scenario.initial_classes=100 must be between 0 and 99"),
    (None, 0, 0, "scenario.increment=0 must be between 1"),
    (10, 20, None, "scenario.initial_classes=20 needs scenario.increment"),
])
def test_partitions_that_do_not_fit_are_refused_with_the_keys(n_experiences, initial, increment, message):
    with pytest.raises(StreamConfigError) as error:
        split_classes(list(range(100)), n_experiences, initial, increment)
    assert message in str(error.value)


def test_split_cifar_b50_inc10_from_the_config(tmp_path):
    write_cifar100(tmp_path)
    cfg = compose_config([f"data.root={tmp_path}", "scenario=split_cifar", "scenario.class_order=continual_clip",
                          "scenario.n_experiences=null", "scenario.initial_classes=50", "scenario.increment=10",
                          "scenario.template='a bad photo of a {}.'"])
    stream = instantiate(cfg.scenario)
    assert [len(c) for c in stream.experience_classes] == [50, 10, 10, 10, 10, 10]
    assert stream.experience_classes[0][:3] == [87, 0, 52]
    assert stream.description["class_order_name"] == "continual_clip"
    assert stream.description["initial_classes"] == 50 and stream.description["increment"] == 10
    assert stream.description["template"] == "a bad photo of a {}."
    experience = list(stream.benchmark.train_stream)[1]
    assert sorted(experience.classes_in_this_experience) == sorted(CONTINUAL_CLIP_CIFAR100[50:60])
    # a protocol's rebuild (few-shot draws) keeps the partition
    again = stream.rebuild(train=stream.splits["train"])
    assert again.experience_classes == stream.experience_classes


def test_default_split_cifar_is_unchanged(tmp_path):
    write_cifar100(tmp_path)
    stream = split_cifar100(str(tmp_path))
    assert [len(c) for c in stream.experience_classes] == [10] * 10
    assert stream.description["class_order"] == np.random.RandomState(1993).permutation(100).tolist()
    assert "template" not in stream.description
