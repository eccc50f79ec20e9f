"""``python -m clprompt.run scenario=... method=... model=...``: one continual-learning run (or a sweep, -m).

The command line answers at once: Hydra composes the config and ``check_config`` checks every setting
before torch, Avalanche, open_clip or TensorBoard are imported; a valid config is then run by
``clprompt.stages``. ``python -m clprompt.run --help`` lists the config groups and their options.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from clprompt import config_dir
from clprompt.config_check import NEUTRAL_KEYS, check_config, under, unknown_override
from clprompt.errors import ClpromptError, ConfigValueError
from clprompt.heap import keep_freed_memory, release_freed_memory
from clprompt.sweep import fail, in_multirun


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured stream in this process; returns the final results (also written to ``run_dir``).
    See ``clprompt.stages.run``."""
    from clprompt import stages

    return stages.run(cfg, run_dir)


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        check_config(cfg)   # a misspelled key or a bad value: answered before the heavy imports
    except ConfigValueError as error:
        return fail(cfg, run_dir, error)
    keep_freed_memory()   # each batch's activations reuse the last one's pages (clprompt/heap.py)
    from clprompt import stages   # torch, Avalanche, open_clip, TensorBoard: only for a valid config
    from clprompt.training import stop_signal

    if stop_signal.requested():   # a sweep's worker whose last job was stopped: the sweep is stopping
        print(f"not started: the sweep was stopped ({stop_signal.requested()})", file=sys.stderr)
        return {"status": "not started"}
    try:
        return stages.main(cfg, run_dir)
    except OSError as error:
        if error.errno not in STORAGE_ERRORS:
            raise   # a bug: Hydra shows its traceback
        return fail(cfg, run_dir, ClpromptError(storage_problem(error, run_dir)))
    finally:
        if in_multirun():   # the next job of the sweep starts on a heap without this one's freed pages
            release_freed_memory()


# A file the run writes (results, checkpoint, TensorBoard events, the feature cache) cannot be written: the
# disk is full, the file system read-only, the permission gone. Not a bug: the run ends in one line.
STORAGE_ERRORS = {errno.ENOSPC: "free space there (or give a hydra.run.dir / cache.dir on another disk)",
                  errno.EDQUOT: "free space within your quota (or give a hydra.run.dir / cache.dir elsewhere)",
                  errno.EROFS: "give a hydra.run.dir / cache.dir on a writable file system",
                  errno.EACCES: "make it writable, or give another hydra.run.dir / cache.dir",
                  errno.EPERM: "make it writable, or give another hydra.run.dir / cache.dir"}


def storage_problem(error: OSError, run_dir: Path) -> str:
    """What could not be written, why, the fix, and where the finished experiences are kept."""
    where = error.filename or run_dir
    return (f"could not write {where}: {error.strerror or error}: {STORAGE_ERRORS[error.errno]}. The experiences "
            f"finished before are kept in {Path(run_dir) / 'results.json'}")


def resume_arguments(argv: list[str]) -> list[str]:
    """``resume=<run folder>`` -> the command line that ran that folder (its recorded overrides, from
    ``.hydra/overrides.yaml``) with ``hydra.run.dir=<folder>``: the run then resumes from its checkpoint.
    Further overrides may only be neutral ones (progress, folders, workers, ...); one that would change
    results is refused, naming it."""
    wanted = [a for a in argv[1:] if a.startswith("resume=")]
    if not wanted:
        return argv
    folder = Path(wanted[-1].split("=", 1)[1]).expanduser()
    recorded = recorded_overrides(wanted[-1].split("=", 1)[1], folder)
    extra = [a for a in argv[1:] if not a.startswith("resume=")]
    changing = [a for a in extra if not a.startswith("hydra.")
                and not under(a.split("=", 1)[0].lstrip("+~"), NEUTRAL_KEYS)]
    if changing:
        sys.exit(f"error: resume={folder} takes the recorded config; these overrides would change its results: "
                 f"{' '.join(changing)}. Allowed beside resume=: {', '.join(NEUTRAL_KEYS)}")
    return [argv[0], *recorded, *extra, f"hydra.run.dir={folder}"]


def recorded_overrides(given: str, folder: Path) -> list[str]:
    """The overrides recorded in ``<folder>/.hydra/overrides.yaml``; exits with one line when ``resume=`` is
    empty, the folder is missing or a file, or the record cannot be read as a list of overrides."""
    example = "give a run folder, e.g. resume=outputs/<scenario>/<method>/<time>"
    if not given.strip():
        sys.exit(f"error: resume= is empty (an unset shell variable?): {example}")
    overrides = folder / ".hydra" / "overrides.yaml"
    try:
        if not folder.exists():
            sys.exit(f"error: resume={folder}: no such folder: {example}")
        if not folder.is_dir():
            sys.exit(f"error: resume={folder} is a file, not a run folder: {example}")
        if not overrides.is_file():
            sys.exit(f"error: resume={folder}: no run there (no {overrides}); {example}")
        recorded = OmegaConf.load(overrides)
    except OSError as error:
        sys.exit(f"error: resume={folder}: cannot be read ({error.strerror or error}): {example}")
    except Exception as error:   # YAML or OmegaConf's errors: the record was cut short or edited
        sys.exit(f"error: resume={folder}: {overrides} is not a readable record of the command "
                 f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): run the original "
                 f"command with hydra.run.dir={folder} instead")
    if not OmegaConf.is_list(recorded) or not all(isinstance(o, str) for o in recorded):
        sys.exit(f"error: resume={folder}: {overrides} holds no list of overrides: run the original command with "
                 f"hydra.run.dir={folder} instead")
    return [str(o) for o in recorded]


# Hydra's launcher plugins and the packages that provide them
LAUNCHER_PLUGINS = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
                    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
                    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")}


def check_launcher(argv: list[str]) -> None:
    """A ``hydra/launcher=`` whose plugin is not installed stops here with the package to install (Hydra's
    own message lists the available launchers only)."""
    import importlib.util

    for argument in argv[1:]:
        if argument.startswith("hydra/launcher="):
            name = argument.split("=", 1)[1]
            module, package = LAUNCHER_PLUGINS.get(name, (None, None))
            if module is not None and importlib.util.find_spec(module) is None:
                sys.exit(f"error: hydra/launcher={name} needs Hydra's launcher plugin {package}, which is not "
                         f"installed: pip install 'clprompt[launchers]' (or pip install {package})")


def version_line() -> str:
    """What ``--version`` prints: clprompt's version and commit, and the versions it runs on."""
    from clprompt.versions import versions

    found = versions()
    commit = f" (commit {found['clprompt_commit']})" if found["clprompt_commit"] else ""
    return (f"clprompt {found['clprompt']}{commit}; python {found['python']}, torch {found['torch']}, "
            f"open_clip {found['open_clip']}, avalanche {found['avalanche']}")


def exit_without_teardown(status: int = 0) -> None:
    """End a process whose work is done with ``status``, skipping the interpreter's teardown.

    Python's exit frees every module and object one by one: about 2 s once torch, torchvision, open_clip
    and Avalanche are loaded, and none of it writes anything. What an exit must still do is done first:
    the atexit handlers run (logging's flush and close) and stdout and stderr are flushed. While another
    non-daemon thread is alive (a launcher's worker pool), the interpreter exits the ordinary way, which
    stops such threads in their own order; so does a process that never loaded torch."""
    import atexit
    import os
    import threading

    if "torch" not in sys.modules:   # a command that loaded none of them (--cfg job) ends quickly anyway
        return
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.current_thread()):
        return
    atexit._run_exitfuncs()   # CPython's runner of the registered handlers, as at an ordinary exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    if "--version" in sys.argv[1:]:
        print(version_line())
        sys.exit(0)
    check_launcher(sys.argv)
    sys.argv = resume_arguments(sys.argv)
    unknown = unknown_override(sys.argv[1:])
    if unknown:
        sys.exit(f"error: {unknown}")
    try:
        main()
    except SystemExit as stop:   # a refused or failed run (status 1), an interrupted one (130, 143), a sweep's end
        if stop.code is None or isinstance(stop.code, int):
            exit_without_teardown(stop.code or 0)
        raise
    exit_without_teardown()
