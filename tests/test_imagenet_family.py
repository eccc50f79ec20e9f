"""ImageNet-R, Tiny ImageNet and ImageNet-100: each read from a small folder in its published layout, the
papers' splits and class orders reproduced, the shipped class data checked, and the errors for missing,
partial and damaged data."""

import os
import shutil

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import functional as F

from helpers import compose_config
from scenarios import DatasetNotFoundError, StreamConfigError
import scenarios.imagenet100 as imagenet100
import scenarios.imagenet_r as imagenet_r
from scenarios.imagenet100 import (class_order_file, imagenet100_stream, imagenet100_wnids, imagenet_clip_names,
                                   load_imagenet100)
from scenarios.imagenet_r import coda_order, imagenet_r_classes, load_imagenet_r, split_imagenet_r
from scenarios.tiny_imagenet import load_tiny_imagenet, tiny_imagenet_stream, tiny_imagenet_wnids


def _train_transform(image):
    return F.pil_to_tensor(image).float() / 255


def _eval_transform(image):  # another size, to see which split got which transform
    return F.pil_to_tensor(image.resize((2, 2))).float() / 255


def write_image(path, seed, size=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


def paths_of(dataset, start):
    return sorted(os.path.relpath(p, start) for p in dataset.paths)


# --- the shipped class data (the real 200 / 1000 / 100 entries) --------------------------------------------


def test_shipped_imagenet_names_are_open_clips_by_sorted_wnid():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    names = imagenet_clip_names()
    assert len(names) == 1000 and list(names) == sorted(names)
    assert list(names.values()) == list(IMAGENET_CLASSNAMES)
    assert names["n01440764"] == "tench" and names["n15075141"] == "toilet paper"


def test_shipped_imagenet_r_classes():
    classes = imagenet_r_classes()
    wnids = [w for w, _, _ in classes]
    assert len(wnids) == len(set(wnids)) == 200 and wnids == sorted(wnids)
    assert set(wnids) <= set(imagenet_clip_names())
    names = [imagenet_clip_names()[w] for w in wnids]
    assert len(set(names)) == 200 and names[:2] == ["goldfish", "great white shark"]
    assert sum(n for _, n, _ in classes) == 30000 and min(n for _, n, _ in classes) > 0
    assert sorted(c for _, _, c in classes) == list(range(200))
    order = coda_order()
    assert sorted(order) == list(range(200)) and wnids[order[0]] == "n02165456"   # CODA-Prompt's label 0


def test_shipped_tiny_imagenet_and_imagenet100_classes():
    tiny = tiny_imagenet_wnids()
    assert len(tiny) == len(set(tiny)) == 200 and set(tiny) <= set(imagenet_clip_names())
    assert tiny[:2] == ["n02124075", "n04067472"]     # wnids.txt's first lines
    assert [imagenet_clip_names()[w] for w in tiny[:2]] == ["Egyptian Mau", "fishing casting reel"]
    tiny_order = class_order_file("tiny_imagenet_order_continual_clip.txt")
    assert sorted(tiny_order) == list(range(200)) and tiny_order[:3] == [131, 181, 22]
    in100 = imagenet100_wnids()
    assert in100 == sorted(imagenet_clip_names())[:100]   # PODNet's subset: ImageNet's first 100 wnids
    in100_order = class_order_file("imagenet100_order_continual_clip.txt")
    assert sorted(in100_order) == list(range(100)) and in100_order[:3] == [68, 56, 78]


# --- ImageNet-R ---------------------------------------------------------------------------------------------

# (wnid, images, CODA-Prompt label): four real ImageNet-R classes with few images
R_CLASSES = [("n01443537", 9, 3), ("n01484850", 12, 0), ("n01494475", 10, 2), ("n01498041", 11, 1)]
R_NAMES = ["goldfish", "great white shark", "hammerhead shark", "stingray"]
STYLES = ["art", "cartoon", "deviantart", "sculpture", "sketch", "tattoo", "toy"]


@pytest.fixture
def small_imagenet_r(monkeypatch):
    monkeypatch.setattr(imagenet_r, "imagenet_r_classes", lambda: list(R_CLASSES))


def write_imagenet_r(root):
    folder = root / "imagenet-r"
    for label, (wnid, n, _) in enumerate(R_CLASSES):
        for i in range(n):
            write_image(folder / wnid / f"{STYLES[i % len(STYLES)]}_{i}.jpg", 10 * label + i)
    (folder / "README.txt").write_text("ImageNet-R\n")
    return folder


def reference_dualprompt_split(folder, seed=42):
    """L2P's / DualPrompt's Imagenet_R, as their code runs it: ImageFolder, torch.manual_seed, random_split."""
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(folder))
    n = len(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train, test = torch.utils.data.random_split(dataset, [int(0.8 * n), n - int(0.8 * n)])
    return ([dataset.imgs[i] for i in train.indices], [dataset.imgs[i] for i in test.indices], dataset.classes)


def test_imagenet_r_reproduces_dualprompts_split(tmp_path, small_imagenet_r):
    folder = write_imagenet_r(tmp_path)
    stream = split_imagenet_r(str(tmp_path), n_experiences=2, train_transform=_train_transform,
                              eval_transform=_eval_transform)
    train, test, classes = reference_dualprompt_split(folder)
    assert classes == [w for w, _, _ in R_CLASSES]
    for split, reference in (("train", train), ("test", test)):
        dataset = stream.splits[split]
        assert sorted(zip(dataset.paths, dataset.targets)) == sorted(reference)
    assert (len(train), len(test)) == (33, 9) == (stream.description["n_train"], stream.description["n_test"])
    assert stream.name == "imagenet_r" and stream.class_names == R_NAMES
    assert stream.experience_classes == [[0, 1], [2, 3]]
    benchmark = stream.benchmark
    assert [sorted(e.classes_in_this_experience) for e in benchmark.train_stream] == [[0, 1], [2, 3]]
    assert benchmark.train_stream[0].dataset[0][0].shape == (3, 4, 4)
    assert benchmark.test_stream[1].dataset[0][0].shape == (3, 2, 2)
    description = stream.description
    assert description["dataset"] == "ImageNet-R" and description["root"] == str(folder)
    assert description["split"] == "dualprompt" and description["split_seed"] == 42
    assert "torch.randperm" in description["split_source"] and description["class_order"] == [0, 1, 2, 3]


def test_imagenet_r_split_seed_is_the_torch_seed(tmp_path, small_imagenet_r):
    folder = write_imagenet_r(tmp_path)
    stream = split_imagenet_r(str(tmp_path), split_seed=7, n_experiences=1)
    train, _, _ = reference_dualprompt_split(folder, seed=7)
    assert sorted(stream.splits["train"].paths) == sorted(p for p, _ in train)
    assert sorted(stream.splits["train"].paths) != sorted(split_imagenet_r(str(tmp_path), n_experiences=1)
                                                          .splits["train"].paths)


def test_imagenet_r_folder_split_by_l2ps_code_is_read_as_it_is(tmp_path, small_imagenet_r):
    folder = write_imagenet_r(tmp_path)
    train, test, classes = reference_dualprompt_split(folder)
    for part, items in (("train", train), ("test", test)):     # what L2P's Imagenet_R.split() does
        for wnid in classes:
            (folder / part / wnid).mkdir(parents=True)
        for path, _ in items:
            shutil.move(path, folder / part / os.path.relpath(path, folder))
    for wnid in classes:
        shutil.rmtree(folder / wnid)
    stream = split_imagenet_r(str(tmp_path), n_experiences=2)
    for part, items in (("train", train), ("test", test)):
        assert paths_of(stream.splits[part], folder / part) == sorted(os.path.relpath(p, folder) for p, _ in items)
    assert "as L2P's / DualPrompt's code wrote them" in stream.description["split_source"]


def write_coda_files(folder, test_every=3):
    """CODA-Prompt's two split files over the fixture (paths data/imagenet-r/<wnid>/<file>, CODA's targets)."""
    payload = {"train": {"data": [], "targets": []}, "test": {"data": [], "targets": []}}
    for wnid, n, coda in R_CLASSES:
        for i in range(n):
            part = "test" if i % test_every == 0 else "train"
            payload[part]["data"].append(f"data/imagenet-r/{wnid}/{STYLES[i % len(STYLES)]}_{i}.jpg")
            payload[part]["targets"].append(coda)
    for part in ("train", "test"):
        (folder / f"imagenet-r_{part}.yaml").write_text(yaml.safe_dump(payload[part]))
    return payload


def test_imagenet_r_reads_codas_split_files_and_order(tmp_path, small_imagenet_r):
    folder = write_imagenet_r(tmp_path)
    payload = write_coda_files(folder)
    stream = split_imagenet_r(str(tmp_path), split="coda", class_order="coda", n_experiences=2)
    for part in ("train", "test"):
        assert paths_of(stream.splits[part], folder) == sorted(p[len("data/imagenet-r/"):]
                                                               for p in payload[part]["data"])
        wnids = [w for w, _, _ in R_CLASSES]
        assert all(wnids[y] == os.path.basename(os.path.dirname(p))
                   for p, y in zip(stream.splits[part].paths, stream.splits[part].targets))
    # CODA-Prompt's labels: n01484850 0, n01498041 1, n01494475 2, n01443537 3 -> our labels 1, 3, 2, 0
    assert stream.description["class_order"] == [1, 3, 2, 0] and stream.experience_classes == [[1, 3], [2, 0]]
    assert stream.description["split"] == "coda" and "CODA-Prompt" in stream.description["class_order_source"]


@pytest.mark.parametrize("n_experiences, sizes", [(5, [40] * 5), (10, [20] * 10), (20, [10] * 20)])
def test_imagenet_r_task_counts_over_the_200_classes(n_experiences, sizes):
    from scenarios.stream import make_class_order, split_classes

    groups = split_classes(make_class_order(200, class_order=coda_order()), n_experiences)
    assert [len(g) for g in groups] == sizes and groups[0][0] == coda_order()[0]


def test_imagenet_r_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        split_imagenet_r(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "imagenet-r") in message and "imagenet-r.tar" in message and "tar -xf" in message
    assert "https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar" in message
    assert "data.download=true" not in message


def test_imagenet_r_download_is_refused(tmp_path):
    with pytest.raises(StreamConfigError, match="neither torchvision nor Avalanche"):
        split_imagenet_r(str(tmp_path), download=True)


@pytest.mark.parametrize("damage, problem", [
    (lambda f: shutil.rmtree(f / "n01494475"), r"1 of its 4 class folders are missing \(first: n01494475\)"),
    (lambda f: (f / "n01498041" / "art_0.jpg").unlink(),
     r"1 classes do not have the images imagenet-r.tar has \(n01498041: 10 of 11"),
    (lambda f: (f / "val").mkdir(), r"half split"),
    (lambda f: (f / "n99999999").mkdir(), r"not ImageNet-R classes are there: \['n99999999'\]"),
])
def test_imagenet_r_partial_folder_is_named(tmp_path, small_imagenet_r, damage, problem):
    folder = write_imagenet_r(tmp_path)
    if problem == "half split":
        (folder / "train").mkdir()
    else:
        damage(folder)
    with pytest.raises(DatasetNotFoundError, match=problem):
        split_imagenet_r(str(tmp_path), n_experiences=2)


def test_imagenet_r_coda_needs_its_files_and_checks_them(tmp_path, small_imagenet_r):
    folder = write_imagenet_r(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="imagenet-r_train.yaml.*GT-RIPL/CODA-Prompt"):
        split_imagenet_r(str(tmp_path), split="coda", n_experiences=2)
    payload = write_coda_files(folder)
    (folder / "n01484850" / "art_0.jpg").unlink()
    listed_missing = r"1 of \d+ images listed in .*imagenet-r_test.yaml .*n01484850/art_0"
    with pytest.raises(DatasetNotFoundError, match=listed_missing):
        split_imagenet_r(str(tmp_path), split="coda", n_experiences=2)
    payload["train"]["targets"][0] = 7
    (folder / "imagenet-r_train.yaml").write_text(yaml.safe_dump(payload["train"]))
    with pytest.raises(DatasetNotFoundError, match=r"has target 7, but CODA-Prompt's label of n01443537 is 3"):
        split_imagenet_r(str(tmp_path), split="coda", n_experiences=2)
    (folder / "imagenet-r_train.yaml").write_text("data: [a.jpg]\n")
    with pytest.raises(DatasetNotFoundError, match="not CODA-Prompt's split file"):
        split_imagenet_r(str(tmp_path), split="coda", n_experiences=2)
    with pytest.raises(StreamConfigError, match="not an ImageNet-R split"):
        load_imagenet_r(str(tmp_path), split="random")


def test_imagenet_r_config_composes_and_instantiates(tmp_path, small_imagenet_r):
    write_imagenet_r(tmp_path)
    cfg = compose_config(["scenario=imagenet_r", f"data.root={tmp_path}", "scenario.n_experiences=2"])
    assert (cfg.scenario.split, cfg.scenario.split_seed, cfg.scenario.class_order) == ("dualprompt", 42, None)
    assert compose_config(["scenario=imagenet_r"]).scenario.n_experiences == 10
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.class_names == R_NAMES and stream.n_experiences == 2
    assert stream.benchmark.test_stream[0].dataset[0][0].shape == (3, 2, 2)


# --- Tiny ImageNet ------------------------------------------------------------------------------------------


def write_tiny(root, train_per_class=2, val_per_class=1):
    """tiny-imagenet-200 as the zip extracts, with its 200 wnids (Avalanche's reader expects 200 classes) and
    a few 8 px images a class: wnids.txt, words.txt, train/, val/ with its annotations, test/."""
    wnids = tiny_imagenet_wnids()
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tsome words\n" for w in wnids))
    for label, wnid in enumerate(wnids):
        names = [f"{wnid}_{i}.JPEG" for i in range(train_per_class)]
        for i, name in enumerate(names):
            write_image(folder / "train" / wnid / "images" / name, 100 * label + i, size=8)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(f"{n}\t0\t0\t7\t7\n" for n in names))
    lines, k = [], 0
    for i in range(val_per_class):          # classes interleaved, as in the real annotation file
        for label, wnid in enumerate(wnids):
            write_image(folder / "val" / "images" / f"val_{k}.JPEG", 7 * k + 1, size=8)
            lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t7\t7\n")
            k += 1
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    write_image(folder / "test" / "images" / "test_0.JPEG", 5, size=8)
    return folder


TINY = ["n02124075", "n04067472", "n04540053"]      # wnids.txt's first three


def test_tiny_imagenet_reads_the_zips_layout(tmp_path):
    folder = write_tiny(tmp_path, val_per_class=2)
    stream = tiny_imagenet_stream(str(tmp_path), class_order=None, initial_classes=0, increment=None,
                                  n_experiences=100, train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.name == "tiny_imagenet" and len(stream.class_names) == 200
    assert stream.class_names[:3] == ["Egyptian Mau", "fishing casting reel", "volleyball"]
    train, test = stream.splits["train"], stream.splits["test"]
    assert train.targets == sorted(list(range(200)) * 2)
    assert list(zip(train.targets, train.paths)) == sorted(zip(train.targets, train.paths))   # not directory order
    assert all(os.path.basename(p).startswith(tiny_imagenet_wnids()[y]) for p, y in zip(train.paths, train.targets))
    labelled = dict(line.split("\t")[:2] for line in (folder / "val" / "val_annotations.txt").read_text().splitlines())
    assert test.targets == sorted(list(range(200)) * 2)
    assert all(tiny_imagenet_wnids()[y] == labelled[os.path.basename(p)] for p, y in zip(test.paths, test.targets))
    assert not any("/test/" in p for p in test.paths)
    assert stream.experience_classes[:2] == [[0, 1], [2, 3]]
    assert stream.benchmark.train_stream[0].dataset[0][0].shape == (3, 8, 8)
    assert stream.benchmark.test_stream[0].dataset[0][0].shape == (3, 2, 2)
    description = stream.description
    assert description["dataset"] == "Tiny ImageNet" and description["root"] == str(folder)
    assert description["template"] == "a bad photo of a {}." and "Avalanche" in description["split_source"]


def test_tiny_imagenet_agrees_with_avalanches_reader(tmp_path):
    """The same (image, label) pairs as avalanche.benchmarks.datasets.TinyImagenet, which reads them."""
    from avalanche.benchmarks.datasets import TinyImagenet

    write_tiny(tmp_path)
    splits, _, _ = load_tiny_imagenet(str(tmp_path))
    for split, train in (("train", True), ("test", False)):
        avalanche = TinyImagenet(tmp_path, train=train, download=False)
        assert sorted(splits[split]) == sorted(zip(map(str, avalanche.data), map(int, avalanche.targets)))


def test_tiny_imagenet_where_avalanches_reader_differs(tmp_path):
    """Avalanche lists any file of images/ and keeps annotated images that are missing; ours does neither."""
    from avalanche.benchmarks.datasets import TinyImagenet

    folder = write_tiny(tmp_path)
    (folder / "train" / TINY[0] / "images" / ".DS_Store").write_bytes(b"\0")
    assert any(p.name == ".DS_Store" for p in TinyImagenet(tmp_path, train=True, download=False).data)
    assert not any(p.endswith(".DS_Store") for p, _ in load_tiny_imagenet(str(tmp_path))[0]["train"])
    (folder / "val" / "images" / "val_4.JPEG").unlink()
    assert any(p.name == "val_4.JPEG" for p in TinyImagenet(tmp_path, train=False, download=False).data)
    with pytest.raises(DatasetNotFoundError, match=r"1 of 200 validation images .* missing \(first: val/images/val_4"):
        load_tiny_imagenet(str(tmp_path))


def test_tiny_imagenet_default_config_is_continual_clips_b100_inc10(tmp_path):
    write_tiny(tmp_path, train_per_class=1)
    cfg = compose_config(["scenario=tiny_imagenet", f"data.root={tmp_path}"])
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    order = class_order_file("tiny_imagenet_order_continual_clip.txt")
    assert stream.n_experiences == 11 and [len(c) for c in stream.experience_classes] == [100] + [10] * 10
    assert stream.description["class_order"] == order and stream.experience_classes[1] == order[100:110]
    assert "Continual-CLIP" in stream.description["class_order_source"]
    assert stream.class_names[0] == "Egyptian Mau" and len(set(stream.class_names)) == 200
    assert stream.description["n_train"] == stream.description["n_test"] == 200
    assert stream.benchmark.test_stream[0].dataset[0][0].shape == (3, 2, 2)


def test_tiny_imagenet_download_goes_through_avalanche(tmp_path, monkeypatch):
    """data.download=true: Avalanche's TinyImagenet downloads (here: writes the folder instead of fetching)."""
    from avalanche.benchmarks.datasets import TinyImagenet

    calls = []

    def fake_download(self):
        calls.append(self.root)
        write_tiny(self.root, train_per_class=1)

    monkeypatch.setattr(TinyImagenet, "_download_dataset", fake_download)
    stream = tiny_imagenet_stream(str(tmp_path), download=True)
    assert calls == [tmp_path] and stream.description["n_train"] == 200
    tiny_imagenet_stream(str(tmp_path), download=True)
    assert len(calls) == 1      # there now: not downloaded again


def test_tiny_imagenet_missing_dataset_offers_the_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        tiny_imagenet_stream(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "tiny-imagenet-200") in message and "val_annotations.txt" in message
    assert "http://cs231n.stanford.edu/tiny-imagenet-200.zip" in message and "data.download=true" in message


def _drop_last_line(path):
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()[:-1]))


@pytest.mark.parametrize("damage, problem", [
    (lambda f: (f / "val" / "val_annotations.txt").unlink(), r"missing .*val_annotations.txt"),
    (lambda f: (f / "wnids.txt").unlink(), r"missing .*wnids.txt"),
    (lambda f: shutil.rmtree(f / "train" / TINY[1]), rf"1 class folders train/<wnid>/images are missing .*{TINY[1]}"),
    (lambda f: _drop_last_line(f / "wnids.txt"), r"wnids.txt is not the published one: it lists 199 wnids"),
    (lambda f: (f / "wnids.txt").write_text("\n".join(reversed(tiny_imagenet_wnids()))),
     r"wnids.txt is not the published one: .* first different at line 1"),
    (lambda f: (f / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn00000001\t0\t0\t7\t7\n"),
     r"line 1 is .*n00000001"),
    (lambda f: _drop_last_line(f / "val" / "val_annotations.txt"),
     r"1 images of .*val/images have no line .*val_199.JPEG.*truncated"),
    (lambda f: (f / "train" / TINY[2] / "images" / f"{TINY[2]}_1.JPEG").unlink(),
     rf"1 training images listed in .*boxes.txt are missing .*{TINY[2]}_1.JPEG"),
    (lambda f: [p.unlink() for p in (f / "train" / TINY[0]).rglob("*") if p.is_file()],
     rf"no image for 1 classes \(first: {TINY[0]}\)"),
])
def test_tiny_imagenet_partial_folder_is_named(tmp_path, damage, problem):
    damage(write_tiny(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=problem):
        load_tiny_imagenet(str(tmp_path))


# --- ImageNet-100 -------------------------------------------------------------------------------------------

IN100 = ["n01440764", "n01443537", "n01484850"]   # tench, goldfish, great white shark


@pytest.fixture
def small_in100(monkeypatch):
    monkeypatch.setattr(imagenet100, "imagenet100_wnids", lambda: list(IN100))
    monkeypatch.setattr(imagenet100, "VAL_PER_CLASS", 2)


def write_imagenet(folder, wnids, train_per_class=3, val_per_class=2):
    """An ImageNet folder: train/<wnid>/<wnid>_<n>.JPEG and val/<wnid>/ILSVRC2012_val_<n>.JPEG."""
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            write_image(folder / "train" / wnid / f"{wnid}_{1000 + i}.JPEG", 10 * label + i)
        for i in range(val_per_class):
            write_image(folder / "val" / wnid / f"ILSVRC2012_val_{label * 100 + i:08d}.JPEG", 500 + 10 * label + i)
    return folder


def test_imagenet100_reads_coops_imagenet_folder(tmp_path, small_in100):
    folder = write_imagenet(tmp_path / "imagenet" / "images", IN100 + ["n01491361"])  # + a class not in the subset
    (tmp_path / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    stream = imagenet100_stream(str(tmp_path), class_order=None, n_experiences=3, train_transform=_train_transform,
                                eval_transform=_eval_transform)
    assert stream.name == "imagenet100" and stream.class_names == ["tench", "goldfish", "great white shark"]
    train, test = stream.splits["train"], stream.splits["test"]
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2] and test.targets == [0, 0, 1, 1, 2, 2]
    for dataset, sub in ((train, "train"), (test, "val")):
        assert all(os.path.relpath(p, folder).split(os.sep)[:2] == [sub, IN100[y]]
                   for p, y in zip(dataset.paths, dataset.targets))
    assert stream.benchmark.test_stream[2].dataset[0][0].shape == (3, 2, 2)
    description = stream.description
    assert description["dataset"] == "ImageNet-100" and description["root"] == str(folder)
    assert description["template"] == "a good photo of a {}." and "PODNet" in description["classes_source"]


@pytest.mark.parametrize("where", ["imagenet", "imagenet1000"])
def test_imagenet100_reads_a_plain_imagenet_folder(tmp_path, small_in100, where):
    folder = write_imagenet(tmp_path / where, IN100)
    stream = imagenet100_stream(str(tmp_path), class_order=None, n_experiences=1)
    assert stream.description["root"] == str(folder) and stream.description["n_train"] == 9


def write_podnet_lists(folder, wnids, train_per_class=2):
    """PODNet's train_100.txt / val_100.txt over the fixture (here: 2 of the 3 training images a class)."""
    train = [f"train/{w}/{w}_{1000 + i}.JPEG {label}\n"
             for label, w in enumerate(wnids) for i in range(train_per_class)]
    val = [f"val/{w}/ILSVRC2012_val_{label * 100 + i:08d}.JPEG {label}\n"
           for label, w in enumerate(wnids) for i in range(2)]
    (folder / "train_100.txt").write_text("".join(train))
    (folder / "val_100.txt").write_text("".join(val))


def test_imagenet100_reads_podnets_lists_when_there(tmp_path, small_in100):
    folder = write_imagenet(tmp_path / "imagenet", IN100)
    write_podnet_lists(folder, IN100)
    stream = imagenet100_stream(str(tmp_path), class_order=None, n_experiences=1)
    assert paths_of(stream.splits["train"], folder) == sorted(
        os.path.join("train", w, f"{w}_{1000 + i}.JPEG") for w in IN100 for i in range(2))
    assert stream.description["n_test"] == 6 and "PODNet's lists" in stream.description["split_source"]


def test_imagenet100_default_config_is_continual_clips_10_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet100, "VAL_PER_CLASS", 1)
    write_imagenet(tmp_path / "imagenet" / "images", imagenet100_wnids(), train_per_class=1, val_per_class=1)
    cfg = compose_config(["scenario=imagenet100", f"data.root={tmp_path}"])
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    order = class_order_file("imagenet100_order_continual_clip.txt")
    assert stream.n_experiences == 10 and stream.experience_classes[0] == order[:10] == [68, 56, 78, 8, 23, 84, 90,
                                                                                          65, 74, 76]
    assert stream.class_names[:3] == ["tench", "goldfish", "great white shark"]
    assert "Continual-CLIP" in stream.description["class_order_source"]


def test_imagenet100_errors(tmp_path, small_in100):
    with pytest.raises(DatasetNotFoundError) as error:
        imagenet100_stream(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "imagenet" / "images") in message and str(tmp_path / "imagenet1000") in message
    assert "image-net.org" in message and "data.download=true" not in message
    with pytest.raises(StreamConfigError, match="cannot be downloaded"):
        imagenet100_stream(str(tmp_path), download=True)
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"imagenet/train exists but .*imagenet/val does not"):
        imagenet100_stream(str(tmp_path))
    with pytest.raises(StreamConfigError, match="order of 100 classes, but the dataset has 3"):
        write_imagenet(tmp_path / "imagenet", IN100)
        imagenet100_stream(str(tmp_path))


@pytest.mark.parametrize("damage, problem", [
    (lambda f: shutil.rmtree(f / "val" / IN100[1]), rf"1 class folders are missing .*val/{IN100[1]}"),
    (lambda f: (f / "val" / IN100[2] / "ILSVRC2012_val_00000200.JPEG").unlink(),
     rf"val/ holds \{{'{IN100[2]}': 1\}} images of 1 classes, ImageNet has 2"),
    (lambda f: [p.unlink() for p in (f / "train" / IN100[0]).iterdir()], rf"train/ has no images of \['{IN100[0]}'\]"),
])
def test_imagenet100_partial_folder_is_named(tmp_path, small_in100, damage, problem):
    damage(write_imagenet(tmp_path / "imagenet", IN100))
    with pytest.raises(DatasetNotFoundError, match=problem):
        load_imagenet100(str(tmp_path))


def test_imagenet100_damaged_lists_are_named(tmp_path, small_in100):
    folder = write_imagenet(tmp_path / "imagenet", IN100)
    write_podnet_lists(folder, IN100)
    (folder / "val_100.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="train_100.txt is there but .*val_100.txt is not"):
        load_imagenet100(str(tmp_path))
    write_podnet_lists(folder, IN100, train_per_class=4)       # lists a 4th image the folder lacks
    with pytest.raises(DatasetNotFoundError, match=r"3 of 12 images listed in .*train_100.txt are missing .*_1003"):
        load_imagenet100(str(tmp_path))
    write_podnet_lists(folder, IN100)
    (folder / "val_100.txt").write_text(f"val/{IN100[0]}/ILSVRC2012_val_00000000.JPEG 5\n")
    with pytest.raises(DatasetNotFoundError, match=rf"gives {IN100[0]} the label 5, but .* is 0"):
        load_imagenet100(str(tmp_path))
    (folder / "val_100.txt").write_text(f"val/{IN100[0]}/ILSVRC2012_val_00000000.JPEG 0\n")
    with pytest.raises(DatasetNotFoundError, match=r"lists no image of labels \[1, 2\] .*truncated"):
        load_imagenet100(str(tmp_path))
