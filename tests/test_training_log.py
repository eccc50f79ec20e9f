"""Training as it happens: per-epoch loss, its terms, accuracy and lr in TensorBoard, the log and
results.json; HParams; the version, commit and overrides recorded."""

import json
import logging
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.run import run
from helpers import compose_config

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def lamm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lamm")
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=lamm", "train.epochs=3", "train.batch_size=4",
                          "progress=false", "cache.dir=null"])
    run(cfg, run_dir)
    return run_dir


def test_per_epoch_curves_of_the_loss_its_terms_accuracy_and_lr(lamm_run):
    events = EventAccumulator(str(lamm_run / "tensorboard" / "train"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/lamm_wc", "train/lamm_cos", "train/lamm_kd", "train/accuracy",
            "train/lr", "train/epoch_seconds"} <= tags
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 10))      # 3 experiences x 3 epochs
    lr = [e.value for e in events.Scalars("train/lr")]
    assert lr[0] == pytest.approx(1e-5) and lr[1] == pytest.approx(0.002 * 0.5 * (1 + math.cos(math.pi / 3)))
    # the loss is its terms: CE + 1.0 WC + 1.0 COS + 0.05 KD (lamm.yaml's weights)
    ce, wc, cos, kd = (events.Scalars(f"train/{t}")[4].value for t in ("ce", "lamm_wc", "lamm_cos", "lamm_kd"))
    assert kd > 0 and loss[4].value == pytest.approx(ce + wc + cos + 0.05 * kd, rel=1e-5)
    assert all(0 <= e.value <= 100 for e in events.Scalars("train/accuracy"))


def test_results_record_each_experiences_epochs_loss_start_and_the_version(lamm_run):
    results = json.loads((lamm_run / "results.json").read_text())
    first = results["timing"][0]
    assert first["epochs"] == 3 and first["final_train_loss"] > 0 and 0 <= first["final_train_accuracy"] <= 100
    assert first["started"][:4].isdigit()
    assert results["versions"]["clprompt"] and "clprompt_commit" in results["versions"]
    assert "overrides" in results


def test_hparams_name_the_runs_settings_and_final_metrics(lamm_run):
    events = EventAccumulator(str(lamm_run / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["train.epochs"].number_value == 3 and start.hparams["eval.protocol"].string_value
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "metrics/last" in {m.name.tag for m in experiment.metric_infos}


def test_one_log_line_per_epoch(tmp_path, caplog):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=2", "progress=false",
                          "cache.dir=null"])
    with caplog.at_level(logging.INFO, logger="clprompt.records.training_log"):
        run(cfg, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "clprompt.records.training_log"]
    assert len(lines) == 6 and lines[0].startswith("experience 1 epoch 1/2: loss ") and "train accuracy" in lines[0]
