"""eval.batch_size=auto: the encoding batch measured on the run's own first batches, the same features and
results as a fixed batch, and its record in results.json."""

import json

import pytest
import torch

from clprompt.training.encoding_batch import TRIALS, WARMUP, EncodingBatch, EncodingBatchSampler
from clprompt.errors import ConfigValueError
from helpers import compose_config


def feed(batch: EncodingBatch, n: int, ms_per_image: dict) -> list[int]:
    """Encode ``n`` images with a fake tower costing ``ms_per_image[size]`` per image; the sizes it used."""
    sizes = []
    for size in batch.batches(n):
        batch.observe(size, size * ms_per_image.get(size, 1.0) / 1000)
        sizes.append(size)
    return sizes


def test_auto_on_cpu_warms_up_then_tries_growing_batches_and_keeps_the_fastest():
    batch = EncodingBatch("auto", torch.device("cpu"))
    assert batch.measuring and batch.size == WARMUP
    sizes = feed(batch, 1000, {16: 70.0, 32: 60.0, 64: 61.0})
    # warm-up 16, two batches each of 16, 32, 64 (the largest trial: the search ends), then 32s: 64 is
    # within 3 % of 32, and the smaller of sizes that tie is kept
    assert sizes[:7] == [16, 16, 16, 32, 32, 64, 64]
    assert batch.chosen == 32 and not batch.measuring
    assert set(sizes[7:-1]) == {32} and sum(sizes) == 1000
    record = batch.record()
    assert record["size"] == 32 and record["ms_per_image"] == {"16": 70.0, "32": 60.0, "64": 61.0}


def test_a_size_more_than_three_percent_slower_ends_the_search():
    batch = EncodingBatch("auto", torch.device("cpu"))
    sizes = feed(batch, 1000, {16: 70.0, 32: 80.0, 64: 50.0})
    assert sizes[:5] == [16, 16, 16, 32, 32] and batch.chosen == 16   # 64 is never tried


def test_auto_keeps_the_largest_when_every_trial_is_faster():
    batch = EncodingBatch("auto", torch.device("cpu"))
    feed(batch, 5000, {16: 10.0, 32: 9.0, 64: 8.0})
    assert batch.chosen == TRIALS[-1] == 64   # on a CPU the trials stop at 64


def test_a_batch_cut_short_by_the_end_of_the_data_is_no_trial():
    batch = EncodingBatch("auto", torch.device("cpu"))
    assert feed(batch, 40, {}) == [16, 16, 8]     # 8 < the trial size 16: not measured
    assert batch.measuring and batch.seconds_per_image == {}   # one of size 16's two trial batches so far
    feed(batch, 500, {32: 0.5, 64: 2.0})           # the next evaluation goes on where it stopped
    assert batch.chosen == 32


def test_one_batch_slowed_by_other_work_does_not_decide():
    """Each size counts its faster trial batch: a neighbour's burst during one batch changes no choice."""
    batch = EncodingBatch("auto", torch.device("cpu"))
    times = iter([1.0,              # warm-up
                  80.0, 80.0,       # 16
                  95.0, 70.0,       # 32: its first batch was slowed, its second is the fastest of all
                  76.0, 75.0,       # 64: more than 3 % slower than 32: the search ends
                  ])
    for size in batch.batches(10_000):
        if not batch.measuring:
            break
        batch.observe(size, size * next(times) / 1000)
    assert batch.chosen == 32
    assert batch.record()["ms_per_image"] == {"16": 80.0, "32": 70.0, "64": 75.0}


def test_the_smallest_of_sizes_within_three_percent_is_kept():
    batch = EncodingBatch("auto", torch.device("cpu"))
    feed(batch, 5000, {16: 80.0, 32: 70.0, 64: 68.5})
    assert batch.chosen == 32   # 64 is faster by less than 3 %: noise, and more memory


def test_fixed_sizes_and_cuda():
    assert EncodingBatch(64, torch.device("cpu")).size == 64
    assert EncodingBatch("auto", torch.device("cuda")).size == 256
    fixed = EncodingBatch(100, torch.device("cpu"))
    assert list(fixed.batches(250)) == [100, 100, 50] and not fixed.measuring
    for bad in (0, -3, "big", 2.5, True):
        with pytest.raises(ConfigValueError, match="eval.batch_size"):
            EncodingBatch(bad, torch.device("cpu"))


def test_sampler_yields_every_index_once_in_order():
    batch = EncodingBatch("auto", torch.device("cpu"))
    indices = []
    for chunk in EncodingBatchSampler(100, batch):
        batch.observe(len(chunk), 0.01 * len(chunk))
        indices += chunk
    assert indices == list(range(100))


def test_the_tower_gives_the_same_features_at_every_trial_size(tiny_backbone):
    """The sizes auto can choose (16 and up) give bit-identical features here: the choice changes no result."""
    torch.manual_seed(0)
    images = torch.randn(96, 3, 32, 32)
    with torch.no_grad():
        whole = tiny_backbone.model.encode_image(images)
        for size in (16, 32, 64):
            parts = torch.cat([tiny_backbone.model.encode_image(c) for c in images.split(size)])
            assert torch.equal(parts, whole), size


@pytest.mark.parametrize("method", ["coop", "vpt_deep"])   # through the feature cache / through the loader
def test_a_run_with_auto_scores_as_a_fixed_batch_and_records_its_choice(tmp_path, method):
    from clprompt.run import run

    common = ["scenario=tiny_colors", "model=tiny", "progress=false", "scenario.train_per_class=6",
              "scenario.test_per_class=40", f"method={method}", "train.epochs=2", f"cache.dir={tmp_path / 'cache'}"]
    auto = run(compose_config(common), tmp_path / "auto")
    fixed = run(compose_config(common + ["eval.batch_size=256"]), tmp_path / "fixed")
    assert auto["accuracy_matrix"] == fixed["accuracy_matrix"]
    written = json.loads((tmp_path / "auto" / "results.json").read_text())
    assert written["evaluation_batch"]["setting"] == "auto" and written["evaluation_batch"]["ms_per_image"]
    assert fixed["evaluation_batch"] == {"setting": 256, "size": 256, "reason": "eval.batch_size=256",
                                         "ms_per_image": {}}
