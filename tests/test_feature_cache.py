"""The image-feature cache and the views it stores: exact (same losses and matrices with it and without
it, with any worker count), keyed so that no run reads another backbone's, transform's or dataset's
features, and safe on disk (atomic shards, damaged ones refused and recomputed)."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from clprompt.data.augmentation import SampleViews, train_transform, view_seed
from clprompt.errors import ConfigValueError
from clprompt.data.feature_cache import FeatureCache, FeatureKey, check_writable, encoder_identity, resolve_mode
from helpers import compose_config, traced_run
from scenarios.array_dataset import ArrayImageDataset
from scenarios.protocols.relabeled import RelabeledSubset

pytestmark = pytest.mark.filterwarnings("ignore")


# ---------------------------------------------------------------- views: pure functions of (seed, sample, view)

def test_a_view_depends_on_seed_sample_and_view_only(tiny_backbone):
    images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    views = train_transform("coop", tiny_backbone, seed=3, n_views=5)
    dataset = ArrayImageDataset(images, [0, 1, 2, 3], views)
    views.set_epoch(1)
    first = dataset[2][0]
    torch.manual_seed(123)  # the run's generator does not decide the view ...
    [dataset[i] for i in (3, 0, 1)]  # ... nor do the samples read before
    assert torch.equal(dataset[2][0], first)
    state = torch.get_rng_state()
    dataset[1]
    assert torch.equal(torch.get_rng_state(), state)  # and reading a view leaves the run's generator alone
    views.set_epoch(6)  # 6 mod 5 = view 1 again
    assert torch.equal(dataset[2][0], first)
    views.set_epoch(2)
    assert not torch.equal(dataset[2][0], first)
    other_seed = ArrayImageDataset(images, [0, 1, 2, 3], train_transform("coop", tiny_backbone, seed=4, n_views=5))
    other_seed.transform.set_epoch(1)
    assert not torch.equal(other_seed[2][0], first)


def test_a_view_is_the_torchvision_transform_under_its_seed(tiny_backbone):
    """Written from the definition: seed torch with view_seed(seed, index, view) and apply the transform."""
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    views = train_transform("model", tiny_backbone, seed=7, n_views=4)
    dataset = ArrayImageDataset(images, [0, 1, 2], views)
    views.set_epoch(2)
    torch.manual_seed(view_seed(7, 1, 2))
    expected = tiny_backbone.train_transform(dataset.image(1))
    assert torch.equal(dataset[1][0], expected)
    # a relabelled subset shows sample 1 under its own index 0: the view follows the image, not the position
    subset = RelabeledSubset(dataset, [1], [2])
    assert torch.equal(subset[0][0], expected)


def test_views_are_the_same_with_loader_workers(tiny_backbone):
    images = np.random.default_rng(2).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    views = train_transform("coop", tiny_backbone, seed=0, n_views=3)
    dataset = ArrayImageDataset(images, list(range(8)), views)
    batches = {}
    for workers, persistent in ((0, False), (2, True)):
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers,
                                             persistent_workers=persistent)
        batches[workers] = []
        for epoch in range(3):  # persistent workers must see the epoch change
            views.set_epoch(epoch)
            batches[workers].append(torch.cat([images for images, _ in loader]))
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a, b)
    assert not torch.equal(batches[0][0], batches[0][1])


def test_deterministic_transform_has_one_view(tiny_backbone):
    views = train_transform("none", tiny_backbone, n_views=10)
    assert not views.random and views.view == 0
    views.set_epoch(3)
    assert views.view == 0
    with pytest.raises(ConfigValueError, match="augmentation_views"):
        SampleViews(tiny_backbone.eval_transform, "none", 0, 0)


# ---------------------------------------------------------------- the cache: keys, disk, hits and misses

def key(**changes):
    fields = dict(encoder="e", dataset="d", views="v", view=0)
    fields.update(changes)
    return FeatureKey(**fields)


def counting_encoder(features):
    calls = []

    def encode(positions):
        calls.append(list(positions))
        return features[positions]
    return encode, calls


def test_the_encoder_identity_is_the_weights_file_or_the_hashed_tensors(tiny_backbone, tmp_path):
    """A tower loaded from a file is named by the file's sha256 (computed while loading) and its dtypes; a
    tower with no file (random init, a tag) by its hashed tensors. Either way the modules count too."""
    tower, cpu = tiny_backbone.model.visual, torch.device("cpu")
    from_file = encoder_identity(tower, None, cpu, "ab" * 32)
    assert from_file["weights_file_sha256"] == "ab" * 32 and from_file["weights_dtypes"] == ["torch.float32"]
    assert "weights_sha256" not in from_file
    assert encoder_identity(tower, None, cpu, "cd" * 32) != from_file
    hashed = encoder_identity(tower, None, cpu)
    assert len(hashed["weights_sha256"]) == 64 and hashed == encoder_identity(tower, None, cpu)
    changed = instantiate(compose_config(["model=tiny"]).model)          # other random weights
    assert encoder_identity(changed.model.visual, None, cpu)["weights_sha256"] != hashed["weights_sha256"]
    # a run from a checkpoint file keys its features by that file
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    loaded = instantiate(compose_config(["model=tiny"]).model, pretrained=str(path))
    assert encoder_identity(loaded.model.visual, None, cpu, loaded.identity["sha256"])["weights_file_sha256"] == \
        loaded.identity["sha256"]


def test_cache_encodes_each_sample_once_and_keeps_the_order(tmp_path):
    features = torch.randn(10, 4)
    ids = np.array([5, 2, 9, 0])
    encode, calls = counting_encoder(features[ids])
    cache = FeatureCache(tmp_path)
    assert torch.equal(cache.get(key(), ids, encode), features[ids])
    assert (cache.hits, cache.misses) == (0, 4)
    more = np.array([9, 7, 5])  # 9 and 5 are cached, 7 is new
    encode_more, calls_more = counting_encoder(features[more])
    assert torch.equal(cache.get(key(), more, encode_more), features[more])
    assert calls_more == [[1]] and (cache.hits, cache.misses) == (2, 5)
    # a new process (a new cache object) reads them from disk and encodes nothing
    fresh = FeatureCache(tmp_path)
    nothing, never = counting_encoder(None)
    assert torch.equal(fresh.get(key(), np.array([0, 7, 2]), nothing), features[[0, 7, 2]])
    assert never == [] and (fresh.hits, fresh.misses) == (3, 0)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("change", [{"encoder": "other"}, {"dataset": "other"}, {"views": "other"}, {"view": 1}])
def test_another_backbone_dataset_transform_or_view_never_reads_these_features(tmp_path, change):
    FeatureCache(tmp_path).get(key(), np.arange(3), lambda positions: torch.zeros(len(positions), 2))
    fresh = FeatureCache(tmp_path)
    out = fresh.get(key(**change), np.arange(3), lambda positions: torch.ones(len(positions), 2))
    assert torch.equal(out, torch.ones(3, 2)) and fresh.misses == 3


def test_a_damaged_shard_is_reported_and_its_samples_encoded_again(tmp_path, caplog):
    FeatureCache(tmp_path).get(key(), np.arange(3), lambda positions: torch.zeros(len(positions), 2))
    shard = next(tmp_path.rglob("shard-*.pt"))
    shard.write_bytes(b"not a torch file")
    fresh = FeatureCache(tmp_path)
    with caplog.at_level(logging.WARNING):
        out = fresh.get(key(), np.arange(3), lambda positions: torch.full((len(positions), 2), 2.0))
    assert torch.equal(out, torch.full((3, 2), 2.0)) and fresh.misses == 3
    assert "1 shard(s) failed their check (1 unreadable)" in caplog.text
    assert str(shard.parent / "rejected") in caplog.text and fresh.record()["rejected"] == 1
    assert (shard.parent / "rejected" / shard.name).read_bytes() == b"not a torch file"  # moved, not deleted


def test_two_writers_of_the_same_samples_leave_a_consistent_cache(tmp_path):
    features = torch.randn(6, 3)
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)  # two jobs of a sweep, neither sees the other yet
    a.get(key(), np.arange(4), lambda positions: features[positions])
    b.get(key(), np.arange(2, 6), lambda positions: features[2:][positions])
    assert len(list(tmp_path.rglob("shard-*.pt"))) == 2
    reader = FeatureCache(tmp_path)
    assert torch.equal(reader.get(key(), np.arange(6), lambda positions: None), features)


def test_unwritable_cache_folder_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigValueError, match="cache.dir=.*not writable.*train.feature_cache=off"):
        check_writable(blocker / "features")


def test_mode_follows_the_method():
    assert resolve_mode("auto", True, "CoOp")[0] and not resolve_mode("auto", False, "VPT")[0]
    assert not resolve_mode("off", True, "CoOp")[0]
    with pytest.raises(ConfigValueError, match="image features.*auto or off"):
        resolve_mode("on", False, "MaPLe")
    with pytest.raises(ConfigValueError, match="auto, on or off"):
        resolve_mode("sometimes", True, "CoOp")


# ---------------------------------------------------------------- runs: the cache and the workers change nothing

@pytest.mark.parametrize("method", ["coop", "lamm", "cocoop"])
@pytest.mark.parametrize("augmentation", ["coop", "none"])
def test_cache_on_and_off_give_the_same_losses_and_matrix(tmp_path, monkeypatch, method, augmentation):
    common = [f"method={method}", f"train.augmentation={augmentation}", "train.epochs=3", "train.batch_size=4",
              "precision=fp32", "device=cpu"]
    off_losses, off = traced_run(tmp_path, monkeypatch, "off", common + ["train.feature_cache=off"])
    on_losses, on = traced_run(tmp_path, monkeypatch, "on", common + ["train.feature_cache=on"])
    assert len(on_losses) == len(off_losses) > 0
    np.testing.assert_allclose(on_losses, off_losses, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(on["accuracy_matrix"], float), np.array(off["accuracy_matrix"], float),
                               atol=1e-5)
    assert on["feature_cache"]["enabled"] and not off["feature_cache"]["enabled"]
    assert on["feature_cache"]["misses"] > 0
    # a second run reads every image from the cache
    _, again = traced_run(tmp_path, monkeypatch, "again", common + ["train.feature_cache=on"])
    assert again["feature_cache"]["misses"] == 0 and again["feature_cache"]["hits"] > 0
    assert again["accuracy_matrix"] == on["accuracy_matrix"]


def test_worker_count_changes_nothing(tmp_path, monkeypatch):
    common = ["method=coop", "train.augmentation=coop", "train.epochs=2", "train.batch_size=4", "device=cpu",
              "train.feature_cache=off"]
    zero, r0 = traced_run(tmp_path, monkeypatch, "w0", common + ["data.num_workers=0"])
    two, r2 = traced_run(tmp_path, monkeypatch, "w2", common + ["data.num_workers=2"])
    np.testing.assert_allclose(two, zero, rtol=1e-5, atol=1e-5)
    assert r0["accuracy_matrix"] == r2["accuracy_matrix"]
    assert r2["data_loading"]["num_workers"] == 2 and r0["data_loading"]["num_workers"] == 0


def test_fewer_views_than_epochs_is_recorded(tmp_path, monkeypatch):
    _, results = traced_run(tmp_path, monkeypatch, "v", ["method=coop", "train.epochs=3", "train.augmentation_views=1"])
    assert results["augmentation"] == {"kind": "model", "random": True, "seed": 0, "views": 1, "epochs": 3,
                                       "new_view_every_epoch": False}


def test_vpt_runs_without_the_cache_and_refuses_it(tmp_path, monkeypatch):
    _, results = traced_run(tmp_path, monkeypatch, "vpt", ["method=vpt_shallow", "train.epochs=2"])
    assert not results["feature_cache"]["enabled"] and "image side is trained" in results["feature_cache"]["reason"]
    with pytest.raises(ConfigValueError, match="cannot be cached"):
        traced_run(tmp_path, monkeypatch, "vpt_on", ["method=vpt_shallow", "train.epochs=2", "train.feature_cache=on"])


def test_a_sweep_shares_features_across_methods_and_shot_draws(tmp_path, monkeypatch):
    base = ["scenario=shapes_novel", "model=miniclip", "protocol=few_shot", "protocol.shots=2", "train.epochs=2",
            "scenario.test_per_class=4"]
    _, first = traced_run(tmp_path, monkeypatch, "a", base + ["method=coop", "protocol.shots_seed=1"])
    _, second = traced_run(tmp_path, monkeypatch, "b", base + ["method=lamm", "protocol.shots_seed=1"])
    assert first["feature_cache"]["misses"] > 0
    assert second["feature_cache"]["misses"] == 0  # same images, views and test set: all hits
    key_files = list((tmp_path / "cache").rglob("key.json"))
    assert key_files and all("encoder" in json.loads(path.read_text()) for path in key_files)


def test_dataset_fingerprint_is_the_images_not_the_labels(tmp_path):
    from PIL import Image

    from scenarios.image_folder_dataset import ImageFileDataset

    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    same = ArrayImageDataset(pixels.copy(), [0, 1, 2]).fingerprint()
    assert ArrayImageDataset(pixels, [2, 2, 2]).fingerprint() == same  # relabelled: the same images
    changed = pixels.copy()
    changed[1, 0, 0, 0] ^= 1
    assert ArrayImageDataset(changed, [0, 1, 2]).fingerprint() != same  # one pixel differs
    assert RelabeledSubset(ArrayImageDataset(pixels, [0, 1, 2]), [2, 0], [0, 0]).sample_ids() == [2, 0]
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels[i]).save(paths[-1])
    files = ImageFileDataset(paths, [0, 1]).fingerprint()
    assert ImageFileDataset(list(reversed(paths)), [0, 1]).fingerprint() != files
    assert files != same
