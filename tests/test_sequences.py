"""Task sequences (MTIL-style): members end to end with their own label spaces, the sandbox's
shapes_sequence, ZSCL's mtil over fixture folders, MNIST, and the errors."""

import shutil

import numpy as np
import pytest
from hydra.utils import instantiate

from helpers import compose_config, write_cifar100, write_fashion_mnist
from scenarios import DatasetNotFoundError, StreamConfigError
from scenarios.mnist import CLASS_NAMES as DIGITS, mnist_stream
from scenarios.sequences import SequenceDataset, task_sequence
from test_coop_datasets import expected_names, write_coop

TINY = "scenarios.tiny_colors.tiny_colors_stream"


def tiny_tasks():
    return {"first": {"_target_": TINY, "n_classes": 3, "n_experiences": 1, "seed": 0},
            "second": {"_target_": TINY, "n_classes": 5, "n_experiences": 1, "seed": 7}}


def test_members_follow_each_other_with_shifted_labels():
    stream = task_sequence("two", tiny_tasks())
    assert stream.experience_classes == [[0, 1, 2], [3, 4, 5, 6, 7]]
    assert stream.tasks == ["first", "second"] and stream.n_experiences == 2
    first, second = (instantiate(c) for c in tiny_tasks().values())
    assert stream.class_names == first.class_names + second.class_names
    test = stream.splits["test"]
    n_first = len(first.splits["test"])
    for index in (0, n_first - 1, n_first, len(test) - 1):
        member, local = (first, index) if index < n_first else (second, index - n_first)
        offset = 0 if member is first else 3
        image, label = test[index]
        own_image, own_label = member.splits["test"][local]
        assert label == own_label + offset
        assert np.array_equal(np.asarray(image), np.asarray(own_image))
    experiences = list(stream.benchmark.test_stream)
    assert sorted(experiences[1].classes_in_this_experience) == [3, 4, 5, 6, 7]
    assert sorted(set(int(y) for y in experiences[0].dataset.targets)) == [0, 1, 2]


def test_sequence_samples_have_their_own_identity():
    stream = task_sequence("two", tiny_tasks())
    train = stream.splits["train"]
    ids = train.sample_ids()
    assert len(ids) == len(set(ids)) == len(train)
    members = [instantiate(c) for c in tiny_tasks().values()]
    assert train.fingerprint() not in {m.splits["train"].fingerprint() for m in members}
    assert train.fingerprint() == task_sequence("two", tiny_tasks()).splits["train"].fingerprint()
    assert train.with_transform(None).fingerprint() == train.fingerprint()


def test_a_member_of_several_experiences_is_refused():
    tasks = tiny_tasks()
    tasks["second"]["n_experiences"] = 2
    with pytest.raises(StreamConfigError, match=r"scenario.tasks.second has 2 experiences.*n_experiences=1"):
        task_sequence("two", tasks)


def test_protocols_that_redraw_training_sets_refuse_a_sequence():
    from clprompt.data.protocol import check_options

    options = compose_config(["protocol=few_shot"]).protocol
    stream = task_sequence("two", tiny_tasks())
    with pytest.raises(StreamConfigError, match=r"two is a sequence of tasks \(first, second\).*protocol=standard"):
        check_options(options, stream)


def test_shapes_sequence_config():
    cfg = compose_config(["scenario=shapes_sequence", "scenario.tasks.palette.train_per_class=2",
                          "scenario.tasks.fine.train_per_class=2", "scenario.tasks.novel.train_per_class=2"])
    stream = instantiate(cfg.scenario)
    assert [len(c) for c in stream.experience_classes] == [100, 40, 30]
    assert stream.tasks == ["palette", "fine", "novel"]
    assert len(set(stream.class_names)) == 170  # disjoint names: the union is a proper label space
    assert len(stream.splits["train"]) == 170 * 2 and "valid" in stream.splits
    assert stream.description["task_streams"]["fine"]["style"] == "blurry"


MTIL = ["aircraft", "caltech101", "cifar100", "dtd", "eurosat", "flowers", "food", "mnist", "oxford_pet",
        "stanford_cars", "sun397"]
COOP_FIXTURE = {"aircraft": "fgvc_aircraft", "caltech101": "caltech101", "dtd": "dtd", "eurosat": "eurosat",
                "flowers": "flowers102", "food": "food101", "oxford_pet": "oxford_pets",
                "stanford_cars": "stanford_cars", "sun397": "sun397"}


def write_mtil(root):
    for fixture in COOP_FIXTURE.values():
        write_coop(root, fixture)
    write_cifar100(root)
    write_fashion_mnist(root, folder_name="MNIST")


def test_mtil_reads_its_eleven_datasets_in_zscls_order(tmp_path):
    write_mtil(tmp_path)
    stream = instantiate(compose_config([f"data.root={tmp_path}", "scenario=mtil"]).scenario)
    assert stream.tasks == MTIL
    sizes = [len(c) for c in stream.experience_classes]
    expected = {key: len(expected_names(fixture)) for key, fixture in COOP_FIXTURE.items()}
    expected.update(cifar100=100, mnist=10)
    assert sizes == [expected[k] for k in MTIL]
    start = sum(sizes[:7])  # mnist is the eighth task
    assert stream.class_names[start:start + 10] == DIGITS
    assert stream.description["task_streams"]["cifar100"]["n_experiences"] == 1


def test_mtil_names_every_missing_dataset_and_where(tmp_path):
    write_mtil(tmp_path)
    shutil.rmtree(tmp_path / "dtd")
    shutil.rmtree(tmp_path / "MNIST")
    from clprompt.stages import build

    with pytest.raises(DatasetNotFoundError) as error:
        build(compose_config([f"data.root={tmp_path}", "scenario=mtil"]), "scenario")
    message = str(error.value)
    assert "2 of its 11 datasets are missing" in message
    assert "scenario.tasks.dtd" in message and "scenario.tasks.mnist" in message
    assert str(tmp_path / "MNIST" / "raw") in message and str(tmp_path / "dtd") in message
    assert "~scenario.tasks.<name>" in message
    # dropping them runs the rest
    stream = instantiate(compose_config([f"data.root={tmp_path}", "scenario=mtil", "~scenario.tasks.dtd",
                                         "~scenario.tasks.mnist"]).scenario)
    assert stream.tasks == [k for k in MTIL if k not in ("dtd", "mnist")]


def test_mnist_reads_torchvision_layout(tmp_path):
    write_fashion_mnist(tmp_path, folder_name="MNIST", gz=False)
    stream = mnist_stream(str(tmp_path))
    assert stream.class_names == DIGITS and stream.n_experiences == 1
    assert len(stream.splits["train"]) == 30 and len(stream.splits["test"]) == 20
    with pytest.raises(DatasetNotFoundError, match="MNIST not found: looked in .*data.download=true"):
        mnist_stream(str(tmp_path / "elsewhere"))
