"""The command line's faults end in one line naming what was wrong and how to fix it, with exit status 1 and
nothing computed lost: an output folder that is empty, under a file, read-only, full, unwritable or named too
long; a sweep's launcher settings; resume= of no run; a file a run cannot write; a results.json the report
cannot use; and a SIGTERM to a sweep's main process, which must end its worker processes too.

The tests run as root here, where chmod does not make a folder read-only: a read-only, full or unwritable
file system is simulated by making os.mkdir / os.open / open / os.fsync raise its errno, in this process or
in the command line's (``PATCHES``); a file in the path and a 300-character name are real."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clprompt import report, run, sweep
from clprompt.errors import ConfigValueError
import warm_python
from helpers import REPO

TINY = ["scenario=tiny_colors", "model=tiny", "method=zeroshot", "progress=false"]
HEAVY = ("torch", "avalanche", "open_clip")

# Python run in the command line's process before clprompt.run: a file system's fault for one folder name.
PATCHES = {
    "read_only": """
        _mkdir = os.mkdir
        def mkdir(path, *args, **kwargs):
            if os.path.basename(str(path)) == "target":
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return _mkdir(path, *args, **kwargs)
        os.mkdir = mkdir
    """,
    "full": """
        _fsync = os.fsync
        def fsync(descriptor):
            if "/target" in os.readlink(f"/proc/self/fd/{descriptor}"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return _fsync(descriptor)
        os.fsync = fsync
    """,
    # a folder whose files cannot be created: Hydra's run.log handler would fail in logging's dictConfig
    "unwritable": """
        import builtins
        _open, _os_open = builtins.open, os.open
        def refuse(path):
            if "/target/" in str(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        def open_(file, *args, **kwargs):
            refuse(file)
            return _open(file, *args, **kwargs)
        def os_open(path, *args, **kwargs):
            refuse(path)
            return _os_open(path, *args, **kwargs)
        builtins.open, os.open = open_, os_open
    """,
    # the disk fills while a run writes its first checkpoint
    "full_at_checkpoint": """
        _replace = os.replace
        def replace(source, target, *args, **kwargs):
            if str(target).endswith("checkpoint.pt"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
            return _replace(source, target, *args, **kwargs)
        os.replace = replace
    """,
}

COMMAND = textwrap.dedent("""
    import errno, json, os, runpy, sys
    heavy_modules = json.loads(sys.argv[3])
    exec(sys.argv[1])
    sys.argv = ["clprompt.run", *json.loads(sys.argv[2])]

    def report(code):
        heavy = [m for m in heavy_modules if m in sys.modules]
        print("RESULT " + json.dumps({"code": code, "heavy": heavy}), flush=True)

    _exit = os._exit
    def reported_exit(code):   # a run that loaded torch ends with os._exit (clprompt.run.exit_without_teardown)
        report(code)
        _exit(code)
    os._exit = reported_exit
    code = 0
    try:
        runpy.run_module("clprompt.run", run_name="__main__")
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else (1 if stop.code else 0)
    report(code)
""")


def clprompt_run(cwd, *arguments, patch: str = "", env=None, timeout=300, warm=False):
    """``python -m clprompt.run <arguments>`` in ``cwd`` with a file-system fault; (exit code, heavy modules
    imported, stderr). Hydra's own short error form, as a user sees it (HYDRA_FULL_ERROR unset). ``warm``: a
    fork of tests/warm_python.py's process, for a test that does not ask which modules were imported."""
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    environment.update(env or {})
    command = ["-c", COMMAND, textwrap.dedent(PATCHES.get(patch, "")), json.dumps(list(arguments)), json.dumps(HEAVY)]
    if warm:
        done = warm_python.run(command, cwd=cwd, env=environment, timeout=timeout)
    else:
        done = subprocess.run([sys.executable, *command], cwd=cwd, env=environment, capture_output=True, text=True,
                              timeout=timeout)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    return result["code"], result["heavy"], done.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_one_line(code, stderr, *says):
    assert code == 1, stderr[-3000:]
    assert "Traceback" not in stderr and "HYDRA_FULL_ERROR" not in stderr, stderr[-3000:]
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr[-3000:]
    for text in says:
        assert text in lines[0], lines[0]
    return lines[0]


# --- the output folder --------------------------------------------------------------------------------------------

def test_an_empty_run_folder_is_refused_and_nothing_is_written_in_the_working_directory(tmp_path):
    for value in ("", "  "):
        code, heavy, stderr = clprompt_run(tmp_path, *TINY, f"hydra.run.dir={value}")
        assert_one_line(code, stderr, "hydra.run.dir is empty (an unset shell variable?)",
                        f"written into the working directory {tmp_path}", "hydra.run.dir=outputs/my_run")
        assert heavy == [] and list(tmp_path.iterdir()) == []


def test_an_empty_sweep_folder_is_refused(tmp_path):
    code, heavy, stderr = clprompt_run(tmp_path, "-m", *TINY, "seed=1,2", "hydra.sweep.dir=")
    assert_one_line(code, stderr, "hydra.sweep.dir is empty", "hydra.sweep.dir=multirun/my_sweep")
    assert heavy == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", ["a_file/run", "a_file"])
def test_a_run_folder_under_or_on_a_file_is_refused(tmp_path, folder):
    (tmp_path / "a_file").write_text("not a folder")
    code, heavy, stderr = clprompt_run(tmp_path, *TINY, f"hydra.run.dir={folder}")
    assert_one_line(code, stderr, f"hydra.run.dir={folder}: a_file is a file, not a folder",
                    "give another hydra.run.dir, or move the file away")
    assert heavy == [] and (tmp_path / "a_file").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_sweep_folder_under_a_file_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("")
    code, _, stderr = clprompt_run(tmp_path, "-m", *TINY, "seed=1,2", "hydra.sweep.dir=a_file/sweep")
    assert_one_line(code, stderr, "hydra.sweep.dir=a_file/sweep: a_file is a file, not a folder")


def test_a_folder_name_longer_than_the_file_system_allows_is_refused_and_nothing_is_left(tmp_path):
    long_name = "x" * 300
    code, heavy, stderr = clprompt_run(tmp_path, *TINY, f"hydra.run.dir=outer/{long_name}/run")
    line = assert_one_line(code, stderr, "is 300 bytes long; this file system allows 255",
                           "give a shorter hydra.run.dir")
    assert len(line) < 400 and heavy == []
    assert list(tmp_path.iterdir()) == []   # 'outer', made on the way, is removed again


@pytest.mark.parametrize("patch, says", [
    ("read_only", "the file system there is read-only: give a hydra.run.dir on a writable file system"),
    ("full", "no space left on that device"),
    ("unwritable", "permission denied"),
])
def test_a_read_only_full_or_unwritable_run_folder_is_refused_before_any_work(tmp_path, patch, says):
    (tmp_path / "target").mkdir() if patch == "unwritable" else None
    code, heavy, stderr = clprompt_run(tmp_path, *TINY, f"hydra.run.dir={tmp_path / 'target'}", patch=patch)
    assert_one_line(code, stderr, f"hydra.run.dir={tmp_path / 'target'}: {says}")
    assert "Unable to configure handler" not in stderr
    assert heavy == []   # before torch: refused before any work
    assert [p.name for p in tmp_path.iterdir()] == (["target"] if patch == "unwritable" else [])
    if patch == "unwritable":
        assert list((tmp_path / "target").iterdir()) == []


def test_a_read_only_sweep_folder_is_refused(tmp_path):
    code, _, stderr = clprompt_run(tmp_path, "-m", *TINY, "seed=1,2", f"hydra.sweep.dir={tmp_path / 'target'}",
                                   patch="read_only")
    assert_one_line(code, stderr, "hydra.sweep.dir=", "read-only")


def test_check_output_folder_answers_each_errno_and_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    target = tmp_path / "made" / "run"

    def raising(number):
        def fail(*args, **kwargs):
            raise OSError(number, os.strerror(number), str(target))
        return fail

    for name, number, says in (
            ("fsync", errno.ENOSPC, "no space left on that device (No space left on device): free space there"),
            ("fsync", errno.EDQUOT, "no space left on that device (Disk quota exceeded)"),
            ("open", errno.EROFS, "the file system there is read-only"),
            ("open", errno.EACCES, "permission denied"),
            ("open", errno.EIO, "the folder cannot be written (Input/output error)")):
        with monkeypatch.context() as patch:
            patch.setattr(os, name, raising(number))
            with pytest.raises(ConfigValueError) as refused:
                sweep.check_output_folder(str(target), "hydra.run.dir")
        assert str(refused.value).startswith(f"hydra.run.dir={target}: {says}"), str(refused.value)
        assert list(tmp_path.iterdir()) == []   # the folders made for the check are removed again
    sweep.check_output_folder(str(target), "hydra.run.dir")   # a writable folder: made, and no probe left
    assert target.is_dir() and list(target.iterdir()) == []


def test_a_normal_run_folder_is_made_and_keeps_nothing_of_the_check(tmp_path):
    code, _, stderr = clprompt_run(tmp_path, *TINY, "hydra.run.dir=run", "train.epochs=-1")
    assert code == 1 and len(error_lines(stderr)) == 1 and "train.epochs=-1" in stderr
    assert not any(p.name.startswith(sweep.PROBE_FILE) for p in (tmp_path / "run").iterdir())


# --- the launcher --------------------------------------------------------------------------------------------------

def test_joblib_with_no_jobs_at_once_is_refused_before_the_sweep(tmp_path):
    code, heavy, stderr = clprompt_run(tmp_path, "-m", *TINY, "seed=1,2", "hydra/launcher=joblib",
                                       "hydra.launcher.n_jobs=0", "hydra.sweep.dir=sweep")
    assert_one_line(code, stderr, "hydra.launcher.n_jobs=0 is not allowed", "an integer >= 1", "-1")
    assert heavy == [] and not (tmp_path / "sweep").exists()


def test_the_slurm_launcher_without_slurm_says_where_to_run(tmp_path):
    path = os.path.dirname(sys.executable)   # python, and no sbatch or srun
    code, heavy, stderr = clprompt_run(tmp_path, "-m", *TINY, "seed=1,2", "hydra/launcher=slurm",
                                       "hydra.sweep.dir=sweep", env={"PATH": path})
    assert_one_line(code, stderr, "hydra/launcher=slurm submits the sweep to SLURM, but sbatch and srun are not on "
                    "this machine's PATH", "the cluster's login node", "hydra/launcher=joblib")
    assert "Could not detect" not in stderr and heavy == [] and not (tmp_path / "sweep").exists()


def test_check_slurm_launcher_names_only_the_missing_command(monkeypatch):
    from omegaconf import OmegaConf

    config = OmegaConf.create({"hydra": {"launcher": {"_target_": "x.SlurmLauncher"},
                                         "runtime": {"choices": {"hydra/launcher": "slurm"}}}})
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None if name == "srun" else f"/usr/bin/{name}")
    with pytest.raises(ConfigValueError, match="but srun is not on this machine's PATH"):
        sweep.check_slurm_launcher(config)
    monkeypatch.setattr(sweep.shutil, "which", lambda name: f"/usr/bin/{name}")
    sweep.check_slurm_launcher(config)   # on a cluster: nothing to say
    sweep.check_slurm_launcher(OmegaConf.create({"hydra": {"launcher": {"_target_": "x.JoblibLauncher"}}}))


# --- resume= -------------------------------------------------------------------------------------------------------

def test_resume_of_no_run_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    (tmp_path / "cut" / ".hydra").mkdir(parents=True)
    (tmp_path / "cut" / ".hydra" / "overrides.yaml").write_text("- method=coop\n- [unclosed")
    (tmp_path / "mapping" / ".hydra").mkdir(parents=True)
    (tmp_path / "mapping" / ".hydra" / "overrides.yaml").write_text("method: coop\n")
    for given, says in (("", "resume= is empty"), (str(tmp_path / "nope"), "no such folder"),
                        (str(tmp_path / "a_file"), "is a file, not a run folder"),
                        (str(tmp_path / ("z" * 300)), "cannot be read (File name too long)"),
                        (str(tmp_path), "no run there"),
                        (str(tmp_path / "cut"), "is not a readable record of the command"),
                        (str(tmp_path / "mapping"), "holds no list of overrides")):
        with pytest.raises(SystemExit) as stop:
            run.resume_arguments(["run", f"resume={given}"])
        message = str(stop.value.code)
        assert message.startswith("error: ") and says in message and "\n" not in message, message


# --- a file the run cannot write -----------------------------------------------------------------------------------

def test_a_disk_that_fills_during_a_run_ends_in_one_line_and_keeps_the_finished_rows(tmp_path):
    out = tmp_path / "run"
    code, _, stderr = clprompt_run(tmp_path, "scenario=tiny_colors", "model=tiny", "method=coop", "train.epochs=2",
                                   "train.warmup_epochs=0", "progress=false", f"hydra.run.dir={out}",
                                   patch="full_at_checkpoint", warm=True)
    assert_one_line(code, stderr, f"could not write {out / 'checkpoint.pt'}: No space left on device: free space",
                    f"kept in {out / 'results.json'}")
    results = json.loads((out / "results.json").read_text())
    assert results["status"].startswith("failed: OSError") and results["accuracy_matrix"][0][0] is not None


def test_a_failure_that_cannot_be_recorded_is_still_one_line(tmp_path, monkeypatch):
    def full(path, content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(sweep, "write_json_atomic", full)
    from omegaconf import OmegaConf

    sweep.record_failure(OmegaConf.create({"seed": 0}), tmp_path, ConfigValueError("x"))   # logged, not raised
    assert not (tmp_path / "results.json").exists()


# --- the report ----------------------------------------------------------------------------------------------------

def a_run(seed: int, last: float = 60.0) -> dict:
    return {"scenario": "shapes_palette", "method": "coop", "seed": seed, "status": "complete",
            "metrics": {"last": last, "avg": last}, "config": {"model": {"arch": "tiny"}},
            "accuracy_matrix": [[last]]}


BAD_RESULTS = {
    "a list": (b"[1, 2]", "unusable: it holds [1, 2], not an object of a run's results"),
    "a number": (b"3.5", "unusable: it holds 3.5, not an object"),
    "a text metric": (json.dumps({**a_run(3), "metrics": {"last": "abc"}}).encode(),
                      'unusable: metrics.last is "abc", not a finite number'),
    "a list metric": (json.dumps({**a_run(3), "metrics": {"last": [1, 2]}}).encode(),
                      "unusable: metrics.last is [1, 2], not a finite number"),
    "a bool metric": (json.dumps({**a_run(3), "metrics": {"last": True}}).encode(),
                      "unusable: metrics.last is true, not a finite number"),
    "a text in the matrix": (json.dumps({**a_run(3), "accuracy_matrix": [["a"]]}).encode(),
                             "unusable: accuracy_matrix is [[\"a\"]], not a list of rows of numbers"),
    "a list for the experiment": (json.dumps({**a_run(3), "experiment": [1]}).encode(),
                                  "unusable: experiment is [1], not an object"),
    "a text for the shots": (json.dumps({**a_run(3), "experiment": {"shots": "16"}}).encode(),
                             'unusable: experiment.shots is "16", not an integer'),
    "empty": (b"", "unreadable: the file is empty"),
    "cut short": (json.dumps(a_run(3)).encode()[:40], "unreadable: not valid JSON, cut short or edited"),
    "not UTF-8": (b'{"status": "complete", "method": "\xff\xfe"}', "unreadable: not UTF-8 text"),
}


def sweep_with(tmp_path, content: bytes) -> Path:
    folder = tmp_path / "sweep"
    for num, results in enumerate([a_run(1, 60.0), a_run(2, 62.0)]):
        (folder / f"{num}_good").mkdir(parents=True)
        (folder / f"{num}_good" / "results.json").write_text(json.dumps(results))
    (folder / "9_bad").mkdir()
    (folder / "9_bad" / "results.json").write_bytes(content)
    return folder


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_a_results_json_the_report_cannot_use_is_skipped_with_one_warning(tmp_path, capsys, case):
    content, why = BAD_RESULTS[case]
    built = report.main([str(sweep_with(tmp_path, content)), "--metric", "last"])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "9_bad" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"  9_bad: {why}"), captured.err
    assert "| coop | 61.00 ± 1.41 |" in built.markdown   # the other runs are tabulated
    assert "1 run(s) skipped" in built.markdown and "9_bad" in built.markdown
    assert "Traceback" not in captured.err


def test_a_report_with_nothing_usable_left_is_refused(tmp_path):
    folder = tmp_path / "sweep" / "0_bad"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text("[]")
    with pytest.raises(SystemExit, match="none of the 1 run.*is complete and readable"):
        report.main([str(tmp_path / "sweep")])


def test_a_continual_report_says_how_many_runs_it_skipped(tmp_path):
    folder = sweep_with(tmp_path, b"[]")
    for path in folder.glob("*_good/results.json"):
        results = json.loads(path.read_text())
        results["accuracy_matrix"] = [[60.0, 50.0], [55.0, 65.0]]
        path.write_text(json.dumps(results))
    built = report.main([str(folder)])
    assert "continual-learning metrics" in built.markdown and "1 run(s) skipped" in built.markdown


def test_a_report_that_cannot_be_written_prints_its_tables_and_says_where(tmp_path, capsys):
    folder = sweep_with(tmp_path, b"[]")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match=r"report.md and report.csv cannot be written in .*a_file/out .*give --out"):
        report.main([str(folder), "--out", str(tmp_path / "a_file" / "out")])
    assert "| coop |" in capsys.readouterr().out


def test_a_report_of_a_folder_name_too_long_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="clprompt.report: "):
        report.main([str(tmp_path / ("y" * 300))])


# --- a stopped sweep leaves no process behind ---------------------------------------------------------------------

JOB = textwrap.dedent("""
    # a sweep's worker: runs a job (claims its folder), records the interruption on SIGTERM, then idles on
    # like loky's worker, deaf to a second SIGTERM; its own child (a loader worker) sleeps
    import json, os, signal, subprocess, sys, time
    folder = sys.argv[1]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(1)   # recording takes a while: stop_jobs waits for it
        with open(os.path.join(folder, "results.json"), "w") as handle:
            json.dump({"status": "interrupted (SIGTERM)", "process": {"pid": os.getpid()}}, handle)
        os.remove(os.path.join(folder, ".clprompt_claim.json"))
    signal.signal(signal.SIGTERM, stop)
    with open(os.path.join(folder, ".clprompt_claim.json"), "w") as handle:
        json.dump({"pid": os.getpid()}, handle)
    while True:
        time.sleep(0.1)
""")

SWEEP_MAIN = textwrap.dedent("""
    import json, subprocess, sys, time
    from pathlib import Path
    import psutil
    from clprompt import sweep
    folder = Path(sys.argv[1])
    jobs = []
    for name in ("0_job", "1_job"):
        (folder / name).mkdir(parents=True)
        jobs.append(subprocess.Popen([sys.executable, "-c", sys.argv[2], str(folder / name)]))
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])   # a worker with no job
    while not all((folder / name / ".clprompt_claim.json").exists() for name in ("0_job", "1_job")):
        time.sleep(0.05)
    time.sleep(0.3)
    tree = [p.pid for p in psutil.Process().children(recursive=True)]
    stopped = sweep.stop_jobs(folder, grace_s=20)
    alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    print("RESULT " + json.dumps({"tree": len(tree), "stopped": sorted(f.name for f in stopped.values()),
                                  "alive": alive}))
""")


def test_stop_jobs_lets_the_running_jobs_record_then_ends_every_process_of_the_sweep(tmp_path):
    done = subprocess.run([sys.executable, "-c", SWEEP_MAIN, str(tmp_path / "sweep"), JOB], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, done.stderr[-3000:]
    result = json.loads(line[len("RESULT "):])
    assert result["tree"] == 5 and result["stopped"] == ["0_job", "1_job"] and result["alive"] == []
    for name in ("0_job", "1_job"):
        assert json.loads((tmp_path / "sweep" / name / "results.json").read_text())["status"] == "interrupted (SIGTERM)"


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(pids) -> list[int]:
    import psutil

    def running(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    return [pid for pid in pids if running(pid)]


def finished_experiences(sweep_dir: Path) -> dict:
    """job folder -> experiences its results.json records as finished (those with at least one)."""
    counts = {}
    for path in sweep_dir.glob("*/results.json"):
        try:
            counts[path.parent.name] = json.loads(path.read_text()).get("completed_experiences", 0)
        except ValueError:   # being replaced right now
            continue
    return {job: count for job, count in counts.items() if count >= 1}


@pytest.mark.slow
def test_a_sigterm_to_a_joblib_sweep_ends_its_workers_and_keeps_the_finished_experiences(tmp_path):
    """The issue: after a SIGTERM to the sweep's main process, loky's workers (about 1 GB each) went on with
    their jobs, and the ones queued to them, for minutes after the sweep had ended."""
    sweep_dir = tmp_path / "sweep"
    environment = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    with open(tmp_path / "stderr.txt", "w") as log:   # a file: the jobs' log lines would fill a pipe
        main = subprocess.Popen([sys.executable, "-m", "clprompt.run", "-m", "hydra/launcher=joblib",
                                 "hydra.launcher.n_jobs=2", "scenario=tiny_colors", "model=tiny", "method=coop",
                                 "train.epochs=300", "train.warmup_epochs=0", "progress=false", "seed=1,2,3",
                                 f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, env=environment,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while not finished_experiences(sweep_dir) and time.monotonic() < deadline:
                assert main.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
                time.sleep(0.5)
            before = finished_experiences(sweep_dir)
            assert before, "no job finished an experience in time"
            workers = descendants(main.pid)
            assert workers
            main.send_signal(signal.SIGTERM)
            main.wait(timeout=120)
        finally:
            if main.poll() is None:   # the test failed: leave no process of its sweep behind either
                left = descendants(main.pid)
                main.kill()
                for pid in alive(left):
                    os.kill(pid, signal.SIGKILL)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert main.returncode == 143, stderr[-3000:]
    assert "interrupted (SIGTERM): the sweep's jobs were stopped" in stderr
    assert "Traceback" not in stderr.split("interrupted (SIGTERM): the sweep's")[-1]
    deadline = time.monotonic() + 10
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(workers) == []
    statuses = {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}
    assert statuses and all(r["status"] in ("interrupted (SIGTERM)", "complete") for r in statuses.values()), \
        ({name: r["status"] for name, r in statuses.items()}, stderr[-4000:])
    after = finished_experiences(sweep_dir)
    assert all(after.get(job, 0) >= count for job, count in before.items())   # nothing finished is lost
