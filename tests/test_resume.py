"""Kill a run anywhere (SIGKILL), run the same command again: it resumes from its last checkpoint and
ends bit-identical to the uninterrupted run (CPU), with each TensorBoard point logged once."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clprompt.records.run_folder import process_identity
from clprompt.training.checkpoint import CheckpointError
from clprompt.run import run
import warm_python
from helpers import REPO, compose_config

pytestmark = pytest.mark.filterwarnings("ignore")

# LAMM grows its labels per experience (the resume replays that growth); 3 experiences x 2 epochs x 2 steps
COMMAND = ["scenario=tiny_colors", "model=tiny", "method=lamm", "method._target_=helpers.killed_prompt_tuning",
           "train.epochs=2", "train.batch_size=4", "train.warmup_epochs=0", "progress=false", "cache.dir=null"]


def clprompt_run(run_dir, kill=None, extra=()):
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{REPO}")
    env.pop("CLPROMPT_TEST_KILL", None)
    if kill:
        env["CLPROMPT_TEST_KILL"] = kill
    return warm_python.run(["-m", "clprompt.run", *COMMAND, *extra, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env)


def scalars(run_dir, tag):
    """(step, value) of a tag; run_dir / "train" reads the per-epoch training curves."""
    folder = run_dir.parent / "tensorboard" / "train" if run_dir.name == "train" else run_dir / "tensorboard"
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    done = clprompt_run(run_dir)
    assert done.returncode == 0, done.stderr
    return run_dir


KILLS = {  # kill point -> (extra options, the resume message's tail; None: no checkpoint yet, a restart)
    "train:2": ((), None),
    "train:10": ((), "from experience 3 of 3"),
    "eval:2": ((), "from experience 2 of 3"),
    "checkpoint:2": ((), "from experience 2 of 3"),
    "train:8 every 1": (("train.checkpoint_every=1",), "from experience 2 of 3, after its epoch 1"),
}
SLOW = pytest.mark.slow  # the same path as the default ones, at other moments: python -m pytest -m slow


@pytest.mark.parametrize("kill", [pytest.param("train:2", marks=SLOW), pytest.param("train:10", marks=SLOW),
                                  "eval:2", "checkpoint:2", "train:8 every 1"], ids=[
    "training of experience 1", "training of experience 3", "evaluation after experience 2",
    "writing experience 2's checkpoint", "epoch 2 of experience 2, with a checkpoint every epoch"])
def test_killed_anywhere_and_resumed_equals_the_uninterrupted_run(tmp_path, uninterrupted, kill):
    run_dir = tmp_path / "run"
    extra, expected = KILLS[kill]
    killed = clprompt_run(run_dir, kill=kill.split()[0], extra=extra)
    assert killed.returncode == -9                       # SIGKILL: nothing could clean up
    if (run_dir / "results.json").exists():
        assert json.loads((run_dir / "results.json").read_text())["status"] == "running"   # looks alive
    resumed = clprompt_run(run_dir, extra=extra)
    assert resumed.returncode == 0, resumed.stderr
    if expected:
        assert f"resuming {run_dir} {expected}" in resumed.stdout
    results = json.loads((run_dir / "results.json").read_text())
    reference = json.loads((uninterrupted / "results.json").read_text())
    assert results["status"] == "complete" and results["accuracy_matrix"] == reference["accuracy_matrix"]
    for e in (1, 2, 3):
        ours = torch.load(run_dir / "adapted_state" / f"experience_{e}.pt", weights_only=True)
        theirs = torch.load(uninterrupted / "adapted_state" / f"experience_{e}.pt", weights_only=True)
        assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    for tag in ("accuracy/task_1", "metrics/last"):       # each point once, none lost
        assert scalars(run_dir, tag) == scalars(uninterrupted, tag)
    for tag in ("train/loss", "train/lamm_kd"):           # the per-epoch curves too (steps 1..6)
        assert scalars(run_dir / "train", tag) == scalars(uninterrupted / "train", tag)
        assert [step for step, _ in scalars(run_dir / "train", tag)] == [1, 2, 3, 4, 5, 6]
    assert not list(run_dir.glob(".checkpoint.pt.*"))     # a half-written temporary is gone or harmless
    torch.load(run_dir / "checkpoint.pt", weights_only=True)


def test_a_finished_run_is_not_run_again(tmp_path, uninterrupted):
    again = clprompt_run(uninterrupted)
    assert again.returncode == 0 and f"run {uninterrupted} is complete: not re-run" in again.stdout


def in_process(run_dir, *extra):
    cfg = compose_config([*COMMAND, *extra])
    return run(cfg, run_dir)


@pytest.fixture(scope="module")
def killed_once(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    assert clprompt_run(run_dir, kill="eval:2").returncode == -9
    return run_dir


@pytest.fixture
def killed_after_one_experience(tmp_path, killed_once):
    """A copy of a run SIGKILLed in the evaluation after experience 2 (experience 1 checkpointed)."""
    return Path(shutil.copytree(killed_once, tmp_path / "run"))


def test_a_resume_with_another_config_is_refused_naming_the_keys(killed_after_one_experience):
    run_dir = killed_after_one_experience
    with pytest.raises(CheckpointError, match=r"another config.*seed: 0 -> 1.*train.epochs: 2 -> 3"):
        in_process(run_dir, "train.epochs=3", "seed=1")
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["experiences_done"] == 1   # untouched


def test_a_damaged_or_foreign_checkpoint_is_refused_never_restarted_over(killed_after_one_experience):
    run_dir = killed_after_one_experience
    (run_dir / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="checkpoint.pt cannot be read.*is not restarted over it"):
        in_process(run_dir)
    torch.save({"format": 99}, run_dir / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a clprompt checkpoint of format 1"):
        in_process(run_dir)
    assert json.loads((run_dir / "results.json").read_text())["completed_experiences"] == 1


def test_finished_rows_without_a_checkpoint_are_refused(killed_after_one_experience):
    run_dir = killed_after_one_experience
    (run_dir / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="1 finished experience.*but no checkpoint.pt"):
        in_process(run_dir)


def test_a_run_in_progress_is_not_taken_over(killed_after_one_experience):
    run_dir = killed_after_one_experience
    results = json.loads((run_dir / "results.json").read_text())
    results["process"] = process_identity(os.getppid())   # a live process on this host (its start tick too)
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(CheckpointError, match="is being run by process"):
        in_process(run_dir)


def test_resume_takes_the_folders_recorded_command(killed_after_one_experience):
    run_dir = killed_after_one_experience
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{REPO}")
    env.pop("CLPROMPT_TEST_KILL", None)

    def resume(*extra):
        return warm_python.run(["-m", "clprompt.run", f"resume={run_dir}", *extra], cwd=REPO, env=env)
    refused = resume("train.epochs=5")
    assert refused.returncode == 1 and "would change its results: train.epochs=5" in refused.stderr
    done = resume("progress=false")
    assert done.returncode == 0, done.stderr
    assert f"resuming {run_dir} from experience 2 of 3" in done.stdout
    assert json.loads((run_dir / "results.json").read_text())["status"] == "complete"
    nowhere = warm_python.run(["-m", "clprompt.run", f"resume={run_dir / 'nope'}"], cwd=REPO, env=env, timeout=120)
    assert nowhere.returncode == 1 and "no such folder" in nowhere.stderr
