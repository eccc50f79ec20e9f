"""The protocols at the edge: drawing the training set from a stream, ensembles, the gradient-norm
ratio, and the single-task experiments run end to end through ``python -m clprompt.run``."""

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.errors import ConfigValueError
from clprompt.records.gradient_ratio import GradientNormRatioPlugin, gradient_norm
from clprompt.methods.ensemble import Ensemble
from clprompt.methods.prompt_tuning import PromptTuning
from clprompt.methods.zeroshot import ZeroShot
from clprompt.parts.context import LearnedContext
from clprompt.parts.labels import NameLabels
from clprompt.data.protocol import prepare_experiment, zero_shot_scores
from helpers import compose_config
from test_cli import clprompt_run

pytestmark = pytest.mark.filterwarnings("ignore")
CPU = torch.device("cpu")


def protocol(*overrides):
    return compose_config(["protocol=standard", *overrides]).protocol


def colours(tiny_backbone, n_experiences=1, per_class=8):
    cfg = compose_config(["scenario=tiny_colors", f"scenario.n_experiences={n_experiences}",
                          f"scenario.train_per_class={per_class}"])
    return instantiate(cfg.scenario, train_transform=tiny_backbone.eval_transform,
                       eval_transform=tiny_backbone.eval_transform)


def trained_targets(stream):
    return list(stream.benchmark.train_stream)[0].dataset.targets


def test_few_shot_draw_is_saved_and_trained_on(tiny_backbone, tmp_path):
    stream = colours(tiny_backbone)
    experiment = prepare_experiment(stream, protocol("protocol.shots=3", "protocol.shots_seed=2"),
                                    tiny_backbone, CPU, tmp_path)
    drawn = json.loads((tmp_path / "training_set.json").read_text())
    assert len(drawn["indices"]) == 18 and np.bincount(drawn["labels"]).tolist() == [3] * 6
    assert drawn["labels"] == drawn["true_labels"] and not any(drawn["noisy"])
    assert sorted(trained_targets(experiment.stream)) == sorted(drawn["labels"])
    assert experiment.record["shots"] == 3 and experiment.record["n_train"] == 18
    again = prepare_experiment(stream, protocol("protocol.shots=3", "protocol.shots_seed=2"),
                               tiny_backbone, CPU, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "training_set.json").read_text()) == drawn
    assert len(experiment.stream.benchmark.test_stream[0].dataset) == len(stream.splits["test"])  # full test split


def test_symmetric_noise_is_recorded_exactly(tiny_backbone, tmp_path):
    options = protocol("protocol.shots=4", "protocol.noise.kind=symmetric", "protocol.noise.rate=0.25")
    experiment = prepare_experiment(colours(tiny_backbone), options, tiny_backbone, CPU, tmp_path)
    assert experiment.record["noise"]["realised_rate"] == 0.25 and experiment.record["noise"]["n_noisy"] == 6
    drawn = json.loads((tmp_path / "training_set.json").read_text())
    wrong = np.array(drawn["labels"]) != np.array(drawn["true_labels"])
    assert wrong.tolist() == drawn["noisy"] == experiment.noisy.tolist()


def test_confusing_noise_follows_zero_shot_preferences(tiny_backbone, tmp_path):
    stream = colours(tiny_backbone)
    options = protocol("protocol.shots=2", "protocol.noise.kind=confusing", "protocol.noise.rate=0.5")
    experiment = prepare_experiment(stream, options, tiny_backbone, CPU, tmp_path)
    view = experiment.training_set
    scores = zero_shot_scores(tiny_backbone, stream.class_names, view, "a photo of a {}.", CPU)
    scores[np.arange(len(view)), view.true_targets] = -np.inf
    noisy = experiment.noisy
    assert noisy.sum() == 6
    assert np.array_equal(np.array(view.targets)[noisy], scores.argmax(1)[noisy])


def test_pseudo_labels_replace_the_labels_and_their_accuracy_is_recorded(tiny_backbone, tmp_path):
    stream = colours(tiny_backbone)
    options = protocol("protocol.pseudo_labels.selection=top_k", "protocol.pseudo_labels.per_class=2")
    experiment = prepare_experiment(stream, options, tiny_backbone, CPU, tmp_path)
    view = experiment.training_set
    scores = zero_shot_scores(tiny_backbone, stream.class_names, stream.splits["train"], "a photo of a {}.", CPU)
    assert np.array_equal(view.targets, scores.argmax(1)[view.indices])
    assert np.bincount(view.targets).max() <= 2
    record = experiment.record["pseudo_labels"]
    assert record["accuracy"] == pytest.approx(100 * np.mean(np.array(view.targets) == np.array(view.true_targets)))
    assert record["n_selected"] == len(view)


def test_base_to_new_trains_the_first_half_and_tests_both(tiny_backbone, tmp_path):
    experiment = prepare_experiment(colours(tiny_backbone), protocol("protocol=base_to_new", "protocol.shots=2"),
                                    tiny_backbone, CPU, tmp_path)
    assert experiment.stream.experience_classes == [[0, 1, 2], [3, 4, 5]]
    assert experiment.train_experiences == 1
    assert sorted(set(trained_targets(experiment.stream))) == [0, 1, 2]
    drawn = json.loads((tmp_path / "training_set.json").read_text())  # what is trained: base shots only
    assert np.bincount(drawn["labels"]).tolist() == [2, 2, 2] and experiment.record["n_train"] == 6
    assert len(list(experiment.stream.benchmark.train_stream)[1].dataset) == 0


def test_bad_protocol_options_are_refused_with_the_option_to_change(tiny_backbone, tmp_path):
    with pytest.raises(ConfigValueError, match="scenario.n_experiences=1"):
        prepare_experiment(colours(tiny_backbone, n_experiences=3), protocol("protocol.shots=2"),
                           tiny_backbone, CPU, tmp_path)
    with pytest.raises(ConfigValueError, match="protocol.noise.kind=symmetric or confusing"):
        prepare_experiment(colours(tiny_backbone), protocol("protocol.noise.rate=0.2"), tiny_backbone, CPU, tmp_path)
    with pytest.raises(ConfigValueError, match="drop protocol.shots"):
        prepare_experiment(colours(tiny_backbone), protocol("protocol=upl", "protocol.shots=4"),
                           tiny_backbone, CPU, tmp_path)
    with pytest.raises(ConfigValueError, match="needs both|set protocol.noise.kind"):
        prepare_experiment(colours(tiny_backbone), protocol("protocol.grad_norm_ratio=true"),
                           tiny_backbone, CPU, tmp_path)
    assert not (tmp_path / "training_set.json").exists()


def coop(backbone, seed):
    torch.manual_seed(seed)
    return PromptTuning(backbone, ["red", "green", "blue"], LearnedContext(length=4), NameLabels())


def test_ensemble_scores_with_the_mean_of_member_logits_and_trains_one_member_at_a_time(tiny_backbone):
    members = [coop(tiny_backbone, seed) for seed in range(3)]
    ensemble = Ensemble(members).eval()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ensemble.set_candidate_classes([0, 2])
        expected = torch.stack([m(images) for m in members]).mean(0)
        torch.testing.assert_close(ensemble(images), expected)
    assert torch.isinf(expected[:, 1]).all()
    ensemble.train().activate(1)
    assert {id(p) for p in ensemble.trainable_parameters()} == {id(p) for p in members[1].trainable_parameters()}
    ensemble(images).logsumexp(1).sum().backward()
    assert members[1].context.context.grad is not None and members[0].context.context.grad is None
    assert set(ensemble.adapted_state_dict()) == {f"members.{i}.context.context" for i in range(3)}


def test_gradient_norm_is_the_norm_of_all_gradients_together():
    a, b = torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([3.0]))
    loss = (a * torch.tensor([3.0, 0.0])).sum() + 4 * b.sum()
    assert gradient_norm(loss, [a, b]) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="both noisy and clean"):
        GradientNormRatioPlugin(list(range(3)), np.zeros(3, bool))


def test_few_shot_noisy_run_logs_the_gradient_ratio_and_the_draw(tmp_path):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "scenario.n_experiences=1", "model=tiny", "method=coop",
                        "protocol=noisy", "protocol.shots=4", "protocol.noise.rate=0.5",
                        "protocol.grad_norm_ratio=true", "train.epochs=2", "loss=gce", "progress=false",
                        f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"]["noise"]["realised_rate"] == 0.5 and results["loss"] == "gce"
    assert [row["epoch"] for row in results["grad_norm_ratio"]] == [1, 2]
    assert (out / "training_set.json").exists()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("ptnl/grad_norm_ratio_noisy_to_clean")] == [1, 2]


def test_base_to_new_run_reports_base_new_and_harmonic_mean(tmp_path):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "scenario.n_experiences=1", "model=tiny", "method=coop",
                        "protocol=base_to_new", "protocol.shots=2", "train.epochs=1", "train.warmup_epochs=0", "progress=false",
                        f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    base, new = results["accuracy_matrix"][0]
    assert results["metrics"]["base"] == pytest.approx(base) and results["metrics"]["new"] == pytest.approx(new)
    assert results["metrics"]["hm"] == pytest.approx(2 * base * new / (base + new) if base + new else 0)
    assert "base-to-new: base" in done.stdout and results["status"] == "complete"


def test_robust_upl_run_uses_gce_and_an_ensemble(tmp_path):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "scenario.n_experiences=1", "model=tiny", "method=coop",
                        "protocol=robust_upl", "protocol.pseudo_labels.per_class=2", "protocol.ensemble=2",
                        "train.epochs=1", "train.warmup_epochs=0", "progress=false", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["loss"] == "gce" and results["config"]["loss"]["q"] == 0.7
    assert results["experiment"]["ensemble"] == 2 and results["experiment"]["pseudo_labels"]["selection"] == "random"
    state = torch.load(out / "adapted_state" / "experience_1.pt")
    assert set(state) == {"members.0.context.context", "members.1.context.context"}
    assert not torch.equal(state["members.0.context.context"], state["members.1.context.context"])


def test_zero_shot_and_the_probe_take_the_scenarios_own_template():
    from clprompt.stages import scenario_templates

    pets = {"template": "a photo of a {}, a type of pet."}
    assert scenario_templates(compose_config(["method=zeroshot"]), pets) == {"templates": pets["template"]}
    assert scenario_templates(compose_config(["method=linear_probe"]), pets) == {"template": pets["template"]}
    assert scenario_templates(compose_config(["method=zeroshot"]), {}) == {"templates": "a photo of a {}."}
    assert scenario_templates(compose_config(["method=zeroshot", "method.templates=openai_7"]), pets) == {}
