"""Base-to-new generalisation (CoCoOp): train on the base classes, test base and new separately."""

from __future__ import annotations

import math


def base_and_new_classes(n_classes: int) -> tuple[list[int], list[int]]:
    """Base = the first ceil(n/2) class ids, new = the rest (CoOp's ``subsample_classes``)."""
    if n_classes < 2:
        raise ValueError(f"base-to-new needs at least 2 classes, got {n_classes}")
    cut = math.ceil(n_classes / 2)
    return list(range(cut)), list(range(cut, n_classes))
