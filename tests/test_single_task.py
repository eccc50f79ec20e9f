"""A one-experience stream (a single dataset, a CoOp few-shot run) reads as one: the console prints its
accuracy, results.json records it, TensorBoard has the scalar and no matrix pictures; no forgetting, BWT
or transfer anywhere. A folder already complete prints the same line."""

import contextlib
import io
import json
import re

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.records.outputs import RunRecorder, format_summary, run_metrics
from clprompt.run import run
from helpers import compose_config

pytestmark = pytest.mark.filterwarnings("ignore")

ONE_TASK = ["scenario=tiny_colors", "scenario.n_experiences=1", "model=tiny", "method=coop", "train.epochs=2",
            "train.warmup_epochs=0", "progress=false", "cache.dir=null"]
CONTINUAL_WORDS = ("forgetting", "bwt", "transfer", "mtil_avg", "avg", "accuracy matrix")


@pytest.fixture(scope="module")
def one_task_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one_task")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = run(compose_config(ONE_TASK), run_dir)
    return run_dir, results, printed.getvalue()


def test_the_console_prints_the_accuracy_alone(one_task_run):
    run_dir, results, printed = one_task_run
    accuracy = results["accuracy_matrix"][0][0]
    assert re.search(r"^accuracy: (\d+\.\d\d)$", printed, flags=re.M).group(1) == f"{accuracy:.2f}"
    assert not any(word in printed for word in CONTINUAL_WORDS), printed
    assert f"results in {run_dir}" in printed


def test_results_json_records_the_accuracy(one_task_run):
    run_dir, results, _ = one_task_run
    written = json.loads((run_dir / "results.json").read_text())
    accuracy = written["accuracy_matrix"][0][0]
    assert written["status"] == "complete" and written["completed_experiences"] == 1
    # "last" is the same value: the key clprompt.report's few-shot tables read
    assert written["metrics"] == {"accuracy": pytest.approx(accuracy), "last": pytest.approx(accuracy)}
    assert written["metrics"] == results["metrics"]


def test_no_matrix_pictures_for_one_task(one_task_run):
    run_dir, _, _ = one_task_run
    for name in ("accuracy_matrix.png", "accuracy_curves.png", "task_confusion.png"):
        assert not (run_dir / name).exists(), name
    assert (run_dir / "accuracy_matrix.csv").read_text().splitlines()[0] == "after_experience,task_1"
    assert (run_dir / "adapted_state" / "experience_1.pt").exists()


def test_tensorboard_has_the_accuracy_scalar_and_no_pictures(one_task_run):
    run_dir, results, _ = one_task_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert set(tags["scalars"]) == {"metrics/accuracy"}
    assert [(e.step, e.value) for e in events.Scalars("metrics/accuracy")] == [
        (1, pytest.approx(results["metrics"]["accuracy"], abs=1e-4))]
    assert tags["images"] == []
    table = events.Tensors("accuracy_matrix/table/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert table == f"- **accuracy**: {results['metrics']['accuracy']:.2f}"
    train = EventAccumulator(str(run_dir / "tensorboard" / "train"))
    train.Reload()
    assert {"train/loss", "train/accuracy"} <= set(train.Tags()["scalars"])   # the training curves as before


def test_a_complete_folder_prints_its_accuracy_again(one_task_run, capsys):
    run_dir, results, _ = one_task_run
    again = run(compose_config(ONE_TASK), run_dir)
    printed = capsys.readouterr().out
    assert again["metrics"] == results["metrics"]
    assert "is complete: not re-run" in printed
    assert f"accuracy: {results['accuracy_matrix'][0][0]:.2f}" in printed and "forgetting" not in printed


def test_the_summary_of_one_task_and_of_several():
    assert format_summary(np.array([[0.8123]])) == "accuracy: 81.23\n"
    assert format_summary(np.array([[np.nan]])) == "accuracy: n/a\n"
    assert run_metrics(np.array([[0.5]])) == {"accuracy": 0.5, "last": 0.5}
    assert run_metrics(np.array([[np.nan]])) == {}
    several = format_summary(np.array([[0.9, 0.5], [0.7, 0.8]]))
    assert "accuracy matrix" in several and "forgetting: 20.00" in several and "accuracy:" not in several
    assert set(run_metrics(np.array([[0.9, 0.5], [0.7, 0.8]]))) == {"last", "avg", "mtil_avg", "forgetting", "bwt",
                                                                    "transfer"}


def test_an_interrupted_one_task_run_records_no_metric_and_no_picture(tmp_path):
    recorder = RunRecorder(tmp_path, {"stream": {"n_experiences": 1}})
    results = recorder.write(np.array([[np.nan]]), "interrupted (SIGINT)", 1.0)
    recorder.finish(np.array([[np.nan]]), hparams={"method": "coop"})
    assert results["metrics"] == {} and results["completed_experiences"] == 0
    assert not list(tmp_path.glob("*.png"))


def test_a_base_to_new_run_still_reports_base_new_and_hm(tmp_path, capsys):
    """A base-to-new run is a two-experience stream (base, new) trained on its first: the console gives the
    base / new / hm line, not stream metrics; results.json, the heatmap and the scalars keep the matrix."""
    cfg = compose_config(["scenario=tiny_colors", "scenario.n_experiences=1", "model=tiny", "method=coop",
                          "protocol=base_to_new", "protocol.shots=2", "train.epochs=1", "train.warmup_epochs=0",
                          "progress=false", "cache.dir=null"])
    results = run(cfg, tmp_path)
    printed = capsys.readouterr().out
    base, new = results["accuracy_matrix"][0]
    assert {"base", "new", "hm", "last"} <= set(results["metrics"])
    assert results["metrics"]["base"] == pytest.approx(base) and results["metrics"]["new"] == pytest.approx(new)
    assert f"base-to-new: base {base:.2f}, new {new:.2f}, hm {results['metrics']['hm']:.2f}" in printed
    assert "forgetting" not in printed and "accuracy: " not in printed
    assert (tmp_path / "accuracy_matrix.png").exists()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"base_to_new/base", "base_to_new/new", "base_to_new/hm"} <= set(events.Tags()["scalars"])
