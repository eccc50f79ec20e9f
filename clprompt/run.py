"""``python -m clprompt.run scenario=... method=... model=...``: one continual-learning run.

configs -> backbone, stream (drawn by the protocol: few-shot, noisy labels, pseudo-labels, base-to-new),
method, strategy -> experience by experience: train, evaluate every task -> accuracy matrix -> metrics ->
results.json, CSV, PNG, TensorBoard (all in the Hydra run directory).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
import torch
from avalanche.models.dynamic_modules import avalanche_model_adaptation
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clprompt.data.augmentation import train_transform
from clprompt.errors import ClpromptError, ConfigValueError
from clprompt import config_dir
from clprompt.records import metrics
from clprompt.training import checkpoint, stop_signal
from clprompt.training.checkpoint import CheckpointError
from clprompt.config_check import NEUTRAL_KEYS, check_config, under
from clprompt.training.compiled_step import CompiledTextTower, resolve_compile
from clprompt.training.distributed import Distributed
from clprompt.data.feature_cache import ExperienceFeatures, FeatureCache, encoder_identity, resolve_mode
from clprompt.records.evaluation import AccuracyMatrixPlugin
from clprompt.records.gradient_ratio import GradientNormRatioPlugin
from clprompt.data.image_batches import build_image_batches
from clprompt.methods.ensemble import Ensemble
from clprompt.records.outputs import RunRecorder, format_summary
from scenarios.atomic_write import write_atomic
from clprompt.data.protocol import DEFAULT_TEMPLATE, prepare_experiment
from clprompt.training.strategy import PromptStrategy, autocast_dtype
from clprompt.training.stop_signal import Interrupted, StopSignalPlugin
from clprompt.sweep import in_multirun, record_failure
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
    encoder = encoder_identity(backbone.model.visual, strategy.amp_dtype, device)
    features = ExperienceFeatures(cache, encoder, dict(stream.splits), strategy.encode_images, device,
                                  cfg.eval.batch_size, loader_args, images=images)
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
            raise CheckpointError(f"{path} cannot be read ({error}): give another hydra.run.dir, or move the "
                                  "folder away") from None
    if previous is not None and previous.get("status") == "complete":
        return previous, None
    process = (previous or {}).get("process") or {}
    if previous is not None and previous.get("status") == "running" and checkpoint.process_alive(process):
        raise CheckpointError(f"{run_dir} is being run by process {process.get('pid')} on {process.get('host')} "
                              f"(started {process.get('started')}): wait for it to end, or stop it and run again")
    saved = checkpoint.load(run_dir)
    if saved is not None:
        changed = checkpoint.differences(saved["config"], OmegaConf.to_container(cfg, resolve=True), NEUTRAL_KEYS)
        if changed:
            raise CheckpointError(
                f"{run_dir} holds a run with another config; resuming would mix the two. Changed: "
                f"{'; '.join(changed)}. Run the original command again to resume it, or give another "
                f"hydra.run.dir (only {', '.join(NEUTRAL_KEYS)} may change on a resume)")
    elif previous is not None and previous.get("completed_experiences", 0) > 0:
        raise CheckpointError(f"{run_dir} has {previous['completed_experiences']} finished experience(s) but no "
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


def checkpoint_payload(cfg, backbone, method, experiences_done: int, matrix_plugin, timing, storage,
                       ratio_plugin, training_log, task_plugin) -> dict:
    """What a resumed run needs after ``experiences_done`` experiences (see clprompt.training.checkpoint)."""
    return {"experiences_done": experiences_done,
            "config": OmegaConf.to_container(cfg, resolve=True), "weights": dict(backbone.identity),
            "method_state": {k: v.detach().cpu().clone() for k, v in method.adapted_state_dict().items()},
            "matrix": torch.from_numpy(matrix_plugin.matrix.copy()), "timing": list(timing),
            "task_confusion": list(matrix_plugin.task_confusion),
            "task_identification": list(task_plugin.rows),
            "adapted_state_bytes": list(storage["adapted_state_bytes"]),
            "grad_norm_ratio": list(ratio_plugin.history) if ratio_plugin is not None else None,
            "training_log": {"epochs_logged": training_log.epochs_logged,
                             "experiences": dict(training_log.experiences)},
            "rng": checkpoint.rng_states()}


def restore(saved: dict, method, experiences, matrix_plugin, timing, storage, ratio_plugin, run_dir,
            strategy, task_plugin) -> int:
    """Bring the freshly built run to the checkpoint's state; returns the experiences already done. A
    checkpoint inside an experience (train.checkpoint_every) also hands the strategy that experience's
    optimizer state and generators, which it sets when the experience's training starts."""
    done = int(saved["experiences_done"])
    within = saved.get("within")
    method.train()
    grown = experiences[:done + 1] if within else experiences[:done]
    for experience in grown:  # the method's growth per experience (LAMM's labels, probe rows)
        avalanche_model_adaptation(method, experience)
    method.eval()
    missing, unexpected = method.load_state_dict(saved["method_state"], strict=False)
    missing = [k for k in missing if not k.startswith("clip.") and ".clip." not in k]
    if missing or unexpected:
        raise CheckpointError(f"{Path(run_dir) / checkpoint.FILE} does not fit this method (missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}): give another hydra.run.dir")
    matrix_plugin.matrix = saved["matrix"].numpy().copy()
    matrix_plugin.n_trained = done
    matrix_plugin.task_confusion = list(saved["task_confusion"])
    task_plugin.rows, task_plugin.n_trained = list(saved.get("task_identification") or []), done
    timing[:] = saved["timing"]
    storage["adapted_state_bytes"] = list(saved["adapted_state_bytes"])
    if ratio_plugin is not None and saved.get("grad_norm_ratio") is not None:
        ratio_plugin.history = list(saved["grad_norm_ratio"])
    if within:
        strategy.resume_within = {"epochs_done": int(within["epochs_done"]), "optimizer": within["optimizer"],
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


def versions() -> dict:
    import avalanche
    import open_clip

    import clprompt

    return {"clprompt": clprompt.__version__, "clprompt_commit": git_commit(),
            "python": platform.python_version(), "torch": torch.__version__,
            "open_clip": open_clip.__version__, "avalanche": avalanche.__version__}


def git_commit() -> Optional[str]:
    """The checkout's commit (with '+dirty' for uncommitted changes) when clprompt runs from one, else None."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


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


def run_on(cfg: DictConfig, run_dir: Path, distributed: Distributed, device: torch.device, started: float) -> dict:
    """``run`` in one process of the run's processes (see clprompt.training.distributed): every process computes, the
    main one writes."""
    main = distributed.is_main
    if not main:   # the main process speaks for the run
        logging.getLogger("clprompt").setLevel(logging.WARNING)
    check_run_folder(run_dir)
    previous, saved = previous_run(cfg, run_dir)
    distributed.barrier()   # every process has read the folder before the main one writes to it
    if previous is not None and previous.get("status") == "complete":
        if main:
            print(f"run {run_dir} is complete: not re-run (give another hydra.run.dir to run it again)")
            print(format_summary(np.array([[np.nan if v is None else v / 100 for v in row]
                                           for row in previous["accuracy_matrix"]])))
        return previous
    seed_everything(cfg.seed)
    autocast_dtype(device, cfg.precision)  # refuses a precision the device cannot use, before any work
    backbone = build(cfg, "model")
    n_views = cfg.train.augmentation_views or cfg.train.epochs
    views = train_transform(cfg.train.augmentation, backbone, seed=cfg.train.augmentation_seed, n_views=n_views)
    if views.random and n_views < cfg.train.epochs:
        log.warning("train.augmentation_views=%d < train.epochs=%d: views are reused (epoch e sees view e mod %d), "
                    "a departure from the recipe's new view every epoch (recorded in results.json)",
                    n_views, cfg.train.epochs, n_views)
    stream = build(cfg, "scenario", train_transform=views, eval_transform=backbone.eval_transform)
    experiment = prepare_experiment(stream, cfg.protocol, backbone, device, run_dir, cfg.eval.batch_size)
    stream = experiment.stream
    method = build_method(cfg, backbone, stream, cfg.protocol.ensemble)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    header = {
        "scenario": choices.get("scenario"),
        "method": choices.get("method"),
        "loss": choices.get("loss"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seed": cfg.seed,
        "weights": backbone.identity,
        "stream": stream.description,
        "class_names": stream.class_names,
        "protocol": cfg.eval.protocol,
        "experiment": experiment.record,
        "device": str(device),
        "distributed": {"processes": distributed.world_size, "backend": distributed.backend},
        "versions": versions(),
        "overrides": overrides(),
        "process": {"pid": os.getpid(), "host": platform.node(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started))},
    }
    if saved is not None and saved["weights"] != backbone.identity:
        changed = sorted(k for k in set(saved["weights"]) | set(backbone.identity)
                         if saved["weights"].get(k) != backbone.identity.get(k))
        raise CheckpointError(f"{run_dir} was run with other weights ({', '.join(changed)} differ: "
                              f"{ {k: saved['weights'].get(k) for k in changed} } then, "
                              f"{ {k: backbone.identity.get(k) for k in changed} } now): resuming would mix "
                              "two models. Restore the weights, or give another hydra.run.dir")
    if saved is not None:
        header["resumed"] = list(previous.get("resumed", [])) + [{"from_experience": saved["experiences_done"] + 1,
                                                                  "at": header["process"]["started"]}]
    # TensorBoard: a resumed run hides what the interrupted one logged from the last checkpointed row on
    # (re-logged below); a restart hides everything the dead run logged
    purge_step = saved["experiences_done"] if saved is not None else (0 if previous is not None else None)
    epochs_logged = saved["training_log"]["epochs_logged"] if saved is not None else 0
    recorder = RunRecorder(run_dir, header, purge_step=purge_step,
                           training_purge_step=epochs_logged + 1 if previous is not None else None, enabled=main)
    progress = cfg.progress and main
    matrix_plugin = AccuracyMatrixPlugin(stream.experience_classes, cfg.eval.protocol, progress=progress,
                                         reduce=distributed.sum if distributed.enabled else None)
    training_log = TrainingLog(recorder.training_curves.add_scalar, progress=progress, epochs_logged=epochs_logged)
    if saved is not None:
        training_log.experiences = dict(saved["training_log"]["experiences"])
    task_plugin = TaskIdentificationPlugin(stream.n_experiences, reduce=distributed.sum if distributed.enabled else None)
    plugins = [matrix_plugin, task_plugin, training_log, StopSignalPlugin()]
    ratio_plugin = None
    if cfg.protocol.grad_norm_ratio:
        ratio_plugin = GradientNormRatioPlugin(experiment.training_set, experiment.noisy, seed=cfg.seed,
                                               log_scalar=recorder.tensorboard.add_scalar)
        plugins.append(ratio_plugin)
    strategy = PromptStrategy(
        method=method, train_epochs=cfg.train.epochs, train_mb_size=cfg.train.batch_size,
        eval_mb_size=cfg.eval.batch_size, device=device, plugins=plugins,
        optimizer_factory=instantiate(cfg.train.optimizer), loss=build(cfg, "loss"),
        warmup_epochs=cfg.train.warmup_epochs, warmup_lr=cfg.train.warmup_lr, precision=cfg.precision,
        views=views, train_classes=cfg.train.classes, distributed=distributed, schedule=cfg.train.schedule,
    )
    compile_on, compile_reason = resolve_compile(cfg.train.compile, device)
    if compile_on:
        strategy.compiled = CompiledTextTower(device, backend=cfg.train.compile_backend)
    header["compile"] = {"mode": cfg.train.compile, "enabled": compile_on, "reason": compile_reason,
                         **(strategy.compiled.record() if compile_on else {})}
    loader_args = loader_arguments(cfg.data.num_workers, device)
    strategy.image_batches, batch_record = build_image_batches(cfg.data.batch_transforms, dict(stream.splits), device)
    strategy.features, cache, cache_record = build_features(cfg, method, stream, backbone, strategy, device,
                                                            loader_args, images=strategy.image_batches,
                                                            distributed=distributed)
    header["data_loading"] = {**loader_args, "batch_transforms": batch_record}
    header["augmentation"] = {"kind": cfg.train.augmentation, "random": views.random,
                              "seed": views.seed if views.random else None,
                              "views": n_views if views.random else 1, "epochs": cfg.train.epochs,
                              "new_view_every_epoch": (not views.random) or n_views >= cfg.train.epochs}
    log.info("text tower compile %s", compile_reason)
    log.info("transforms %s", batch_record["reason"])
    log.info("feature cache %s%s", cache_record["reason"], f", {cache.directory}" if cache and cache.directory else "")
    log.info("%s: %d experiences, %d classes, weights %s", stream.name, stream.n_experiences,
             len(stream.class_names), backbone.identity.get("pretrained") or "RANDOM (pretrained=null)")
    status = "running"
    storage = {"backbone_bytes": tensor_bytes(backbone.model.state_dict()), "adapted_state_bytes": []}

    timing: list[dict] = []

    def extra() -> dict:
        fields = {"storage": storage, "feature_cache": {**cache_record, **(cache.record() if cache else {})},
                  "timing": timing, "resources": peak_memory(device),
                  "task_confusion": matrix_plugin.task_confusion}
        if task_plugin.record() is not None:   # methods that choose a task's prompts per image
            fields["task_identification"] = task_plugin.record()
        if ratio_plugin is not None:
            fields["grad_norm_ratio"] = ratio_plugin.history
        if cfg.protocol.base_to_new and not np.isnan(matrix_plugin.matrix[0]).any():
            fields["metrics"] = {k: 100 * v for k, v in metrics.base_to_new(matrix_plugin.matrix).items()}
        return fields

    experiences = list(stream.benchmark.train_stream)[:experiment.train_experiences]
    strategy.checkpoint_every = cfg.train.checkpoint_every

    def epoch_checkpoint(epochs_done: int) -> None:
        index = strategy.experience.current_experience
        payload = checkpoint_payload(cfg, backbone, method, index, matrix_plugin, timing, storage, ratio_plugin,
                                     training_log, task_plugin)
        payload["within"] = {"experience": index, "epochs_done": epochs_done,
                             "optimizer": strategy.optimizer.state_dict()}
        if main:
            checkpoint.save(run_dir, payload)
        log.info("experience %d: checkpoint after epoch %d", index + 1, epochs_done)
    strategy.epoch_checkpoint = epoch_checkpoint

    done = 0
    if saved is not None:
        done = restore(saved, method, experiences, matrix_plugin, timing, storage, ratio_plugin, run_dir, strategy,
                       task_plugin)
        if done > 0:
            recorder.log_row(matrix_plugin.matrix, done - 1)
            task_plugin.log_row(recorder.tensorboard, done - 1)
            if matrix_plugin.task_confusion:
                recorder.log_confusion(np.array(matrix_plugin.task_confusion[-1]), done - 1)
        within = saved.get("within")
        message = f"resuming {run_dir} from experience {done + 1} of {len(experiences)}" + (
            f", after its epoch {within['epochs_done']}" if within else "")
        if main:
            print(message if done < len(experiences) else f"{message}: every experience is trained, writing results")
        log.info(message)
    try:
        for experience in experiences[done:]:
            start = time.perf_counter()
            train_experience(strategy, method, experience, cfg.seed, loader_args)
            trained = time.perf_counter()
            storage["adapted_state_bytes"].append(save_adapted_state(
                method, run_dir, experience.current_experience, storage["backbone_bytes"], write=main))
            strategy.eval(stream.benchmark.test_stream, **loader_args)
            timing.append({"experience": experience.current_experience + 1, "train_s": trained - start,
                           "eval_s": time.perf_counter() - trained, "train_images": len(experience.dataset),
                           **training_log.summary(experience.current_experience)})
            if main:
                checkpoint.save(run_dir, checkpoint_payload(cfg, backbone, method, experience.current_experience + 1,
                                                            matrix_plugin, timing, storage, ratio_plugin, training_log,
                                                            task_plugin))
            recorder.log_row(matrix_plugin.matrix, experience.current_experience)
            task_plugin.log_row(recorder.tensorboard, experience.current_experience)
            recorder.log_confusion(np.array(matrix_plugin.task_confusion[-1]), experience.current_experience)
            recorder.write(matrix_plugin.matrix, status, time.time() - started, extra())
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
        results = recorder.write(matrix_plugin.matrix, status, time.time() - started, extra())
        recorder.finish(matrix_plugin.matrix, results["metrics"] if cfg.protocol.base_to_new else None,
                        hparams=key_settings(cfg, choices))
    if main:
        print(format_summary(matrix_plugin.matrix))
        if cfg.protocol.base_to_new:
            print("base-to-new: " + ", ".join(f"{k} {results['metrics'][k]:.2f}" for k in ("base", "new", "hm")))
        print(f"results in {run_dir}")
    return results


def signal_name(stop: BaseException) -> str:
    """'SIGINT' for Ctrl-C, the signal's name for an ``Interrupted``."""
    return "SIGINT" if isinstance(stop, KeyboardInterrupt) else str(stop)


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    stop_signal.install(signal.SIGTERM)
    try:
        run(cfg, run_dir)
    except USER_ERRORS as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        if in_multirun():  # recorded, and the sweep goes on; SweepSummary counts the failures at its end
            record_failure(cfg, run_dir, error)
            return {"status": "failed", "error": str(error)}
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted) as stop:
        name = signal_name(stop)
        print(f"interrupted ({name}): the finished experiences are kept in {run_dir / 'results.json'}",
              file=sys.stderr)
        sys.exit(130 if name == "SIGINT" else 143)


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
    main()
