"""A sweep goes on past a failed job and says at the end how many failed.

A job of a sweep that stops on a clear error (missing data, a bad option: clprompt's own errors)
records ``status: failed: ...`` in its ``results.json`` (written here when the run had not written one
yet; a single run writes nothing for a bad option) and returns, so Hydra's launcher starts the next job; ``SweepSummary``, a Hydra callback registered in
``configs/config.yaml``, lists the sweep's failed jobs when it ends and makes the sweep's exit status 1
if any failed. ``python -m clprompt.report`` lists them too. Errors that are bugs (a traceback) are left
to Hydra, which also finishes the sweep's jobs before it raises.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from scenarios.atomic_write import write_json_atomic

log = logging.getLogger("clprompt")


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
    is missing); a run that wrote one already recorded its status and finished rows itself."""
    path = Path(run_dir) / "results.json"
    if path.exists():
        return
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    write_json_atomic(path, {
        "scenario": choices.get("scenario"), "method": choices.get("method"),
        "status": f"failed: {type(error).__name__}: {error}", "completed_experiences": 0,
        "config": OmegaConf.to_container(cfg, resolve=False),
    })


class SweepSummary(Callback):
    """At the end of a multirun: the jobs' statuses from their results.json; exit status 1 if any failed."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        statuses = {}
        for path in sorted(sweep.rglob("results.json")):
            if path.stat().st_mtime < self.started - 1:   # an earlier sweep's run in the same folder
                continue
            try:
                statuses[path.parent] = json.loads(path.read_text()).get("status", "no status")
            except (OSError, ValueError) as error:
                statuses[path.parent] = f"unreadable results.json: {error}"
        failed = {folder: status for folder, status in statuses.items() if status != "complete"}
        print(f"sweep {sweep}: {len(statuses)} job(s), {len(statuses) - len(failed)} complete, "
              f"{len(failed)} failed", file=sys.stderr)
        for folder, status in failed.items():
            print(f"  {folder}: {status}", file=sys.stderr)
        if failed:
            raise SystemExit(1)
