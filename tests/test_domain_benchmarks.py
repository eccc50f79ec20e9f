"""CORe50 (NI) and DomainNet as domain-incremental streams, read from small folders in their published layouts:
S-Prompts' protocol (session and domain order, held-out test sessions), class names, the config, the errors for
missing, partial and damaged data, and why Avalanche's CORe50 benchmark is not the one built."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image
from torchvision.transforms import functional as F

from helpers import compose_config
from scenarios import DatasetNotFoundError, StreamConfigError
from scenarios import core50, domainnet
from scenarios.core50 import core50_class_names, core50_stream, official_ni_order
from scenarios.domainnet import domainnet_class_folders, domainnet_stream


def _train_transform(image):
    return F.pil_to_tensor(image).float() / 255


def _eval_transform(image):  # another size, to see which split got which transform
    return F.pil_to_tensor(image.resize((4, 4))).float() / 255


def write_image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(path)


# --- CORe50 --------------------------------------------------------------------------------------------------

ALL_SESSIONS = tuple(range(1, 12))


def write_core50(root, sessions=ALL_SESSIONS, objects=(1, 2, 3), frames=(0, 1, 2)):
    """<root>/core50/core50_128x128/s<s>/o<o>/C_<ss>_<oo>_<fff>.png, as core50_128x128.zip extracts."""
    images = root / "core50" / "core50_128x128"
    for s in sessions:
        for o in objects:
            for f in frames:
                write_image(images / f"s{s}" / f"o{o}" / f"C_{s:02d}_{o:02d}_{f:03d}.png", 1000 * s + 10 * o + f)
    return images


def test_core50_defaults_are_s_prompts_ni_run0():
    assert sorted(core50.TRAIN_SESSIONS) == [1, 2, 4, 5, 6, 8, 9, 11]
    assert core50.TEST_SESSIONS == (3, 7, 10)
    # NI run 0 = the first shuffle of CORe50's generator (vlomonaco/core50 core50_inc_finetuning.py, seed 1)
    order = list(range(8))
    np.random.seed(1)
    np.random.shuffle(order)
    assert core50.TRAIN_SESSIONS == tuple([1, 2, 4, 5, 6, 8, 9, 11][i] for i in order) == (11, 4, 2, 9, 1, 6, 5, 8)
    scenario = compose_config(["scenario=core50", "data.root=/data"]).scenario
    assert scenario._target_ == "scenarios.core50.core50_stream"
    assert tuple(scenario.train_sessions) == core50.TRAIN_SESSIONS and tuple(scenario.test_sessions) == (3, 7, 10)
    assert (scenario.objects, scenario.train_frame_step, scenario.test_frame_step) == (None, 1, 1)
    assert scenario.root == "/data" and scenario.download is False


def test_core50_class_names_are_s_prompts_fifty_objects():
    names = core50_class_names()
    assert len(names) == 50 == len(set(names))
    assert names[:6] == ["plug adapter 1", "plug adapter 2", "plug adapter 3", "plug adapter 4", "plug adapter 5",
                         "mobile phone 1"]
    assert names[10] == "scissor 1" and names[25] == "glass 1" and names[-1] == "remote control 5"


def test_core50_stream_trains_sessions_in_order_and_tests_the_held_out_ones(tmp_path):
    write_core50(tmp_path, sessions=(1, 2, 3, 4), objects=(1, 2, 3), frames=(0, 1))
    stream = core50_stream(str(tmp_path), train_sessions=[2, 1], test_sessions=[3, 4], objects=[1, 2, 3],
                           train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.scenario_type == "domain_incremental"
    assert stream.domains == ["s2", "s1"] and stream.test_domains == ["s3", "s4"]
    assert stream.n_experiences == 2 and len(stream.test_classes) == 2   # a 2 x 2 matrix of held-out sessions
    assert stream.class_names == ["plug adapter 1", "plug adapter 2", "plug adapter 3"]
    benchmark = stream.benchmark
    assert len(benchmark.train_stream) == 2 and len(benchmark.test_stream) == 2
    first = benchmark.train_stream[0].dataset
    assert sorted(int(y) for y in first.targets) == [0, 0, 1, 1, 2, 2]
    assert all("/s2/" in p for p in stream.splits["train"].members[0].paths)
    assert all("/s4/" in p for p in stream.splits["test"].members[1].paths)
    assert first[0][0].shape == (3, 8, 8) and benchmark.test_stream[0].dataset[0][0].shape == (3, 4, 4)
    description = stream.description
    assert description["dataset"] == "CORe50 (NI)" and description["train_sessions"] == [2, 1]
    assert description["domain_sizes"] == {"train": [6, 6], "test": [6, 6]}


def test_core50_objects_choose_the_classes(tmp_path):
    write_core50(tmp_path, sessions=(1, 3), objects=(6, 11), frames=(0,))
    stream = core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[11, 6])
    assert stream.class_names == ["scissor 1", "mobile phone 1"]
    paths, labels = stream.splits["train"].members[0].paths, stream.splits["train"].members[0].targets
    assert [("/o11/" in p, y) for p, y in zip(paths, labels)] == [(True, 0), (False, 1)]


def test_core50_full_default_protocol_is_eight_sessions_by_three(tmp_path):
    write_core50(tmp_path, objects=(1, 2), frames=(0,))
    stream = core50_stream(str(tmp_path), objects=[1, 2])
    assert stream.domains == ["s11", "s4", "s2", "s9", "s1", "s6", "s5", "s8"]
    assert stream.test_domains == ["s3", "s7", "s10"]
    assert (stream.n_experiences, len(stream.test_classes)) == (8, 3)
    assert stream.test_classes == [[0, 1]] * 3


def test_core50_frame_step_keeps_every_kth_frame_in_frame_order(tmp_path):
    write_core50(tmp_path, sessions=(1, 3), objects=(1,), frames=(0, 1, 2, 3, 10, 11, 12))
    stream = core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[1],
                           train_frame_step=3, test_frame_step=20)
    train = [p.rsplit("_", 1)[1] for p in stream.splits["train"].members[0].paths]
    assert train == ["000.png", "003.png", "012.png"]
    assert [p.rsplit("_", 1)[1] for p in stream.splits["test"].members[0].paths] == ["000.png"]
    assert (stream.description["train_frame_step"], stream.description["test_frame_step"]) == (3, 20)
    with pytest.raises(StreamConfigError, match="k >= 1"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[1], train_frame_step=0)


def test_core50_config_composes_and_instantiates(tmp_path):
    write_core50(tmp_path, objects=(1, 2), frames=(0,))
    cfg = compose_config(["scenario=core50", f"data.root={tmp_path}", "scenario.objects=[1,2]"])
    assert cfg.model.arch == "ViT-B-16"
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.scenario_type == "domain_incremental" and stream.name == "core50"
    assert (stream.n_experiences, len(stream.test_classes)) == (8, 3)
    assert stream.description["root"] == str(tmp_path / "core50" / "core50_128x128")


def test_core50_missing_dataset_names_folder_archive_and_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        core50_stream(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "core50" / "core50_128x128") in message and "core50_128x128.zip" in message
    assert "vlomonaco.github.io/core50" in message and "data.download=true" in message
    assert "s<session>/o<object>/C_<ss>_<oo>_<frame>.png" in message


def test_core50_missing_session_is_named(tmp_path):
    write_core50(tmp_path, sessions=(1, 2, 3), objects=(1,), frames=(0,))
    with pytest.raises(DatasetNotFoundError, match=r"no session folder s4, s7"):
        core50_stream(str(tmp_path), train_sessions=[1, 2, 4], test_sessions=[3, 7], objects=[1])


def test_core50_missing_object_empty_object_and_misnamed_frame_are_named(tmp_path):
    images = write_core50(tmp_path, sessions=(1, 3), objects=(1, 2), frames=(0,))
    with pytest.raises(DatasetNotFoundError, match=r"session s1 is incomplete or damaged in .*s1: no object folder "
                                                   r"o3 \(1 of the 3 objects\)"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[1, 2, 3])
    with pytest.raises(DatasetNotFoundError, match=r"no object folder o3, o4, .* \(48 of the 50 objects\)"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3])   # all 50 objects by default
    (images / "s1" / "o2" / "C_01_02_000.png").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"s1: no frames in o2"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[1, 2])
    write_image(images / "s1" / "o2" / "C_03_02_000.png", 0)
    with pytest.raises(DatasetNotFoundError, match=r"1 file\(s\) not named C_01_<object>_<frame>.png for their "
                                                   r"folder \(first: o2/C_03_02_000.png\)"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[1, 2])


def test_core50_refuses_a_trained_test_session_and_bad_objects(tmp_path):
    write_core50(tmp_path, sessions=(1, 3), objects=(1,), frames=(0,))
    with pytest.raises(StreamConfigError, match=r"sessions \[3\] are both training"):
        core50_stream(str(tmp_path), train_sessions=[1, 3], test_sessions=[3])
    with pytest.raises(StreamConfigError, match="session numbers 1..11"):
        core50_stream(str(tmp_path), train_sessions=[1, 12], test_sessions=[3])
    with pytest.raises(StreamConfigError, match="object numbers 1..50"):
        core50_stream(str(tmp_path), train_sessions=[1], test_sessions=[3], objects=[0, 1])


def test_core50_download_goes_through_avalanches_core50dataset(tmp_path, monkeypatch):
    import avalanche.benchmarks.datasets as avalanche_datasets

    calls = []

    class Downloaded:   # stands in for CORe50Dataset(download=True): extracts the archive into its root
        def __init__(self, root, download):
            calls.append((root, download))
            write_core50(tmp_path, objects=(1, 2), frames=(0,))

    monkeypatch.setattr(avalanche_datasets, "CORe50Dataset", Downloaded)
    stream = core50_stream(str(tmp_path), download=True, objects=[1, 2])
    assert calls == [(str(tmp_path / "core50"), True)] and stream.n_experiences == 8
    core50_stream(str(tmp_path), download=True, objects=[1, 2])   # the images are there: no second download
    assert len(calls) == 1

    class Offline:
        def __init__(self, root, download):
            raise OSError("no route to host")

    monkeypatch.setattr(avalanche_datasets, "CORe50Dataset", Offline)
    with pytest.raises(DatasetNotFoundError, match=r"CORe50 download into .* failed \(OSError: no route to host\)"
                                                   r".*core50_128x128.zip"):
        core50_stream(str(tmp_path / "elsewhere"), download=True)


def _write_ni_filelists(folder, order):
    run = folder / "batches_filelists" / "NI_inc" / "run0"
    run.mkdir(parents=True, exist_ok=True)
    for batch, session in enumerate(order):
        (run / f"train_batch_{batch:02d}_filelist.txt").write_text(
            "".join(f"s{session}/o{o}/C_{session:02d}_{o:02d}_000.png {o - 1}\n" for o in (1, 2)))
    (run / "test_filelist.txt").write_text(
        "".join(f"s{s}/o{o}/C_{s:02d}_{o:02d}_000.png {o - 1}\n" for s in core50.TEST_SESSIONS for o in (1, 2)))
    return run


def test_core50_warns_when_the_published_run0_filelists_order_the_sessions_otherwise(tmp_path, caplog):
    write_core50(tmp_path, objects=(1, 2), frames=(0,))
    _write_ni_filelists(tmp_path / "core50", core50.TRAIN_SESSIONS)
    assert official_ni_order(tmp_path / "core50") == list(core50.TRAIN_SESSIONS)
    with caplog.at_level(logging.WARNING, logger="scenarios.core50"):
        core50_stream(str(tmp_path), objects=[1, 2])
    assert not caplog.records
    _write_ni_filelists(tmp_path / "core50", sorted(core50.TRAIN_SESSIONS))
    with caplog.at_level(logging.WARNING, logger="scenarios.core50"):
        core50_stream(str(tmp_path), objects=[1, 2])
    assert "order the sessions [1, 2, 4, 5, 6, 8, 9, 11]" in caplog.text


def _write_avalanche_core50_metadata(folder, objects=(1, 2)):
    """What Avalanche's CORe50Dataset reads besides the images: paths.pkl, labels.pkl, LUP.pkl,
    labels2names.pkl and batches_filelists/ (NI run 0 only), in the published files' format."""
    run = _write_ni_filelists(folder, core50.TRAIN_SESSIONS)
    paths, labels, lup = [], [], []
    for name in [f"train_batch_{b:02d}_filelist.txt" for b in range(8)] + ["test_filelist.txt"]:
        lines = (run / name).read_text().split("\n")[:-1]
        lup.append(list(range(len(paths), len(paths) + len(lines))))
        labels.append([int(line.split()[1]) for line in lines])
        paths += [line.split()[0] for line in lines]
    for name, value in (("paths.pkl", paths), ("labels.pkl", {"ni": [labels]}), ("LUP.pkl", {"ni": [lup]}),
                        ("labels2names.pkl", {"ni": [{o - 1: f"o{o}" for o in objects}]})):
        with open(folder / name, "wb") as handle:
            pickle.dump(value, handle)


def test_avalanche_core50_ni_pools_the_test_sessions(tmp_path):
    """Why the stream is ours: Avalanche's NI benchmark has the same 8 sessions in the same order (run 0), but one
    test experience for the three test sessions (no per-session matrix), and it needs metadata files the published
    image archive lacks."""
    from avalanche.benchmarks.classic import CORe50
    from avalanche.benchmarks.datasets import CORe50Dataset

    write_core50(tmp_path, objects=(1, 2), frames=(0,))
    folder = tmp_path / "core50"
    with pytest.raises(RuntimeError, match="download was not attempted"):   # the archive alone: no paths.pkl, ...
        CORe50Dataset(root=str(folder), download=False)
    _write_avalanche_core50_metadata(folder)
    theirs = CORe50(scenario="ni", run=0, dataset_root=str(folder), train_transform=None, eval_transform=None)
    ours = core50_stream(str(tmp_path), objects=[1, 2])
    assert len(theirs.train_stream) == ours.n_experiences == 8
    assert len(theirs.test_stream) == 1 and len(ours.benchmark.test_stream) == 3
    assert len(theirs.test_stream[0].dataset) == sum(len(e.dataset) for e in ours.benchmark.test_stream) == 6
    assert theirs.n_classes == 50   # and it would call all 50 objects classes whatever the images hold


# --- DomainNet ------------------------------------------------------------------------------------------------

DN_CLASSES = ["aircraft_carrier", "airplane", "alarm_clock"]   # labels 0, 1, 2 of the official lists


def write_domainnet(root, domains=domainnet.DOMAINS, classes=DN_CLASSES, per_split=(("train", 2), ("test", 1))):
    """<root>/domainnet/<domain>/<class>/*.jpg and <root>/domainnet/<domain>_{train,test}.txt."""
    folder = root / "domainnet"
    for d_index, domain in enumerate(domains):
        for split, n in per_split:
            lines = []
            for label, name in enumerate(classes):
                for i in range(n):
                    relative = f"{domain}/{name}/{domain}_{label + 1:03d}_{split}{i:03d}.jpg"
                    write_image(folder / relative, 100 * d_index + 10 * label + i)
                    lines.append(f"{relative} {domainnet_class_folders().index(name)}\n")
            (folder / f"{domain}_{split}.txt").write_text("".join(lines))
    return folder


def test_domainnet_order_and_class_names_are_s_prompts():
    assert domainnet.DOMAINS == ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
    scenario = compose_config(["scenario=domainnet", "data.root=/data"]).scenario
    assert scenario._target_ == "scenarios.domainnet.domainnet_stream"
    assert tuple(scenario.domains) == domainnet.DOMAINS and scenario.download is False
    folders = domainnet_class_folders()
    assert len(folders) == 345 == len(set(folders))
    assert folders[:3] == DN_CLASSES and folders[-1] == "zigzag"
    assert (folders[66], folders[67]) == ("cello", "cell_phone")     # the lists' order, not a plain sort
    assert (folders[308], folders[327]) == ("The_Eiffel_Tower", "t-shirt")
    assert domainnet.clean_class_name("The_Great_Wall_of_China") == "The Great Wall of China"


def test_domainnet_stream_one_experience_per_domain_each_domain_a_test_domain(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch", "real"))
    stream = domainnet_stream(str(tmp_path), domains=["clipart", "sketch", "real"],
                              train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.scenario_type == "domain_incremental" and stream.name == "domainnet"
    assert stream.domains == ["clipart", "sketch", "real"] and stream.test_domains is None
    assert stream.n_experiences == 3 and len(stream.test_classes) == 3   # a 3 x 3 matrix
    assert stream.class_names == ["aircraft carrier", "airplane", "alarm clock"]
    benchmark = stream.benchmark
    assert sorted(int(y) for y in benchmark.train_stream[1].dataset.targets) == [0, 0, 1, 1, 2, 2]
    assert sorted(int(y) for y in benchmark.test_stream[2].dataset.targets) == [0, 1, 2]
    assert all(p.startswith(str(folder / "sketch") + "/") for p in stream.splits["train"].members[1].paths)
    assert benchmark.train_stream[0].dataset[0][0].shape == (3, 8, 8)
    assert benchmark.test_stream[0].dataset[0][0].shape == (3, 4, 4)
    assert stream.description["domain_sizes"] == {"train": [6, 6, 6], "test": [3, 3, 3]}
    assert stream.description["dataset"] == "DomainNet" and "list_gaps" not in stream.description


def test_domainnet_config_composes_and_instantiates_with_the_six_domains(tmp_path):
    write_domainnet(tmp_path)
    cfg = compose_config(["scenario=domainnet", f"data.root={tmp_path}"])
    assert cfg.model.arch == "ViT-B-16"
    stream = instantiate(cfg.scenario, train_transform=_train_transform, eval_transform=_eval_transform)
    assert stream.domains == list(domainnet.DOMAINS) and stream.scenario_type == "domain_incremental"
    assert (stream.n_experiences, len(stream.test_classes)) == (6, 6)


def test_domainnet_missing_dataset_names_folder_and_urls_and_refuses_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        domainnet_stream(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "domainnet") in message and "ai.bu.edu/M3SDA" in message
    assert "multi-source/groundtruth/clipart.zip" in message and "domainnet/txt/sketch_test.txt" in message
    assert "download=true" not in message
    with pytest.raises(StreamConfigError, match="cannot be downloaded.*groundtruth/painting.zip"):
        domainnet_stream(str(tmp_path), download=True)
    with pytest.raises(StreamConfigError, match="give distinct domains"):
        domainnet_stream(str(tmp_path), domains=["clipart", "photo"])


def test_domainnet_missing_lists_and_domain_folders_are_named_at_once(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    (folder / "sketch_test.txt").unlink()
    with pytest.raises(DatasetNotFoundError) as error:
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch", "real"])
    message = str(error.value)
    assert "sketch_test.txt" in message and "real_train.txt" in message and "real/ (the images)" in message
    assert "clipart_train.txt" not in message.split("missing")[1].split("Expected")[0]
    assert "real.zip" in message and "txt/sketch_test.txt" in message


def test_domainnet_listed_images_missing_on_disk_are_counted(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    for path in sorted((folder / "sketch" / "airplane").iterdir()):
        path.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"2 of 6 images listed in .*sketch_train.txt are not in") as error:
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch"])
    assert "sketch/airplane/sketch_002_train000.jpg" in str(error.value) and "sketch.zip" in str(error.value)


def test_domainnet_labels_that_are_not_their_class_folders_are_named_and_counted(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    lines = (folder / "clipart_train.txt").read_text().splitlines()
    swapped = [line.replace(" 0", " 1") if "/aircraft_carrier/" in line else line for line in lines]
    (folder / "clipart_train.txt").write_text("\n".join(swapped) + "\n")
    with pytest.raises(DatasetNotFoundError) as error:
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch"])
    message = str(error.value)
    assert "clipart_train.txt: 2 line(s) whose label is not their class folder's" in message
    assert "line 1: clipart/aircraft_carrier/clipart_001_train000.jpg has label 1, its folder 'aircraft_carrier' " \
           "is label 0" in message


def test_domainnet_malformed_lines_and_foreign_paths_are_named(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    text = (folder / "sketch_test.txt").read_text()
    (folder / "sketch_test.txt").write_text(text + "sketch/airplane/x.jpg\nclipart/airplane/y.jpg 1\n")
    with pytest.raises(DatasetNotFoundError, match=r"sketch_test.txt: 2 malformed line\(s\).*line 4: "
                                                   r"'sketch/airplane/x.jpg'; line 5"):
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch"])


def test_domainnet_every_class_in_every_domain_list(tmp_path):
    folder = write_domainnet(tmp_path, domains=("clipart", "sketch"))
    lines = (folder / "sketch_test.txt").read_text().splitlines()
    (folder / "sketch_test.txt").write_text("".join(f"{line}\n" for line in lines if "/alarm_clock/" not in line))
    with pytest.raises(DatasetNotFoundError, match=r"sketch_test.txt lists no image of 1 of the 3 classes "
                                                   r"\(first: alarm_clock\)"):
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch"])
    write_domainnet(tmp_path, domains=("sketch",))
    lines = (folder / "clipart_train.txt").read_text().splitlines()
    (folder / "clipart_train.txt").write_text("".join(f"{line}\n" for line in lines if "/airplane/" not in line))
    with pytest.raises(DatasetNotFoundError, match=r"clipart_train.txt lists no image of 1 .*airplane"):
        domainnet_stream(str(tmp_path), domains=["clipart", "sketch"])


def test_domainnet_accepts_the_published_training_gap_and_records_it(tmp_path, monkeypatch):
    """painting_train.txt has no t-shirt (label 327); on the fixture's 3 classes the gap is airplane."""
    assert domainnet.KNOWN_GAPS == {"painting": ("t-shirt",)}
    folder = write_domainnet(tmp_path, domains=("clipart", "painting"))
    lines = (folder / "painting_train.txt").read_text().splitlines()
    (folder / "painting_train.txt").write_text("".join(f"{line}\n" for line in lines if "/airplane/" not in line))
    monkeypatch.setattr(domainnet, "KNOWN_GAPS", {"painting": ("airplane",)})
    stream = domainnet_stream(str(tmp_path), domains=["clipart", "painting"])
    assert stream.description["list_gaps"] == {"painting_train": ["airplane"]}
    assert sorted(set(int(y) for y in stream.benchmark.train_stream[1].dataset.targets)) == [0, 2]
    assert sorted(set(int(y) for y in stream.benchmark.test_stream[1].dataset.targets)) == [0, 1, 2]
    # the same published gap in the test list too: that test domain is scored without the class
    lines = (folder / "painting_test.txt").read_text().splitlines()
    (folder / "painting_test.txt").write_text("".join(f"{line}\n" for line in lines if "/airplane/" not in line))
    stream = domainnet_stream(str(tmp_path), domains=["clipart", "painting"])
    assert stream.description["list_gaps"] == {"painting_train": ["airplane"], "painting_test": ["airplane"]}
    assert sorted(set(int(y) for y in stream.benchmark.test_stream[1].dataset.targets)) == [0, 2]


def test_domainnet_a_run_trains_and_scores_every_domain(tmp_path):
    """The plumbing end to end: a coop run on two domains fills a 2 x 2 matrix."""
    from clprompt.run import run

    write_domainnet(tmp_path / "data", domains=("clipart", "quickdraw"))
    cfg = compose_config(["scenario=domainnet", f"data.root={tmp_path / 'data'}",
                          "scenario.domains=[clipart,quickdraw]", "model=tiny", "method=coop", "train.epochs=1",
                          "train.warmup_epochs=0", "progress=false", f"cache.dir={tmp_path / 'cache'}"])
    results = run(cfg, tmp_path / "run")
    assert results["status"] == "complete" and results["protocol"] == "domain_incremental"
    matrix = np.asarray(results["accuracy_matrix"])
    assert matrix.shape == (2, 2) and not np.isnan(matrix).any()
    assert results["class_names"] == ["aircraft carrier", "airplane", "alarm clock"]
