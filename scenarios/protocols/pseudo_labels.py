"""Pseudo-label selection for unsupervised prompt learning.

UPL keeps, per predicted class, the K samples zero-shot CLIP is most confident about; Robust UPL (PTNL)
draws K per predicted class at random. A class predicted fewer than K times keeps all its samples; a
class never predicted gets none (both as in UPL).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SELECTIONS = ("none", "top_k", "random")


def _by_prediction(predictions: Sequence[int]) -> dict[int, np.ndarray]:
    predictions = np.asarray(predictions, dtype=np.int64)
    return {int(c): np.flatnonzero(predictions == c) for c in np.unique(predictions)}


def select_top_k(predictions: Sequence[int], confidences: Sequence[float], k: int) -> np.ndarray:
    """Sorted indices of the ``k`` most confident samples of each predicted class (ties: lower index)."""
    confidences = np.asarray(confidences, dtype=np.float64)
    chosen = []
    for members in _by_prediction(predictions).values():
        order = np.argsort(-confidences[members], kind="stable")
        chosen.append(members[order[:k]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def select_random(predictions: Sequence[int], k: int, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` random samples of each predicted class, one generator over classes in order."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(members, size=min(k, len(members)), replace=False)
              for _, members in sorted(_by_prediction(predictions).items())]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def select(selection: str, predictions, confidences, k: int, seed: int) -> np.ndarray:
    if selection == "top_k":
        return select_top_k(predictions, confidences, k)
    if selection == "random":
        return select_random(predictions, k, seed)
    raise ValueError(f"pseudo-label selection {selection!r}; choose top_k (UPL) or random (Robust UPL)")
