"""Frozen open_clip backbones: a pretrained tag, a local checkpoint file, or (for tests) random init.

``load_backbone`` never falls back to random weights: a tag that cannot be downloaded or a file that
does not exist stops the run with a message naming the local-file option. What was loaded is recorded
in ``Backbone.identity`` (architecture, source, tag or file sha256), which goes into ``results.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import open_clip
import torch
from omegaconf import DictConfig, OmegaConf
from open_clip.transform import PreprocessCfg, image_transform_v2

from clprompt.errors import ClpromptError, ConfigValueError, WeightsUnavailableError

log = logging.getLogger(__name__)


@dataclass
class Backbone:
    """A frozen CLIP, its tokenizer and image transforms, and the identity of its weights."""

    model: torch.nn.Module
    tokenizer: Callable
    train_transform: Callable
    eval_transform: Callable
    identity: dict


def sha256_of_file(path: str, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith("~") or value.endswith((".pt", ".pth", ".bin", ".safetensors"))


PROJECT_ROOT = Path(__file__).resolve().parents[2]   # the folder holding the clprompt package


def _resolve_source(arch: str, pretrained: Optional[str]) -> tuple[str, Optional[str]]:
    """Classify ``pretrained`` as ('random', None), ('file', path) or ('tag', tag); refuse anything else.

    A relative file path is looked up in the current directory, then under the project root (where
    checkpoints shipped with clprompt live).
    """
    if pretrained is None or str(pretrained).lower() in ("", "none", "null"):
        return "random", None
    pretrained = str(pretrained)
    path = os.path.expanduser(pretrained)
    for candidate in (path, str(PROJECT_ROOT / path)):
        if os.path.isfile(candidate):
            return "file", candidate
    if _looks_like_path(pretrained):
        raise WeightsUnavailableError(
            f"model.pretrained={pretrained}: no such checkpoint file. Pass the path of an open_clip "
            "checkpoint (.safetensors, .bin or .pt) that exists on this machine."
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise WeightsUnavailableError(
            f"model.pretrained={pretrained} is neither a file nor a known tag of {arch}. "
            f"Known tags: {tags or 'none'}. Or pass a local checkpoint: model.pretrained=/path/to/file."
        )
    return "tag", pretrained


@contextmanager
def named_weights_file(path: Optional[str], architecture: str):
    """Loading a checkpoint file: any failure becomes one message naming the file and the likely cause.
    Files load with ``weights_only=True`` (a pickle that asks to run code is refused) or as safetensors."""
    if path is None:
        yield
        return
    try:
        yield
    except Exception as error:  # open_clip / torch / safetensors raise many kinds for a bad file
        if isinstance(error, ClpromptError):
            raise
        if isinstance(error, pickle.UnpicklingError):  # torch's text would suggest weights_only=False
            cause = "it holds more than plain tensors, e.g. objects whose loading runs code: refused"
        else:
            cause = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        raise WeightsUnavailableError(
            f"{path} could not be loaded as weights of {architecture} ({type(error).__name__}: {cause}). "
            "It is damaged, truncated, not a checkpoint, asks to run code (only plain tensors load), or holds "
            "another architecture: check model= and model.pretrained=, or restore the file."
        ) from None


INIT_FILLS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
              "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


@contextmanager
def weights_from_checkpoint():
    """Build a model whose every weight a strict checkpoint load then overwrites.

    ``torch.nn.init``'s fills are skipped (drawing ViT-B's random init takes about a second on a CPU core,
    ViT-L's several, and the load replaces all of it; open_clip and ``_build_custom`` load full checkpoints
    with ``strict=True``, so no weight keeps its unfilled memory), and the global random generator is left
    as it was: what the run draws next (prompt inits, shuffling) does not depend on how the architecture
    draws its init."""
    saved = {name: getattr(torch.nn.init, name) for name in INIT_FILLS}
    with torch.random.fork_rng(devices=[]):
        try:
            for name in INIT_FILLS:
                setattr(torch.nn.init, name, _unfilled)
            yield
        finally:
            for name, fill in saved.items():
                setattr(torch.nn.init, name, fill)


def _unfilled(tensor, *args, **kwargs):
    return tensor


def in_background(function, *args) -> Future:
    """``function(*args)`` on a thread of its own, which ends with it."""
    executor = ThreadPoolExecutor(1)
    try:
        return executor.submit(function, *args)
    finally:
        executor.shutdown(wait=False)


def _build_custom(config: dict, source: str, path: Optional[str]) -> tuple[torch.nn.Module, Callable, Callable, Callable]:
    """An open_clip ``CLIP`` from an inline config (the ``config:`` block of a model YAML)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    model = open_clip.CLIP(**config)
    if source == "file":
        with named_weights_file(path, "model.config's architecture"):
            open_clip.load_checkpoint(model, path, strict=True, weights_only=True)
    elif source == "tag":
        raise ConfigValueError("a model with an inline config: takes a checkpoint file or null, not a tag")
    preprocess = PreprocessCfg(size=config["vision_cfg"]["image_size"])
    context_length = config["text_cfg"].get("context_length", 77)
    tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    return model, tokenizer, image_transform_v2(preprocess, is_train=True), image_transform_v2(preprocess, is_train=False)


def _build_registered(arch: str, source: str, value: Optional[str], quick_gelu: Optional[bool],
                      cache_dir: Optional[str], identity: dict):
    """An open_clip architecture by name with a tag's, a file's or random weights: (model, tokenizer, train
    transform, eval transform); records the tag's hub and the QuickGELU choice in ``identity``."""
    if arch not in open_clip.list_models():
        raise ConfigValueError(f"model.arch={arch} is not an open_clip architecture. "
                               f"Known: {', '.join(open_clip.list_models())}")
    force_quick_gelu = bool(quick_gelu)
    if source == "tag":
        tag_cfg = open_clip.get_pretrained_cfg(arch, value)
        tag_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        if quick_gelu is not None and bool(quick_gelu) != tag_quick_gelu:
            raise ConfigValueError(
                f"model.quick_gelu={quick_gelu} but the {arch} '{value}' weights were trained with "
                f"quick_gelu={tag_quick_gelu}; set model.quick_gelu=null to follow the tag."
            )
        force_quick_gelu = tag_quick_gelu
        identity["hf_hub"] = tag_cfg.get("hf_hub") or None
    try:
        with named_weights_file(value if source == "file" else None, arch):
            model, train_transform, eval_transform = open_clip.create_model_and_transforms(
                arch, pretrained=value, force_quick_gelu=force_quick_gelu, cache_dir=cache_dir,
            )  # open_clip loads a file with weights_only=True (its default)
    except RuntimeError as error:
        if source != "tag":
            raise
        hub = identity.get("hf_hub") or ""
        raise WeightsUnavailableError(
            f"could not get the '{value}' weights of {arch}: {error}\n"
            f"Without internet, download the open_clip checkpoint elsewhere "
            f"({'Hugging Face hub ' + hub if hub else 'see open_clip.list_pretrained()'}) and pass "
            f"model.pretrained=/path/to/open_clip_model.safetensors"
            f"{' model.quick_gelu=true' if force_quick_gelu else ''}."
        ) from error
    tokenizer = open_clip.get_tokenizer(arch)
    identity["quick_gelu"] = force_quick_gelu
    return model, tokenizer, train_transform, eval_transform


def load_backbone(arch: str, pretrained: Optional[str] = None, quick_gelu: Optional[bool] = None,
                  config: Optional[dict] = None, cache_dir: Optional[str] = None,
                  sha256: Optional[str] = None) -> Backbone:
    """Load a frozen open_clip CLIP.

    arch: an open_clip architecture name (``ViT-B-16``, ``RN50``, ...), or a free name when ``config``
        gives the architecture inline.
    pretrained: a tag of ``arch`` (downloaded where a network exists), a local checkpoint file, or None
        for random init (tests only; recorded as such).
    quick_gelu: None takes the tag's own setting (OpenAI weights use QuickGELU); True/False force it,
        and must agree with a tag. For a checkpoint file of OpenAI weights, set it to True.
    sha256: the expected digest of a checkpoint file; a file that differs is refused.
    """
    source, value = _resolve_source(arch, pretrained)
    # the file's digest (its identity for resumes and sweeps) is read beside the model's construction:
    # hashlib releases the GIL, so on a second core it costs no time
    hashing = in_background(sha256_of_file, value) if source == "file" else None
    identity = {"arch": arch, "source": source, "open_clip_version": open_clip.__version__}

    def check_digest() -> Optional[str]:
        digest = hashing.result() if hashing is not None else None
        if sha256 and digest != sha256:
            raise WeightsUnavailableError(
                f"{value} has sha256 {digest}, but the model config expects {sha256}: the file is corrupt or "
                "another version. Restore it (git checkout -- <file>) or rebuild it with its recipe."
            )
        return digest

    try:
        with weights_from_checkpoint() if source in ("file", "tag") else nullcontext():
            if config is not None:
                model, tokenizer, train_transform, eval_transform = _build_custom(config, source, value)
            else:
                model, tokenizer, train_transform, eval_transform = _build_registered(arch, source, value,
                                                                                     quick_gelu, cache_dir, identity)
    except Exception:
        check_digest()   # a file that is not the expected one is named as such, not by the error it caused
        raise
    digest = check_digest()
    if source == "tag":
        identity["pretrained"] = value
    elif source == "file":
        identity["pretrained"] = str(Path(value).resolve())
        identity["sha256"] = digest
    else:
        identity["pretrained"] = None
        log.warning("model.pretrained=null: %s has RANDOM weights (for tests only); results.json records it.", arch)
    model.eval()
    model.requires_grad_(False)
    identity["parameters"] = sum(p.numel() for p in model.parameters())
    return Backbone(model, tokenizer, train_transform, eval_transform, identity)
