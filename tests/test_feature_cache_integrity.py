"""The feature cache never feeds a run altered features: every shard carries a checksum of its bytes and its
key, a shard that fails (flipped bits, a zeroed block, zeroed features, reversed ids, an infinite value, a
wrong width, a truncated or empty file, a shard of an older clprompt, a shard copied from another key's
folder) is moved aside into rejected/, named in one warning, counted in results.json and encoded again, so
the run's losses and accuracy matrix equal the intact cache's. Concurrent writers never corrupt each other,
and a folder that cannot be written (full disk, read-only) leaves the run going on without it."""

import errno
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from clprompt.data import feature_cache
from clprompt.data.feature_cache import (FeatureCache, FeatureKey, NonFiniteFeaturesError, ShardRejected,
                                         read_shard, shard_payload, tensor_bytes)
from helpers import traced_run

pytestmark = pytest.mark.filterwarnings("ignore")

LOGGER = "clprompt.data.feature_cache"
RUN = ["method=coop", "train.epochs=2", "train.warmup_epochs=0",   # traced_run adds tiny_colors, model=tiny
       "scenario.n_classes=4", "scenario.n_experiences=2"]


# ---------------------------------------------------------------- corruptions, each as a user's disk makes it

def feature_span(shard: Path) -> tuple[int, int]:
    """(offset, length) of the features' storage inside the shard file (torch's zip stores it uncompressed)."""
    raw = tensor_bytes(torch.load(shard, weights_only=True)["features"]).tobytes()
    data = shard.read_bytes()
    start = data.find(raw)
    assert start >= 0 and data.find(raw, start + 1) < 0
    return start, len(raw)


def flip_bits(shard: Path, donor: Path) -> None:
    """Three bits of the feature storage flipped in place (the file still loads): one exponent bit, two low."""
    start, length = feature_span(shard)
    data = bytearray(shard.read_bytes())
    for offset, bit in ((start + 3, 6), (start + length // 2, 0), (start + length - 5, 3)):
        data[offset] ^= 1 << bit
    shard.write_bytes(bytes(data))


def zero_block(shard: Path, donor: Path) -> None:
    start, length = feature_span(shard)
    data = bytearray(shard.read_bytes())
    middle = start + length // 2
    data[middle:middle + 64] = bytes(64)
    shard.write_bytes(bytes(data))


def rewrite(change):
    """A corruption that loads the payload, changes it, and saves it back (its stored checksum kept)."""
    def corrupt(shard: Path, donor: Path) -> None:
        payload = torch.load(shard, weights_only=True)
        change(payload)
        torch.save(payload, shard)
    return corrupt


def infinite(payload):
    payload["features"][0, 0] = float("inf")


def older_version(payload):
    for name in ("format", "key", "sha256"):
        del payload[name]


CORRUPTIONS = {
    "flipped bits": flip_bits,
    "zeroed block": zero_block,
    "zeroed features": rewrite(lambda payload: payload.update(features=torch.zeros_like(payload["features"]))),
    "reversed ids": rewrite(lambda payload: payload.update(ids=payload["ids"].flip(0))),
    "infinite value": rewrite(infinite),
    "wrong width": rewrite(lambda payload: payload.update(
        features=torch.cat([payload["features"], payload["features"][:, :1]], dim=1))),
    "truncated": lambda shard, donor: shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2]),
    "empty file": lambda shard, donor: shard.write_bytes(b""),
    "older version": rewrite(older_version),
    "another key's shard": lambda shard, donor: shard.write_bytes(donor.read_bytes()),
}
KIND_IN_WARNING = {"truncated": "unreadable", "empty file": "empty", "older version": "older clprompt",
                   "another key's shard": "another key"}


def shards(cache: Path) -> list[Path]:
    return sorted(path for path in cache.rglob("shard-*.pt") if path.parent.name != "rejected")


def damage(cache: Path, corruption: str) -> list[tuple[Path, bytes]]:
    """Every other shard of the cache (so each table mixes intact and damaged shards) damaged; returns
    (path, damaged bytes) of each."""
    everything = shards(cache)
    damaged = []
    for shard in everything[::2]:   # a donor for "another key's shard": an intact shard of another folder
        donor = next(other for other in everything[1::2] if other.parent != shard.parent)
        CORRUPTIONS[corruption](shard, donor)
        damaged.append((shard, shard.read_bytes()))
    return damaged


def cache_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == LOGGER and record.levelno >= logging.WARNING]


# ---------------------------------------------------------------- runs: one intact run, then each corruption

@pytest.fixture(scope="module")
def intact(tmp_path_factory):
    """The intact run (its cache written from scratch) and a run with features in memory only."""
    base = tmp_path_factory.mktemp("intact")
    with pytest.MonkeyPatch.context() as monkeypatch:
        losses, results = traced_run(base, monkeypatch, "run", RUN)
        memory_losses, memory_only = traced_run(base, monkeypatch, "memory", RUN + ["cache.dir=null"])
    assert results["feature_cache"]["misses"] > 0 and results["feature_cache"]["rejected"] == 0
    assert len(shards(base / "cache")) == 6     # test view, training views 0 and 1: a shard per experience
    np.testing.assert_allclose(memory_losses, losses, rtol=1e-5, atol=1e-5)
    assert memory_only["accuracy_matrix"] == results["accuracy_matrix"]
    return {"cache": base / "cache", "losses": losses, "matrix": results["accuracy_matrix"]}


def assert_same_run(intact, losses, results):
    assert len(losses) == len(intact["losses"]) > 0
    np.testing.assert_allclose(losses, intact["losses"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(results["accuracy_matrix"], float), np.array(intact["matrix"], float),
                               atol=1e-5)
    assert results["status"] == "complete"


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_run_on_a_damaged_cache_equals_the_intact_run(intact, tmp_path, monkeypatch, caplog, corruption):
    shutil.copytree(intact["cache"], tmp_path / "cache")
    damaged = damage(tmp_path / "cache", corruption)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        losses, results = traced_run(tmp_path, monkeypatch, "run", RUN)
    assert_same_run(intact, losses, results)
    record = results["feature_cache"]
    assert record["rejected"] == len(damaged) and record["misses"] > 0 and record["write_failed"] is None
    [warning] = cache_warnings(caplog)      # one warning for the run, not one per shard
    assert "shard(s) failed their check" in warning and "moved aside into" in warning and "rejected" in warning
    assert KIND_IN_WARNING.get(corruption, "failed the checksum") in warning
    for shard, data in damaged:             # moved aside under their names, bytes as found: nothing deleted
        assert not shard.exists() and (shard.parent / "rejected" / shard.name).read_bytes() == data
    # what the run left behind is whole: every shard now in the cache passes its check
    for shard in shards(tmp_path / "cache"):
        view = int(shard.parent.name.split("_")[1])
        payload = torch.load(shard, weights_only=True)
        key = FeatureKey(payload["key"]["encoder"], payload["key"]["dataset"], payload["key"]["views"], view)
        read_shard(shard, key)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_leaves_the_run_going_on_without_the_cache(intact, tmp_path, monkeypatch, caplog):
    """Every shard's bytes go to /dev/full, whose writes fail as a full disk's do (ENOSPC), through torch.save
    itself: the error a user met was torch's own ('enforce fail at inline_container.cc')."""
    monkeypatch.setattr(feature_cache, "open", lambda path, mode: open("/dev/full", mode), raising=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        losses, results = traced_run(tmp_path, monkeypatch, "run", RUN)
    assert_same_run(intact, losses, results)     # the memory-only run's losses and matrix (the fixture checks)
    assert results["feature_cache"]["write_failed"] == "No space left on device (ENOSPC)"
    [warning] = cache_warnings(caplog)
    assert f"cannot write to {tmp_path / 'cache'} (No space left on device (ENOSPC))" in warning
    assert "goes on without storing features" in warning
    assert not shards(tmp_path / "cache") and not list((tmp_path / "cache").rglob("*.tmp"))


def test_a_read_only_cache_is_read_and_not_written(intact, tmp_path, monkeypatch, caplog):
    """A read-only folder (simulated: the tests run as root, whom chmod does not stop; the real chmod is the
    next test) with one damaged shard: the intact shards are read, the damaged one is skipped where it lies."""
    shutil.copytree(intact["cache"], tmp_path / "cache")
    damaged = shards(tmp_path / "cache")[0]
    flip_bits(damaged, None)

    def refused(*args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    for name in ("write_atomic", "write_probe", "move_aside"):
        monkeypatch.setattr(feature_cache, name, refused)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        losses, results = traced_run(tmp_path, monkeypatch, "run", RUN)
    assert_same_run(intact, losses, results)
    record = results["feature_cache"]
    assert record["write_failed"] == "Permission denied (EACCES)" and record["rejected"] == 1
    assert record["hits"] > 0                # the intact shards were read
    written, rejected = cache_warnings(caplog)
    assert "cannot write to" in written and "could not be moved aside (Permission denied" in rejected
    assert damaged.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod")
def test_a_chmod_read_only_cache_is_read_and_not_written(tmp_path, caplog):
    ids, features = np.arange(4), torch.randn(4, 3)
    FeatureCache(tmp_path / "cache").get(key(), ids, lambda positions: features[positions])
    for folder in [tmp_path / "cache", *(tmp_path / "cache").rglob("*")]:
        if folder.is_dir():
            folder.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            cache = FeatureCache(tmp_path / "cache")
            out = cache.get(key(), np.arange(6), lambda positions: torch.ones(len(positions), 3))
        assert torch.equal(out[:4], features) and (cache.hits, cache.misses) == (4, 2)
        assert cache.record()["write_failed"].startswith("Permission denied")
        assert len(cache_warnings(caplog)) == 1
    finally:
        for folder in [tmp_path / "cache", *(tmp_path / "cache").rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)


# ---------------------------------------------------------------- the cache alone: checks, moves, writers

def key(**changes):
    fields = dict(encoder="e", dataset="d", views="v", view=0)
    fields.update(changes)
    return FeatureKey(**fields)


def filled(directory: Path, n_shards: int = 3, rows: int = 4, width: int = 5) -> tuple[torch.Tensor, list[Path]]:
    """A cache with n_shards shards of key() (and one of key(view=1), a donor for 'another key')."""
    features = torch.randn(n_shards * rows, width)
    for part in range(n_shards):
        ids = np.arange(part * rows, (part + 1) * rows)
        FeatureCache(directory).get(key(), ids, lambda positions: features[ids[positions]])
    FeatureCache(directory).get(key(view=1), np.arange(rows), lambda positions: torch.zeros(len(positions), width))
    return features, sorted((directory / key().namespace / "view_0").glob("shard-*.pt"))


def test_a_shard_carries_the_checksum_of_its_bytes_and_key(tmp_path):
    features, [shard, *_] = filled(tmp_path)
    payload = torch.load(shard, weights_only=True)
    assert payload["format"] == 2 and len(payload["sha256"]) == 64
    assert payload["key"] == {"encoder": "e", "dataset": "d", "views": "v", "view": 0}
    ids, read = read_shard(shard, key())
    assert torch.equal(read, features[torch.from_numpy(ids)]) and len(ids) == 4
    for other in (key(encoder="x"), key(dataset="x"), key(views="x"), key(view=1)):
        with pytest.raises(ShardRejected, match="another key"):
            read_shard(shard, other)


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_each_corruption_is_refused_when_read(tmp_path, caplog, corruption):
    features, [first, second, third] = filled(tmp_path)
    donor = next((tmp_path / key(view=1).namespace / "view_1").glob("shard-*.pt"))
    CORRUPTIONS[corruption](second, donor)
    cache = FeatureCache(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = cache.get(key(), np.arange(12), lambda positions: features[positions] + 0)
    assert torch.equal(out, features) and (cache.hits, cache.misses) == (8, 4)
    assert cache.record()["rejected"] == 1 and (second.parent / "rejected" / second.name).exists()
    assert len(cache_warnings(caplog)) == 1


def test_a_run_hashes_a_shard_once_and_again_when_it_changes(tmp_path, monkeypatch):
    """A training view is read every epoch of every experience: an unchanged file verified earlier in the
    run is not hashed again; one changed since (a new modification time) is, and is refused."""
    features, shard_list = filled(tmp_path)
    for shard in shard_list:                   # written by an earlier run
        os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns - 10**10))
    hashed = []
    original = feature_cache.shard_checksum
    monkeypatch.setattr(feature_cache, "shard_checksum", lambda *args: hashed.append(1) or original(*args))
    cache = FeatureCache(tmp_path)
    for _ in range(3):
        assert torch.equal(cache.get(key(), np.arange(12), lambda positions: None, keep=False), features)
    assert len(hashed) == 3
    flip_bits(shard_list[1], None)             # altered while the run goes on
    out = cache.get(key(), np.arange(12), lambda positions: features[positions], keep=False)
    assert torch.equal(out, features) and cache.record()["rejected"] == 1 and cache.misses == 4


def test_one_warning_per_run_however_many_tables_fail(tmp_path, caplog):
    features, shard_list = filled(tmp_path)
    donor = next((tmp_path / key(view=1).namespace / "view_1").glob("shard-*.pt"))
    for shard in shard_list[:2] + [donor]:
        shard.write_bytes(b"")
    cache = FeatureCache(tmp_path)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        cache.get(key(), np.arange(12), lambda positions: features[positions])
        cache.get(key(view=1), np.arange(4), lambda positions: torch.zeros(len(positions), 5))
    assert len(cache_warnings(caplog)) == 1 and cache.record()["rejected"] == 3
    assert "2 shard(s) failed their check (2 empty)" in cache_warnings(caplog)[0]
    later = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "1 shard(s)" in r.getMessage()]
    assert later    # the later table's rejection is logged at info level and counted


def test_a_rejected_name_already_taken_keeps_both(tmp_path):
    features, [shard, *_] = filled(tmp_path)
    (shard.parent / "rejected").mkdir()
    (shard.parent / "rejected" / shard.name).write_bytes(b"an earlier one")
    shard.write_bytes(b"")
    FeatureCache(tmp_path).get(key(), np.arange(12), lambda positions: features[positions])
    assert (shard.parent / "rejected" / shard.name).read_bytes() == b"an earlier one"
    assert (shard.parent / "rejected" / f"{shard.name}.1").read_bytes() == b""


def test_two_runs_rejecting_the_same_shard_at_once(tmp_path, monkeypatch):
    """Run B lists the folder; run A moves a damaged shard aside before B reads it, or after B read it and
    before B moves it: B skips it, or finds it gone, and encodes its samples like A."""
    features, [first, second, third] = filled(tmp_path)
    second.write_bytes(b"")
    third.write_bytes(b"")
    original = feature_cache.read_shard

    def other_run_moves_it_first(path, wanted, verified=None):
        if path == second:                       # A moves it before B reads it
            feature_cache.move_aside(path)
        try:
            return original(path, wanted, verified)
        except ShardRejected:
            if path == third:                    # A moves it after B read it, before B moves it
                feature_cache.move_aside(path)
            raise
    monkeypatch.setattr(feature_cache, "read_shard", other_run_moves_it_first)
    b = FeatureCache(tmp_path)
    assert torch.equal(b.get(key(), np.arange(12), lambda positions: features[positions]), features)
    assert b.misses == 8 and b.record()["rejected"] == 1     # the one B found damaged; A moved both
    assert sorted(p.name for p in (first.parent / "rejected").iterdir()) == sorted([second.name, third.name])


def test_only_the_main_process_of_a_torchrun_run_moves_a_failed_shard(tmp_path):
    from clprompt.training.distributed import Distributed

    features, [first, *_] = filled(tmp_path)
    first.write_bytes(b"")
    other = FeatureCache(tmp_path, Distributed(rank=1, world_size=2))
    table = other._load(key())
    assert len(table[0]) == 8 and other.record()["rejected"] == 1 and first.exists()   # skipped, left in place
    main = FeatureCache(tmp_path, Distributed(rank=0, world_size=2))
    assert len(main._load(key())[0]) == 8 and main.record()["rejected"] == 1 and not first.exists()


def test_concurrent_writers_and_readers_of_one_key_never_corrupt_each_other(tmp_path):
    """Four writers add overlapping samples of one key at once while two readers read it in a loop: no reader
    ever meets a partial or failing shard, and the cache ends holding every sample once, exactly."""
    features = torch.randn(64, 8)
    start = threading.Barrier(6)
    failures, stop = [], threading.Event()

    def writer(offset):
        cache = FeatureCache(tmp_path)
        start.wait()
        for first in range(offset, 48, 8):
            ids = np.arange(first, first + 16)
            out = cache.get(key(), ids, lambda positions: features[ids[positions]])
            if not torch.equal(out, features[ids]):
                failures.append(f"writer {offset}: wrong features for {first}")

    def reader():
        start.wait()
        while not stop.is_set():
            cache = FeatureCache(tmp_path)
            table = cache._load(key())
            if cache.record()["rejected"]:
                failures.append(f"reader rejected {list(cache.rejected.values())}")
            if table is not None and not torch.equal(table[1], features[torch.from_numpy(table[0])]):
                failures.append("reader read wrong features")
    threads = [threading.Thread(target=writer, args=(offset,)) for offset in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads + readers:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert failures == []
    final = FeatureCache(tmp_path)
    assert torch.equal(final.get(key(), np.arange(56), lambda positions: None), features[:56])
    assert final.record()["rejected"] == 0 and not list(tmp_path.rglob("*.tmp"))


def test_two_cache_objects_interleaving_on_one_folder(tmp_path):
    features = torch.randn(10, 3)
    a, b = FeatureCache(tmp_path), FeatureCache(tmp_path)
    a.get(key(), np.arange(4), lambda positions: features[positions], keep=False)   # a training view: ...
    b.get(key(), np.arange(2, 8), lambda positions: features[np.arange(2, 8)[positions]])
    a.get(key(), np.arange(10), lambda positions: features[np.arange(10)[positions]])  # ... read from disk again
    assert (b.hits, b.misses) == (2, 4) and (a.hits, a.misses) == (8, 4 + 2)   # b read a's shard; a read b's
    reader = FeatureCache(tmp_path)
    assert torch.equal(reader.get(key(), np.arange(10), lambda positions: None), features)
    assert reader.record()["rejected"] == 0


def test_a_failed_write_warns_once_and_keeps_the_features(tmp_path, monkeypatch, caplog):
    def full_disk(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(feature_cache, "write_atomic", full_disk)
    cache = FeatureCache(tmp_path)
    features = torch.randn(9, 2)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for part in range(3):
            ids = np.arange(3 * part, 3 * part + 3)
            assert torch.equal(cache.get(key(), ids, lambda positions: features[ids[positions]]), features[ids])
    assert len(cache_warnings(caplog)) == 1 and str(tmp_path) in cache_warnings(caplog)[0]
    assert cache.record()["write_failed"] == "No space left on device (ENOSPC)"
    assert not list(tmp_path.rglob("shard-*")) and not list(tmp_path.rglob("*.tmp"))


def test_an_existing_unwritable_folder_is_read(tmp_path, monkeypatch, caplog):
    features, _ = filled(tmp_path)

    def refused(directory):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(feature_cache, "write_probe", refused)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cache = FeatureCache(tmp_path)
        out = cache.get(key(), np.arange(14), lambda positions: torch.ones(len(positions), 5))
    assert torch.equal(out[:12], features) and (cache.hits, cache.misses) == (12, 2)
    assert cache.record()["write_failed"] == "Read-only file system (EROFS)"
    assert len(cache_warnings(caplog)) == 1 and len(list(tmp_path.rglob("shard-*.pt"))) == 4   # nothing added


def test_shards_of_one_table_disagreeing_on_width_keep_the_larger_group(tmp_path, caplog):
    """Two shards with valid checksums but another width (only a writer with a wrong key makes them)."""
    features, _ = filled(tmp_path)
    folder = tmp_path / key().namespace / "view_0"
    wide = shard_payload(key(), torch.arange(12, 14), torch.randn(2, 7))
    torch.save(wide, folder / "shard-wide.pt")
    cache = FeatureCache(tmp_path)
    out = cache.get(key(), np.arange(14), lambda positions: torch.zeros(len(positions), 5))
    assert torch.equal(out[:12], features) and cache.record()["rejected"] == 1
    assert (folder / "rejected" / "shard-wide.pt").exists()


def test_non_finite_fresh_features_are_named_and_never_written(tmp_path):
    def overflowing(positions):
        out = torch.randn(len(positions), 4)
        out[1, 2] = float("inf")
        return out
    cache = FeatureCache(tmp_path)
    with pytest.raises(NonFiniteFeaturesError, match=r"NaN or infinite features for 1 of 3 images.*precision=fp32"):
        cache.get(key(), np.arange(3), overflowing)
    assert not list(tmp_path.rglob("shard-*"))
