"""One run per folder: a run claims its folder before any work, and a refused command leaves it as it was.

The claim is a file, ``.clprompt_claim.json``, created with ``O_CREAT | O_EXCL`` (atomic on a local and an
NFSv3+ file system) and holding who made it: host, process id, and the process's start time (the kernel's
boot id and the process's start tick on Linux), so that a process id the system has since recycled is not
taken for the run. A second run into a claimed folder whose owner is alive is refused; a claim whose owner is
dead (a killed run) is taken over. The claim is removed when the run ends, however it ends.

Hydra's own record of the command (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``) is written by
clprompt once the folder is accepted (``hydra.output_subdir`` is null in ``configs/config.yaml``), so a
command the folder refuses cannot overwrite the record of the run it holds (``resume=<folder>`` replays it).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Optional

from clprompt.training.checkpoint import CheckpointError

CLAIM = ".clprompt_claim.json"
HYDRA_RECORD = ".hydra"


class RunFolderBusy(CheckpointError):
    """Another live process runs this folder."""


class RunFolderRefused(CheckpointError):
    """The folder holds another run: the command is refused and the folder left as it was."""


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])   # after the command name, which may hold spaces


def process_identity(pid: Optional[int] = None) -> dict:
    """Who a process is, beyond its id: host, pid, boot id and start tick (where the system says them)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": platform.node(), "boot_id": _boot_id(), "start_ticks": _start_ticks(pid),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def is_alive(identity: dict) -> bool:
    """True when ``identity`` is another process alive on this host: its pid exists and, where recorded, the
    boot and the start tick are the same (a recycled pid, or one from before a reboot, is not alive)."""
    pid = identity.get("pid")
    if not pid or identity.get("host") != platform.node() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # another user's live process
    if identity.get("boot_id") and _boot_id() and identity["boot_id"] != _boot_id():
        return False
    if identity.get("start_ticks") is not None and _start_ticks(int(pid)) is not None:
        return int(identity["start_ticks"]) == _start_ticks(int(pid))
    return True


def _describe(identity: dict) -> str:
    return f"process {identity.get('pid')} on {identity.get('host')} (started {identity.get('started')})"


def _create(path: Path, identity: dict) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(identity, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


class Claim:
    """This process's claim on a run folder; ``release`` removes it (only if it is still this process's), and
    the folder too when the claim created it and the run wrote nothing (a command refused before any work)."""

    def __init__(self, run_dir: Path, identity: dict, created: bool = False):
        self.path, self.identity, self.created = Path(run_dir) / CLAIM, identity, created

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == self.identity["pid"]:
                self.path.unlink()
        except (OSError, ValueError):
            pass
        if self.created:
            try:
                self.path.parent.rmdir()   # only if empty
            except OSError:
                pass


def claim(run_dir: Path) -> Claim:
    """Claim ``run_dir`` for this process, before any work; refuses a folder a live process has claimed."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path, identity = run_dir / CLAIM, process_identity()
    for _ in range(3):
        if _create(path, identity):
            return Claim(run_dir, identity, created)
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            continue            # released meanwhile: try again
        except (OSError, ValueError):
            owner = {}          # a claim cut short (its writer died while writing): stale
        if isinstance(owner, dict) and is_alive(owner):
            raise RunFolderBusy(f"{run_dir} is being run by {_describe(owner)}: two runs in one folder would "
                                "overwrite each other's results. Wait for it to end, or give another hydra.run.dir")
        stale = path.with_name(f"{CLAIM}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(path, stale)   # one claimant wins the stale claim; the others find it gone and retry
            stale.unlink()
        except FileNotFoundError:
            pass
    raise RunFolderBusy(f"{run_dir}: could not claim the folder ({path} keeps reappearing): another run is "
                        "starting there; give another hydra.run.dir")


def write_hydra_record(run_dir: Path, cfg) -> None:
    """Hydra's record of the command (config.yaml: the job's config ``cfg``; hydra.yaml; overrides.yaml, in
    ``.hydra/``), written once the folder has accepted the run; nothing outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    folder = Path(run_dir) / HYDRA_RECORD
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra.overrides.task)), folder / "overrides.yaml")


class LogMark:
    """The size of the run folder's log when this process began, so that a refused command can leave the log
    of the run the folder holds as it was: ``restore`` detaches the file handlers writing into the folder
    and cuts the log back."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir).resolve()
        self.sizes = {path: path.stat().st_size for path in self._logs()}

    def _handlers(self):
        root = logging.getLogger()
        return [h for h in root.handlers if isinstance(h, logging.FileHandler)
                and Path(h.baseFilename).resolve().parent == self.run_dir]

    def _logs(self):
        return [Path(h.baseFilename) for h in self._handlers() if Path(h.baseFilename).exists()]

    def restore(self) -> None:
        root = logging.getLogger()
        for handler in self._handlers():
            root.removeHandler(handler)
            handler.close()
        for path, size in self.sizes.items():
            try:
                os.truncate(path, size)
            except OSError:
                pass
