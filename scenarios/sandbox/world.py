"""The sandbox world: scenes of one object with compositional attributes, and their captions.

A scene is a row of integer attributes (``ATTRIBUTES``); ``sample_scenes`` draws them, ``caption``
describes one in words. Pretraining never shows the ``HELD_OUT`` colour-shape pairs (neither their
images nor their captions), and never uses the ``NOVEL_COLOUR_NAMES``: downstream tasks use both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

SHAPES = ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "hexagon", "ring", "crescent"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "cyan", "gray"]
COLOUR_RGB = np.array([
    (220, 30, 35), (40, 170, 60), (35, 75, 220), (245, 215, 40), (135, 50, 175),
    (250, 135, 25), (245, 135, 190), (125, 75, 35), (40, 205, 215), (130, 130, 130),
], dtype=np.float32)
PATTERNS = ["plain", "striped", "dotted", "checkered"]
SIZES = ["small", "large"]
POSITIONS = ["center", "left", "right", "top", "bottom"]
BACKGROUNDS = ["white", "black", "textured"]
CLEAN_BACKGROUNDS = (0, 1)

# Never rendered or named in pretraining: the compositional-generalisation test set.
HELD_OUT = [
    ("red", "star"), ("green", "heart"), ("blue", "triangle"), ("yellow", "cross"), ("purple", "circle"),
    ("orange", "hexagon"), ("pink", "square"), ("brown", "diamond"), ("cyan", "ring"), ("gray", "crescent"),
    ("red", "hexagon"), ("blue", "heart"), ("yellow", "ring"), ("purple", "square"), ("cyan", "star"),
]
HELD_OUT_PAIRS = {(COLOURS.index(c), SHAPES.index(s)) for c, s in HELD_OUT}

# Downstream names for the colours that pretraining never says (LAMM's case: known look, unknown word).
NOVEL_COLOUR_NAMES = ["scarlet", "jade", "cobalt", "lemon", "violet", "tangerine", "rose", "cocoa", "teal", "slate"]

ATTRIBUTES = ("colour", "shape", "pattern", "size", "position", "background")

# Pose: object radius as a fraction of the image side, by size; rotation in radians, uniform in +-.
SMALL_RADIUS = (0.2, 0.25)
LARGE_RADIUS = (0.32, 0.4)
MAX_ROTATION = 0.25
CAPTION_TEMPLATES = [
    "a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a drawing of a {}.",
    "a rendering of a {}.", "a {}.", "there is a {} in the picture.", "a close-up photo of a {}.",
]


@dataclass
class Scenes:
    """N scenes as attribute arrays (indices into the vocabularies above) and pose."""

    colour: np.ndarray
    shape: np.ndarray
    pattern: np.ndarray
    size: np.ndarray
    background: np.ndarray
    center: np.ndarray      # [N, 2] pixel coordinates (x, y)
    radius: np.ndarray      # [N] pixels
    rotation: np.ndarray    # [N] radians
    image_size: int

    def __len__(self) -> int:
        return len(self.colour)

    @property
    def position(self) -> np.ndarray:
        """Where the object sits, as an index into POSITIONS (derived from its centre)."""
        offset = self.center - self.image_size / 2
        horizontal = np.where(offset[:, 0] < 0, 1, 2)
        vertical = np.where(offset[:, 1] < 0, 3, 4)
        side = np.where(np.abs(offset[:, 0]) >= np.abs(offset[:, 1]), horizontal, vertical)
        near_center = np.abs(offset).max(axis=1) < self.image_size * 0.14
        return np.where(near_center, 0, side)

    def attributes(self) -> np.ndarray:
        """[N, len(ATTRIBUTES)] integer attributes, in ATTRIBUTES order."""
        return np.stack([self.colour, self.shape, self.pattern, self.size, self.position, self.background], axis=1)


def sample_scenes(rng: np.random.Generator, n: int, image_size: int = 32,
                  colour: Optional[Sequence[int]] = None, shape: Optional[Sequence[int]] = None,
                  pattern: Optional[Sequence[int]] = None, size: Optional[Sequence[int]] = None,
                  backgrounds: Sequence[int] = CLEAN_BACKGROUNDS, exclude_held_out: bool = False) -> Scenes:
    """Draw n scenes. An attribute given as a length-n sequence is fixed where its entry is >= 0 and
    drawn uniformly where it is -1; an attribute not given is drawn for every scene.

    exclude_held_out redraws colour-shape pairs in HELD_OUT (pretraining).
    """
    def draw(fixed, count):
        drawn = rng.integers(0, count, n)
        if fixed is None:
            return drawn
        fixed = np.asarray(fixed, dtype=np.int64)
        return np.where(fixed >= 0, fixed, drawn)

    colours, shapes = draw(colour, len(COLOURS)), draw(shape, len(SHAPES))
    if exclude_held_out:
        if colour is not None or shape is not None:
            raise ValueError("exclude_held_out draws colour and shape itself")
        held = np.array([(c, s) in HELD_OUT_PAIRS for c, s in zip(colours, shapes)])
        while held.any():
            colours[held] = rng.integers(0, len(COLOURS), held.sum())
            shapes[held] = rng.integers(0, len(SHAPES), held.sum())
            held = np.array([(c, s) in HELD_OUT_PAIRS for c, s in zip(colours, shapes)])
    sizes = draw(size, len(SIZES))
    radius = np.where(sizes == 0, rng.uniform(*SMALL_RADIUS, n), rng.uniform(*LARGE_RADIUS, n)) * image_size
    margin = radius * 0.9
    center = rng.uniform(margin[:, None], image_size - margin[:, None], (n, 2))
    return Scenes(
        colour=colours, shape=shapes, pattern=draw(pattern, len(PATTERNS)), size=sizes,
        background=np.asarray(backgrounds)[rng.integers(0, len(backgrounds), n)],
        center=center, radius=radius, rotation=rng.uniform(-MAX_ROTATION, MAX_ROTATION, n), image_size=image_size,
    )


def caption(attributes: np.ndarray, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """A caption of one scene and which attributes it names.

    attributes: one row of ``Scenes.attributes()``. Returns (text, named) where named[k] is the
    attribute's value when the caption says it and -1 when it does not. Colour and shape are named
    most of the time (at least one of them always), the rest now and then.
    """
    colour, shape, pattern, size, position, background = (int(a) for a in attributes)
    named = np.full(len(ATTRIBUTES), -1, dtype=np.int64)
    say_colour, say_shape = rng.random() < 0.9, rng.random() < 0.9
    if not (say_colour or say_shape):
        say_colour = say_shape = True
    words = []
    if rng.random() < 0.4:
        words.append(SIZES[size]); named[3] = size
    if say_colour:
        words.append(COLOURS[colour]); named[0] = colour
    if rng.random() < (0.6 if pattern else 0.25):
        words.append(PATTERNS[pattern]); named[2] = pattern
    if say_shape:
        words.append(SHAPES[shape]); named[1] = shape
    else:
        words.append("shape")
    description = " ".join(words)
    if rng.random() < 0.25 and background in CLEAN_BACKGROUNDS:
        description += f" on a {BACKGROUNDS[background]} background"; named[5] = background
    if rng.random() < 0.25:
        where = POSITIONS[position]
        description += " in the center" if position == 0 else f" at the {where}"
        named[4] = position
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    return template.format(description), named


def caption_matches(named: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """[C, N] bool: caption c describes scene n (every attribute it names agrees).

    named: [C, len(ATTRIBUTES)] from ``caption`` (-1 = not named); attributes: [N, len(ATTRIBUTES)].
    """
    agree = (named[:, None, :] == -1) | (named[:, None, :] == attributes[None, :, :])
    return agree.all(axis=2)
