"""One run per folder, and a folder's record is true: a run claims its folder before any work (a second run
is refused while the first lives; a dead or recycled owner's claim is taken over), a finished folder is
reused only by its own command, a refused command leaves the folder's files as they were, a folder with a
checkpoint but no results.json resumes from the checkpoint, and an experience whose training diverged is not
kept as finished."""

import hashlib
import json
import os

import numpy as np
import pytest

from clprompt.errors import ParametersDivergedError
from clprompt.records import run_folder
from clprompt.records.run_folder import CLAIM, RunFolderBusy, RunFolderRefused, claim, is_alive, process_identity
from clprompt.run import run
import warm_python
from helpers import REPO, compose_config

pytestmark = pytest.mark.filterwarnings("ignore")

COMMAND = ["scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=2", "train.warmup_epochs=0",
           "progress=false", "cache.dir=null"]


def digests(folder):
    """Every file under the folder (but the claim) and its content's digest."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CLAIM}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished")
    results = run(compose_config(COMMAND), run_dir)
    return run_dir, results


def test_a_process_is_known_by_its_start_not_only_its_pid():
    parent = process_identity(os.getppid())
    assert is_alive(parent)
    assert not is_alive(dict(parent, start_ticks=parent["start_ticks"] + 1))   # the pid recycled by another process
    assert not is_alive(dict(parent, boot_id="another-boot"))
    assert not is_alive(dict(parent, host="elsewhere")) and not is_alive(process_identity())   # not this process
    assert not is_alive({"pid": 2 ** 22 + 7, "host": parent["host"]})


def test_a_live_claim_refuses_a_second_run_and_touches_nothing(finished, tmp_path):
    run_dir, _ = finished
    before = digests(run_dir)
    (run_dir / CLAIM).write_text(json.dumps(process_identity(os.getppid())))
    try:
        with pytest.raises(RunFolderBusy, match=r"is being run by process \d+ .*two runs in one folder"):
            run(compose_config(COMMAND), run_dir)
    finally:
        (run_dir / CLAIM).unlink()
    assert digests(run_dir) == before


@pytest.mark.parametrize("owner", ["dead", "recycled", "cut short"])
def test_a_stale_claim_is_taken_over_and_released(tmp_path, owner):
    parent = process_identity(os.getppid())
    stale = {"dead": json.dumps({"pid": 2 ** 22 + 7, "host": parent["host"]}),
             "recycled": json.dumps(dict(parent, start_ticks=parent["start_ticks"] + 1)), "cut short": '{"pid": 1'}
    (tmp_path / CLAIM).write_text(stale[owner])
    mine = claim(tmp_path)
    assert json.loads((tmp_path / CLAIM).read_text())["pid"] == os.getpid()
    assert not run_folder._create(tmp_path / CLAIM, {})   # held: no other claimant can create it
    mine.release()
    assert not (tmp_path / CLAIM).exists()


def test_the_claim_is_released_however_the_run_ends(finished, tmp_path):
    run_dir, _ = finished
    assert not (run_dir / CLAIM).exists()
    with pytest.raises(ParametersDivergedError):
        run(compose_config(COMMAND + ["train.epochs=1", "train.optimizer.lr=1e30"]), tmp_path)
    assert not (tmp_path / CLAIM).exists()


def test_a_finished_folder_refuses_another_command_naming_the_keys(finished):
    run_dir, results = finished
    before = digests(run_dir)
    with pytest.raises(RunFolderRefused, match=r"finished run of another command.*train.optimizer.lr: 0.002 -> 0.01"):
        run(compose_config(COMMAND + ["train.optimizer.lr=0.01"]), run_dir)
    assert digests(run_dir) == before
    again = run(compose_config(COMMAND + ["progress=true"]), run_dir)   # its own command (a neutral key may change)
    assert again["accuracy_matrix"] == results["accuracy_matrix"] and digests(run_dir) == before


def test_a_checkpoint_without_results_json_resumes_from_it(finished, tmp_path):
    run_dir, results = finished
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes())
    resumed = run(compose_config(COMMAND), copy)
    assert resumed["status"] == "complete"
    assert np.allclose(np.array(resumed["accuracy_matrix"], dtype=float),
                       np.array(results["accuracy_matrix"], dtype=float), equal_nan=True)


def test_a_diverged_experience_is_not_kept(tmp_path):
    """lr 1e30 keeps the loss finite on tiny_colors (it used to finish at 50/50/50, checkpointed)."""
    with pytest.raises(ParametersDivergedError, match=r"experience 1's training diverged.*context.*beyond 10000.*"
                                                      r"Lower train.optimizer.lr \(now 1e\+30\)"):
        run(compose_config(COMMAND + ["train.epochs=1", "train.optimizer.lr=1e30"]), tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["completed_experiences"] == 0 and written["status"].startswith("failed: ParametersDivergedError")
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "adapted_state").exists()


def test_a_refused_command_leaves_the_record_and_the_log_as_they_were(tmp_path):
    """From the command line: Hydra's record (.hydra/overrides.yaml, which resume= replays) and run.log."""
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def command(*extra):
        return warm_python.run(["-m", "clprompt.run", *COMMAND, *extra, f"hydra.run.dir={tmp_path}"], cwd=REPO,
                               env=env)
    assert command().returncode == 0
    before = digests(tmp_path)
    assert ".hydra/overrides.yaml" in before and "run.log" in before
    refused = command("train.optimizer.lr=0.01")
    assert refused.returncode == 1 and "finished run of another command" in refused.stderr
    assert digests(tmp_path) == before


def test_the_same_weights_file_elsewhere_is_the_same_weights():
    from clprompt.stages import weights_differences

    then = {"arch": "miniclip", "source": "file", "pretrained": "/a/miniclip.safetensors", "sha256": "ab"}
    assert weights_differences(then, dict(then, pretrained="/b/miniclip.safetensors")) == []
    assert weights_differences(then, dict(then, pretrained="/b/other.safetensors", sha256="cd")) == ["pretrained",
                                                                                                     "sha256"]
    tagged = {"arch": "ViT-B-16", "source": "tag", "pretrained": "openai"}
    assert weights_differences(tagged, dict(tagged, pretrained="laion2b_s34b_b88k")) == ["pretrained"]


def test_a_sweep_counts_the_jobs_a_folder_refused(tmp_path, capsys):
    """A job refused for holding another run leaves its results.json as it was, so the sweep's summary
    counts it from the sweep's own note (a sweep over an earlier sweep's folder used to say "0 job(s)")."""
    import time

    from omegaconf import OmegaConf

    from clprompt.sweep import SweepSummary, note_failure

    job = tmp_path / "0_tiny_colors_coop"
    job.mkdir()
    (job / "results.json").write_text(json.dumps({"status": "complete"}))
    earlier = time.time() - 600
    os.utime(job / "results.json", (earlier, earlier))   # the earlier sweep's finished run
    summary = SweepSummary()
    note_failure(job, RunFolderRefused("holds a finished run of another command"))
    with pytest.raises(SystemExit) as stop:
        summary.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert stop.value.code == 1
    printed = capsys.readouterr().err
    assert "1 job(s), 0 complete, 1 failed" in printed and "RunFolderRefused" in printed
    assert json.loads((job / "results.json").read_text()) == {"status": "complete"}
