"""``python -m clprompt.run scenario=... method=... model=...``: one continual-learning run (or a sweep, -m).

The command line answers at once: Hydra composes the config and ``check_config`` checks every setting
before torch, Avalanche, open_clip or TensorBoard are imported; a valid config is then run by
``clprompt.stages``. ``python -m clprompt.run --help`` lists the config groups and their options.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from clprompt import config_dir
from clprompt.config_check import NEUTRAL_KEYS, check_config, under, unknown_override
from clprompt.errors import ConfigValueError
from clprompt.sweep import fail


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
    from clprompt import stages   # torch, Avalanche, open_clip, TensorBoard: only for a valid config

    return stages.main(cfg, run_dir)


def resume_arguments(argv: list[str]) -> list[str]:
    """``resume=<run folder>`` -> the command line that ran that folder (its recorded overrides, from
    ``.hydra/overrides.yaml``) with ``hydra.run.dir=<folder>``: the run then resumes from its checkpoint.
    Further overrides may only be neutral ones (progress, folders, workers, ...); one that would change
    results is refused, naming it."""
    wanted = [a for a in argv[1:] if a.startswith("resume=")]
    if not wanted:
        return argv
    folder = Path(wanted[-1].split("=", 1)[1]).expanduser()
    overrides = folder / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        sys.exit(f"error: resume={folder}: no run there (no {overrides}); give a run folder, e.g. "
                 "outputs/<scenario>/<method>/<time>")
    recorded = [str(o) for o in OmegaConf.load(overrides)]
    extra = [a for a in argv[1:] if not a.startswith("resume=")]
    changing = [a for a in extra if not a.startswith("hydra.")
                and not under(a.split("=", 1)[0].lstrip("+~"), NEUTRAL_KEYS)]
    if changing:
        sys.exit(f"error: resume={folder} takes the recorded config; these overrides would change its results: "
                 f"{' '.join(changing)}. Allowed beside resume=: {', '.join(NEUTRAL_KEYS)}")
    return [argv[0], *recorded, *extra, f"hydra.run.dir={folder}"]


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
    from clprompt.stages import versions

    found = versions()
    commit = f" (commit {found['clprompt_commit']})" if found["clprompt_commit"] else ""
    return (f"clprompt {found['clprompt']}{commit}; python {found['python']}, torch {found['torch']}, "
            f"open_clip {found['open_clip']}, avalanche {found['avalanche']}")


if __name__ == "__main__":
    if "--version" in sys.argv[1:]:
        print(version_line())
        sys.exit(0)
    check_launcher(sys.argv)
    sys.argv = resume_arguments(sys.argv)
    unknown = unknown_override(sys.argv[1:])
    if unknown:
        sys.exit(f"error: {unknown}")
    main()
