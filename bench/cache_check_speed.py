"""What the feature cache's checksum costs: loading a view of cached features with and without the check.

    python bench/cache_check_speed.py                                  # 50,000 x 512 fp32 (one 100 MB shard)
    python bench/cache_check_speed.py --rows 50000,1000000 --chunk 50000 --dtypes float32,bfloat16
    python bench/cache_check_speed.py --run "scenario=split_shapes_palette method=coop train.epochs=5"

Every shard the cache reads is verified (``clprompt.data.feature_cache.read_shard``: sha256 over its key,
ids and features). Per case (rows x 512 features of a dtype, written as shards of ``--chunk`` rows by
``FeatureCache`` itself), it times ``FeatureCache._load`` of the whole view as a run reads it:

- *checked*: as shipped (torch.load, the key and shape checks, the sha256);
- *unchecked*: the same with ``read_shard`` replaced by a bare ``torch.load`` (the cache before the check);
- *the check*: sha256 over the loaded shards alone.

The files are read from the page cache (they were just written, as a warm run's recent shards are): the
worst case for the check's share, since a read from a cold disk costs more and the hash no more. Medians
of ``--repeats``, the cases interleaved. ``--run "<overrides>"`` adds a row for a whole warm run of
``python -m clprompt.run <overrides>`` (in this process; a first run fills a cache of its own, then the
warm run is timed with the time spent hashing), the share of a warm run that the check takes. A random
training view (``train.augmentation=model`` or ``coop``) is read from disk every epoch, the case where the
check is paid most often.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def machine() -> str:
    import hashlib
    import ssl

    import torch

    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    sha_extensions = "sha_ni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None
    return (f"CPU, {os.cpu_count()} cores ({model}; SHA extensions: {sha_extensions}), torch "
            f"{torch.__version__}, torch threads {torch.get_num_threads()}, {ssl.OPENSSL_VERSION} "
            f"(hashlib sha256: {hashlib.sha256().name}), 1-min load average before: {os.getloadavg()[0]:.2f}")


def write_view(folder: Path, rows: int, chunk: int, dtype: str):
    """A view of ``rows`` x 512 random features written by FeatureCache as shards of ``chunk`` rows."""
    import numpy as np
    import torch

    from clprompt.data.feature_cache import FeatureCache, FeatureKey

    key = FeatureKey("bench-encoder", f"bench-{rows}-{dtype}", "bench-views", 0)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, rows, chunk):
        ids = np.arange(start, min(start + chunk, rows))
        features = torch.randn(len(ids), 512, generator=generator).to(getattr(torch, dtype))
        FeatureCache(folder).get(key, ids, lambda positions: features[positions], keep=False)
    return key


def unchecked_read(path: Path, key, verified=None):
    """The cache's read before the check: torch.load, nothing verified."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["ids"].numpy(), payload["features"]


def time_load(folder: Path, key, checked: bool) -> float:
    from clprompt.data import feature_cache

    original = feature_cache.read_shard
    if not checked:
        feature_cache.read_shard = unchecked_read
    try:
        cache = feature_cache.FeatureCache(folder)
        start = time.perf_counter()
        table = cache._load(key)
        elapsed = time.perf_counter() - start
    finally:
        feature_cache.read_shard = original
    assert table is not None and cache.record()["rejected"] == 0
    return elapsed


def time_hash(folder: Path, key) -> float:
    import torch

    from clprompt.data.feature_cache import shard_checksum

    total = 0.0
    for shard in sorted((folder / key.namespace / "view_0").glob("shard-*.pt")):
        payload = torch.load(shard, weights_only=True)
        start = time.perf_counter()
        shard_checksum(key, payload["ids"], payload["features"])
        total += time.perf_counter() - start
    return total


def warm_run(overrides: list[str], work: Path) -> dict:
    """A first run filling its own cache, then the warm run timed, with the time spent in the checksum."""
    from hydra import compose, initialize_config_dir

    from clprompt.data import feature_cache
    from clprompt.run import run

    def config():
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose(config_name="config", overrides=[*overrides, "progress=false",
                                                            f"cache.dir={work / 'cache'}"])
    run(config(), work / "first")
    hashing = [0.0]
    original = feature_cache.shard_checksum

    def timed(*args):
        start = time.perf_counter()
        try:
            return original(*args)
        finally:
            hashing[0] += time.perf_counter() - start
    feature_cache.shard_checksum = timed
    try:
        start = time.perf_counter()
        results = run(config(), work / "warm")
        wall = time.perf_counter() - start
    finally:
        feature_cache.shard_checksum = original
    return {"wall": wall, "hash": hashing[0], "misses": results["feature_cache"]["misses"],
            "hits": results["feature_cache"]["hits"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="50000", help="comma-separated view sizes (rows of 512 features)")
    parser.add_argument("--chunk", type=int, default=50000, help="rows per shard")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", default=None, help="overrides of a warm run to time as well (quoted)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    print(machine())
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="cache-check-"))
    try:
        cases = []
        for dtype in args.dtypes.split(","):
            for rows in (int(r) for r in args.rows.split(",")):
                folder = scratch / f"{rows}-{dtype}"
                key = write_view(folder, rows, args.chunk, dtype)
                megabytes = sum(p.stat().st_size for p in folder.rglob("shard-*.pt")) / 2**20
                shards = len(list(folder.rglob("shard-*.pt")))
                cases.append({"name": f"{rows:,} x 512 {dtype}", "folder": folder, "key": key, "mb": megabytes,
                              "shards": shards, "checked": [], "unchecked": [], "hash": []})
        time_load(cases[0]["folder"], cases[0]["key"], True)   # untimed round: imports, allocator
        for _ in range(args.repeats):
            for case in cases:
                case["unchecked"].append(time_load(case["folder"], case["key"], False))
                case["checked"].append(time_load(case["folder"], case["key"], True))
                case["hash"].append(time_hash(case["folder"], case["key"]))
        run = warm_run(args.run.split(), scratch / "run") if args.run else None
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nmedians of {args.repeats}; shards of {args.chunk:,} rows, read from the page cache\n")
    print("| case | on disk | shards | load, unchecked (s) | load, checked (s) | sha256 alone (s) | sha256 MB/s "
          "| check / checked load | warm run (s) | check / warm run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        unchecked, checked, hashed = (statistics.median(case[k]) for k in ("unchecked", "checked", "hash"))
        print(f"| {case['name']} | {case['mb']:,.0f} MB | {case['shards']} | {unchecked:.3f} | {checked:.3f} | "
              f"{hashed:.3f} | {case['mb'] / hashed:,.0f} | {hashed / checked:.0%} | | |")
    if run is not None:
        print(f"| warm run: `{args.run}` ({run['hits']:,} hits, {run['misses']:,} misses) | | | | | "
              f"{run['hash']:.3f} | | | {run['wall']:.1f} | {run['hash'] / run['wall']:.2%} |")


if __name__ == "__main__":
    main()
