"""Faults as a user meets them: a sweep goes on past a failed job; SIGTERM / Ctrl-C are recorded."""

import json
import os

import pytest

import warm_python
from helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore")


def clprompt_run(*args, env=None):
    """The command in a process of its own (a fork of tests/warm_python.py's, which receives SIGINT as from a
    terminal: a shell's background job, a CI runner's, inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="0", PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{REPO}", **(env or {}))
    return warm_python.run(["-m", "clprompt.run", *args], cwd=REPO, env=env)


def test_a_sweep_goes_on_past_a_failed_job_and_its_exit_status_says_so(tmp_path):
    sweep = tmp_path / "sweep"
    done = clprompt_run("-m", "scenario=split_cifar,tiny_colors", "method=zeroshot", "model=tiny",
                        f"data.root={tmp_path / 'no_data'}", "progress=false", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 1
    assert "2 job(s), 1 complete, 1 failed" in done.stderr and "CIFAR-100 not found" in done.stderr
    failed = json.loads((sweep / "0_split_cifar_zeroshot" / "results.json").read_text())
    assert failed["status"].startswith("failed: DatasetNotFoundError") and failed["scenario"] == "split_cifar"
    assert json.loads((sweep / "1_tiny_colors_zeroshot" / "results.json").read_text())["status"] == "complete"
    report = warm_python.run(["-m", "clprompt.report", str(sweep)], cwd=REPO, timeout=120)
    assert report.returncode == 0 and "0_split_cifar_zeroshot: failed: DatasetNotFoundError" in report.stderr


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_an_interrupted_run_says_so_in_one_line_and_keeps_its_rows(tmp_path, name, code):
    out = tmp_path / "run"
    done = clprompt_run("scenario=tiny_colors", "model=tiny", "progress=false", f"hydra.run.dir={out}",
                        "method._target_=helpers.signalling_zeroshot_on_second_evaluation",
                        env={"CLPROMPT_TEST_SIGNAL": name})
    assert done.returncode == code
    assert "Traceback" not in done.stderr
    assert f"interrupted ({name}): the finished experiences are kept in {out / 'results.json'}" in done.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == f"interrupted ({name})" and results["completed_experiences"] == 1
    assert results["process"]["pid"] > 0 and results["process"]["host"]


@pytest.mark.parametrize("after", ["carry_on", "error"])
def test_a_stop_whose_exception_was_discarded_still_stops_the_run_and_the_sweep(tmp_path, after):
    """Seen on the H200: SIGTERM landed in filelock's fork hook, which discarded the exception; the run went on,
    failed at the next fork, and the sweep started its next job. The stop is remembered and raised again at
    the next step, and an error it causes first is recorded as the interruption."""
    sweep = tmp_path / "sweep"
    done = clprompt_run("-m", "scenario=tiny_colors", "model=tiny", "method=coop", "progress=false", "cache.dir=null",
                        "method._target_=helpers.discarded_sigterm_prompt_tuning", "train.epochs=2",
                        "train.warmup_epochs=0", "train.batch_size=4", "seed=1,2", f"hydra.sweep.dir={sweep}",
                        env={"CLPROMPT_TEST_AFTER": after})
    assert done.returncode == 143, done.stderr
    results = json.loads((sweep / "0_tiny_colors_coop" / "results.json").read_text())
    assert results["status"] == "interrupted (SIGTERM)" and results["completed_experiences"] == 0
    assert not (sweep / "1_tiny_colors_coop").exists()   # the sweep stopped: no next job
