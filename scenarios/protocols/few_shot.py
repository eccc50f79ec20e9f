"""K-shot sampling (CoOp's protocol): K images per class drawn at random after seeding."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def indices_by_class(targets: Sequence[int], n_classes: int) -> list[np.ndarray]:
    """``result[c]`` = indices of the samples labelled c, in dataset order."""
    targets = np.asarray(targets, dtype=np.int64)
    return [np.flatnonzero(targets == c) for c in range(n_classes)]


def sample_per_class(targets: Sequence[int], n_classes: int, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` samples per class (all of a class that has fewer), sorted.

    The draw depends only on (labels, shots, seed): one generator seeded with ``seed`` draws class 0's
    shots, then class 1's, and so on. A larger K does not extend a smaller K's draw (as in CoOp).
    """
    if shots < 1:
        raise ValueError(f"shots must be at least 1, got {shots}")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(members, size=min(shots, len(members)), replace=False)
              for members in indices_by_class(targets, n_classes) if len(members)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def shortfall(targets: Sequence[int], n_classes: int, shots: int) -> dict[int, int]:
    """Classes with fewer than ``shots`` samples: {class id: how many there are}."""
    return {c: len(m) for c, m in enumerate(indices_by_class(targets, n_classes)) if len(m) < shots}
