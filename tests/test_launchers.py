"""Scaling out on existing engines: Hydra's joblib and submitit launchers run a sweep's jobs in parallel
processes, a SLURM config with the cluster's keys, a sweep's jobs spread over the GPUs, a lab's own
YAMLs outside the repository, and the installed version on the command line."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from clprompt import config_dir, run, stages
from clprompt.errors import ClpromptError
import warm_python
from helpers import REPO

TINY = ["scenario=tiny_colors", "model=tiny", "progress=false", "train.epochs=2", "train.warmup_epochs=0",
        "device=per_job"]


def clprompt_run(arguments: list[str], cwd, timeout=600, fresh=False) -> subprocess.CompletedProcess:
    """``fresh``: a new interpreter (a launcher starts worker processes of its own), else a fork of
    tests/warm_python.py's process."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    if fresh:
        return subprocess.run([sys.executable, "-m", "clprompt.run", *arguments], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, env=env)
    return warm_python.run(["-m", "clprompt.run", *arguments], cwd=cwd, env=env, timeout=timeout)


def sweep_results(sweep) -> dict:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(sweep.rglob("results.json"))}


@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    pytest.param(["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "hydra.launcher.cpus_per_task=1"],
                 marks=pytest.mark.slow),   # the same Hydra launcher path as joblib's, through submitit
], ids=["joblib", "submitit_local"])
def test_a_sweep_runs_its_jobs_through_a_launcher_and_reports(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    done = clprompt_run(["-m", *launcher, *TINY, "method=zeroshot,coop", f"hydra.sweep.dir={sweep}"], REPO, fresh=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = sweep_results(sweep)
    assert sorted(results) == ["0_tiny_colors_zeroshot", "1_tiny_colors_coop"]
    assert all(r["status"] == "complete" and r["device"] == "cpu" for r in results.values())
    assert results["1_tiny_colors_coop"]["process"]["pid"] != results["0_tiny_colors_zeroshot"]["process"]["pid"] \
        or launcher[0].endswith("submitit_local")   # joblib's pool may reuse a worker; each job still completes
    report = warm_python.run(["-m", "clprompt.report", str(sweep)], cwd=REPO)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| zeroshot |" in report.stdout and "| coop |" in report.stdout


def test_the_slurm_launcher_config_has_the_clusters_keys():
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           "hydra.launcher.timeout_min=30"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.array_parallelism) == \
        ("gpu", 1, 30, 64)


def test_a_launcher_that_is_not_installed_names_the_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="hydra-joblib-launcher, which is not installed.*clprompt\\[launchers\\]"):
        run.check_launcher(["run", "-m", "hydra/launcher=joblib", "method=coop"])
    run.check_launcher(["run", "method=coop"])   # no launcher named: nothing to check


def test_each_job_of_a_sweep_gets_its_own_gpu(monkeypatch):
    assert stages.resolve_device("per_job") == torch.device("cpu") or torch.cuda.is_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for job, expected in ((0, "cuda:0"), (1, "cuda:1"), (2, "cuda:0"), (5, "cuda:1")):
        monkeypatch.setattr(stages, "job_number", lambda job=job: job)
        assert stages.resolve_device("per_job") == torch.device(expected)
    assert stages.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ClpromptError, match="device=cuda:2 but this machine has 2 GPU.*cuda:0 to cuda:1.*per_job"):
        stages.resolve_device("cuda:2")


def test_a_labs_own_method_yaml_outside_the_repository(tmp_path):
    lab = tmp_path / "lab_configs"
    (lab / "method").mkdir(parents=True)
    (lab / "method" / "coop_short.yaml").write_text(
        "# @package _global_\n"
        "method:\n"
        "  _target_: clprompt.methods.prompt_tuning.PromptTuning\n"
        "  context: {_target_: clprompt.parts.context.LearnedContext, length: 2}\n"
        "  labels: {_target_: clprompt.parts.labels.NameLabels}\n"
        "train:\n"
        "  epochs: 2\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = clprompt_run([f"hydra.searchpath=[file://{lab}]", "method=coop_short", *TINY[:3], "train.warmup_epochs=0",
                         "hydra.run.dir=run"], elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((elsewhere / "run" / "results.json").read_text())
    assert results["method"] == "coop_short" and results["config"]["method"]["context"]["length"] == 2
    assert results["storage"]["adapted_state_bytes"][0] > 0   # its two context vectors were learned and saved


def test_the_version_names_clprompt_and_its_commit():
    for command in ([sys.executable, "-m", "clprompt", "--version"], [sys.executable, "-m", "clprompt.run", "--version"]):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("clprompt 0.1.0 (commit ") and "torch" in done.stdout
        # read without importing them, yet the versions this interpreter imports
        import avalanche
        import open_clip
        assert f"torch {torch.__version__}," in done.stdout and f"open_clip {open_clip.__version__}," in done.stdout
        assert done.stdout.strip().endswith(f"avalanche {avalanche.__version__}")
    heavy = subprocess.run([sys.executable, "-c", "import sys; from clprompt.run import version_line; version_line(); "
                            "print(sorted({'torch', 'open_clip', 'avalanche'} & set(sys.modules)))"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert heavy.stdout.strip() == "[]", heavy.stderr[-2000:]
