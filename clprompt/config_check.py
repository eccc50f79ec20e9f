"""The run config checked before anything is loaded or written: each key's type and range, and no
unknown key.

Hydra parses ``train.epochs=abc`` as the string "abc" and accepts ``+train.epoch=2`` (a new key, the form
its own hint suggests for a typo) without complaint; both would surface later as a traceback, or not at
all. ``check_config`` refuses them with the key, the value and what is allowed. The rules cover the
run's own groups (top level, ``data``, ``eval``, ``train``, ``cache``, ``protocol``); the scenario, method
and model groups are the keyword arguments of their ``_target_``, checked when they are built (an unknown
one is named there, see ``clprompt.stages.build``), and ``train.optimizer`` is any optimizer's partial.
"""

from __future__ import annotations

import difflib
import numbers
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from clprompt.errors import ConfigValueError


def _int(minimum=None):
    def check(value):
        return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
    return check


def _number(minimum=None, strict=False, maximum=None):
    def check(value):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        if minimum is not None and (value <= minimum if strict else value < minimum):
            return False
        return maximum is None or value < maximum
    return check


def _choice(*options):
    return lambda value: value in options


def _or_null(check):
    return lambda value: value is None or check(value)


def _bool(value):
    return isinstance(value, bool)


def _device(value):
    return isinstance(value, str) and re.fullmatch(r"auto|per_job|cpu|cuda(:\d+)?|mps", value) is not None


# key -> (check, what is allowed)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (_int(), "an integer"),
    "device": (_device, "auto, per_job, cpu, cuda or cuda:N"),
    "precision": (_choice("auto", "fp32", "bf16", "fp16"), "auto, fp32, bf16 or fp16"),
    "progress": (_bool, "true or false"),
    "data.root": (lambda v: isinstance(v, str) and v != "", "a folder"),
    "data.download": (_bool, "true or false"),
    "data.num_workers": (lambda v: v == "auto" or _int(0)(v), "auto or an integer >= 0"),
    "data.batch_transforms": (_choice("auto", "on", "off"), "auto, on or off"),
    "eval.protocol": (_choice("auto", "class_incremental", "task_incremental", "domain_incremental"),
                      "auto (the scenario's), class_incremental, task_incremental or domain_incremental"),
    "eval.batch_size": (_int(1), "an integer >= 1"),
    "train.epochs": (_int(1), "an integer >= 1 (a method with nothing to train ignores it)"),
    "train.batch_size": (_int(1), "an integer >= 1"),
    "train.classes": (_choice("experience", "seen"), "experience (rank against the experience's own classes, "
                      "the papers' recipe) or seen (against every class seen so far)"),
    "train.warmup_epochs": (_int(0), "an integer >= 0"),
    "train.warmup_lr": (_number(0, strict=True), "a number > 0"),
    "train.schedule": (_choice("cosine", "constant"), "cosine (CoOp's) or constant (L2P's)"),
    "train.augmentation": (_choice("model", "coop", "none"), "model, coop or none"),
    "train.augmentation_seed": (_int(), "an integer"),
    "train.augmentation_views": (_or_null(_int(1)), "null or an integer >= 1"),
    "train.feature_cache": (_choice("auto", "on", "off"), "auto, on or off"),
    "train.compile": (_choice("auto", "on", "off"), "auto, on or off"),
    "train.checkpoint_every": (_int(0), "an integer >= 0 (epochs; 0: a checkpoint after each experience only)"),
    "train.compile_backend": (lambda v: isinstance(v, str) and v != "", "a torch.compile backend, e.g. inductor"),
    "train.optimizer.lr": (_number(0, strict=True), "a number > 0"),
    "train.optimizer.momentum": (_number(0, maximum=1), "a number in [0, 1)"),
    "train.optimizer.weight_decay": (_number(0), "a number >= 0"),
    "cache.dir": (_or_null(lambda v: isinstance(v, str) and v != ""), "a folder, or null (memory only)"),
    "protocol.name": (lambda v: isinstance(v, str), "a protocol name"),
    "protocol.shots": (_or_null(_int(1)), "null (all images) or an integer >= 1"),
    "protocol.shots_seed": (_int(), "an integer"),
    "protocol.noise.kind": (lambda v: isinstance(v, str), "none, symmetric or confusing"),
    "protocol.noise.rate": (_number(0, maximum=1.0000001), "a number in [0, 1]"),
    "protocol.noise.seed": (_int(), "an integer"),
    "protocol.pseudo_labels.selection": (lambda v: isinstance(v, str), "none, top_k or random"),
    "protocol.pseudo_labels.per_class": (_int(1), "an integer >= 1"),
    "protocol.pseudo_labels.seed": (_int(), "an integer"),
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
NEUTRAL_KEYS = ("progress", "data.root", "data.download", "data.num_workers", "data.batch_transforms", "cache.dir",
                "eval.batch_size",
                "train.feature_cache", "train.compile", "train.compile_backend", "train.checkpoint_every")


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
