"""Rendering scenes to small RGB images, vectorized over the batch, and the downstream styles.

Every shape is an inside-test in the object's own frame (u, v), scaled so the object's radius is 1;
patterns are drawn in the same frame, so they turn with the object. Styles shift the look of a
rendered batch (noise, blur, low contrast, textured backgrounds, another palette).
"""

from __future__ import annotations

import numpy as np

from scenarios.sandbox.world import COLOUR_RGB, SHAPES, Scenes

STYLES = ("clean", "noisy", "blurry", "lowcontrast", "textured", "palette")


def _regular_polygon(u, v, sides: int, turn: float = 0.0):
    theta = np.arctan2(v, u) + turn
    sector = 2 * np.pi / sides
    limit = np.cos(np.pi / sides) / np.cos(np.mod(theta, sector) - np.pi / sides)
    return np.hypot(u, v) <= limit


def _star(u, v, points: int = 5, inner: float = 0.45):
    theta = np.arctan2(v, u) + np.pi / 2
    phase = np.mod(theta, 2 * np.pi / points) / (2 * np.pi / points)
    return np.hypot(u, v) <= inner + (1 - inner) * np.abs(2 * phase - 1)


def _heart(u, v):
    x, y = u * 1.15, -v * 1.15 + 0.2
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


SHAPE_TESTS = {
    "circle": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.78,
    "triangle": lambda u, v: _regular_polygon(u, v + 0.15, 3, np.pi / 2),
    "star": _star,
    "heart": _heart,
    "cross": lambda u, v: ((np.abs(u) <= 0.33) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.33) & (np.abs(u) <= 1)),
    "diamond": lambda u, v: np.abs(u) + np.abs(v) <= 1,
    "hexagon": lambda u, v: _regular_polygon(u, v, 6),
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.5 ** 2),
    "crescent": lambda u, v: (u * u + v * v <= 1) & ((u - 0.45) ** 2 + (v + 0.15) ** 2 >= 0.8 ** 2),
}
PATTERN_TESTS = [
    lambda u, v: np.zeros_like(u, dtype=bool),                                            # plain
    lambda u, v: np.mod(np.floor((u + 4) * 2.6), 2) == 1,                                  # striped
    lambda u, v: (np.mod(u * 2.8, 1) - 0.5) ** 2 + (np.mod(v * 2.8, 1) - 0.5) ** 2 < 0.07,  # dotted
    lambda u, v: np.mod(np.floor((u + 4) * 2.2) + np.floor((v + 4) * 2.2), 2) == 1,         # checkered
]


def _pattern_colour(rgb: np.ndarray) -> np.ndarray:
    """A contrasting shade for pattern marks: darker for bright colours, lighter for dark ones."""
    bright = rgb.mean(axis=-1, keepdims=True) > 100
    return np.where(bright, rgb * 0.35, rgb + (255 - rgb) * 0.6)


def textured_backgrounds(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[n, size, size, 3] white or black backgrounds overlaid with two random gratings, a tint and noise."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    texture = np.zeros((n, size, size), dtype=np.float32)
    for _ in range(2):
        angle = rng.uniform(0, np.pi, (n, 1, 1))
        frequency = rng.uniform(0.25, 0.9, (n, 1, 1))
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        wave = (1 + np.sin(frequency * (xs * np.cos(angle) + ys * np.sin(angle)) + phase)) / 2
        texture += rng.uniform(20, 45, (n, 1, 1)) * wave
    white = rng.random((n, 1, 1)) < 0.5
    out = np.where(white, 255 - texture, texture)[..., None]
    out = out + rng.uniform(-15, 15, (n, 1, 1, 3)) + rng.normal(0, 8, (n, size, size, 3))
    return out.astype(np.float32)


def render(scenes: Scenes, rng: np.random.Generator, colour_jitter: float = 12.0) -> np.ndarray:
    """Draw the scenes: uint8 [N, S, S, 3]. Background index 2 ('textured') draws a textured background."""
    n, size = len(scenes), scenes.image_size
    coords = np.arange(size, dtype=np.float32) + 0.5
    dx = coords[None, None, :] - scenes.center[:, 0, None, None]
    dy = coords[None, :, None] - scenes.center[:, 1, None, None]
    cos, sin = np.cos(scenes.rotation)[:, None, None], np.sin(scenes.rotation)[:, None, None]
    radius = scenes.radius[:, None, None]
    u = ((dx * cos + dy * sin) / radius).astype(np.float32)
    v = ((-dx * sin + dy * cos) / radius).astype(np.float32)

    inside = np.zeros((n, size, size), dtype=bool)
    for index, name in enumerate(SHAPES):
        members = np.flatnonzero(scenes.shape == index)
        if len(members):
            inside[members] = SHAPE_TESTS[name](u[members], v[members])
    marked = np.zeros_like(inside)
    for index, test in enumerate(PATTERN_TESTS):
        members = np.flatnonzero(scenes.pattern == index)
        if len(members) and index:
            marked[members] = test(u[members], v[members])

    colour = COLOUR_RGB[scenes.colour] + rng.uniform(-colour_jitter, colour_jitter, (n, 3))
    colour = np.clip(colour, 0, 255)[:, None, None, :]
    image = np.empty((n, size, size, 3), dtype=np.float32)
    image[scenes.background == 0] = 255.0
    image[scenes.background == 1] = 0.0
    textured = np.flatnonzero(scenes.background == 2)
    if len(textured):
        image[textured] = textured_backgrounds(rng, len(textured), size)
    body = np.where(marked[..., None], _pattern_colour(colour), colour)
    image = np.where(inside[..., None], body, image)
    return np.clip(image, 0, 255).astype(np.uint8)


def _blur(images: np.ndarray) -> np.ndarray:
    """A separable [1, 2, 1] / 4 blur with edge padding, on float [N, S, S, 3]."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4
    return (rows[:, :, :-2] + 2 * rows[:, :, 1:-1] + rows[:, :, 2:]) / 4


def _hue_rotation(degrees: float) -> np.ndarray:
    """A 3x3 matrix rotating RGB about the gray axis (keeps gray, turns hues)."""
    angle = np.deg2rad(degrees)
    axis = np.ones(3) / np.sqrt(3)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * np.outer(axis, axis)


def apply_style(images: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Shift the look of a rendered batch. uint8 [N, S, S, 3] -> uint8 [N, S, S, 3]."""
    if style not in STYLES:
        raise ValueError(f"style={style!r}; choose one of {', '.join(STYLES)}")
    x = images.astype(np.float32)
    if style == "noisy":
        x = x + rng.normal(0, 40, x.shape)
    elif style == "blurry":
        x = _blur(_blur(_blur(x)))
    elif style == "lowcontrast":
        x = 128 + 0.33 * (x - 128) + rng.normal(0, 6, x.shape)
    elif style == "textured":
        x = x + rng.normal(0, 10, x.shape)
    elif style == "palette":
        x = x @ _hue_rotation(30.0).T.astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)
