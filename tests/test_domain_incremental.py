"""Domain-incremental streams: every experience the same classes from a new domain, scored on every domain's
test set with every class a candidate; the sandbox's shapes_domains; held-out test domains (a T x D matrix);
the protocol chosen by the scenario and refused where it does not fit; a run end to end with S-Prompts
recording which domain it chose."""

import contextlib
import io
import json

import numpy as np
import pytest
from hydra.utils import instantiate

from clprompt.config_check import check_config
from clprompt.errors import ConfigValueError
from clprompt.records import metrics
from clprompt.records.evaluation import AccuracyMatrixPlugin, candidate_classes, resolve_protocol
from clprompt.records.outputs import completed_prefix, format_summary, matrix_figure, pooled_last, run_metrics
from clprompt.run import run
from helpers import compose_config
from scenarios import StreamConfigError
from scenarios.array_dataset import ArrayImageDataset
from scenarios.domain_stream import domain_incremental_stream
from scenarios.sandbox.tasks import sandbox_domain_stream

pytestmark = pytest.mark.filterwarnings("ignore")

SMALL = dict(classes="pattern_shape", train_per_class=2, valid_per_class=1, test_per_class=2)


def arrays(labels, value):
    labels = np.asarray(labels)
    return ArrayImageDataset(np.full((len(labels), 4, 4, 3), value, dtype=np.uint8), labels)


def test_every_experience_brings_every_class_from_its_own_domain():
    stream = sandbox_domain_stream(domains=["clean", "textured", "palette"], **SMALL)
    assert stream.scenario_type == "domain_incremental" and stream.domains == ["clean", "textured", "palette"]
    assert stream.n_experiences == 3 and len(stream.class_names) == 40
    assert stream.experience_classes == [list(range(40))] * 3 and stream.test_classes == stream.experience_classes
    for split in ("train_stream", "test_stream"):
        experiences = list(getattr(stream.benchmark, split))
        assert len(experiences) == 3
        assert all(sorted(e.classes_in_this_experience) == list(range(40)) for e in experiences)
    # experience d holds domain d's images: the clean and palette renderings differ, labels are the same ids
    clean, textured, palette = (np.stack([np.asarray(e.dataset[i][0]) for i in range(5)])
                                for e in stream.benchmark.test_stream)
    assert not np.array_equal(clean, palette) and not np.array_equal(clean, textured)
    first = list(stream.benchmark.test_stream)[0].dataset
    assert [int(first[i][1]) for i in range(4)] == [0, 0, 1, 1]
    # sample ids stay unique across domains (the feature cache keys images by them)
    ids = stream.splits["test"].sample_ids()
    assert len(set(ids)) == len(ids) == 3 * 80
    record = stream.description
    assert record["scenario_type"] == "domain_incremental" and record["domain_sizes"]["train"] == [80, 80, 80]


def test_the_same_seed_renders_the_same_domains_and_another_seed_others():
    first, again, other = (sandbox_domain_stream(domains=["clean", "noisy"], seed=s, **SMALL) for s in (0, 0, 1))
    image = lambda s: np.asarray(s.splits["train"][100][0])   # noqa: E731 (an image of the second domain)
    assert np.array_equal(image(first), image(again)) and not np.array_equal(image(first), image(other))


def test_held_out_domains_make_the_test_stream_and_a_rectangular_matrix():
    stream = sandbox_domain_stream(domains=["clean", "textured"], held_out=["palette", "blurry", "noisy"], **SMALL)
    assert stream.n_experiences == 2 and stream.test_domains == ["palette", "blurry", "noisy"]
    assert len(stream.test_classes) == 3 and len(list(stream.benchmark.test_stream)) == 3
    plugin = AccuracyMatrixPlugin(stream.experience_classes, "domain_incremental", progress=False,
                                  test_classes=stream.test_classes)
    assert plugin.matrix.shape == (2, 3)


def test_a_domain_lacking_a_class_or_a_split_is_named():
    classes = ["cat", "dog"]
    good = {"train": arrays([0, 1], 0), "test": arrays([0, 1], 1)}
    with pytest.raises(StreamConfigError, match=r"domain 'sketch'.*test split has no images of classes \[1\]"):
        domain_incremental_stream("d", {"photo": good, "sketch": {"train": arrays([0, 1], 2), "test": arrays([0], 3)}},
                                  classes)
    with pytest.raises(StreamConfigError, match=r"domain 'sketch' has no test split"):
        domain_incremental_stream("d", {"photo": good, "sketch": {"train": arrays([0, 1], 2)}}, classes)
    with pytest.raises(StreamConfigError, match=r"outside 0..1"):
        domain_incremental_stream("d", {"photo": {"train": arrays([0, 5], 0), "test": arrays([0, 1], 1)}}, classes)
    with pytest.raises(StreamConfigError, match="at least one domain"):
        domain_incremental_stream("d", {}, classes)
    with pytest.raises(StreamConfigError, match="distinct styles"):
        sandbox_domain_stream(domains=["clean", "sepia"])
    with pytest.raises(StreamConfigError, match="distinct styles"):
        sandbox_domain_stream(domains=["clean"], held_out=["clean"])


def test_protocols_that_redraw_the_training_set_refuse_a_domain_stream():
    stream = sandbox_domain_stream(domains=["clean", "noisy"], **SMALL)
    with pytest.raises(StreamConfigError, match="domain-incremental stream.*protocol=standard"):
        stream.rebuild()


def test_the_scenario_chooses_the_protocol_and_a_misfit_is_refused():
    assert resolve_protocol("auto", "domain_incremental", "shapes_domains") == "domain_incremental"
    assert resolve_protocol("auto", "class_incremental", "split_shapes") == "class_incremental"
    assert resolve_protocol("task_incremental", "class_incremental", "mtil") == "task_incremental"
    with pytest.raises(ConfigValueError, match="domain-incremental stream.*eval.protocol=domain_incremental"):
        resolve_protocol("class_incremental", "domain_incremental", "shapes_domains")
    with pytest.raises(ConfigValueError, match="needs a domain-incremental scenario.*split_shapes"):
        resolve_protocol("domain_incremental", "class_incremental", "split_shapes")
    # every class is a candidate for every domain, before and after its training
    classes = [[0, 1, 2]] * 3
    assert candidate_classes("domain_incremental", 2, 1, classes) == [0, 1, 2]
    check_config(compose_config(["scenario=shapes_domains", "eval.protocol=domain_incremental"]))
    assert compose_config(["scenario=shapes_domains"]).eval.protocol == "auto"


def test_the_pooled_last_weights_each_domain_by_its_test_images():
    prefix = np.array([[0.5, 0.9], [0.6, 0.8]])
    assert pooled_last(prefix, [100, 300]) == pytest.approx((0.6 * 100 + 0.8 * 300) / 400)
    assert pooled_last(prefix, None) is None and pooled_last(prefix[:0], [1, 1]) is None


def test_metrics_of_a_matrix_over_held_out_domains():
    R = np.array([[0.5, 0.7, 0.6], [0.8, np.nan, np.nan]])
    assert completed_prefix(R).shape == (1, 3)
    summary = metrics.summarize(np.array([[0.5, 0.7, 0.6], [0.8, 0.6, 0.7]]))
    assert summary["last"] == pytest.approx(0.7) and summary["avg"] == pytest.approx((0.6 + 0.7) / 2)
    assert summary["mtil_avg"] == pytest.approx(0.65)
    assert all(np.isnan(summary[k]) for k in ("forgetting", "bwt", "transfer"))
    assert run_metrics(np.array([[0.5], [0.9]]))["last"] == pytest.approx(0.9)   # 2 sessions x 1 test domain
    assert "last: 90.00" in format_summary(np.array([[0.5], [0.9]]))
    matrix_figure(100 * np.array([[0.5, 0.7, 0.6], [0.8, 0.6, 0.7]]))   # no diagonal to outline: draws


RUN = ["scenario=shapes_domains", "scenario.classes=pattern_shape", "scenario.domains=[clean,palette]",
       "scenario.train_per_class=2", "scenario.valid_per_class=1", "scenario.test_per_class=2", "model=tiny",
       "method=sprompts", "train.epochs=1", "train.warmup_epochs=0", "progress=false", "cache.dir=null"]


def test_a_run_scores_every_domain_and_records_the_domains_sprompts_chose(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = run(compose_config(RUN), tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["protocol"] == "domain_incremental" and written["status"] == "complete"
    assert np.shape(written["accuracy_matrix"]) == (2, 2)
    assert written["stream"]["domains"] == ["clean", "palette"]
    header = (tmp_path / "accuracy_matrix.csv").read_text().splitlines()[0]
    assert header == "after_experience,task_1_clean,task_2_palette"
    assert not written.get("task_confusion")   # a class names no domain: no confusion over classes' tasks
    chosen = written["task_identification"]["accuracy"]
    assert len(chosen) == 2 and chosen[0] == [None, None]   # one trained domain: no choice to make
    assert all(0 <= v <= 100 for v in chosen[1])
    assert "forgetting" in printed.getvalue() and results["metrics"]["last"] is not None
    # every domain has as many test images: the pooled accuracy is Last
    assert written["metrics"]["last_pooled"] == pytest.approx(written["metrics"]["last"])


def test_a_run_over_held_out_domains_reports_last_and_no_forgetting(tmp_path):
    results = run(compose_config(RUN[:3] + ["scenario.held_out=[blurry]"] + RUN[3:]), tmp_path)
    assert np.shape(results["accuracy_matrix"]) == (2, 1)
    assert results["metrics"]["forgetting"] is None and results["metrics"]["last"] is not None
    assert results.get("task_identification") is None   # a held-out domain has no right choice


def test_class_incremental_scoring_of_a_domain_stream_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigValueError, match="domain-incremental stream"):
        run(compose_config(RUN + ["eval.protocol=class_incremental"]), tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_the_shipped_sandbox_config_instantiates_four_styles():
    stream = instantiate(compose_config(["scenario=shapes_domains", "scenario.train_per_class=1",
                                         "scenario.valid_per_class=1", "scenario.test_per_class=1"]).scenario)
    assert stream.domains == ["clean", "textured", "lowcontrast", "palette"] and len(stream.class_names) == 100
