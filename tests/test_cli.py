"""``python -m clprompt.run`` as a user runs it: files written, multirun, and bad-input messages."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import warm_python
from helpers import REPO, compose_config, write_fashion_mnist

pytestmark = pytest.mark.filterwarnings("ignore")


def clprompt_run(*args, cwd=REPO, fresh=False):
    """The command in a process of its own; ``fresh``: a new interpreter rather than a fork of the warm one
    (tests/warm_python.py)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0")
    command = ["-m", "clprompt.run", *args]
    if fresh:
        return subprocess.run([sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
    return warm_python.run(command, cwd=cwd, env=env)


def test_run_writes_matrix_metrics_and_tensorboard(tmp_path):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "model=tiny", "method=zeroshot", f"hydra.run.dir={out}", fresh=True)
    assert done.returncode == 0, done.stderr
    assert "forgetting" in done.stdout and "accuracy matrix" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert np.array(results["accuracy_matrix"]).shape == (3, 3)
    assert set(results["metrics"]) == {"last", "avg", "mtil_avg", "forgetting", "bwt", "transfer"}
    assert results["scenario"] == "tiny_colors" and results["method"] == "zeroshot"
    assert results["config"]["model"]["arch"] == "tiny" and results["seed"] == 0
    rows = list(csv.reader((out / "accuracy_matrix.csv").open()))
    assert rows[0] == ["after_experience", "task_1", "task_2", "task_3"] and len(rows) == 4
    assert (out / "accuracy_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for name in ("accuracy/task_1", "accuracy/task_3", "metrics/last", "metrics/avg",
                 "metrics/forgetting", "metrics/bwt", "metrics/transfer"):
        assert name in tags["scalars"], name
    assert [e.step for e in events.Scalars("accuracy/task_3")] == [1, 2, 3]
    assert events.Scalars("metrics/last")[-1].value == pytest.approx(results["metrics"]["last"], abs=1e-4)
    assert "accuracy_matrix/heatmap" in tags["images"]
    assert "accuracy_matrix/table/text_summary" in tags["tensors"]


def test_multirun_sweeps_scenarios(tmp_path):
    write_fashion_mnist(tmp_path / "data", train_per_class=2, test_per_class=2)
    sweep = tmp_path / "sweep"
    done = clprompt_run("-m", "method=zeroshot", "scenario=split_fmnist,tiny_colors", "model=tiny",
                        f"data.root={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}", "progress=false")
    assert done.returncode == 0, done.stderr
    results = sorted(sweep.glob("*/results.json"))
    assert len(results) == 2
    shapes = sorted(np.array(json.loads(p.read_text())["accuracy_matrix"]).shape for p in results)
    assert shapes == [(3, 3), (5, 5)]
    assert "2 job(s), 2 complete, 0 failed" in done.stderr   # the sweep's summary (clprompt.sweep)


@pytest.mark.parametrize("group, valid", [("method", "zeroshot"), pytest.param("scenario", "split_fmnist", marks=pytest.mark.slow),
                                          pytest.param("model", "vit_b16", marks=pytest.mark.slow)])   # one path
def test_unknown_names_list_the_valid_ones(group, valid):
    done = clprompt_run(f"{group}=nope")
    assert done.returncode != 0
    assert f"Could not find '{group}/nope'" in done.stderr
    assert f"Available options in '{group}'" in done.stderr and valid in done.stderr


def test_a_misspelled_key_is_named():
    done = clprompt_run("model=tiny", "eval.protocl=task_incremental")
    assert done.returncode != 0
    assert "eval.protocl" in done.stderr


def test_missing_data_is_a_clear_error_without_traceback(tmp_path):
    done = clprompt_run("scenario=split_cifar", "model=tiny", f"data.root={tmp_path}",
                        f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 1
    assert "CIFAR-100 not found" in done.stderr and str(tmp_path / "cifar-100-python") in done.stderr
    assert "data.download=true" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow   # in-process: test_a_missing_required_method_option_is_named_in_process
def test_a_missing_required_method_option_is_named():
    done = clprompt_run("method=coop", "model=tiny", "scenario=tiny_colors", "~method.context")
    assert done.returncode != 0
    assert "missing 1 required positional argument: 'context'" in done.stderr and "full_key: method" in done.stderr


def test_a_missing_required_method_option_is_named_in_process(tmp_path):
    from clprompt.run import run

    with pytest.raises(Exception, match=r"(?s)(full_key: method.*missing 1 required positional argument: 'context'|"
                                        r"missing 1 required positional argument: 'context'.*full_key: method)"):
        run(compose_config(["method=coop", "model=tiny", "scenario=tiny_colors", "~method.context"]), tmp_path)


@pytest.mark.slow   # in-process: tests/test_visual_prompts.py::test_resnet_image_towers_are_refused
def test_maple_on_a_resnet_is_refused_with_the_cause(tmp_path):
    done = clprompt_run("method=maple", "model=rn50", "model.pretrained=null", "scenario=tiny_colors",
                        f"hydra.run.dir={tmp_path}")
    assert done.returncode == 1
    assert "MaPLe needs a ViT image tower" in done.stderr and "Traceback" not in done.stderr


def test_training_only_in_the_warm_up_is_refused_with_the_two_keys_in_process(tmp_path):
    from clprompt.errors import ConfigValueError
    from clprompt.run import run

    with pytest.raises(ConfigValueError, match=r"train.epochs=1 is not larger than train.warmup_epochs=1.*"
                                               r"train.warmup_epochs=0"):
        run(compose_config(["scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=1"]), tmp_path / "run")


@pytest.mark.slow   # in-process: test_training_only_in_the_warm_up_is_refused_with_the_two_keys_in_process
def test_training_only_in_the_warm_up_is_refused_with_the_two_keys(tmp_path):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=1", f"hydra.run.dir={out}")
    assert done.returncode == 1
    assert "train.epochs=1 is not larger than train.warmup_epochs=1" in done.stderr
    assert "train.warmup_epochs=0" in done.stderr
    assert "Traceback" not in done.stderr


PARTITIONS = [
    (["scenario.n_experiences=null", "scenario.increment=4"], "scenario.increment=4 does not divide the 6 classes"),
    (["scenario.class_order=nope"], "scenario.class_order='nope' is not a named order"),
]


@pytest.mark.parametrize("overrides, message", [PARTITIONS[0], pytest.param(*PARTITIONS[1], marks=pytest.mark.slow)])
def test_a_partition_that_does_not_fit_is_refused_and_nothing_is_written(tmp_path, overrides, message):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "model=tiny", "method=zeroshot", *overrides, f"hydra.run.dir={out}")
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (out / "results.json").exists() and not (out / "accuracy_matrix.csv").exists()


@pytest.mark.parametrize("overrides, message", PARTITIONS)
def test_a_partition_that_does_not_fit_is_refused_and_nothing_is_written_in_process(tmp_path, overrides, message):
    from clprompt.run import run
    from scenarios.errors import StreamConfigError

    out = tmp_path / "run"
    with pytest.raises(StreamConfigError, match=re.escape(message)):
        run(compose_config(["scenario=tiny_colors", "model=tiny", "method=zeroshot", *overrides]), out)
    assert not (out / "results.json").exists() and not (out / "accuracy_matrix.csv").exists()
