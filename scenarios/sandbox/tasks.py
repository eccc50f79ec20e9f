"""Downstream sandbox tasks: class lists over the world's attributes, rendered into train/valid/test.

A task is a list of classes; each class fixes some attributes (say colour and shape) and leaves the
others to chance (pattern, size, position, rotation, background). Images are rendered on the fly from
a seed, each split from its own seed stream, so a test image is never a train image and the same seed
always gives the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from scenarios.array_dataset import ArrayImageDataset
from scenarios.sandbox.render import STYLES, apply_style, render
from scenarios.sandbox.world import (
    CLEAN_BACKGROUNDS, COLOURS, HELD_OUT_PAIRS, NOVEL_COLOUR_NAMES, PATTERNS, SHAPES, sample_scenes,
)
from scenarios.domain_stream import domain_incremental_stream
from scenarios.errors import StreamConfigError
from scenarios.stream import TaskStream, class_incremental_stream

SPLIT_SEEDS = {"train": 0, "valid": 1, "test": 2}


@dataclass
class SandboxTask:
    """Classes of a sandbox task. ``fixed[k]`` maps attribute names ('colour', 'shape', 'pattern',
    'size') to the values class k fixes; ``style`` is one of render.STYLES."""

    name: str
    class_names: list[str]
    fixed: list[dict]
    style: str = "clean"
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"style={self.style!r}; choose one of {', '.join(STYLES)}")


def colour_shape_task(name: str = "colour_shape", style: str = "clean",
                      colour_names: Sequence[str] = COLOURS, shapes: Sequence[str] = SHAPES) -> SandboxTask:
    """One class per colour x shape ('red star'); colour_names renames the colours (novel words)."""
    names, fixed, held_out = [], [], []
    for colour, colour_name in enumerate(colour_names):
        for shape_name in shapes:
            shape = SHAPES.index(shape_name)
            names.append(f"{colour_name} {shape_name}")
            fixed.append({"colour": colour, "shape": shape})
            if (colour, shape) in HELD_OUT_PAIRS:
                held_out.append(len(names) - 1)
    return SandboxTask(name, names, fixed, style, notes={"held_out_classes": held_out})


def pattern_shape_task(name: str = "pattern_shape", style: str = "clean") -> SandboxTask:
    """One class per pattern x shape ('striped star'), any colour, always small: a fine-grained task."""
    names, fixed = [], []
    for pattern, pattern_name in enumerate(PATTERNS):
        for shape, shape_name in enumerate(SHAPES):
            names.append(f"{pattern_name} {shape_name}")
            fixed.append({"pattern": pattern, "shape": shape, "size": 0})
    return SandboxTask(name, names, fixed, style)


TASKS: dict[str, Callable[[], SandboxTask]] = {
    "split_shapes": lambda: colour_shape_task("split_shapes"),
    "shapes_lowcontrast": lambda: colour_shape_task("shapes_lowcontrast", style="lowcontrast"),
    "shapes_textured": lambda: colour_shape_task("shapes_textured", style="textured"),
    "shapes_palette": lambda: colour_shape_task("shapes_palette", style="palette"),
    "shapes_fine": lambda: pattern_shape_task("shapes_fine", style="blurry"),
    "shapes_novel": lambda: colour_shape_task("shapes_novel", colour_names=NOVEL_COLOUR_NAMES,
                                              shapes=("circle", "square", "star")),
}


def render_split(task: SandboxTask, per_class: int, seed: int, image_size: int = 32):
    """Images uint8 [C * per_class, S, S, 3] and labels, class-balanced, from one seed."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(task.class_names)), per_class)
    fixed = {key: [task.fixed[c].get(key, -1) for c in labels] for key in ("colour", "shape", "pattern", "size")}
    scenes = sample_scenes(rng, len(labels), image_size, **fixed,
                           backgrounds=(2,) if task.style == "textured" else CLEAN_BACKGROUNDS)
    images = apply_style(render(scenes, rng), task.style, rng)
    return images, labels


def sandbox_stream(task: str = "split_shapes", n_experiences: int = 1, train_per_class: int = 100,
                   valid_per_class: int = 20, test_per_class: int = 50, seed: int = 0, image_size: int = 32,
                   class_order_seed: Optional[int] = None,
                   class_order: Optional[Union[str, Sequence[int]]] = None, initial_classes: int = 0,
                   increment: Optional[int] = None, train_transform: Optional[Callable] = None,
                   eval_transform: Optional[Callable] = None) -> TaskStream:
    """A sandbox task as an Avalanche stream with train / valid / test (one experience for single tasks)."""
    if task not in TASKS:
        raise ValueError(f"sandbox task {task!r}; choose one of {', '.join(TASKS)}")
    definition = TASKS[task]()
    splits = {}
    for split, per_class in (("train", train_per_class), ("valid", valid_per_class), ("test", test_per_class)):
        images, labels = render_split(definition, per_class, seed * 10 + SPLIT_SEEDS[split], image_size)
        splits[split] = ArrayImageDataset(images, labels, train_transform if split == "train" else eval_transform)
    return class_incremental_stream(
        definition.name, splits["train"], splits["test"], definition.class_names, n_experiences,
        class_order_seed, class_order, valid=splits["valid"],
        description={"dataset": f"sandbox/{task}", "style": definition.style, "seed": seed,
                     "per_class": {"train": train_per_class, "valid": valid_per_class, "test": test_per_class},
                     **definition.notes},
        initial_classes=initial_classes, increment=increment,
    )


DOMAIN_STYLES = ("clean", "textured", "lowcontrast", "palette")


def sandbox_domain_stream(classes: str = "colour_shape", domains: Sequence[str] = DOMAIN_STYLES,
                          train_per_class: int = 4, valid_per_class: int = 10, test_per_class: int = 10,
                          seed: int = 0, image_size: int = 32, held_out: Sequence[str] = (),
                          train_transform: Optional[Callable] = None, eval_transform: Optional[Callable] = None):
    """A domain-incremental sandbox stream: the same classes rendered in one style per experience.

    ``classes``: 'colour_shape' (the 100 colour-shape classes, 'red star') or 'pattern_shape' (40 classes);
    ``domains``: styles of ``render.STYLES`` in stream order (default clean, textured, low-contrast, then the
    hue-turned palette). ``held_out``: styles that are only tested, never trained (the test stream is then
    these styles, as CORe50's held-out sessions are: a matrix of experiences x held-out styles). Domain d's
    split s is rendered from its own seed, so no two domains or splits share an image.
    """
    makers = {"colour_shape": colour_shape_task, "pattern_shape": pattern_shape_task}
    if classes not in makers:
        raise StreamConfigError(f"scenario.classes={classes!r}; choose one of {', '.join(makers)}")
    domains, held_out = list(domains), list(held_out)
    every = domains + held_out
    unknown = [d for d in every if d not in STYLES]
    if unknown or not domains or len(set(every)) != len(every):
        raise StreamConfigError(
            f"scenario.domains={domains}, scenario.held_out={held_out}: give distinct styles (none in both), each one "
            f"of {', '.join(STYLES)}")
    built, class_names = {}, None
    for index, style in enumerate(every):
        definition = makers[classes](f"{classes}_{style}", style=style)
        class_names = definition.class_names
        splits = {}
        for split, per_class in (("train", train_per_class), ("valid", valid_per_class), ("test", test_per_class)):
            images, labels = render_split(definition, per_class, 1000 * (index + 1) + seed * 10 + SPLIT_SEEDS[split],
                                          image_size)
            splits[split] = ArrayImageDataset(images, labels, train_transform if split == "train" else eval_transform)
        built[style] = splits
    if held_out:
        tests = {style: built[style]["test"] for style in held_out}
        built = {style: {"train": built[style]["train"], "valid": built[style]["valid"]} for style in domains}
    return domain_incremental_stream(
        "shapes_domains", built, class_names, test_domains=tests if held_out else None,
        description={"dataset": f"sandbox/{classes} in styles {', '.join(domains)}"
                                + (f", tested on {', '.join(held_out)}" if held_out else ""), "seed": seed,
                     "per_class": {"train": train_per_class, "valid": valid_per_class, "test": test_per_class}})
