"""Noisy labels (PTNL): a fixed share of each class's samples gets a wrong label.

Symmetric: the wrong label is drawn uniformly from the other classes. Confusing: the wrong label is the
wrong class that zero-shot CLIP prefers most for that image (``scores`` are its logits).
Both return the new labels and a boolean mask of the relabelled samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from scenarios.protocols.few_shot import indices_by_class

KINDS = ("none", "symmetric", "confusing")


def noisy_count(class_size: int, rate: float) -> int:
    """How many of a class's samples are relabelled: rate x size rounded half up (16 shots at 12.5 % -> 2)."""
    return int(np.floor(rate * class_size + 0.5))


def choose_noisy(targets: Sequence[int], n_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask: per class, ``noisy_count`` samples chosen at random."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    mask = np.zeros(len(targets), dtype=bool)
    for members in indices_by_class(targets, n_classes):
        count = noisy_count(len(members), rate)
        if count:
            mask[rng.choice(members, size=count, replace=False)] = True
    return mask


def symmetric_noise(targets: Sequence[int], n_classes: int, rate: float, seed: int):
    """(labels, is_noisy): each chosen sample's label replaced by a uniformly drawn other class."""
    if n_classes < 2:
        raise ValueError("label noise needs at least two classes")
    rng = np.random.default_rng(seed)
    labels = np.asarray(targets, dtype=np.int64).copy()
    noisy = choose_noisy(labels, n_classes, rate, rng)
    for index in np.flatnonzero(noisy):
        shift = rng.integers(1, n_classes)  # 1..n-1: any class but the true one, uniformly
        labels[index] = (labels[index] + shift) % n_classes
    return labels, noisy


def confusing_noise(targets: Sequence[int], scores: np.ndarray, rate: float, seed: int):
    """(labels, is_noisy): each chosen sample relabelled to its highest-scoring wrong class.

    scores: [N, n_classes], zero-shot CLIP's logits (or probabilities) for each sample.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(targets, dtype=np.int64).copy()
    if scores.shape[0] != len(labels):
        raise ValueError(f"{scores.shape[0]} score rows for {len(labels)} samples")
    n_classes = scores.shape[1]
    if n_classes < 2:
        raise ValueError("label noise needs at least two classes")
    noisy = choose_noisy(labels, n_classes, rate, np.random.default_rng(seed))
    wrong = scores.copy()
    wrong[np.arange(len(labels)), labels] = -np.inf
    labels[noisy] = wrong[noisy].argmax(axis=1)
    return labels, noisy


def make_noisy(kind: str, targets: Sequence[int], n_classes: int, rate: float, seed: int, scores=None):
    """Dispatch on ``kind`` (none | symmetric | confusing); 'none' returns the labels unchanged."""
    if kind not in KINDS:
        raise ValueError(f"noise kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "none" or rate == 0:
        return np.asarray(targets, dtype=np.int64).copy(), np.zeros(len(targets), dtype=bool)
    if kind == "symmetric":
        return symmetric_noise(targets, n_classes, rate, seed)
    if scores is None:
        raise ValueError("confusing noise needs zero-shot scores for every sample")
    return confusing_noise(targets, scores, rate, seed)
