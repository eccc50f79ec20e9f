"""The run config checked before anything is loaded or written: each key's type and range, and no
unknown key.

Hydra parses ``train.epochs=abc`` as the string "abc" and accepts ``+train.epoch=2`` (a new key, the form
its own hint suggests for a typo) without complaint; both would surface later as a traceback, or not at
all. ``check_config`` refuses them with the key, the value and what is allowed. The rules cover the
run's own groups (top level, ``data``, ``eval``, ``train``, ``cache``, ``protocol``); the scenario, method
and model groups are the keyword arguments of their ``_target_``, checked when they are built (an unknown
one is named there, see ``clprompt.stages.build``), and ``train.optimizer`` is any optimizer's partial.

Numbers are refused when they are not finite (``nan`` and ``inf`` parse as floats and pass any comparison
they are not tested against), seeds outside numpy's range 0..2**32-1, ``device=mps`` where torch has no MPS
backend. ``check_launcher`` checks Hydra's launcher settings (``hydra.launcher.n_jobs=0``), which the job's
config does not hold: a sweep's start calls it. The ``require_*`` helpers at the end are the method and part
constructors' checks of their own options (the scenario, method and model groups are checked when built),
so every option is refused with one message form: ``method.<key>=<value>: <what it would make the method>;
give <the valid range>``.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
import sys
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from clprompt.errors import ConfigValueError


SEED_RANGE = (0, 2 ** 32 - 1)   # numpy's np.random.seed (and scikit-learn's random_state) take these only


def is_int(value, minimum=None, maximum=None) -> bool:
    """An int (not a bool) within [minimum, maximum] (either bound None: open)."""
    return (isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
            and (maximum is None or value <= maximum))


def is_number(value, minimum=None, strict=False, maximum=None, strict_maximum=False) -> bool:
    """A finite real number (not a bool: NaN and inf are refused) within its bounds; ``strict``: above
    ``minimum``, ``strict_maximum``: below ``maximum``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return False
    if minimum is not None and (value <= minimum if strict else value < minimum):
        return False
    return maximum is None or (value < maximum if strict_maximum else value <= maximum)


def _int(minimum=None, maximum=None):
    return lambda value: is_int(value, minimum, maximum)


def _number(minimum=None, strict=False, maximum=None, strict_maximum=False):
    return lambda value: is_number(value, minimum, strict, maximum, strict_maximum)


def _choice(*options):
    return lambda value: value in options


def _or_null(check):
    return lambda value: value is None or check(value)


def _bool(value):
    return isinstance(value, bool)


def _betas(value):
    """Adam's (beta1, beta2), each in [0, 1): torch refuses others with a traceback when the optimiser is built."""
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(is_number(beta, 0, maximum=1, strict_maximum=True) for beta in value))


def mps_available() -> bool:
    """Apple's Metal backend (MPS): only macOS has it, so torch is imported (to ask it) only there; elsewhere
    the answer costs nothing and the command line stays as quick as for any other value."""
    if sys.platform != "darwin":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.backends.mps.is_available())


def _device(value):
    if value == "mps":
        return mps_available()
    return isinstance(value, str) and re.fullmatch(r"auto|per_job|cpu|cuda(:\d+)?", value) is not None


def _devices_allowed(value) -> str:
    """The devices a run may name here: mps only where torch has the backend, so ``device=mps`` on a machine
    without it is refused here, with the reason, rather than failing on the first tensor moved there."""
    allowed = "auto, per_job, cpu, cuda, cuda:N or mps" if mps_available() else "auto, per_job, cpu, cuda or cuda:N"
    if value == "mps" and "mps" not in allowed:
        allowed += " (mps: torch has no MPS backend on this machine, torch.backends.mps.is_available() is false)"
    return allowed


SEED_ALLOWED = f"an integer in {SEED_RANGE[0]}..{SEED_RANGE[1]} (numpy's seed range)"

# key -> (check, what is allowed: a text, or a function of the refused value giving it)
RULES: dict[str, tuple[Callable[[Any], bool], Any]] = {
    "seed": (_int(*SEED_RANGE), SEED_ALLOWED),
    "device": (_device, _devices_allowed),
    "precision": (_choice("auto", "fp32", "bf16", "fp16"), "auto, fp32, bf16 or fp16"),
    "progress": (_bool, "true or false"),
    "data.root": (lambda v: isinstance(v, str) and v != "", "a folder"),
    "data.download": (_bool, "true or false"),
    "data.num_workers": (lambda v: v == "auto" or _int(0)(v), "auto or an integer >= 0"),
    "data.batch_transforms": (_choice("auto", "on", "off"), "auto, on or off"),
    "data.keep_decoded_mb": (_int(0), "an integer >= 0 (MiB of decoded images kept per file-backed dataset; 0: none)"),
    "eval.protocol": (_choice("auto", "class_incremental", "task_incremental", "domain_incremental"),
                      "auto (the scenario's), class_incremental, task_incremental or domain_incremental"),
    "eval.batch_size": (lambda v: v == "auto" or (is_int(v) and v >= 1), "auto or an integer >= 1"),
    "train.epochs": (_int(1), "an integer >= 1 (a method with nothing to train ignores it)"),
    "train.batch_size": (_int(1), "an integer >= 1"),
    "train.classes": (_choice("experience", "seen"), "experience (rank against the experience's own classes, "
                      "the papers' recipe) or seen (against every class seen so far)"),
    "train.warmup_epochs": (_int(0), "an integer >= 0"),
    "train.warmup_lr": (_number(0, strict=True), "a finite number > 0"),
    "train.schedule": (_choice("cosine", "constant"), "cosine (CoOp's) or constant (L2P's)"),
    "train.augmentation": (_choice("model", "coop", "none"), "model, coop or none"),
    "train.augmentation_seed": (_int(*SEED_RANGE), SEED_ALLOWED),
    "train.augmentation_views": (_or_null(_int(1)), "null or an integer >= 1"),
    "train.feature_cache": (_choice("auto", "on", "off"), "auto, on or off"),
    "train.compile": (_choice("auto", "on", "off"), "auto, on or off"),
    "train.checkpoint_every": (_int(0), "an integer >= 0 (epochs; 0: a checkpoint after each experience only)"),
    "train.compile_backend": (lambda v: isinstance(v, str) and v != "", "a torch.compile backend, e.g. inductor"),
    "train.text_chunk": (lambda v: v in ("auto", "off") or v is False or is_int(v, 0),  # YAML reads off as false
                         "auto (chunks from a memory budget), an "
                         "integer >= 1 (class prompts per text-tower pass) or 0 / off (never chunk)"),
    "train.optimizer.lr": (_number(0, strict=True), "a finite number > 0"),
    "train.optimizer.momentum": (_number(0, maximum=1, strict_maximum=True), "a number in [0, 1)"),
    "train.optimizer.weight_decay": (_number(0), "a finite number >= 0"),
    "train.optimizer.betas": (_betas, "two numbers in [0, 1), e.g. [0.9,0.999]"),
    "train.optimizer.eps": (_number(0), "a finite number >= 0"),
    "train.optimizer.dampening": (_number(0, maximum=1), "a number in [0, 1]"),
    "train.optimizer.nesterov": (_bool, "true or false"),
    "cache.dir": (_or_null(lambda v: isinstance(v, str) and v != ""), "a folder, or null (memory only)"),
    "protocol.name": (lambda v: isinstance(v, str), "a protocol name"),
    "protocol.shots": (_or_null(_int(1)), "null (all images) or an integer >= 1"),
    "protocol.shots_seed": (_int(*SEED_RANGE), SEED_ALLOWED),
    "protocol.noise.kind": (lambda v: isinstance(v, str), "none, symmetric or confusing"),
    "protocol.noise.rate": (_number(0, maximum=1), "a number in [0, 1]"),
    "protocol.noise.seed": (_int(*SEED_RANGE), SEED_ALLOWED),
    "protocol.pseudo_labels.selection": (lambda v: isinstance(v, str), "none, top_k or random"),
    "protocol.pseudo_labels.per_class": (_int(1), "an integer >= 1"),
    "protocol.pseudo_labels.seed": (_int(*SEED_RANGE), SEED_ALLOWED),
    "protocol.base_to_new": (_bool, "true or false"),
    "protocol.ensemble": (_int(1), "an integer >= 1"),
    "protocol.grad_norm_ratio": (_bool, "true or false"),
    "protocol.zero_shot_template": (_or_null(lambda v: isinstance(v, str) and "{}" in v), "null or a template with {}"),
}
# Groups whose keys are the keyword arguments of a target (checked when built), or any optimizer's.
OPEN_GROUPS = ("scenario", "method", "model", "loss", "train.optimizer")
TOP_LEVEL = ("scenario", "method", "model", "loss", "protocol", "data", "eval", "train", "cache")


# Keys that do not change what a run computes. Seed keys: what varies between the repeats of one
# setting (train.augmentation_seed defaults to ${seed}). Neutral keys: where files are and how fast it
# runs; each leaves the results as they are (the feature cache, the compiled tower, the worker count and the
# batched transforms are checked equal by the suite). The report groups runs over both; a resume refuses a changed seed key.
SEED_KEYS = ("seed", "protocol.shots_seed", "scenario.split_seed", "train.augmentation_seed")
NEUTRAL_KEYS = ("progress", "data.root", "data.download", "data.num_workers", "data.batch_transforms",
                "data.keep_decoded_mb", "cache.dir",
                "eval.batch_size",
                "train.feature_cache", "train.compile", "train.compile_backend", "train.checkpoint_every",
                "train.text_chunk")


def flatten_config(node: Any, prefix: str = "") -> dict:
    """{'train.optimizer.lr': 0.002, ...}: a nested config (plain containers) as dotted keys; lists as tuples."""
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(flatten_config(value, f"{prefix}{key}."))
        return flat
    if not prefix:
        return {}
    return {prefix[:-1]: tuple(node) if isinstance(node, list) else node}


def under(key: str, prefixes) -> bool:
    """``key`` is one of ``prefixes`` or lies below one ending in '.'."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigValueError for the first key that is unknown or holds a value outside its rule."""
    values = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    for key in values:
        if key in RULES or any(key.startswith(f"{group}.") for group in OPEN_GROUPS) or key in TOP_LEVEL:
            continue
        close = difflib.get_close_matches(key, sorted(RULES), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigValueError(f"{key}={values[key]!r} is not a setting of clprompt.{hint} The settings and their "
                               "defaults are in configs/config.yaml (python -m clprompt.run --cfg job lists them)")
    for key, (check, allowed) in RULES.items():
        if key in values and not check(values[key]):
            allowed = allowed(values[key]) if callable(allowed) else allowed
            raise ConfigValueError(f"{key}={values[key]!r} is not allowed: give {allowed}")
    check_optimizer_keys(values)
    if values.get("train.checkpoint_every") and values.get("protocol.ensemble", 1) > 1:
        raise ConfigValueError("train.checkpoint_every with an ensemble (protocol.ensemble > 1) is not supported: its "
                               "members train one after another inside an experience; use train.checkpoint_every=0")


def unknown_override(arguments: list[str]):
    """The first command-line override ``key=value`` whose key is not a setting of clprompt, as a message with
    the closest setting (Hydra would answer only "Key ... is not in struct"); None when every key is known.
    Keys under the open groups (``method.*``, ``scenario.*``, ...) are the targets' options, checked when
    they are built; ``+key=`` / ``~key`` / ``hydra.*`` and group choices (``train/optimizer=``) are Hydra's."""
    for argument in arguments:
        key = argument.split("=", 1)[0]
        if "=" not in argument or argument.startswith(("-", "+", "~", "hydra.", "hydra/")) or "/" in key:
            continue
        if key in RULES or key in TOP_LEVEL or key in ("resume",) or any(under(key, [f"{g}."]) for g in OPEN_GROUPS):
            continue
        close = difflib.get_close_matches(key, sorted(RULES), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        return (f"{argument}: {key} is not a setting of clprompt.{hint} The settings and their defaults are in "
                "configs/config.yaml (python -m clprompt.run --cfg job lists them; --help the groups)")
    return None


def check_optimizer_keys(values: dict) -> None:
    """Every train.optimizer key is an option of its optimiser: a method's YAML that sets SGD's momentum,
    run with train/optimizer=adam, would otherwise end in a bare TypeError when the optimiser is built."""
    target = values.get("train.optimizer._target_")
    if not isinstance(target, str) or "." not in target:
        return
    import importlib
    import inspect

    module, _, name = target.rpartition(".")
    try:
        optimizer = getattr(importlib.import_module(module), name)
        options = [p for p in inspect.signature(optimizer).parameters if p != "params"]
    except (ImportError, AttributeError, ValueError, TypeError):
        return   # an optimiser clprompt cannot inspect: its own error when it is built
    for key in values:
        option = key[len("train.optimizer."):].split(".")[0] if key.startswith("train.optimizer.") else None
        if option and not option.startswith("_") and option not in options:
            raise ConfigValueError(f"{key}={values[key]!r} is not an option of {target} (its options: "
                                   f"{', '.join(options)}): drop it with ~{key}, or choose another optimiser "
                                   "(train/optimizer=sgd|adam)")


# Hydra's launcher settings (hydra.launcher.*): not in the job's config, and used by the launcher before any job
# starts (joblib's Parallel(n_jobs=0) raises a bare ValueError): checked at the sweep's start instead. A key a
# launcher does not have is absent and not checked.
LAUNCHER_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n_jobs": (_or_null(lambda v: is_int(v) and v != 0),
               "an integer >= 1 (jobs at once) or a negative one (joblib's -1: every core, -2: all but one)"),
    "timeout": (_or_null(_number(0, strict=True)), "null or a finite number > 0"),
    "timeout_min": (_int(1), "an integer >= 1 (minutes)"),
    "nodes": (_int(1), "an integer >= 1"),
    "tasks_per_node": (_int(1), "an integer >= 1"),
    "cpus_per_task": (_or_null(_int(1)), "null or an integer >= 1"),
    "gpus_per_node": (_or_null(_int(0)), "null or an integer >= 0"),
    "array_parallelism": (_int(1), "an integer >= 1 (runs at once)"),
}


def check_launcher(launcher) -> None:
    """Raise ConfigValueError for the first ``hydra.launcher.<key>`` outside its rule (``launcher``: the
    composed ``hydra.launcher`` node, or a plain dict)."""
    values = OmegaConf.to_container(launcher, resolve=False) if OmegaConf.is_config(launcher) else dict(launcher or {})
    for key, (check, allowed) in LAUNCHER_RULES.items():
        if key in values and not check(values[key]):
            raise ConfigValueError(f"hydra.launcher.{key}={values[key]!r} is not allowed: give {allowed}")


# ---- the options of methods and parts: checked in their constructors, where each option is used --------------

def option_error(key: str, value, allowed: str, effect: str = "") -> ConfigValueError:
    """``<key>=<value>: <effect>; give <allowed>``: what the value would make the method (e.g. "an empty pool
    inserts nothing: the run would be zero-shot"), then the valid values."""
    return ConfigValueError(f"{key}={value!r}: {effect + '; ' if effect else ''}give {allowed}")


def require_int(key: str, value, minimum: int = 1, maximum=None, if_zero: str = "", what: str = "") -> int:
    """``value`` when it is an integer in [minimum, maximum], else ConfigValueError naming the range; ``if_zero``
    says what 0 would make the method, ``what`` what the bound is (e.g. "(method.pool.size)")."""
    if not is_int(value, minimum, maximum):
        allowed = f"an integer >= {minimum}" if maximum is None else f"an integer in {minimum}..{maximum}"
        raise option_error(key, value, allowed + (f" {what}" if what else ""),
                           if_zero if if_zero and is_int(value) and value == 0 else "")
    return value


def require_number(key: str, value, minimum: float = 0.0, strict: bool = False, if_zero: str = "",
                   what: str = "") -> float:
    """``value`` as a float when it is a finite number >= minimum (> with ``strict``), else ConfigValueError."""
    if not is_number(value, minimum, strict):
        allowed = f"a finite number {'>' if strict else '>='} {minimum:g}" + (f" {what}" if what else "")
        raise option_error(key, value, allowed, if_zero if if_zero and is_number(value) and value == 0 else "")
    return float(value)


def require_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise option_error(key, value, "true or false")
    return value


def require_choice(key: str, value, choices: dict) -> str:
    """``value`` when it is one of ``choices`` (name -> what it means, shown in the message)."""
    if not isinstance(value, str) or value not in choices:
        described = [f"{name} ({meaning})" if meaning else name for name, meaning in choices.items()]
        listed = described[0] if len(described) == 1 else f"{', '.join(described[:-1])} or {described[-1]}"
        raise ConfigValueError(f"{key}={value!r}; choose {listed}")
    return value


def require_template(key: str, value) -> str:
    """A prompt template: a string with exactly one '{}' where the class name goes."""
    if not isinstance(value, str) or value.count("{}") != 1:
        raise option_error(key, value, "a prompt with exactly one '{}' for the class name, e.g. 'a photo of a {}.'",
                           "without '{}' every class gets the same prompt" if isinstance(value, str)
                           and "{}" not in value else "")
    return value


def require_words(key: str, value) -> str:
    """Words that start a learned context (their word embeddings): null, or a string with a word in it."""
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise option_error(key, value, "null (random vectors) or words, e.g. 'a photo of a'",
                           "no words give no context vectors" if isinstance(value, str) else "")
    return value
