"""CUB-200-2011 and 5-datasets: each read from a small folder in its published layout (official split, class
names, class order), composed and instantiated as a run does, and the errors for missing or partial data."""

import logging
import pickle
import shutil

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image
from scipy.io import loadmat, savemat

from helpers import compose_config, write_fashion_mnist
from scenarios import DatasetNotFoundError, StreamConfigError
from scenarios.cifar10 import cifar10_stream, load_cifar10
from scenarios.cub200 import class_name, cub200_stream, read_cub200
from scenarios.errors import DatasetFileError
from scenarios.five_datasets import five_datasets, task_order
from scenarios.notmnist import CLASS_NAMES as LETTERS, notmnist_stream, read_notmnist
from scenarios.stream import make_class_order
from scenarios.svhn import load_svhn, svhn_stream

# --- CUB-200-2011 ------------------------------------------------------------------------------------------

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
CUB_NAMES = ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross", "Groove billed Ani"]
# (class index, file stem, is_train): the split is train_test_split.txt's, not a rule of the file names
CUB_IMAGES = [(c, f"{CUB_CLASSES[c].split('.', 1)[1]}_{i:04d}_{100 * c + i}", i == 2 if c % 2 else i != 1)
              for c in range(4) for i in range(3)]
IMAGE_SIZE = (20, 16)     # width, height of every fixture image
BOX = (2.0, 3.0, 9.0, 7.0)  # x, y, width, height in bounding_boxes.txt
# The first task of PILOT's CUB order: np.random.seed(1993); np.random.permutation(200), as PROOF's log
# logs/proof/cub/0/20/cubb0.log (zhoudw-zdw/PROOF) prints it
PILOT_CUB_FIRST_TASK = [168, 136, 51, 9, 183, 101, 171, 99, 42, 159, 191, 70, 16, 188, 27, 10, 175, 26, 68, 187]


def write_image(path, seed, size=IMAGE_SIZE, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def write_cub(root):
    """CUB_200_2011 with 4 classes of 3 images in the archive's layout (and its bounding_boxes.txt)."""
    folder = root / "CUB_200_2011"
    lines = {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    for image_id, (label, stem, train) in enumerate(CUB_IMAGES, 1):
        relative = f"{CUB_CLASSES[label]}/{stem}.jpg"
        write_image(folder / "images" / relative, image_id)
        lines["images"].append(f"{image_id} {relative}")
        lines["image_class_labels"].append(f"{image_id} {label + 1}")
        lines["train_test_split"].append(f"{image_id} {int(train)}")
        lines["bounding_boxes"].append(f"{image_id} " + " ".join(str(v) for v in BOX))
    for name, content in lines.items():
        (folder / f"{name}.txt").write_text("\n".join(content) + "\n")
    (folder / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_CLASSES)))
    return folder


def test_cub200_reads_the_official_split_with_labels_from_the_class_ids(tmp_path):
    folder = write_cub(tmp_path)
    stream = cub200_stream(str(tmp_path), n_experiences=2, class_order_seed=None)
    assert stream.class_names == CUB_NAMES
    for split, wanted in (("train", True), ("test", False)):
        dataset = stream.splits[split]
        expected = [(str(folder / "images" / f"{CUB_CLASSES[c]}/{stem}.jpg"), c)
                    for c, stem, train in CUB_IMAGES if train == wanted]
        assert list(zip(dataset.paths, dataset.targets)) == expected
    assert len(stream.splits["train"]) == 6 and len(stream.splits["test"]) == 6 and "valid" not in stream.splits
    image, label = stream.splits["test"][0]
    assert image.mode == "RGB" and image.size == IMAGE_SIZE and label == 0    # the whole image, not the box
    assert stream.experience_classes == [[0, 1], [2, 3]]
    description = stream.description
    assert description["dataset"] == "CUB-200-2011" and description["root"] == str(folder)
    assert description["split"] == "train_test_split.txt" and description["split_source"].startswith("official")
    assert description["template"] == "a photo of a {}, a type of bird."
    assert description["n_train"] == 6 and description["n_test"] == 6


def test_cub200_names_as_clip_based_works_prompt_them():
    assert class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert class_name("022.Chuck_will_Widow") == "Chuck will Widow"
    assert class_name("159.Black_and_white_Warbler") == "Black and white Warbler"
    assert class_name("187.American_Three_toed_Woodpecker") == "American Three toed Woodpecker"


def test_cub200_default_order_is_pilots_seed_1993(tmp_path):
    assert make_class_order(200, seed=1993)[:20] == PILOT_CUB_FIRST_TASK
    write_cub(tmp_path)
    stream = cub200_stream(str(tmp_path), n_experiences=2)     # the default class_order_seed=1993
    order = np.random.RandomState(1993).permutation(4).tolist()
    assert stream.description["class_order"] == order and stream.experience_classes == [order[:2], order[2:]]
    experience = stream.benchmark.train_stream[0]
    assert set(int(y) for y in experience.dataset.targets) == set(order[:2])


def test_cub200_config_composes_and_runs_as_the_cli_builds_it(tmp_path):
    from clprompt.stages import build

    write_cub(tmp_path)
    cfg = compose_config([f"data.root={tmp_path}", "scenario=cub200", "scenario.n_experiences=2"])
    assert cfg.scenario.n_experiences == 2 and cfg.scenario.class_order_seed == 1993
    assert (cfg.model.arch, cfg.model.pretrained) == ("ViT-B-16", "openai")
    stream = build(cfg, "scenario", train_transform=None, eval_transform=None)
    assert stream.name == "cub200" and stream.class_names == CUB_NAMES and stream.n_experiences == 2
    assert compose_config(["scenario=cub200"]).scenario.n_experiences == 10   # 10 tasks of 20 classes


def test_cub200_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        cub200_stream(str(tmp_path), n_experiences=2)
    message = str(error.value)
    assert str(tmp_path / "CUB_200_2011") in message and "data.caltech.edu/records/65de6-vp158" in message
    assert "data.download=true" in message and "train_test_split.txt" in message


@pytest.mark.parametrize("missing", ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
                                     "images"])
def test_cub200_missing_file_is_named(tmp_path, missing):
    folder = write_cub(tmp_path)
    path = folder / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"CUB-200-2011 is incomplete in .*missing {missing}"):
        read_cub200(str(tmp_path))


def test_cub200_missing_class_folder_is_named(tmp_path):
    folder = write_cub(tmp_path)
    shutil.rmtree(folder / "images" / CUB_CLASSES[2])
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 4 class folders .* missing .*003\.Sooty_Albatross"):
        read_cub200(str(tmp_path))


def test_cub200_listed_image_absent_is_named(tmp_path):
    folder = write_cub(tmp_path)
    stem = CUB_IMAGES[4][1]
    (folder / "images" / CUB_CLASSES[1] / f"{stem}.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"1 of the 12 images listed in images.txt are missing .*{stem}"):
        read_cub200(str(tmp_path))


def test_cub200_inconsistent_annotations_are_refused(tmp_path):
    folder = write_cub(tmp_path)
    labels = folder / "image_class_labels.txt"
    original = labels.read_text()
    labels.write_text(original.replace("12 4\n", "12 7\n"))
    with pytest.raises(DatasetNotFoundError, match=r"class id outside 1\.\.4 .*image 12 -> '7'"):
        read_cub200(str(tmp_path))
    labels.write_text(original.replace("12 4\n", "12 3\n"))
    with pytest.raises(DatasetNotFoundError, match=r"not in the folder of their class .*image 12"):
        read_cub200(str(tmp_path))
    labels.write_text(original.replace("12 4\n", ""))
    with pytest.raises(DatasetNotFoundError, match=r"list different images: 1 image ids without a line .*\[12\]"):
        read_cub200(str(tmp_path))
    labels.write_text(original.replace("12 4\n", "12 4 extra\n"))
    with pytest.raises(DatasetNotFoundError, match=r"image_class_labels.txt line 12 is '12 4 extra'"):
        read_cub200(str(tmp_path))
    labels.write_text(original)
    split = folder / "train_test_split.txt"
    split.write_text(split.read_text().replace("3 1\n", "3 2\n"))
    with pytest.raises(DatasetNotFoundError, match=r"neither 1 \(train\) nor 0 \(test\)"):
        read_cub200(str(tmp_path))


def test_avalanche_cub200_crops_to_the_bounding_box(tmp_path):
    """Why Avalanche's CUB200 does not read CUB here: same split and labels, but each image cropped to its box,
    where SLCA / PILOT / PROOF use whole images."""
    from avalanche.benchmarks.datasets import CUB200

    write_cub(tmp_path)
    theirs = CUB200(root=str(tmp_path), train=True, download=False)
    ours = read_cub200(str(tmp_path))[0]["train"]
    assert list(theirs.targets) == [label for _, label in ours]
    image, _ = theirs[0]
    assert image.size == (int(BOX[2]), int(BOX[3])) != IMAGE_SIZE


# --- 5-datasets members ------------------------------------------------------------------------------------

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root, per_class=(2, 1)):
    """cifar-10-batches-py as torchvision extracts it: 5 training batches, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072}, handle)
    rng = np.random.default_rng(1)
    batches = [(f"data_batch_{i}", per_class[0]) for i in range(1, 6)] + [("test_batch", per_class[1])]
    for name, n in batches:
        labels = np.repeat(np.arange(10), n).tolist()
        data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(len(labels))]}, handle)
    return folder


def write_svhn(root, folder="svhn", per_class=(3, 2)):
    """train_32x32.mat and test_32x32.mat as scipy writes MATLAB v5: X uint8 [32, 32, 3, N], y [N, 1] in 1..10."""
    target = root / folder if folder else root
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for split, n in zip(("train", "test"), per_class):
        y = np.repeat(np.arange(1, 11), n).astype(np.uint8).reshape(-1, 1)
        X = rng.integers(0, 256, size=(32, 32, 3, len(y)), dtype=np.uint8)
        savemat(str(target / f"{split}_32x32.mat"), {"X": X, "y": y})
    return target


def write_notmnist(root, per_letter=(3, 2)):
    """notMNIST/{Train,Test}/{A..J}/*.png, 28x28 grayscale, as Adversarial Continual Learning's zip holds it."""
    folder = root / "notMNIST"
    for split, n in zip(("Train", "Test"), per_letter):
        for label, letter in enumerate("ABCDEFGHIJ"):
            for i in range(n):
                pixels = np.full((28, 28), 20 * label + i, dtype=np.uint8)
                path = folder / split / letter / f"{letter.lower()}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels, mode="L").save(path)
    return folder


def write_five(root):
    write_svhn(root)
    write_fashion_mnist(root, folder_name="MNIST")
    write_cifar10(root)
    write_notmnist(root)
    write_fashion_mnist(root)


def test_cifar10_reads_torchvision_pickles(tmp_path):
    folder = write_cifar10(tmp_path)
    train_images, train_labels, test_images, test_labels, names, found = load_cifar10(str(tmp_path))
    assert found == folder and names == CIFAR10_NAMES
    assert train_images.shape == (100, 32, 32, 3) and train_images.dtype == np.uint8
    assert train_labels.tolist() == np.tile(np.repeat(np.arange(10), 2), 5).tolist()
    assert test_images.shape == (10, 32, 32, 3) and test_labels.tolist() == list(range(10))
    with open(folder / "test_batch", "rb") as handle:
        raw = pickle.load(handle)["data"][3]      # channel-first rows -> H, W, C
    assert np.array_equal(test_images[3][..., 1].reshape(-1), raw[1024:2048])
    stream = cifar10_stream(str(tmp_path))
    assert stream.class_names == CIFAR10_NAMES and stream.n_experiences == 1
    assert stream.splits["test"][0][0].mode == "RGB"


def test_cifar10_missing_or_partial(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"CIFAR-10 not found: .*cifar-10-batches-py.*data.download=true"):
        load_cifar10(str(tmp_path))
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"CIFAR-10 is incomplete: looked for .*data_batch_3\. "):
        load_cifar10(str(tmp_path))
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetFileError, match=r"data_batch_3 is not a readable pickle"):
        load_cifar10(str(tmp_path))


@pytest.mark.parametrize("where", ["svhn", ""])
def test_svhn_reads_the_mat_files_with_10_as_the_digit_0(tmp_path, where):
    folder = write_svhn(tmp_path, folder=where)
    train_images, train_labels, test_images, test_labels, found = load_svhn(str(tmp_path))
    assert found == folder
    raw = loadmat(str(folder / "test_32x32.mat"))
    assert test_images.shape == (20, 32, 32, 3) and np.array_equal(test_images[5], raw["X"][..., 5])
    assert raw["y"][-1, 0] == 10 and test_labels[-1] == 0          # the files' 10 is the digit 0
    assert test_labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 0, 0]
    stream = svhn_stream(str(tmp_path))
    assert stream.class_names[0] == "zero" and stream.description["dataset"] == "SVHN"
    assert len(stream.splits["train"]) == 30 and stream.splits["train"][0][0].size == (32, 32)


def test_svhn_missing_partial_or_damaged(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"SVHN not found: .*svhn.*data.download=true"):
        load_svhn(str(tmp_path))
    folder = write_svhn(tmp_path)
    (folder / "test_32x32.mat").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"SVHN is incomplete in .*svhn: it has train_32x32.mat but not "
                                                   r"test_32x32.mat"):
        load_svhn(str(tmp_path))
    (folder / "test_32x32.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetFileError, match=r"test_32x32.mat is not a readable MATLAB file"):
        load_svhn(str(tmp_path))
    savemat(str(folder / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DatasetNotFoundError, match=r"1 labels are outside 1\.\.10 .*y\[0\] = 0"):
        load_svhn(str(tmp_path))


def test_notmnist_reads_the_train_test_folders_as_rgb(tmp_path):
    write_notmnist(tmp_path)
    stream = notmnist_stream(str(tmp_path))
    assert stream.class_names == LETTERS == [f"letter {c}" for c in "ABCDEFGHIJ"]
    train, test = stream.splits["train"], stream.splits["test"]
    assert len(train) == 30 and len(test) == 20
    assert train.targets == np.repeat(np.arange(10), 3).tolist()
    image, label = test[7]              # Test/D/d1.png
    assert label == 3 and image.mode == "RGB" and image.size == (28, 28)
    assert np.asarray(image).shape == (28, 28, 3) and (np.asarray(image) == 61).all()
    assert stream.description["unreadable_skipped"] == []


def test_notmnist_unreadable_pngs_are_left_out_loudly_or_refused(tmp_path, caplog):
    folder = write_notmnist(tmp_path)
    (folder / "Train" / "A" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING, logger="scenarios.notmnist"):
        stream = notmnist_stream(str(tmp_path))
    assert len(stream.splits["train"]) == 30 and stream.description["unreadable_skipped"] == ["Train/A/broken.png"]
    assert any("Train/A/broken.png cannot be decoded; left out" in r.getMessage() for r in caplog.records)
    with pytest.raises(DatasetFileError, match=r"1 PNGs in .* cannot be decoded: Train/A/broken.png. Set "
                                               r"skip_unreadable=true"):
        read_notmnist(str(tmp_path), skip_unreadable=False)
    for i in range(10):
        (folder / "Test" / "B" / f"empty{i}.png").write_bytes(b"")
    with pytest.raises(DatasetFileError, match=r"11 PNGs .* cannot be decoded .*the folder looks damaged"):
        read_notmnist(str(tmp_path))
    write_image(folder / "Test" / "C" / "big.png", 0, size=(32, 32), mode="L")
    with pytest.raises(DatasetFileError, match=r"big.png is 32x32 pixels, notMNIST's images are 28x28"):
        read_notmnist(str(tmp_path), skip_unreadable=False)


def test_notmnist_missing_or_partial_folders(tmp_path):
    (tmp_path / "notMNIST_small" / "A").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as error:
        read_notmnist(str(tmp_path))
    message = str(error.value)
    assert f"no folder {tmp_path / 'notMNIST'}" in message and "notMNIST_small" in message
    assert "Adversarial-Continual-Learning/raw/main/data/notMNIST.zip" in message and "data.download=true" in message
    folder = write_notmnist(tmp_path)
    shutil.rmtree(folder / "Test" / "G")
    with pytest.raises(DatasetNotFoundError, match=r"incomplete in .*Test: letter folders G are missing"):
        read_notmnist(str(tmp_path))
    (folder / "Test" / "G").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"no PNG in .*Test/G"):
        read_notmnist(str(tmp_path))
    shutil.rmtree(folder / "Test")
    with pytest.raises(DatasetNotFoundError, match=r"no folder .*notMNIST/Test"):
        read_notmnist(str(tmp_path))


@pytest.mark.parametrize("scenario", ["cifar10", "svhn", "notmnist"])
def test_member_scenarios_compose_and_instantiate(tmp_path, scenario):
    write_five(tmp_path)
    cfg = compose_config([f"data.root={tmp_path}", f"scenario={scenario}"])
    assert cfg.model.arch == "ViT-B-16"
    stream = instantiate(cfg.scenario)
    assert stream.name == scenario and stream.n_experiences == 1 and len(stream.class_names) == 10


# --- 5-datasets --------------------------------------------------------------------------------------------

L2P_ORDER = ["svhn", "mnist", "cifar10", "notmnist", "fashion_mnist"]


def test_five_datasets_runs_l2ps_order_with_50_distinct_names(tmp_path):
    from clprompt.stages import build

    write_five(tmp_path)
    cfg = compose_config([f"data.root={tmp_path}", "scenario=five_datasets"])
    assert (cfg.model.arch, cfg.model.pretrained) == ("ViT-B-16", "openai")
    stream = build(cfg, "scenario", train_transform=None, eval_transform=None)
    assert stream.tasks == L2P_ORDER and stream.n_experiences == 5
    assert stream.experience_classes == [list(range(10 * t, 10 * t + 10)) for t in range(5)]
    names = stream.class_names
    assert len(names) == len(set(names)) == 50
    assert names[:3] == ["house number digit zero", "house number digit one", "house number digit two"]
    assert names[10:12] == ["handwritten digit zero", "handwritten digit one"]
    assert names[20:30] == CIFAR10_NAMES and names[30:40] == LETTERS and names[40] == "t-shirt"
    description = stream.description
    assert description["order"] == L2P_ORDER and description["order_name"] == "l2p"
    assert "l2p-pytorch" in description["order_source"] and description["class_naming"] == "distinct"
    assert description["renamed_tasks"] == ["svhn", "mnist"] and description["repeated_class_names"] == []
    assert description["task_streams"]["notmnist"]["dataset"] == "notMNIST"
    test = stream.splits["test"]
    assert [len(e.dataset) for e in stream.benchmark.test_stream] == [20, 20, 10, 20, 20]
    image, label = test[20 + 20 + 10 + 7]        # notMNIST's Test/D/d1.png, in task 4
    assert label == 33 and image.mode == "RGB"
    for index in (0, 20, 40, 50, 70):   # SVHN, MNIST, CIFAR-10, notMNIST, Fashion-MNIST: all 3-channel
        assert test[index][0].mode == "RGB" and np.asarray(test[index][0]).shape[2] == 3
    assert sorted(set(int(y) for y in stream.benchmark.train_stream[1].dataset.targets)) == list(range(10, 20))


def test_five_datasets_orders(tmp_path):
    write_five(tmp_path)
    root = f"data.root={tmp_path}"
    jax = instantiate(compose_config([root, "scenario=five_datasets", "scenario.order=l2p_jax"]).scenario)
    assert jax.tasks == ["cifar10", "mnist", "svhn", "notmnist", "fashion_mnist"]
    assert jax.class_names[:10] == CIFAR10_NAMES and jax.class_names[20] == "house number digit zero"
    assert "google-research/l2p" in jax.description["order_source"]
    listed = instantiate(compose_config([root, "scenario=five_datasets",
                                         "scenario.order=[notmnist,fashion_mnist,svhn,mnist,cifar10]"]).scenario)
    assert listed.tasks == ["notmnist", "fashion_mnist", "svhn", "mnist", "cifar10"]
    assert listed.description["order_name"] is None
    assert task_order(["svhn", "mnist", "extra"], "l2p") == ["svhn", "mnist", "extra"]
    with pytest.raises(StreamConfigError, match=r"missing: \['cifar10'\], not a task: \['kmnist'\]"):
        task_order(L2P_ORDER, ["svhn", "mnist", "kmnist", "notmnist", "fashion_mnist"])
    with pytest.raises(StreamConfigError, match=r"scenario.order='random' is not a named order; choose l2p"):
        task_order(L2P_ORDER, "random")


def test_five_datasets_shared_names_are_said_and_recorded(tmp_path, caplog):
    write_five(tmp_path)
    cfg = compose_config([f"data.root={tmp_path}", "scenario=five_datasets", "scenario.class_naming=shared"])
    with caplog.at_level(logging.WARNING, logger="scenarios.five_datasets"):
        stream = instantiate(cfg.scenario)
    assert stream.class_names[:10] == stream.class_names[10:20] == ["zero", "one", "two", "three", "four", "five",
                                                                    "six", "seven", "eight", "nine"]
    assert stream.description["repeated_class_names"] == sorted(stream.class_names[:10])
    assert stream.description["renamed_tasks"] == []
    warned = [r.getMessage() for r in caplog.records if "belong to more than one class" in r.getMessage()]
    assert len(warned) == 1 and "10 class names" in warned[0] and "task_incremental is not affected" in warned[0]
    with pytest.raises(StreamConfigError, match=r"scenario.class_naming='plain'; choose distinct"):
        five_datasets({}, class_naming="plain")


def test_five_datasets_names_every_missing_member(tmp_path):
    from clprompt.stages import build

    write_five(tmp_path)
    shutil.rmtree(tmp_path / "svhn")
    shutil.rmtree(tmp_path / "notMNIST")
    with pytest.raises(DatasetNotFoundError) as error:
        build(compose_config([f"data.root={tmp_path}", "scenario=five_datasets"]), "scenario")
    message = str(error.value)
    assert "2 of its 5 datasets are missing" in message
    assert "scenario.tasks.svhn: SVHN not found" in message and "scenario.tasks.notmnist: notMNIST not found" in message
    stream = instantiate(compose_config([f"data.root={tmp_path}", "scenario=five_datasets", "~scenario.tasks.svhn",
                                         "~scenario.tasks.notmnist"]).scenario)
    assert stream.tasks == ["mnist", "cifar10", "fashion_mnist"] and len(stream.class_names) == 30
