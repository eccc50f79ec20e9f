"""A tiny generated stream for tests: solid colour patches with noise, one class per colour name.

Generated in memory from a seed, a few images per class, so tests build a real Avalanche stream in
milliseconds. It is test data and says so in its name; no run falls back to it.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.stream import TaskStream, class_incremental_stream

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "black": (15, 15, 15), "white": (245, 245, 245),
    "gray": (128, 128, 128), "brown": (120, 70, 30), "pink": (250, 150, 190), "cyan": (30, 210, 220),
}


def colour_images(n_classes: int, per_class: int, image_size: int, seed: int):
    """Returns (images uint8 [n_classes * per_class, S, S, 3], labels, class names)."""
    if not 1 <= n_classes <= len(COLOURS):
        raise ValueError(f"tiny_colors has {len(COLOURS)} colours; n_classes={n_classes}")
    rng = np.random.default_rng(seed)
    names = list(COLOURS)[:n_classes]
    base = np.array([COLOURS[n] for n in names], dtype=np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    noise = rng.normal(0.0, 20.0, size=(len(labels), image_size, image_size, 3))
    images = np.clip(base[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels, names


def tiny_colors_stream(n_classes: int = 6, n_experiences: int = 3, train_per_class: int = 4,
                       test_per_class: int = 4, image_size: int = 32, seed: int = 0,
                       class_order_seed: Optional[int] = None,
                       class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                       increment: Optional[int] = None,
                       train_transform: Optional[Callable] = None,
                       eval_transform: Optional[Callable] = None) -> TaskStream:
    train_images, train_labels, names = colour_images(n_classes, train_per_class, image_size, seed)
    test_images, test_labels, _ = colour_images(n_classes, test_per_class, image_size, seed + 1)
    return class_incremental_stream(
        "tiny_colors",
        ArrayImageDataset(train_images, train_labels, train_transform),
        ArrayImageDataset(test_images, test_labels, eval_transform),
        names, n_experiences, class_order_seed, class_order,
        description={"dataset": "tiny_colors (generated test data)", "seed": seed},
        initial_classes=initial_classes, increment=increment,
    )
