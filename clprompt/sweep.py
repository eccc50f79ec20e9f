"""The command's Hydra callback: the output folder and the launcher are checked before any work, a sweep
goes on past a failed job and says at the end how many failed, and a stopped sweep leaves no process behind.

Before any work (``SweepSummary.on_run_start`` / ``on_multirun_start``, which Hydra calls once the config is
composed and before it creates the run folder, sets up ``run.log`` or starts a launcher): ``hydra.run.dir``
(``hydra.sweep.dir`` for -m) must not be empty (an unset shell variable would write the run into the working
directory) and must be a folder this process can create and write: ``check_output_folder`` makes it and
writes a probe file there, so a file in its path, a read-only or full file system, a name longer than the
file system allows or a folder without write permission ends in one line naming the folder and the fix, not
in a traceback from Hydra's ``mkdir`` or logging's handler setup. A sweep's launcher settings are checked
too (``hydra.launcher.n_jobs=0``; the SLURM launcher on a machine without ``sbatch`` / ``srun``).

A job of a sweep that stops on a clear error (missing data, a bad option: clprompt's own errors)
records ``status: failed: ...`` in its ``results.json`` (written here when the run had not written one
yet; a single run writes nothing for a bad option) and returns, so Hydra's launcher starts the next job;
``SweepSummary``, a Hydra callback registered in ``configs/config.yaml``, lists the sweep's failed jobs when it ends and makes the sweep's exit status 1
if any failed. ``python -m clprompt.report`` lists them too. Errors that are bugs (a traceback) are left
to Hydra, which also finishes the sweep's jobs before it raises.

A SIGTERM to a sweep's main process (a scheduler's pre-emption, ``kill``) stops its jobs (``SweepStop``):
joblib's and submitit's local workers are separate processes that outlive their parent (loky keeps its
workers for reuse, and a worker goes on with the jobs already queued to it), so the jobs running are sent
SIGTERM and given ``STOP_GRACE_S`` to record their interruption, and then every process the sweep started
(workers, their loader workers) is killed; the sweep exits with status 143.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from clprompt.config_check import check_launcher
from clprompt.errors import ConfigValueError
from scenarios.atomic_write import write_json_atomic

log = logging.getLogger("clprompt")

STOP_GRACE_S = 30.0   # how long a stopped sweep's running jobs get to record their interruption (Slurm's KillWait)
CLAIM_FILE = ".clprompt_claim.json"   # a running job's claim on its folder (clprompt/records/run_folder.py;
                                      # not imported: it loads torch, which a sweep's main process never needs)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def fail(cfg: DictConfig, run_dir: Path, error: BaseException):
    """A run stopped by a user error (a bad setting, a missing dataset): the message on stderr and in the
    log; in a sweep the failure is recorded and the sweep goes on (``SweepSummary`` counts it at its end),
    else the process exits with status 1."""
    log.error("%s", error)
    print(f"error: {error}", file=sys.stderr)
    if in_multirun():
        record_failure(cfg, run_dir, error)
        return {"status": "failed", "error": str(error)}
    sys.exit(1)


def record_failure(cfg: DictConfig, run_dir: Path, error: BaseException) -> None:
    """``results.json`` with the failed status when the run stopped before writing one (e.g. its dataset
    is missing); a run that wrote one already recorded its status and finished rows itself. A folder that
    cannot take it (the disk is full: often the failure itself) leaves the record to the log and stderr."""
    path = Path(run_dir) / "results.json"
    if path.exists():   # the run wrote its own record, or the folder holds another run's (a refused command)
        note_failure(run_dir, error)
        return
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    try:
        write_json_atomic(path, {
            "scenario": choices.get("scenario"), "method": choices.get("method"),
            "status": f"failed: {type(error).__name__}: {error}", "completed_experiences": 0,
            "config": OmegaConf.to_container(cfg, resolve=False),
        })
    except OSError as unwritable:
        log.error("the failure could not be recorded in %s: %s", path, unwritable)


FAILURE_NOTES = ".clprompt_failed"   # in the sweep folder: one note per job that failed beside a results.json


def note_failure(run_dir: Path, error: BaseException) -> None:
    """The sweep's own note of a job that failed where the folder's results.json is not this job's record
    (a folder refused for holding another run keeps its files as they were): ``SweepSummary`` counts it."""
    folder = Path(run_dir).parent / FAILURE_NOTES
    try:
        folder.mkdir(exist_ok=True)
        (folder / f"{Path(run_dir).name}.txt").write_text(f"failed: {type(error).__name__}: {error}\n")
    except OSError as unwritable:
        log.error("the failure of %s could not be noted in %s: %s", run_dir, folder, unwritable)


# --- the output folder, before any work -----------------------------------------------------------------------

PROBE_FILE = ".clprompt-write-probe"


def check_output_folder(folder: str, key: str) -> None:
    """Refuse (ConfigValueError naming ``key``) an output folder that is empty or that this process cannot
    create and write a file in. The folder is created (Hydra would create it next) and a small probe file
    written, synced and removed: the same operations Hydra's ``mkdir``, its ``run.log`` handler and the run's
    first records make, so each way they fail is answered here, before anything else is done. A refused
    folder is left as it was: the folders made for it are removed again."""
    if not str(folder).strip():
        what = "run" if "run" in key else "sweep's runs"
        raise ConfigValueError(
            f"{key} is empty (an unset shell variable?): the {what} would be written into the working directory "
            f"{os.getcwd()}. Give a folder, e.g. {key}={'outputs/my_run' if 'run' in key else 'multirun/my_sweep'}, "
            f"or leave {key} out for the default")
    path = Path(folder).expanduser()
    made = [part for part in [*reversed(path.parents), path] if not _exists(part)]
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_probe(path)
    except OSError as error:
        for part in reversed(made):
            try:
                part.rmdir()
            except OSError:
                pass
        raise ConfigValueError(folder_problem(path, key, error)) from error


def write_probe(folder: Path) -> None:
    """A small file created, written, synced and removed in ``folder``: raises what a full, read-only or
    unwritable folder raises."""
    probe = folder / f"{PROBE_FILE}-{os.getpid()}"
    descriptor = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(descriptor, b"clprompt checks that this folder takes a file\n")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
        probe.unlink(missing_ok=True)


def folder_problem(path: Path, key: str, error: OSError) -> str:
    """One line for an output folder that could not be created or written: what was wrong, and the fix."""
    shown = str(path) if len(str(path)) <= 100 else f"{str(path)[:50]}...{str(path)[-30:]}"
    where = f"{key}={shown}"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = first_non_folder(path)
        return (f"{where}: {blocking} is a file, not a folder: give another {key}, or move the file away")
    if error.errno == errno.ENAMETOOLONG:
        return f"{where}: {name_too_long(path)}: give a shorter {key}"
    if error.errno == errno.EROFS:
        return f"{where}: the file system there is read-only: give a {key} on a writable file system"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}: no space left on that device ({error.strerror}): free space there, or give a {key} "
                "on another disk")
    if error.errno in (errno.EACCES, errno.EPERM):
        return (f"{where}: permission denied ({error.filename or path}): give a folder you can write to, or make it "
                "writable (chmod u+w)")
    return f"{where}: the folder cannot be written ({error.strerror or error}): give another {key}"


def first_non_folder(path: Path) -> Path:
    """The first existing component of ``path`` (from its root down) that is not a folder; ``path`` itself if
    none is found (the file appeared and went)."""
    for part in [*reversed(path.parents), path]:
        if _exists(part) and not part.is_dir():
            return part
    return path


def name_too_long(path: Path) -> str:
    """Which name is too long, and the file system's limit (NAME_MAX of the deepest existing folder)."""
    existing = next((parent for parent in [path, *path.parents] if _exists(parent)), Path("."))
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    longest = max(path.parts, key=lambda part: len(part.encode()))
    if len(longest.encode()) > name_max:
        shown = longest if len(longest) <= 40 else f"{longest[:20]}...{longest[-12:]}"
        return (f"the folder name '{shown}' is {len(longest.encode())} bytes long; this file system allows "
                f"{name_max}")
    return f"the path is {len(str(path).encode())} bytes long; this file system allows {path_max}"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def resolved_folder(config: DictConfig, key: str) -> Optional[str]:
    """``hydra.run.dir`` / ``hydra.sweep.dir`` as Hydra will resolve it (``${now:...}`` is cached, so the same
    time), or None when it cannot be resolved here (Hydra then reports that itself)."""
    instance = HydraConfig.instance()
    previous, read_only = instance.cfg, config.hydra._get_node_flag("readonly")   # set, unset or inherited
    try:
        instance.set_config(config)   # what ${hydra:...} resolves against; run_job sets it again next
        value = OmegaConf.select(config, key)
        return "" if value is None else str(value)
    except Exception:   # an interpolation only Hydra's job can resolve: its own error follows
        return None
    finally:
        instance.cfg = previous
        OmegaConf.set_readonly(config.hydra, read_only)


def refuse(error: ConfigValueError):
    """A command refused before any work: one line, exit status 1 (SystemExit passes Hydra's callback
    runner, which turns other exceptions into warnings)."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


# --- the launcher, before a sweep starts -----------------------------------------------------------------------

SLURM_COMMANDS = ("sbatch", "srun")


def check_slurm_launcher(config: DictConfig) -> None:
    """The SLURM launcher submits with ``sbatch`` and runs each job through ``srun``; without them submitit
    raises 'Could not detect "srun"' from inside Hydra's launcher."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if not target.endswith("SlurmLauncher"):
        return
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        choice = OmegaConf.select(config, "hydra.runtime.choices", default={}).get("hydra/launcher", "slurm")
        raise ConfigValueError(
            f"hydra/launcher={choice} submits the sweep to SLURM, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on this machine's PATH: run the command on the cluster's "
            "login node, or run the sweep here with hydra/launcher=joblib")


# --- a stopped sweep leaves no process behind -------------------------------------------------------------------

def job_owner(folder: Path) -> Optional[int]:
    """The pid of the process running the job in ``folder``: its claim's, or a running results.json's; None
    when the job is not running (never started, or ended however it ended)."""
    for name in (CLAIM_FILE, "results.json"):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if name == CLAIM_FILE:
            return record.get("pid")
        if record.get("status") == "running":
            return (record.get("process") or {}).get("pid")
    return None


def running_jobs(sweep_dir: Path, processes: set) -> dict:
    """pid -> job folder, for the sweep's jobs whose running process is one of ``processes`` (this sweep's)."""
    folders = {path.parent for name in (CLAIM_FILE, "results.json") for path in Path(sweep_dir).rglob(name)}
    owners = {folder: job_owner(folder) for folder in folders}
    return {pid: folder for folder, pid in owners.items() if pid in processes}


def stop_jobs(sweep_dir: Path, grace_s: float = STOP_GRACE_S) -> dict:
    """SIGTERM to the sweep's running jobs, at most ``grace_s`` for them to record their interruption (each
    keeps its finished experiences), then every process this one started (launcher workers, their loader
    workers) is ended (``end_descendants``). A job that starts meanwhile (a worker whose last job had just
    ended takes the next) is found on the next look and stopped too. Returns the stopped jobs (pid -> folder)."""
    import psutil   # Avalanche's dependency: here wherever a job can run

    me = psutil.Process()
    stopped: dict = {}
    deadline = time.monotonic() + grace_s
    while True:
        ours = {child.pid for child in me.children(recursive=True)}
        for pid, folder in running_jobs(sweep_dir, ours).items():
            if stopped.get(pid) != folder:
                stopped[pid] = folder
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        waiting = [pid for pid, folder in stopped.items() if psutil.pid_exists(pid) and job_owner(folder) == pid]
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    end_descendants(me)
    return stopped


def end_descendants(me, settle_s: float = 3.0, attempts: int = 10) -> None:
    """End every descendant of ``me`` (a psutil.Process) but the resource trackers: SIGTERM first (an idle
    worker exits and releases what it registered, e.g. tqdm's lock), SIGKILL after ``settle_s`` to those
    left, again until none is alive (a worker may start a loader worker meanwhile). Zombies count as gone
    (their parent or init reaps them). A resource tracker (multiprocessing's, loky's) frees what the workers
    left and exits with this process; killed, the launcher would start another, which then prints a traceback
    per resource."""
    import psutil

    for attempt in range(attempts):
        alive = [p for p in me.children(recursive=True) if _alive(p) and not _resource_tracker(p)]
        if not alive:
            return
        for process in alive:
            try:
                process.send_signal(signal.SIGTERM) if attempt == 0 else process.kill()
            except psutil.NoSuchProcess:
                pass
        deadline = time.monotonic() + (settle_s if attempt == 0 else 5)
        while time.monotonic() < deadline and any(_alive(p) for p in alive):
            time.sleep(0.05)


def _resource_tracker(process) -> bool:
    import psutil

    try:
        return any("resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class SweepStop:
    """SIGTERM to a sweep's main process: stop its jobs (``stop_jobs``), say so in one line, exit 143."""

    def __init__(self, sweep_dir: Path, grace_s: float = STOP_GRACE_S):
        self.sweep_dir, self.grace_s, self.previous = Path(sweep_dir), grace_s, None

    def install(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self.stop)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None

    def stop(self, signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second SIGTERM does not cut the jobs' recording short
        jobs = stop_jobs(self.sweep_dir, self.grace_s)
        folders = ", ".join(sorted(folder.name for folder in jobs.values())) or "none running"
        print(f"interrupted (SIGTERM): the sweep's jobs were stopped (running: {folders}; each keeps its finished "
              f"experiences) and its worker processes ended; the same command with hydra.sweep.dir={self.sweep_dir} "
              "resumes it", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(143)


# --- the callback -------------------------------------------------------------------------------------------------

LOCAL_LAUNCHERS = ("JoblibLauncher", "LocalLauncher")   # jobs in worker processes of this machine (joblib,
                                                     # submitit_local); the basic launcher runs them in this one


class SweepSummary(Callback):
    """The command's Hydra callback (registered in configs/config.yaml). Before any work: the output folder
    (a run's or a sweep's) and a sweep's launcher settings. During a sweep on this machine: SIGTERM stops its
    workers too. At the end of a multirun: the jobs' statuses from their results.json; exit status 1 if any
    failed."""

    def __init__(self) -> None:
        self.started = time.time()
        self.stop: Optional[SweepStop] = None

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        folder = resolved_folder(config, "hydra.run.dir")
        try:
            if folder is not None:
                check_output_folder(folder, "hydra.run.dir")
        except ConfigValueError as error:
            refuse(error)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()
        folder = resolved_folder(config, "hydra.sweep.dir")
        try:
            check_launcher(OmegaConf.select(config, "hydra.launcher"))
            check_slurm_launcher(config)
            if folder is not None:
                check_output_folder(folder, "hydra.sweep.dir")
        except ConfigValueError as error:
            refuse(error)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if folder and target.endswith(LOCAL_LAUNCHERS):
            self.stop = SweepStop(Path(folder))
            self.stop.install()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.stop is not None:
            self.stop.restore()
        sweep = Path(config.hydra.sweep.dir)
        statuses = {}
        for path in sorted(sweep.rglob("results.json")):
            if path.stat().st_mtime < self.started - 1:   # an earlier sweep's run in the same folder
                continue
            try:
                results = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                results = {"status": f"unreadable results.json: {error}"}
            statuses[path.parent] = (results.get("status", "no status") if isinstance(results, dict)
                                     else f"results.json holds a {type(results).__name__}, not a record")
        for note in sorted((sweep / FAILURE_NOTES).glob("*.txt")):   # jobs whose folder held another run
            if note.stat().st_mtime >= self.started - 1:
                statuses[sweep / note.stem] = note.read_text().strip()
        failed = {folder: status for folder, status in statuses.items() if status != "complete"}
        print(f"sweep {sweep}: {len(statuses)} job(s), {len(statuses) - len(failed)} complete, "
              f"{len(failed)} failed", file=sys.stderr)
        for folder, status in failed.items():
            print(f"  {folder}: {status}", file=sys.stderr)
        if failed:
            raise SystemExit(1)
