"""Bad config values and unknown keys are refused before anything is loaded or written."""

import pytest

from clprompt.config_check import check_config
from clprompt.errors import ConfigValueError
from clprompt.run import run
from helpers import compose_config

BAD = [
    ("train.epochs=abc", "train.epochs='abc' is not allowed: give an integer >= 1"),
    ("train.epochs=0", "train.epochs=0 is not allowed"),
    ("train.epochs=-1", "train.epochs=-1 is not allowed"),
    ("train.batch_size=0", "train.batch_size=0 is not allowed: give an integer >= 1"),
    ("eval.batch_size=0", "eval.batch_size=0 is not allowed"),
    ("protocol.shots=four", "protocol.shots='four' is not allowed: give null .* or an integer >= 1"),
    ("device=tpu", "device='tpu' is not allowed: give auto, per_job, cpu, cuda or cuda:N"),
    ("data.num_workers=-1", "data.num_workers=-1 is not allowed: give auto or an integer >= 0"),
    ("seed=abc", "seed='abc' is not allowed: give an integer"),
    ("train.optimizer.lr=-1", "train.optimizer.lr=-1 is not allowed: give a finite number > 0"),
    ("train.optimizer.momentum=1.5", "train.optimizer.momentum=1.5 is not allowed: give a number in \\[0, 1\\)"),
    ("train.augmentation=random", "train.augmentation='random' is not allowed: give model, coop or none"),
    ("eval.protocol=domain", "eval.protocol='domain' is not allowed"),
    ("progress=maybe", "progress='maybe' is not allowed: give true or false"),
    ("+train.epoch=2", "train.epoch=2 is not a setting of clprompt. Did you mean train.epochs\\?"),
    ("+eval.batchsize=4", "eval.batchsize=4 is not a setting of clprompt. Did you mean eval.batch_size\\?"),
    ("+lr=0.1", "lr=0.1 is not a setting of clprompt"),
    ("train/optimizer=adam +train.optimizer.momentum=0.9",
     "train.optimizer.momentum=0.9 is not an option of torch.optim.Adam .*: drop it with ~train.optimizer.momentum"),
    ("train.schedule=linear", "train.schedule='linear' is not allowed: give cosine \\(CoOp's\\) or constant"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_value_or_unknown_key_is_refused_naming_it_and_nothing_is_written(tmp_path, override, message):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", *override.split()])
    with pytest.raises(ConfigValueError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_shipped_composition_passes():
    for extra in (["method=maple", "scenario=split_cifar"], ["method=lamm", "protocol=robust_upl"],
                  ["method=linear_probe", "protocol=noisy", "model=vit_b16"], ["train.augmentation_views=2"],
                  ["cache.dir=null", "protocol.shots=16", "data.num_workers=4"],
                  ["method=l2p"], ["method=dualprompt", "train/optimizer=sgd"], ["train/optimizer=adam"]):
        check_config(compose_config(extra))


def test_fp16_on_cpu_is_refused_before_any_work(tmp_path):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "precision=fp16", "device=cpu"])
    with pytest.raises(ConfigValueError, match="precision=fp16 on cpu"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unknown_option_of_a_method_names_the_options(tmp_path):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=coop", "+method.ctx_len=4"])
    with pytest.raises(ConfigValueError, match="method.ctx_len is not an option of .*PromptTuning; its options: context, labels, visual, alignment"):
        run(cfg, tmp_path / "run")


def test_checkpoints_inside_an_experience_with_an_ensemble_are_refused(tmp_path):
    cfg = compose_config(["scenario=tiny_colors", "model=tiny", "method=coop", "protocol.ensemble=2",
                          "train.checkpoint_every=1"])
    with pytest.raises(ConfigValueError, match="train.checkpoint_every with an ensemble"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_method_yaml_chooses_its_optimiser_and_the_command_line_can_change_it():
    assert compose_config(["method=coda_prompt"]).train.optimizer._target_ == "torch.optim.Adam"
    assert compose_config(["method=coda_prompt"]).train.optimizer.lr == 0.001
    sgd = compose_config(["method=l2p", "train/optimizer=sgd"]).train.optimizer
    assert sgd._target_ == "torch.optim.SGD" and "betas" not in sgd and sgd.momentum == 0.9
    assert compose_config(["method=coop"]).train.optimizer._target_ == "torch.optim.SGD"
    assert compose_config(["method=vpt_deep"]).train.optimizer.lr == 0.0025


def test_the_schedules_rates():
    from types import SimpleNamespace

    from clprompt.training.strategy import PromptStrategy

    def rates(schedule, warmup):
        state = SimpleNamespace(warmup_epochs=warmup, warmup_lr=1e-5, schedule=schedule, train_epochs=4)
        return [PromptStrategy.epoch_learning_rate(state, 0.01, epoch) for epoch in range(4)]

    assert rates("constant", 0) == [0.01] * 4
    assert rates("constant", 1) == [1e-5, 0.01, 0.01, 0.01]
    assert rates("cosine", 1) == pytest.approx([1e-5, 0.01 * (1 + 2 ** -0.5) / 2, 0.005, 0.01 * (1 - 2 ** -0.5) / 2])
