"""The stages of one run: read the folder, build, resume, train and evaluate, finish (``run``).

``python -m clprompt.run`` (clprompt/run.py) checks the config, then calls ``main`` here: this module
imports torch, Avalanche and open_clip, so the command line answers a bad config before loading them.
configs -> backbone, stream (drawn by the protocol: few-shot, noisy labels, pseudo-labels, base-to-new),
method, strategy -> experience by experience: train, evaluate every task -> accuracy matrix -> metrics ->
results.json, CSV, PNG, TensorBoard (all in the Hydra run directory).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clprompt.data.augmentation import train_transform
from clprompt import heap
from clprompt.errors import ClpromptError, ConfigValueError, ParametersDivergedError
from clprompt.records import metrics
from clprompt.training import checkpoint, stop_signal
from clprompt.training.checkpoint import CheckpointError
from clprompt.config_check import NEUTRAL_KEYS, check_config
from clprompt.training.compiled_step import CompiledTextTower, resolve_compile
from clprompt.model.backbone import in_background
from clprompt.versions import versions
from clprompt.model.clip_adapter import configure_text_chunks
from clprompt.training.distributed import Distributed
from clprompt.training.encoding_batch import EncodingBatch
from clprompt.data.feature_cache import ExperienceFeatures, FeatureCache, encoder_identity, resolve_mode
from clprompt.records import run_folder
from clprompt.records.evaluation import AccuracyMatrixPlugin, resolve_protocol
from clprompt.records.run_folder import RunFolderBusy, RunFolderRefused
from clprompt.records.gradient_ratio import GradientNormRatioPlugin
from clprompt.data.image_batches import build_image_batches
from clprompt.methods.ensemble import Ensemble
from clprompt.records.outputs import RunRecorder, format_summary
from scenarios.atomic_write import write_atomic
from clprompt.data.protocol import DEFAULT_TEMPLATE, prepare_experiment
from scenarios.image_folder_dataset import keep_decoded
from clprompt.training.strategy import PromptStrategy, autocast_dtype
from clprompt.training.stop_signal import Interrupted, StopSignalPlugin
from clprompt.sweep import fail, in_multirun
from clprompt.records.task_identification import TaskIdentificationPlugin
from clprompt.records.training_log import TrainingLog
from scenarios.errors import DatasetNotFoundError, StreamConfigError

log = logging.getLogger("clprompt")

USER_ERRORS = (ClpromptError, DatasetNotFoundError, StreamConfigError)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``device=``: auto (CUDA if present), cpu, cuda, cuda:N, or per_job: a sweep's job k on GPU k mod the GPU
    count (Hydra's joblib launcher on a multi-GPU machine; cpu without CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "per_job":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device(f"cuda:{job_number() % torch.cuda.device_count()}")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ClpromptError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ClpromptError(f"device={name} but this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1}); "
                            "give one of those, or device=per_job to spread a sweep's jobs over them")
    return device


def job_number() -> int:
    """This job's number in a Hydra sweep (``hydra.job.num``), 0 outside one."""
    if HydraConfig.initialized() and in_multirun():
        return int(HydraConfig.get().job.num)
    return 0


def build(cfg: DictConfig, kind: str, **kwargs):
    """Instantiate ``cfg[kind]``; an error inside the target surfaces as itself, not wrapped by Hydra."""
    try:
        return instantiate(cfg[kind], **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, USER_ERRORS):
            raise cause
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(cause or error))
        if unknown and "_target_" in cfg[kind]:
            target = cfg[kind]._target_
            choice = HydraConfig.get().runtime.choices.get(kind) if HydraConfig.initialized() else None
            where = f"{kind}={choice} ({target})" if choice else target
            raise ConfigValueError(f"{kind}.{unknown.group(1)} is not an option of {where}; its options: "
                                   f"{', '.join(target_options(target)) or 'none'}") from None
        raise


def target_options(target: str) -> list[str]:
    """The keyword arguments a config's ``_target_`` takes (what its YAML may set)."""
    import importlib
    import inspect

    module, _, name = target.rpartition(".")
    function = getattr(importlib.import_module(module), name)
    skip = {"self", "backbone", "class_names", "train_transform", "eval_transform", "args", "kwargs"}
    return [p for p in inspect.signature(function).parameters if p not in skip]


def scenario_templates(cfg: DictConfig, description: dict) -> dict:
    """Method options set to "scenario" (``templates`` of zero-shot, ``template`` of the linear probe's
    text init) take the scenario's own template: CoOp's per-dataset one, else "a photo of a {}."."""
    template = description.get("template") or DEFAULT_TEMPLATE
    return {key: template for key in ("templates", "template") if cfg.method.get(key) == "scenario"}


def build_method(cfg: DictConfig, backbone, stream, members: int):
    """The configured method; with ``members`` > 1 an ensemble of copies initialised from seeds
    seed, seed + 1, ... (a copy that starts from words is the same at every seed until trained)."""
    options = dict(backbone=backbone, class_names=stream.class_names, **scenario_templates(cfg, stream.description))
    if members == 1:
        return build(cfg, "method", **options)
    copies = []
    for member in range(members):
        torch.manual_seed(cfg.seed + member)
        copies.append(build(cfg, "method", **options))
    return Ensemble(copies)


def loader_arguments(num_workers, device: torch.device) -> dict:
    """DataLoader settings: ``data.num_workers=auto`` is the machine's cores (at most 8) on CUDA and 0 on
    CPU (there the workers would take the cores the model computes on); pinned memory and persistent
    workers on CUDA."""
    if num_workers == "auto":
        num_workers = min(os.cpu_count() or 1, 8) if device.type == "cuda" else 0
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigValueError(f"data.num_workers={num_workers!r}: give auto or a count >= 0")
    cuda = device.type == "cuda"
    return {"num_workers": num_workers, "pin_memory": cuda, "persistent_workers": cuda and num_workers > 0}


def build_features(cfg: DictConfig, method, stream, backbone, strategy, device, loader_args, images=None,
                   distributed=None) -> tuple:
    """The feature cache when ``train.feature_cache`` resolves on (see clprompt.data.feature_cache), and its record."""
    enabled, reason = resolve_mode(cfg.train.feature_cache, method.frozen_image_side, type(method).__name__)
    record = {"mode": cfg.train.feature_cache, "enabled": enabled, "reason": reason}
    if not enabled:
        return None, None, record
    cache = FeatureCache(cfg.cache.dir, distributed)
    # the tower's identity on another thread (hashlib releases the GIL) until the first key needs it
    encoder = in_background(encoder_identity, backbone.model.visual, strategy.amp_dtype, device,
                            backbone.identity.get("sha256") if backbone.identity["source"] == "file" else None)
    features = ExperienceFeatures(cache, encoder, dict(stream.splits), strategy.encode_images, device,
                                  strategy.encoding_batch, loader_args, images=images)
    return features, cache, record


def check_run_folder(run_dir: Path) -> None:
    """Refuse, before any work, a run folder that cannot be written (nothing in it is touched)."""
    if Path(run_dir).exists() and not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigValueError(f"the run folder {run_dir} is not writable: give another hydra.run.dir, or make it "
                               "writable (chmod u+w)")


def previous_run(cfg: DictConfig, run_dir: Path) -> tuple[Optional[dict], Optional[dict]]:
    """(results.json of an earlier run in this folder or None, its checkpoint or None).

    Refuses a folder another live process is running, a damaged or foreign checkpoint, a checkpoint
    computed with another config (every key but the neutral ones), and finished experiences without a
    checkpoint: resuming from any of them would mix two runs, and restarting over them would lose work.
    """
    path = Path(run_dir) / "results.json"
    previous = None
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise RunFolderRefused(f"{path} cannot be read ({error}): give another hydra.run.dir, or move the "
                                   "folder away") from None
        if not isinstance(previous, dict):
            raise RunFolderRefused(f"{path} holds a JSON {type(previous).__name__}, not a run's record: give another "
                                   "hydra.run.dir, or move the folder away")
    current = OmegaConf.to_container(cfg, resolve=True)
    if previous is not None and previous.get("status") == "complete":
        changed = checkpoint.differences(previous.get("config") or {}, current, NEUTRAL_KEYS)
        if changed:
            raise RunFolderRefused(
                f"{run_dir} holds a finished run of another command; its results are not this command's. Changed: "
                f"{'; '.join(changed)}. Give another hydra.run.dir (a sweep: another hydra.sweep.dir), or run the "
                f"recorded command (resume={run_dir}) to see its results")
        return previous, None
    process = (previous or {}).get("process") or {}
    if previous is not None and previous.get("status") == "running" and run_folder.is_alive(process):
        raise RunFolderBusy(f"{run_dir} is being run by process {process.get('pid')} on {process.get('host')} "
                            f"(started {process.get('started')}): wait for it to end, or stop it and run again")
    saved = checkpoint.load(run_dir)
    if saved is not None:
        changed = checkpoint.differences(saved["config"], current, NEUTRAL_KEYS)
        if changed:
            raise RunFolderRefused(
                f"{run_dir} holds a run with another config; resuming would mix the two. Changed: "
                f"{'; '.join(changed)}. Run the original command again to resume it, or give another "
                f"hydra.run.dir (only {', '.join(NEUTRAL_KEYS)} may change on a resume)")
    elif previous is not None and previous.get("completed_experiences", 0) > 0:
        raise RunFolderRefused(f"{run_dir} has {previous['completed_experiences']} finished experience(s) but no "
                              f"{checkpoint.FILE} (written by a clprompt without checkpoints?): it cannot be resumed; "
                              "give another hydra.run.dir")
    return previous, saved


def key_settings(cfg: DictConfig, choices: dict) -> dict:
    """The settings a sweep's runs are compared on in TensorBoard's HParams tab."""
    return {"scenario": choices.get("scenario") or "", "method": choices.get("method") or "",
            "model": choices.get("model") or "", "loss": choices.get("loss") or "", "seed": cfg.seed,
            "eval.protocol": cfg.eval.protocol, "train.classes": cfg.train.classes, "train.epochs": cfg.train.epochs,
            "train.batch_size": cfg.train.batch_size, "train.lr": float(cfg.train.optimizer.get("lr", 0.0)),
            "train.augmentation": cfg.train.augmentation, "protocol": cfg.protocol.name,
            "protocol.shots": cfg.protocol.shots if cfg.protocol.shots is not None else "all",
            "protocol.noise": f"{cfg.protocol.noise.kind} {cfg.protocol.noise.rate}"}


def overrides() -> list[str]:
    """The command line's overrides (Hydra's task overrides), as the run was started."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def restore(parts: "RunParts", saved: dict) -> int:
    """Bring the freshly built run to the checkpoint's state; returns the experiences already done. A
    checkpoint inside an experience (train.checkpoint_every) also hands the strategy that experience's
    optimizer state and generators, which it sets when the experience's training starts."""
    done = int(saved["experiences_done"])
    within = saved.get("within")
    method = parts.method
    method.train()
    grown = parts.experiences[:done + 1] if within else parts.experiences[:done]
    for experience in grown:  # the method's growth per experience (LAMM's labels, probe rows)
        avalanche_model_adaptation(method, experience)
    method.eval()
    missing, unexpected = method.load_state_dict(saved["method_state"], strict=False)
    missing = [k for k in missing if not k.startswith("clip.") and ".clip." not in k]
    if missing or unexpected:
        raise CheckpointError(f"{Path(parts.run_dir) / checkpoint.FILE} does not fit this method (missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}): give another hydra.run.dir")
    matrix_plugin, task_plugin, ratio_plugin = parts.matrix_plugin, parts.task_plugin, parts.ratio_plugin
    matrix_plugin.matrix = saved["matrix"].numpy().copy()
    matrix_plugin.n_trained = done
    matrix_plugin.task_confusion = list(saved["task_confusion"])
    task_plugin.rows, task_plugin.n_trained = list(saved.get("task_identification") or []), done
    parts.timing[:] = saved["timing"]
    parts.storage["adapted_state_bytes"] = list(saved["adapted_state_bytes"])
    if ratio_plugin is not None and saved.get("grad_norm_ratio") is not None:
        ratio_plugin.history = list(saved["grad_norm_ratio"])
    if within:
        parts.strategy.resume_within = {"epochs_done": int(within["epochs_done"]), "optimizer": within["optimizer"],
                                        "rng": saved["rng"]}
    else:
        checkpoint.set_rng_states(saved["rng"])
    return done


def train_experience(strategy, method, experience, seed: int, loader_args: dict) -> None:
    """Train on one experience; an ensemble trains its members one after another, member i from seed + i."""
    if not isinstance(method, Ensemble):
        strategy.train(experience, **loader_args)
        return
    for member in range(len(method.members)):
        log.info("ensemble member %d of %d", member + 1, len(method.members))
        method.activate(member)
        seed_everything(seed + member)
        strategy.train(experience, **loader_args)


def tensor_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def save_adapted_state(method, run_dir: Path, experience: int, backbone_bytes: int, write: bool = True) -> int:
    """Save what the method learned up to this experience on its own (not the backbone); returns its size
    in bytes (0 when nothing is learned, and nothing is written). write=False: the size only."""
    state = method.adapted_state_dict()
    if not state:
        return 0
    if not write:
        return tensor_bytes(state)
    folder = run_dir / "adapted_state"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu() for name, tensor in state.items()}
    write_atomic(folder / f"experience_{experience + 1}.pt", lambda temporary: torch.save(tensors, temporary))
    size = tensor_bytes(state)
    log.info("experience %d: adapted state %d bytes (backbone %d)", experience + 1, size, backbone_bytes)
    return size


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    import resource

    record = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        record["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return record


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured stream; returns the final results dict (also written to ``run_dir``)."""
    started = time.time()
    check_config(cfg)
    device = resolve_device(cfg.device)
    distributed = Distributed.from_environment(device)   # torchrun's processes, or this one alone
    try:
        return run_on(cfg, Path(distributed.broadcast_object(str(run_dir))), distributed,
                      distributed.device(device), started)
    finally:
        distributed.close()


@dataclass
class RunParts:
    """What the stages of a run share: its settings, what ``build_run`` built, and what the loop records."""

    cfg: DictConfig
    run_dir: Path
    distributed: Distributed
    device: torch.device
    started: float
    previous: Optional[dict]
    saved: Optional[dict]
    backbone: object = None
    views: object = None
    n_views: int = 0
    stream: object = None
    experiment: object = None              # the protocol's draws (clprompt.data.protocol.Experiment)
    eval_protocol: str = "class_incremental"   # eval.protocol resolved for this stream (auto: the scenario's)
    method: object = None
    choices: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    recorder: Optional[RunRecorder] = None
    matrix_plugin: Optional[AccuracyMatrixPlugin] = None
    training_log: Optional[TrainingLog] = None
    task_plugin: Optional[TaskIdentificationPlugin] = None
    ratio_plugin: Optional[GradientNormRatioPlugin] = None
    strategy: Optional[PromptStrategy] = None
    loader_args: dict = field(default_factory=dict)
    cache: Optional[FeatureCache] = None
    cache_record: dict = field(default_factory=dict)
    encoding_batch: Optional[EncodingBatch] = None   # eval.batch_size (auto: measured on the first batches)
    experiences: list = field(default_factory=list)
    timing: list = field(default_factory=list)
    storage: dict = field(default_factory=dict)

    @property
    def main(self) -> bool:
        return self.distributed.is_main

    def extra(self) -> dict:
        """results.json's fields beside the matrix and the header."""
        fields = {"storage": self.storage,
                  "feature_cache": {**self.cache_record, **(self.cache.record() if self.cache else {})},
                  "evaluation_batch": self.encoding_batch.record(),
                  "timing": self.timing, "resources": {**peak_memory(self.device), "heap": heap.setting()},
                  "task_confusion": self.matrix_plugin.task_confusion}
        if self.task_plugin.record() is not None:   # methods that choose a task's prompts per image
            fields["task_identification"] = self.task_plugin.record()
        if self.ratio_plugin is not None:
            fields["grad_norm_ratio"] = self.ratio_plugin.history
        if self.cfg.protocol.base_to_new and not np.isnan(self.matrix_plugin.matrix[0]).any():
            fields["metrics"] = {k: 100 * v for k, v in metrics.base_to_new(self.matrix_plugin.matrix).items()}
        return fields

    def checkpoint_payload(self, experiences_done: int) -> dict:
        """What a resumed run needs after ``experiences_done`` experiences (see clprompt.training.checkpoint)."""
        ratio, log_ = self.ratio_plugin, self.training_log
        return {"experiences_done": experiences_done,
                "config": OmegaConf.to_container(self.cfg, resolve=True), "weights": dict(self.backbone.identity),
                "method_state": {k: v.detach().cpu().clone() for k, v in self.method.adapted_state_dict().items()},
                "matrix": torch.from_numpy(self.matrix_plugin.matrix.copy()), "timing": list(self.timing),
                "task_confusion": list(self.matrix_plugin.task_confusion),
                "task_identification": list(self.task_plugin.rows),
                "adapted_state_bytes": list(self.storage["adapted_state_bytes"]),
                "grad_norm_ratio": list(ratio.history) if ratio is not None else None,
                "training_log": {"epochs_logged": log_.epochs_logged, "experiences": dict(log_.experiences)},
                "rng": checkpoint.rng_states()}

    def epoch_checkpoint(self, epochs_done: int) -> None:
        """``train.checkpoint_every``: the state inside an experience, after ``epochs_done`` of its epochs."""
        index = self.strategy.experience.current_experience
        payload = self.checkpoint_payload(index)
        payload["within"] = {"experience": index, "epochs_done": epochs_done,
                             "optimizer": self.strategy.optimizer.state_dict()}
        if self.main:
            checkpoint.save(self.run_dir, payload)
        log.info("experience %d: checkpoint after epoch %d", index + 1, epochs_done)


def run_on(cfg: DictConfig, run_dir: Path, distributed: Distributed, device: torch.device, started: float) -> dict:
    """``run`` in one process of the run's processes (see clprompt.training.distributed): every process computes, the
    main one writes. The stages: read the folder, build, resume, train and evaluate, finish."""
    if not distributed.is_main:   # the main process speaks for the run
        logging.getLogger("clprompt").setLevel(logging.WARNING)
    check_run_folder(run_dir)
    claim = claim_folder(run_dir, distributed)
    try:
        previous, saved = previous_run(cfg, run_dir)
        distributed.barrier()   # every process has read the folder before the main one writes to it
        if previous is not None and previous.get("status") == "complete":
            return report_complete(previous, run_dir, distributed.is_main)
        if distributed.is_main:
            run_folder.write_hydra_record(run_dir, cfg)   # the folder accepted this command: its record
        parts = RunParts(cfg, run_dir, distributed, device, started, previous, saved)
        build_run(parts)
        done = resume(parts) if saved is not None else 0
        results = train_and_evaluate(parts, done)
        finish(parts, results)
        return results
    finally:
        if claim is not None:
            claim.release()


def claim_folder(run_dir: Path, distributed: Distributed) -> Optional[run_folder.Claim]:
    """The main process claims the run folder before any work (clprompt.records.run_folder); a folder another
    live run holds is refused on every process."""
    claimed, refusal = None, None
    if distributed.is_main:
        try:
            claimed = run_folder.claim(run_dir)
        except RunFolderBusy as error:
            refusal = str(error)
        except OSError as error:
            refusal = f"the run folder {run_dir} cannot be written ({error}): give another hydra.run.dir"
    refusal = distributed.broadcast_object(refusal)
    if refusal is not None:
        raise RunFolderBusy(refusal)
    return claimed


def report_complete(previous: dict, run_dir: Path, main: bool) -> dict:
    """A folder whose run is complete is not run again: its matrix is printed, its results returned."""
    if main:
        print(f"run {run_dir} is complete: not re-run (give another hydra.run.dir to run it again)")
        print(format_summary(np.array([[np.nan if v is None else v / 100 for v in row]
                                       for row in previous["accuracy_matrix"]])))
    return previous


def build_run(parts: RunParts) -> None:
    """Stage 1: the backbone, the stream drawn by the protocol, the method, the records and the strategy."""
    cfg = parts.cfg
    seed_everything(cfg.seed)
    autocast_dtype(parts.device, cfg.precision)  # refuses a precision the device cannot use, before any work
    parts.backbone = build(cfg, "model")
    parts.n_views = cfg.train.augmentation_views or cfg.train.epochs
    parts.views = train_transform(cfg.train.augmentation, parts.backbone, seed=cfg.train.augmentation_seed,
                                  n_views=parts.n_views)
    if parts.views.random and parts.n_views < cfg.train.epochs:
        log.warning("train.augmentation_views=%d < train.epochs=%d: views are reused (epoch e sees view e mod %d), "
                    "a departure from the recipe's new view every epoch (recorded in results.json)",
                    parts.n_views, cfg.train.epochs, parts.n_views)
    keep_decoded(cfg.data.keep_decoded_mb)
    stream = build(cfg, "scenario", train_transform=parts.views, eval_transform=parts.backbone.eval_transform)
    parts.encoding_batch = EncodingBatch(cfg.eval.batch_size, parts.device)
    parts.experiment = prepare_experiment(stream, cfg.protocol, parts.backbone, parts.device, parts.run_dir,
                                          parts.encoding_batch.size)
    parts.stream = parts.experiment.stream
    parts.eval_protocol = resolve_protocol(cfg.eval.protocol, parts.stream.scenario_type, parts.stream.name)
    parts.method = build_method(cfg, parts.backbone, parts.stream, cfg.protocol.ensemble)
    parts.choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    parts.header = run_header(parts)
    build_records(parts)
    build_strategy(parts)
    parts.storage = {"backbone_bytes": tensor_bytes(parts.backbone.model.state_dict()), "adapted_state_bytes": []}
    parts.experiences = list(parts.stream.benchmark.train_stream)[:parts.experiment.train_experiences]
    parts.strategy.checkpoint_every = cfg.train.checkpoint_every
    parts.strategy.epoch_checkpoint = parts.epoch_checkpoint


SANDBOX_SCENARIOS = ("scenarios.sandbox.", "scenarios.tiny_colors.")
CONTAINERS = ("scenarios.sequences.",)   # a task sequence is of the world of the streams it holds


def worlds(cfg: DictConfig) -> dict:
    """Which world the scenario and the model belong to: "sandbox" (the procedural world, tiny_colors; the
    mini-CLIP and the tiny test model, whose architectures the model config gives inline) or "real"
    (datasets on disk; open_clip's architectures), and whether they match."""
    def targets(node) -> list[str]:
        if isinstance(node, DictConfig):
            found = [str(node["_target_"])] if "_target_" in node else []
            return found + [t for key in node if OmegaConf.is_config(node[key]) for t in targets(node[key])]
        return [t for item in node for t in targets(item)] if OmegaConf.is_list(node) else []

    scenario_targets = [t for t in targets(cfg.scenario) if not t.startswith(CONTAINERS)]
    scenario = "sandbox" if scenario_targets and all(t.startswith(SANDBOX_SCENARIOS) for t in scenario_targets) \
        else "real"
    model = "sandbox" if cfg.model.get("config") is not None else "real"
    return {"scenario": scenario, "model": model, "match": scenario == model}


def weights_differences(then: dict, now: dict) -> list[str]:
    """The keys of the weights' identity that differ; a checkpoint file's path does not count when its
    content (sha256) is the same (the same file in another checkout, a moved folder)."""
    keys = set(then) | set(now)
    if then.get("sha256") and then.get("sha256") == now.get("sha256"):
        keys.discard("pretrained")
    return sorted(k for k in keys if then.get(k) != now.get(k))


def run_header(parts: RunParts) -> dict:
    """results.json's description of the run; refuses a checkpoint computed with other weights."""
    cfg, backbone, stream, saved = parts.cfg, parts.backbone, parts.stream, parts.saved
    header = {
        "scenario": parts.choices.get("scenario"), "method": parts.choices.get("method"),
        "loss": parts.choices.get("loss"), "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed, "weights": backbone.identity, "stream": stream.description,
        "class_names": stream.class_names, "protocol": parts.eval_protocol, "experiment": parts.experiment.record,
        "device": str(parts.device),
        "distributed": {"processes": parts.distributed.world_size, "backend": parts.distributed.backend},
        "versions": versions(), "overrides": overrides(), "worlds": worlds(cfg),
        "method_resolved": parts.method.resolved_options(),   # blocks / lengths fitted to this backbone
        "process": {**run_folder.process_identity(),   # pid, host, boot id, start tick: a recycled pid is not it
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(parts.started))},
    }
    if header["method_resolved"]:
        log.info("method options resolved on this backbone: %s", header["method_resolved"])
    if not header["worlds"]["match"]:
        log.warning("a %s scenario with a %s model (%s): %s", header["worlds"]["scenario"],
                    header["worlds"]["model"], backbone.identity.get("arch"),
                    "the mini-CLIP and the tiny model know only the sandbox world; for real data give a real CLIP, "
                    "e.g. model=vit_b16" if header["worlds"]["scenario"] == "real" else
                    "the sandbox's 32-px procedural images are for the mini-CLIP (model=miniclip)")
    changed = weights_differences(saved["weights"], backbone.identity) if saved is not None else []
    if changed:
        raise CheckpointError(f"{parts.run_dir} was run with other weights ({', '.join(changed)} differ: "
                              f"{ {k: saved['weights'].get(k) for k in changed} } then, "
                              f"{ {k: backbone.identity.get(k) for k in changed} } now): resuming would mix "
                              "two models. Restore the weights, or give another hydra.run.dir")
    if saved is not None:
        header["resumed"] = list((parts.previous or {}).get("resumed", [])) + [
            {"from_experience": saved["experiences_done"] + 1, "at": header["process"]["started"]}]
    return header


def build_records(parts: RunParts) -> None:
    """The recorder (results.json, CSV, PNG, TensorBoard) and the plugins that fill it."""
    cfg, saved, previous, distributed = parts.cfg, parts.saved, parts.previous, parts.distributed
    # TensorBoard: a resumed run hides what the interrupted one logged from the last checkpointed row on
    # (re-logged by resume); a restart hides everything the dead run logged
    purge_step = saved["experiences_done"] if saved is not None else (0 if previous is not None else None)
    epochs_logged = saved["training_log"]["epochs_logged"] if saved is not None else 0
    parts.recorder = RunRecorder(parts.run_dir, parts.header, purge_step=purge_step,
                                 training_purge_step=epochs_logged + 1 if previous is not None else None,
                                 enabled=parts.main)
    progress = cfg.progress and parts.main
    reduce = distributed.sum if distributed.enabled else None
    parts.matrix_plugin = AccuracyMatrixPlugin(parts.stream.experience_classes, parts.eval_protocol,
                                               progress=progress, reduce=reduce, test_classes=parts.stream.test_classes)
    parts.training_log = TrainingLog(parts.recorder.training_curves.add_scalar, progress=progress,
                                     epochs_logged=epochs_logged)
    if saved is not None:
        parts.training_log.experiences = dict(saved["training_log"]["experiences"])
    # held-out test domains (CORe50's sessions 3, 7, 10) have no right task to choose: nothing is counted
    parts.task_plugin = TaskIdentificationPlugin(len(parts.stream.test_classes), reduce=reduce,
                                                 enabled=parts.stream.test_domains is None)
    if cfg.protocol.grad_norm_ratio:
        parts.ratio_plugin = GradientNormRatioPlugin(parts.experiment.training_set, parts.experiment.noisy,
                                                     seed=cfg.seed, log_scalar=parts.recorder.tensorboard.add_scalar)


def build_strategy(parts: RunParts) -> None:
    """The Avalanche strategy with its plugins, the compiled text step, the loaders, the batched transforms
    and the feature cache."""
    cfg, device, views = parts.cfg, parts.device, parts.views
    plugins = [parts.matrix_plugin, parts.task_plugin, parts.training_log, StopSignalPlugin()]
    if parts.ratio_plugin is not None:
        plugins.append(parts.ratio_plugin)
    strategy = parts.strategy = PromptStrategy(
        method=parts.method, train_epochs=cfg.train.epochs, train_mb_size=cfg.train.batch_size,
        eval_mb_size=parts.encoding_batch.size, device=device, plugins=plugins,
        optimizer_factory=instantiate(cfg.train.optimizer), loss=build(cfg, "loss"),
        warmup_epochs=cfg.train.warmup_epochs, warmup_lr=cfg.train.warmup_lr, precision=cfg.precision,
        views=views, train_classes=cfg.train.classes, distributed=parts.distributed, schedule=cfg.train.schedule,
    )
    compile_on, compile_reason = resolve_compile(cfg.train.compile, device)
    if compile_on:
        strategy.compiled = CompiledTextTower(device, backend=cfg.train.compile_backend)
    parts.header["compile"] = {"mode": cfg.train.compile, "enabled": compile_on, "reason": compile_reason,
                               **(strategy.compiled.record() if compile_on else {})}
    parts.header["text_chunk"] = configure_text_chunks(parts.method, cfg.train.text_chunk, device)
    parts.loader_args = loader_arguments(cfg.data.num_workers, device)
    strategy.image_batches, batch_record = build_image_batches(cfg.data.batch_transforms, dict(parts.stream.splits),
                                                               device)
    strategy.encoding_batch = parts.encoding_batch
    strategy.features, parts.cache, parts.cache_record = build_features(
        cfg, parts.method, parts.stream, parts.backbone, strategy, device, parts.loader_args,
        images=strategy.image_batches, distributed=parts.distributed)
    parts.header["data_loading"] = {**parts.loader_args, "batch_transforms": batch_record}
    parts.header["augmentation"] = {"kind": cfg.train.augmentation, "random": views.random,
                                    "seed": views.seed if views.random else None,
                                    "views": parts.n_views if views.random else 1, "epochs": cfg.train.epochs,
                                    "new_view_every_epoch": (not views.random) or parts.n_views >= cfg.train.epochs}
    cache = parts.cache
    log.info("text tower compile %s", compile_reason)
    log.info("transforms %s", batch_record["reason"])
    log.info("feature cache %s%s", parts.cache_record["reason"], f", {cache.directory}" if cache and cache.directory else "")
    log.info("%s: %d experiences, %d classes, weights %s", parts.stream.name, parts.stream.n_experiences,
             len(parts.stream.class_names), parts.backbone.identity.get("pretrained") or "RANDOM (pretrained=null)")


def resume(parts: RunParts) -> int:
    """Stage 2: restore the checkpoint's state and re-log its rows; returns the experiences already done."""
    done = restore(parts, parts.saved)
    if done > 0:
        parts.recorder.log_row(parts.matrix_plugin.matrix, done - 1)
        parts.task_plugin.log_row(parts.recorder.tensorboard, done - 1)
        if parts.matrix_plugin.task_confusion:
            parts.recorder.log_confusion(np.array(parts.matrix_plugin.task_confusion[-1]), done - 1)
    within = parts.saved.get("within")
    message = f"resuming {parts.run_dir} from experience {done + 1} of {len(parts.experiences)}" + (
        f", after its epoch {within['epochs_done']}" if within else "")
    if parts.main:
        print(message if done < len(parts.experiences) else f"{message}: every experience is trained, writing results")
    log.info(message)
    return done


def train_and_evaluate(parts: RunParts, done: int) -> dict:
    """Stage 3: each experience from ``done`` on: train, save the adapted state, evaluate every task,
    checkpoint, record. Whatever ends the loop, results.json says how (complete, interrupted, failed) and
    keeps the finished experiences; returns the final results."""
    status = "running"
    try:
        for experience in parts.experiences[done:]:
            train_and_evaluate_experience(parts, experience, status)
        status = "complete"
    except (KeyboardInterrupt, Interrupted) as stop:
        status = f"interrupted ({signal_name(stop)})"
        raise
    except BaseException as error:
        if stop_signal.requested():  # an error the stop caused (its first raise discarded, workers killed with us)
            status = f"interrupted ({stop_signal.requested()})"
            raise Interrupted(stop_signal.requested()) from error
        status = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        results = parts.recorder.write(parts.matrix_plugin.matrix, status, time.time() - parts.started, parts.extra())
        parts.recorder.finish(parts.matrix_plugin.matrix, results["metrics"] if parts.cfg.protocol.base_to_new else None,
                              hparams=key_settings(parts.cfg, parts.choices))
    return results


def train_and_evaluate_experience(parts: RunParts, experience, status: str) -> None:
    """One experience: train, save what was learned, evaluate the test stream, checkpoint, write its row."""
    index = experience.current_experience
    start = time.perf_counter()
    train_experience(parts.strategy, parts.method, experience, parts.cfg.seed, parts.loader_args)
    check_parameters(parts.method, index, parts.cfg)
    trained = time.perf_counter()
    parts.storage["adapted_state_bytes"].append(save_adapted_state(
        parts.method, parts.run_dir, index, parts.storage["backbone_bytes"], write=parts.main))
    parts.strategy.eval(parts.stream.benchmark.test_stream, **parts.loader_args)
    parts.timing.append({"experience": index + 1, "train_s": trained - start,
                         "eval_s": time.perf_counter() - trained, "train_images": len(experience.dataset),
                         **parts.training_log.summary(index)})
    if parts.main:
        checkpoint.save(parts.run_dir, parts.checkpoint_payload(index + 1))
    recorder, matrix = parts.recorder, parts.matrix_plugin.matrix
    recorder.log_row(matrix, index)
    parts.task_plugin.log_row(recorder.tensorboard, index)
    if parts.matrix_plugin.task_confusion:   # none on a domain stream: a class names no domain
        recorder.log_confusion(np.array(parts.matrix_plugin.task_confusion[-1]), index)
    recorder.write(matrix, status, time.time() - parts.started, parts.extra())


PARAMETER_BOUND = 1.0e4   # no method's learned value comes near it (prompts, label embeddings and probe rows are O(1))


def check_parameters(method, index: int, cfg: DictConfig) -> None:
    """Refuse to keep an experience whose training left a learned parameter non-finite or beyond
    ``PARAMETER_BOUND``: it diverged (a finite loss can hide it), so its row, checkpoint and adapted state are
    not written, and the experiences before it are kept."""
    worst, where = 0.0, None
    for name, parameter in method.named_parameters():
        if not parameter.requires_grad or parameter.numel() == 0:
            continue
        values = parameter.detach()
        if not torch.isfinite(values).all():
            worst, where = float("inf"), name
            break
        largest = float(values.abs().max())
        if largest > worst:
            worst, where = largest, name
    if worst > PARAMETER_BOUND:
        lr = cfg.train.optimizer.get("lr")
        raise ParametersDivergedError(
            f"experience {index + 1}'s training diverged: the learned parameter {where} reached "
            f"{'a non-finite value' if worst == float('inf') else f'|{worst:.3g}|'} (beyond {PARAMETER_BOUND:g}). Its "
            f"results are not kept; the {index} experience(s) before it are. Lower train.optimizer.lr (now {lr}) or "
            "train.epochs, in another hydra.run.dir")


def finish(parts: RunParts, results: dict) -> None:
    """Stage 4: the console's summary of a finished run."""
    if not parts.main:
        return
    if parts.cfg.protocol.base_to_new:   # one training experience scored on base and new classes: no stream metrics
        print("base-to-new: " + ", ".join(f"{k} {results['metrics'][k]:.2f}" for k in ("base", "new", "hm")))
    else:
        print(format_summary(parts.matrix_plugin.matrix))
    print(f"results in {parts.run_dir}")


def signal_name(stop: BaseException) -> str:
    """'SIGINT' for Ctrl-C, the signal's name for an ``Interrupted``."""
    return "SIGINT" if isinstance(stop, KeyboardInterrupt) else str(stop)


def main(cfg: DictConfig, run_dir: Path):
    """The command line's run of a checked config: SIGTERM as an interruption, a user error as a message
    (recorded, and the sweep goes on, in a multirun), an interruption as exit 130 / 143."""
    stop_signal.install(signal.SIGTERM)
    mark = run_folder.LogMark(run_dir)
    try:
        run(cfg, run_dir)
    except (RunFolderBusy, RunFolderRefused) as error:
        mark.restore()   # the folder's log stays the log of the run it holds
        return fail(cfg, run_dir, error)
    except USER_ERRORS as error:
        return fail(cfg, run_dir, error)
    except (KeyboardInterrupt, Interrupted) as stop:
        name = signal_name(stop)
        print(f"interrupted ({name}): the finished experiences are kept in {run_dir / 'results.json'}",
              file=sys.stderr)
        sys.exit(130 if name == "SIGINT" else 143)
