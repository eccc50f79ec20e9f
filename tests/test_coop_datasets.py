"""CoOp's 11 few-shot datasets: each read from a small folder in its real layout, their split files, the
splits built without one, and the errors for missing, incomplete and malformed data."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import functional as F

from helpers import compose_config
from scenarios import DatasetNotFoundError, StreamConfigError
from scenarios.array_dataset import ArrayImageDataset
from scenarios.coop_datasets import DATASETS, coop_stream, dataset_spec, load_coop_dataset
from scenarios.image_folder_dataset import ImageFileDataset

PER_CLASS = 5  # the fixtures' zhou splits take 2 train, 1 val, 2 test images of each class


def _train_transform(image):
    return F.pil_to_tensor(image).float() / 255


def _eval_transform(image):  # another size, to see which split got which transform
    return F.pil_to_tensor(image.resize((4, 4))).float() / 255


def _files(prefix, ext=".jpg", n=PER_CLASS):
    return [f"{prefix}{i + 1}{ext}" for i in range(n)]


# config name -> (dataset folder, image folder in it, split file name, [(stored class name, image paths
# relative to the image folder)] in label order, the class names a prompt gets)
CASES = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   [("face", _files("Faces/image_")), ("accordion", _files("accordion/image_")),
                    ("wild_cat", _files("wild_cat/image_", ".png"))],
                   ["face", "accordion", "wild cat"]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json",
                    [("abyssinian", _files("Abyssinian_")), ("american_bulldog", _files("american_bulldog_")),
                     ("bengal", _files("Bengal_"))],
                    ["abyssinian", "american bulldog", "bengal"]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json",
                      [("2012 Tesla Model S", _files("cars_train/0000", n=3) + _files("cars_test/0000", n=2)),
                       ("2007 BMW X5 SUV", _files("cars_train/0001", n=3) + _files("cars_test/0001", n=2)),
                       ("1993 Geo Metro Convertible", _files("cars_train/0002", n=3) + _files("cars_test/0002", n=2))],
                      ["2012 Tesla Model S", "2007 BMW X5 SUV", "1993 Geo Metro Convertible"]),
    "flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                   [("pink primrose", _files("image_0000")), ("hard-leaved pocket orchid", _files("image_0001")),
                    ("canterbury bells", _files("image_0002"))],
                   ["pink primrose", "hard-leaved pocket orchid", "canterbury bells"]),
    "food101": ("food-101", "images", "split_zhou_Food101.json",
                [("apple_pie", _files("apple_pie/")), ("baby_back_ribs", _files("baby_back_ribs/")),
                 ("baklava", _files("baklava/"))],
                ["apple pie", "baby back ribs", "baklava"]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json",
               [("abbey", _files("a/abbey/sun_a")),
                ("outdoor apartment_building", _files("a/apartment_building/outdoor/sun_b")),
                ("shop bakery", _files("b/bakery/shop/sun_c"))],
               ["abbey", "outdoor apartment building", "shop bakery"]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json",
            [("banded", _files("banded/banded_")), ("blotchy", _files("blotchy/blotchy_")),
             ("braided", _files("braided/braided_"))],
            ["banded", "blotchy", "braided"]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json",
                [("Annual Crop Land", _files("AnnualCrop/AnnualCrop_")), ("Forest", _files("Forest/Forest_")),
                 ("Sea or Lake", _files("SeaLake/SeaLake_"))],
                ["Annual Crop Land", "Forest", "Sea or Lake"]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               [("Apply_Eye_Makeup", _files("Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c0")),
                ("Baby_Crawling", _files("Baby_Crawling/v_BabyCrawling_g01_c0")),
                ("Yo_Yo", _files("Yo_Yo/v_YoYo_g01_c0"))],
               ["Apply Eye Makeup", "Baby Crawling", "Yo Yo"]),
}
IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark")]
AIRCRAFT = ["707-320", "A300B4", "F/A-18"]
ALL = ["imagenet", *CASES, "fgvc_aircraft"]
TEMPLATES = {"oxford_pets": "a photo of a {}, a type of pet.", "eurosat": "a centered satellite photo of {}.",
             "dtd": "{} texture.", "food101": "a photo of {}, a type of food.",
             "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
             "flowers102": "a photo of a {}, a type of flower.", "ucf101": "a photo of a person doing {}."}


def write_image(path, seed, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def write_coop(root, name, split_file=True, per_class=PER_CLASS):
    """A 3-class dataset in CoOp's layout under ``root``; returns its dataset folder."""
    if name == "imagenet":
        folder = root / "imagenet"
        for label, (wnid, _) in enumerate(IMAGENET):
            for split, n in (("train", 3), ("val", 2)):
                for i in range(n):
                    write_image(folder / "images" / split / wnid / f"{wnid}_{i}.JPEG", 10 * label + i)
        (folder / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in IMAGENET))
        return folder
    if name == "fgvc_aircraft":
        folder = root / "fgvc_aircraft"
        (folder / "images").mkdir(parents=True)
        (folder / "variants.txt").write_text("\n".join(AIRCRAFT) + "\n")
        for split, n in (("train", 2), ("val", 1), ("test", 2)):
            lines = []
            for label, variant in enumerate(AIRCRAFT):
                for i in range(n):
                    image_id = f"{split[:2]}{label}{i}"
                    write_image(folder / "images" / f"{image_id}.jpg", label * 7 + i)
                    lines.append(f"{image_id} {variant}\n")
            (folder / f"images_variant_{split}.txt").write_text("".join(lines))
        return folder
    folder_name, image_dir, split_name, classes, _ = CASES[name]
    folder = root / folder_name
    images = folder / image_dir if image_dir else folder
    split = {"train": [], "val": [], "test": []}
    for label, (stored, paths) in enumerate(classes):
        paths = paths[:per_class]
        for i, path in enumerate(paths):
            write_image(images / path, 100 * label + i, "L" if (label, i) == (0, 0) else "RGB")
        for part, chosen in (("train", paths[:2]), ("val", paths[2:3]), ("test", paths[3:])):
            split[part].extend([p, label, stored] for p in chosen)
    if name == "caltech101":  # not a class, in CoOp
        write_image(images / "BACKGROUND_Google" / "image_1.jpg", 999)
    if name == "flowers102":
        (folder / "cat_to_name.json").write_text(json.dumps({str(i + 1): c[0] for i, c in enumerate(classes)}))
    if split_file:
        (folder / split_name).write_text(json.dumps(split))
    return folder


def expected_names(name):
    if name == "imagenet":
        return [n for _, n in IMAGENET]
    if name == "fgvc_aircraft":
        return AIRCRAFT
    return CASES[name][4]


def labels_of(experience):
    return sorted(int(y) for y in experience.dataset.targets)


@pytest.mark.parametrize("name", ALL)
def test_reads_each_dataset_in_coop_layout(tmp_path, name):
    folder = write_coop(tmp_path, name)
    stream = coop_stream(dataset_spec(name).name, str(tmp_path), train_transform=_train_transform,
                         eval_transform=_eval_transform)
    assert stream.name == name
    assert stream.class_names == expected_names(name)
    assert stream.n_experiences == 1 and stream.experience_classes == [[0, 1, 2]]
    benchmark = stream.benchmark
    assert set(benchmark.train_stream[0].classes_in_this_experience) == {0, 1, 2}
    n_train, n_val, n_test = (3, 2, 2) if name == "imagenet" else (2, 1, 2)
    assert labels_of(benchmark.train_stream[0]) == sorted([0, 1, 2] * n_train)
    assert labels_of(benchmark.valid_stream[0]) == sorted([0, 1, 2] * n_val)
    assert labels_of(benchmark.test_stream[0]) == sorted([0, 1, 2] * n_test)
    image, label, *_ = benchmark.train_stream[0].dataset[0]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 8, 8) and label in (0, 1, 2)
    for evaluated in (benchmark.valid_stream[0], benchmark.test_stream[0]):
        assert evaluated.dataset[0][0].shape == (3, 4, 4)
    description = stream.description
    assert description["dataset"] == dataset_spec(name).name and description["root"] == str(folder)
    assert description["n_classes"] == 3 and description["n_valid"] == 3 * n_val
    assert description["template"] == TEMPLATES.get(name, "a photo of a {}.")
    source = {"imagenet": "folders", "fgvc_aircraft": "official"}.get(name, "zhou")
    assert description["split_source"].startswith(source)
    if source == "zhou":
        assert description["split"] == CASES[name][2]
    assert not list(folder.glob("split_clprompt_*"))


def test_imagenet_validates_on_its_test_split_as_coop_does(tmp_path):
    write_coop(tmp_path, "imagenet")
    data = load_coop_dataset("ImageNet", str(tmp_path))
    assert data.splits["val"] == data.splits["test"]
    assert all("/images/val/" in path for path, _ in data.splits["test"])
    assert "also the validation split" in data.description["split_source"]


def test_dtd_also_read_from_the_nested_tarball_folder(tmp_path):
    folder = write_coop(tmp_path, "dtd")
    (folder / "dtd").mkdir()
    (folder / "images").rename(folder / "dtd" / "images")
    assert coop_stream("dtd", str(tmp_path)).class_names == ["banded", "blotchy", "braided"]


def test_items_without_transform_are_rgb_images(tmp_path):
    write_coop(tmp_path, "caltech101")
    data = load_coop_dataset("caltech101", str(tmp_path))
    paths, labels = zip(*data.splits["train"])
    dataset = ImageFileDataset(paths, labels)
    image, label = dataset[0]  # the fixture's first image is grayscale
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 0
    other = dataset.with_transform(_train_transform)
    assert other.targets == dataset.targets and other[0][0].shape == (3, 8, 8)
    assert dataset.transform is None and isinstance(dataset[0][0], Image.Image)


def test_array_dataset_with_transform_shares_the_images():
    dataset = ArrayImageDataset(np.zeros((2, 4, 4, 3), dtype=np.uint8), [0, 1])
    other = dataset.with_transform(_train_transform)
    assert other.images is dataset.images and other.targets == [0, 1]
    assert other[1][0].shape == (3, 4, 4) and isinstance(dataset[1][0], Image.Image)


# --- errors -------------------------------------------------------------------------------------------


def test_missing_dataset_names_the_folder_and_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        coop_stream("OxfordPets", str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "oxford_pets") in message and "split_zhou_OxfordPets.json" in message
    assert "DATASETS.md" in message


def test_half_present_dataset_names_the_missing_image_folder(tmp_path):
    folder = write_coop(tmp_path, "food101")
    for path in sorted((folder / "images").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (folder / "images").rmdir()
    with pytest.raises(DatasetNotFoundError, match="image folder does not") as error:
        coop_stream("food101", str(tmp_path))
    assert str(folder / "images") in str(error.value)


def test_half_present_imagenet_names_what_is_missing(tmp_path):
    (tmp_path / "imagenet" / "images" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as error:
        coop_stream("imagenet", str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "imagenet" / "images" / "val") in message and "classnames.txt" in message


def test_split_naming_missing_images_lists_them(tmp_path):
    folder = write_coop(tmp_path, "eurosat")
    (folder / "2750" / "Forest" / "Forest_2.jpg").unlink()
    (folder / "2750" / "SeaLake" / "SeaLake_5.jpg").unlink()
    with pytest.raises(DatasetNotFoundError) as error:
        coop_stream("eurosat", str(tmp_path))
    message = str(error.value)
    assert "2 of 15 images named in" in message and "split_zhou_EuroSAT.json" in message
    assert "Forest/Forest_2.jpg" in message and "SeaLake/SeaLake_5.jpg" in message


def test_aircraft_list_naming_a_missing_image_is_reported(tmp_path):
    folder = write_coop(tmp_path, "fgvc_aircraft")
    (folder / "images" / "te00.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 of 15 images .* te00\.jpg"):
        coop_stream("fgvc_aircraft", str(tmp_path))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not JSON"),
    (json.dumps({"train": [], "val": []}), "expected a JSON object with lists"),
    (json.dumps({"train": [["a.jpg", 0]], "val": [["b.jpg", 0, "x"]], "test": [["c.jpg", 0, "x"]]}),
     r"train\[0\]"),
    (json.dumps({"train": [["a.jpg", 0, "x"], ["b.jpg", 2, "z"]], "val": [["c.jpg", 0, "x"]],
                 "test": [["d.jpg", 2, "z"]]}), r"labels must be 0\.\.n-1.*absent: \[1\]"),
    (json.dumps({"train": [["a.jpg", 0, "x"]], "val": [["b.jpg", 0, "y"]], "test": [["c.jpg", 0, "x"]]}),
     "more than one class name"),
])
def test_malformed_split_file_is_reported(tmp_path, content, problem):
    folder = write_coop(tmp_path, "dtd")
    (folder / "split_zhou_DescribableTextures.json").write_text(content)
    with pytest.raises(DatasetNotFoundError, match=problem) as error:
        coop_stream("dtd", str(tmp_path))
    assert "is malformed" in str(error.value) and "DATASETS.md" in str(error.value)


def test_download_is_refused_with_directions(tmp_path):
    with pytest.raises(StreamConfigError) as error:
        coop_stream("Food101", str(tmp_path), download=True)
    message = str(error.value)
    assert "DATASETS.md" in message and "torchvision.datasets.Food101" in message
    assert str(tmp_path / "food-101") in message


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(StreamConfigError, match="EuroSAT, UCF101"):
        coop_stream("mnist", str(tmp_path))


@pytest.mark.parametrize("name", ["stanford_cars", "flowers102"])
def test_datasets_needing_the_zhou_split_say_where_to_get_it(tmp_path, name):
    folder = write_coop(tmp_path, name, split_file=False)
    with pytest.raises(DatasetNotFoundError) as error:
        coop_stream(name, str(tmp_path))
    assert str(folder / CASES[name][2]) in str(error.value) and "DATASETS.md" in str(error.value)
    assert not list(folder.glob("split_*"))


# --- splits built without a split file ------------------------------------------------------------------

BUILDABLE = ["caltech101", "oxford_pets", "food101", "sun397", "dtd", "eurosat", "ucf101"]


@pytest.mark.parametrize("name", BUILDABLE)
def test_split_is_built_saved_and_named_as_coop_would(tmp_path, name, caplog):
    folder = write_coop(tmp_path, name, split_file=False)
    with caplog.at_level(logging.WARNING, logger="scenarios.coop_datasets"):
        stream = coop_stream(name, str(tmp_path), split_seed=1)
    spec = dataset_spec(name)
    saved = folder / f"split_clprompt_{spec.split_name}.json"
    assert saved.is_file() and [p.name for p in folder.glob("*.json")] == [saved.name]
    assert "built a per-class 50/20/30" in caplog.text and str(saved) in caplog.text
    assert stream.class_names == expected_names(name)
    assert stream.description["split"] == saved.name and stream.description["split_source"] == "built (seed 1)"
    # 5 images a class: round(2.5) = 2 train, 1 val, 2 test, as CoOp's read_and_split_data cuts them
    assert [stream.description[f"n_{s}"] for s in ("train", "valid", "test")] == [6, 3, 6]
    payload = json.loads(saved.read_text())
    assert payload["clprompt"]["seed"] == 1
    assert {entry[2] for entry in payload["train"]} == {stored for stored, _ in CASES[name][3]}


def test_built_split_is_reused_deterministic_and_seeded(tmp_path, monkeypatch, caplog):
    roots = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for root, seed in zip(roots, (1, 1, 2)):
        write_coop(root, "food101", split_file=False, per_class=10)
        coop_stream("food101", str(root), split_seed=seed)
    first, same, other = (json.loads((r / "food-101" / "split_clprompt_Food101.json").read_text()) for r in roots)
    assert first == same and first["train"] != other["train"]

    saved = roots[0] / "food-101" / "split_clprompt_Food101.json"
    before = saved.stat().st_mtime_ns
    monkeypatch.setattr("scenarios.coop_datasets.build_split", lambda *a: pytest.fail("split rebuilt"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scenarios.coop_datasets"):
        again = coop_stream("food101", str(roots[0]), split_seed=1)
    assert saved.stat().st_mtime_ns == before and "built a per-class" not in caplog.text
    assert again.description["split_source"] == "built (seed 1)"
    with pytest.raises(StreamConfigError, match="built with split seed 1, but scenario.split_seed=2"):
        coop_stream("food101", str(roots[0]), split_seed=2)


def test_zhou_split_wins_over_a_built_one(tmp_path):
    folder = write_coop(tmp_path, "ucf101", split_file=False)
    coop_stream("ucf101", str(tmp_path))
    write_coop(tmp_path / "other", "ucf101")
    (tmp_path / "other" / "ucf101" / "split_zhou_UCF101.json").rename(folder / "split_zhou_UCF101.json")
    assert coop_stream("ucf101", str(tmp_path)).description["split_source"] == "zhou"


def test_nothing_is_written_when_the_folder_is_incomplete(tmp_path):
    folder = write_coop(tmp_path, "caltech101", split_file=False)
    for extra in ("image_3.jpg", "image_4.jpg", "image_5.jpg"):
        (folder / "101_ObjectCategories" / "accordion" / extra).unlink()
    before = sorted(os.listdir(folder))
    with pytest.raises(DatasetNotFoundError, match=r"fewer than 4 images \(\{'accordion': 2\}\)"):
        coop_stream("caltech101", str(tmp_path))
    assert sorted(os.listdir(folder)) == before


def test_empty_image_folder_cannot_be_split(tmp_path):
    (tmp_path / "dtd" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no split file and no classes of images"):
        coop_stream("dtd", str(tmp_path))
    assert os.listdir(tmp_path / "dtd") == ["images"]


# --- configs --------------------------------------------------------------------------------------------


def test_scenario_config_instantiates(tmp_path):
    write_coop(tmp_path, "caltech101")
    cfg = compose_config(["scenario=caltech101", f"data.root={tmp_path}"])
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.class_names == ["face", "accordion", "wild cat"]
    assert stream.description["root"] == str(tmp_path / "caltech-101")
    assert stream.benchmark.test_stream[0].dataset[0][0].shape == (3, 4, 4)


@pytest.mark.parametrize("name", ALL)
def test_every_coop_config_names_its_dataset(name):
    scenario = compose_config([f"scenario={name}", "data.root=/data/coop"]).scenario
    assert scenario._target_ == "scenarios.coop_datasets.coop_stream"
    assert dataset_spec(scenario.dataset).config == name and scenario.dataset in DATASETS
    assert scenario.root == "/data/coop" and scenario.download is False
    assert (scenario.split_seed, scenario.n_experiences, scenario.class_order_seed, scenario.class_order) == (
        1, 1, None, None)


@pytest.mark.parametrize("content", [b"", b"not a jpeg", None], ids=["empty", "garbage", "truncated"])
def test_a_damaged_image_file_is_named(tmp_path, content):
    from scenarios.errors import DatasetFileError

    path = tmp_path / "a.jpg"
    write_image(path, 0)
    if content is None:
        content = path.read_bytes()[:40]
    path.write_bytes(content)
    dataset = ImageFileDataset([str(path)], [0])
    with pytest.raises(DatasetFileError, match=r"a.jpg cannot be read as an image .*Replace it"):
        dataset[0]


def test_a_read_only_run_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    import clprompt.run
    import clprompt.stages
    from clprompt.errors import ConfigValueError

    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o500)   # root may still write there: the check asks os.access, made to answer as for a user
    real_access = os.access
    monkeypatch.setattr(clprompt.stages.os, "access",
                        lambda path, mode: False if str(path) == str(folder) else real_access(path, mode))
    try:
        with pytest.raises(ConfigValueError, match="run folder .* is not writable"):
            clprompt.run.run(compose_config(["scenario=tiny_colors", "model=tiny"]), folder)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)
