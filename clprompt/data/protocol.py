"""The single-task protocols at the edge: turn a scenario's stream into the experiment's stream.

``prepare_experiment`` draws the K-shot training set, injects label noise, or replaces the labels by
zero-shot CLIP's pseudo-labels (UPL / Robust UPL), and re-partitions the classes for base-to-new. The
choices are pure functions in ``scenarios.protocols``; here they meet the data, the zero-shot model and
the run directory: what was drawn is written to ``training_set.json`` beside ``results.json``, and
the realised noise rate and pseudo-label accuracy go into ``results.json``'s ``experiment`` block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from clprompt.model.backbone import Backbone
from clprompt.errors import ConfigValueError
from clprompt.methods.zeroshot import ZeroShot
from scenarios.atomic_write import write_json_atomic
from scenarios.protocols import few_shot, label_noise, pseudo_labels
from scenarios.protocols.base_to_new import base_and_new_classes
from scenarios.protocols.relabeled import RelabeledSubset
from scenarios.stream import TaskStream

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}."


@dataclass
class Experiment:
    """The stream a run trains on, how many of its experiences are trained, and what was drawn.

    record: the ``experiment`` block of results.json. noisy: per training sample of the one-experience
    training set, whether its label is wrong (None when the labels are the dataset's own).
    """

    stream: TaskStream
    record: dict
    train_experiences: Optional[int] = None
    training_set: Optional[RelabeledSubset] = None
    noisy: Optional[np.ndarray] = None


def check_options(options: DictConfig, stream: TaskStream) -> None:
    """Refuse combinations that do not make an experiment, with the option to change."""
    uses_training_set = (options.shots or options.noise.kind != "none" or options.pseudo_labels.selection != "none"
                         or options.base_to_new)
    if uses_training_set and (stream.tasks is not None or stream.domains is not None):
        stream.rebuild()  # refuses, saying why
    if uses_training_set and stream.n_experiences != 1:
        raise ConfigValueError(
            f"protocol {options.name}: few-shot, noisy-label, UPL and base-to-new protocols run on a single-task stream, "
            f"but {stream.name} has {stream.n_experiences} experiences; set scenario.n_experiences=1")
    if options.noise.kind not in label_noise.KINDS:
        raise ConfigValueError(f"protocol.noise.kind={options.noise.kind!r}; choose one of {', '.join(label_noise.KINDS)}")
    if options.noise.kind != "none" and not 0 < options.noise.rate <= 1:
        raise ConfigValueError(f"protocol.noise.rate={options.noise.rate}: give a rate in (0, 1], e.g. 0.25")
    if options.noise.kind == "none" and options.noise.rate:
        raise ConfigValueError(f"protocol.noise.rate={options.noise.rate} with protocol.noise.kind=none: "
                               "choose protocol.noise.kind=symmetric or confusing")
    if options.pseudo_labels.selection not in pseudo_labels.SELECTIONS:
        raise ConfigValueError(f"protocol.pseudo_labels.selection={options.pseudo_labels.selection!r}; "
                               f"choose one of {', '.join(pseudo_labels.SELECTIONS)}")
    if options.pseudo_labels.selection != "none" and (options.shots or options.noise.kind != "none"):
        raise ConfigValueError("pseudo-labels (UPL) choose their own K per class (protocol.pseudo_labels.per_class) "
                               "and bring their own noise: drop protocol.shots and protocol.noise")
    if options.shots is not None and options.shots < 1:
        raise ConfigValueError(f"protocol.shots={options.shots}: give K >= 1 (CoOp: 1, 2, 4, 8, 16) or null for all")
    if options.ensemble < 1:
        raise ConfigValueError(f"protocol.ensemble={options.ensemble}: give 1 or more members")
    if options.grad_norm_ratio and options.noise.kind == "none":
        raise ConfigValueError("protocol.grad_norm_ratio=true compares noisy and clean samples: "
                               "set protocol.noise.kind and protocol.noise.rate")


def zero_shot_scores(backbone: Backbone, class_names, dataset, template: str, device: torch.device,
                     batch_size: int = 256) -> np.ndarray:
    """Zero-shot CLIP's logits [N, n_classes] for every sample of ``dataset`` (its transform applied)."""
    model = ZeroShot(backbone, class_names, templates=template).to(device).eval()
    scores = []
    with torch.inference_mode():
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            scores.append(model(images.to(device)).float().cpu())
    return torch.cat(scores).numpy()


def prepare_experiment(stream: TaskStream, options: DictConfig, backbone: Backbone, device: torch.device,
                       run_dir: Path, batch_size: int = 256) -> Experiment:
    """Apply ``options`` (the ``protocol`` config) to ``stream``; see the module docstring."""
    check_options(options, stream)
    record = {"name": options.name, "shots": options.shots, "shots_seed": options.shots_seed,
              "noise": {"kind": options.noise.kind, "rate": float(options.noise.rate)},
              "pseudo_labels": {"selection": options.pseudo_labels.selection},
              "base_to_new": bool(options.base_to_new), "ensemble": int(options.ensemble)}
    template = options.zero_shot_template or stream.description.get("template") or DEFAULT_TEMPLATE
    zero_shot = ZeroShotScorer(backbone, stream.class_names, template, device, batch_size)
    train = stream.splits["train"]
    true_labels = np.asarray(train.targets, dtype=np.int64)
    indices, labels, noisy = np.arange(len(true_labels)), true_labels, None
    pseudo_labelled = options.pseudo_labels.selection != "none"
    if pseudo_labelled:
        indices, labels, noisy = draw_pseudo_labels(options.pseudo_labels, train, true_labels, zero_shot, record)
    elif options.shots:
        indices, labels = draw_shots(int(options.shots), int(options.shots_seed), true_labels,
                                     len(stream.class_names), record)
    if options.noise.kind != "none":
        labels, noisy = add_label_noise(options.noise, train, indices, labels, zero_shot, record)
    if options.base_to_new:  # only the base classes are trained: the drawn set keeps their samples only
        base, new = base_and_new_classes(len(stream.class_names))
        keep = np.asarray(labels) < len(base)
        indices, labels = indices[keep], np.asarray(labels)[keep]
        noisy = noisy[keep] if noisy is not None else None

    training_set = None
    if len(indices) != len(true_labels) or noisy is not None:
        training_set = RelabeledSubset(train, indices, labels)
        stream = stream.rebuild(train=training_set,
                                allow_missing_train_classes=pseudo_labelled or options.base_to_new)
        write_training_set(run_dir, indices, labels, true_labels, noisy, record)

    train_experiences = None
    if options.base_to_new:
        stream = stream.rebuild(n_experiences=2, class_order=base + new, allow_missing_train_classes=True)
        record.update(base_classes=base, new_classes=new)
        train_experiences = 1
    return Experiment(stream, record, train_experiences, training_set, noisy)


@dataclass
class ZeroShotScorer:
    """Zero-shot CLIP's scores [N, C] of a dataset under the evaluation transform (pseudo-labels, confusing noise)."""

    backbone: Backbone
    class_names: list
    template: str
    device: torch.device
    batch_size: int

    def __call__(self, dataset) -> np.ndarray:
        return zero_shot_scores(self.backbone, self.class_names, dataset.with_transform(self.backbone.eval_transform),
                                self.template, self.device, self.batch_size)


def draw_pseudo_labels(options: DictConfig, train, true_labels: np.ndarray, zero_shot: ZeroShotScorer,
                       record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UPL: zero-shot CLIP labels the training images; ``options.selection`` keeps some per class.
    Returns (indices, pseudo-labels, which pseudo-labels are wrong)."""
    log.info("pseudo-labelling %d training images with zero-shot CLIP (%s)", len(true_labels), zero_shot.template)
    scores = zero_shot(train)
    predictions = scores.argmax(axis=1)
    probabilities = torch.softmax(torch.from_numpy(scores), dim=1).numpy()
    confidences = probabilities[np.arange(len(predictions)), predictions]
    per_class = int(options.per_class)
    indices = pseudo_labels.select(options.selection, predictions, confidences, per_class, int(options.seed))
    labels = predictions[indices]
    noisy = labels != true_labels[indices]
    never_predicted = sorted(set(range(len(zero_shot.class_names))) - set(labels.tolist()))
    record["pseudo_labels"].update(
        per_class=per_class, seed=int(options.seed), template=zero_shot.template,
        n_selected=int(len(indices)), accuracy=100.0 * float((~noisy).mean()) if len(indices) else None,
        accuracy_all=100.0 * float((predictions == true_labels).mean()),
        classes_without_pseudo_labels=never_predicted)
    if never_predicted:
        log.warning("%d classes were never predicted by zero-shot CLIP and get no training images: %s",
                    len(never_predicted), never_predicted[:20])
    return indices, labels, noisy


def draw_shots(shots: int, seed: int, true_labels: np.ndarray, n_classes: int,
               record: dict) -> tuple[np.ndarray, np.ndarray]:
    """K-shot: ``shots`` training images per class drawn with ``seed``; returns (indices, labels)."""
    indices = few_shot.sample_per_class(true_labels, n_classes, shots, seed)
    short = few_shot.shortfall(true_labels, n_classes, shots)
    if short:
        log.warning("%d classes have fewer than %d training images and keep all they have: %s",
                    len(short), shots, dict(list(short.items())[:10]))
        record["classes_short_of_shots"] = short
    return indices, true_labels[indices]


def add_label_noise(options: DictConfig, train, indices: np.ndarray, labels: np.ndarray,
                    zero_shot: ZeroShotScorer, record: dict) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric or confusing (zero-shot CLIP's most likely wrong class) noise on the drawn labels;
    returns (labels, which are wrong)."""
    scores = None
    if options.kind == "confusing":
        scores = zero_shot(RelabeledSubset(train, indices, labels))
        record["noise"]["template"] = zero_shot.template
    labels, noisy = label_noise.make_noisy(options.kind, labels, len(zero_shot.class_names), float(options.rate),
                                           int(options.seed), scores)
    record["noise"].update(seed=int(options.seed), realised_rate=float(noisy.mean()),
                           n_noisy=int(noisy.sum()), n_samples=int(len(labels)))
    log.info("%s noise: %d of %d labels wrong (%.2f %%)", options.kind, noisy.sum(), len(labels), 100 * noisy.mean())
    return labels, noisy


def write_training_set(run_dir: Path, indices: np.ndarray, labels, true_labels: np.ndarray,
                       noisy: Optional[np.ndarray], record: dict) -> None:
    """``training_set.json`` in the run folder: what this run trained on."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "training_set.json", {
        "about": "the training set of this run: indices into the scenario's train split, the labels "
                 "trained on, the true labels, and which labels are wrong",
        "indices": indices.tolist(), "labels": np.asarray(labels).tolist(),
        "true_labels": true_labels[indices].tolist(),
        "noisy": (noisy if noisy is not None else np.zeros(len(indices), bool)).tolist()})
    record["n_train"] = int(len(indices))
    record["training_set_file"] = "training_set.json"

