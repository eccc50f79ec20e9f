"""Continual-learning metrics as pure functions of the accuracy matrix.

R[i, j] is the test accuracy on task j after training through task i (T x T, the upper triangle holds
the accuracy on tasks not trained yet). Definitions follow METHODS.md; indices here are 0-based.
A domain-incremental stream whose test domains are held out (CORe50: trained on 8 sessions, tested on 3
others) has a T x D matrix: ``summarize`` then gives Last (the held-out accuracy after the last
experience), Avg (its mean over the experiences) and the mean of all entries; forgetting, BWT and transfer
compare a task with its own training and are NaN.
"""

from __future__ import annotations

import numpy as np


def _square(matrix) -> np.ndarray:
    R = np.asarray(matrix, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
    return R


def last_accuracy(matrix) -> float:
    """A_T: mean accuracy over all tasks after the last experience."""
    R = _square(matrix)
    return float(R[-1].mean())


def incremental_accuracies(matrix) -> np.ndarray:
    """A_t = mean_{j<=t} R[t, j] for every t: accuracy over the tasks seen so far."""
    R = _square(matrix)
    return np.array([R[t, : t + 1].mean() for t in range(len(R))])


def average_incremental_accuracy(matrix) -> float:
    """Avg = mean_t A_t."""
    return float(incremental_accuracies(matrix).mean())


def forgetting(matrix) -> float:
    """Chaudhry et al. 2018: mean_{j<T} (max_{l<T} R[l, j] - R[T, j]). 0 when T = 1.

    The max runs over every earlier row, including those before task j was trained (CLIP scores
    future tasks zero-shot), as METHODS.md defines it.
    """
    R = _square(matrix)
    T = len(R)
    if T == 1:
        return 0.0
    return float(np.mean([R[: T - 1, j].max() - R[T - 1, j] for j in range(T - 1)]))


def backward_transfer(matrix) -> float:
    """Lopez-Paz & Ranzato 2017: mean_{j<T} (R[T, j] - R[j, j]). 0 when T = 1."""
    R = _square(matrix)
    T = len(R)
    if T == 1:
        return 0.0
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))


def transfer(matrix) -> float:
    """ZSCL's MTIL transfer: mean over tasks j >= 2 (1-based) of mean_{i<j} R[i, j]. NaN when T = 1."""
    R = _square(matrix)
    T = len(R)
    if T == 1:
        return float("nan")
    return float(np.mean([R[:j, j].mean() for j in range(1, T)]))


def mtil_average(matrix) -> float:
    """ZSCL's MTIL "Avg.": each task's accuracy averaged over all T evaluations (before and after it is
    trained), then over the tasks; i.e. the mean of every entry of R (ZSCL's results notebook:
    ``arr.mean(axis=0)``, then the mean over datasets)."""
    return float(_square(matrix).mean())


def summarize(matrix) -> dict[str, float]:
    """All metrics of a matrix, by name (a T x D matrix over held-out test domains: see the module)."""
    R = np.asarray(matrix, dtype=np.float64)
    if R.ndim == 2 and R.size and R.shape[0] != R.shape[1]:
        nan = float("nan")
        return {"last": float(R[-1].mean()), "avg": float(R.mean(axis=1).mean()), "mtil_avg": float(R.mean()),
                "forgetting": nan, "bwt": nan, "transfer": nan}
    return {
        "last": last_accuracy(matrix),
        "avg": average_incremental_accuracy(matrix),
        "mtil_avg": mtil_average(matrix),
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "transfer": transfer(matrix),
    }


def harmonic_mean(base: float, new: float) -> float:
    """2 b n / (b + n), the base-to-new summary (0 when both are 0)."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def base_to_new(matrix) -> dict[str, float]:
    """Base, new and their harmonic mean from a base-to-new run's first row: R[0, 0] is the base task
    after training on it, R[0, 1] the new classes, never trained, scored over their own classes."""
    R = np.asarray(matrix, dtype=np.float64)
    if R.shape != (2, 2):
        raise ValueError(f"a base-to-new matrix is 2 x 2 (base, new), got shape {R.shape}")
    base, new = float(R[0, 0]), float(R[0, 1])
    return {"base": base, "new": new, "hm": harmonic_mean(base, new)}
