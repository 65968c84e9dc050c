"""The world the built-in suite draws from: the factors of a scene, their values, and seeded sampling.

A scene is a dict of factors (shape, colour, size, position, count, object texture, background
type and colour, glyph, full-image pattern) of one kind (object, multi-object, glyph, pattern).
Each factor is drawn from the values a task allows, else from the world distribution below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GENERATOR_VERSION = 1  # bump when a change alters any pixel or caption

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "plus", "cross", "bar")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BG_COLORS = {
    "gray": (128, 128, 128),
    "white": (235, 235, 235),
    "black": (25, 25, 25),
    "red": (170, 30, 30),
    "green": (30, 130, 50),
    "blue": (30, 60, 170),
    "yellow": (200, 180, 40),
    "purple": (110, 45, 140),
}
SIZES = {"small": (3, 4), "medium": (6, 7), "large": (9, 11)}  # radius range, inclusive
TEXTURES = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS = ("plain", "noisy", "gradient", "grid")
PATTERNS = ("striped", "dotted", "checkered", "grid", "speckled")
ORIENTATIONS = ("horizontal", "vertical")
# nine regions of a 3x3 layout: name -> (x, y) centre
REGIONS = {
    "top left": (7, 7),
    "top": (16, 7),
    "top right": (25, 7),
    "left": (7, 16),
    "center": (16, 16),
    "right": (25, 16),
    "bottom left": (7, 25),
    "bottom": (16, 25),
    "bottom right": (25, 25),
}
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGITS = tuple("0123456789")
LETTERS = tuple("acefhklptx")

# the factors of each kind of scene, in the order they are drawn
_FACTORS = {
    "object": ("shape", "color", "size", "texture", "bg", "bgcolor", "count", "region"),
    "multi": ("shapes", "bg", "bgcolor"),
    "glyph": ("char", "color", "bg", "bgcolor", "scale"),
    "pattern": ("pattern", "orientation", "color", "bgcolor"),
}


def pick(rng: np.random.Generator, options: Sequence) -> Any:
    """One of `options`, uniformly (one integer drawn from `rng`)."""
    return options[int(rng.integers(len(options)))]


def _world(rng: np.random.Generator, factor: str, scene: dict):
    """One factor's value from the world distribution, given the factors drawn so far."""
    if factor == "texture":
        return "solid" if rng.integers(2) == 0 else pick(rng, TEXTURES[1:])
    if factor == "count":
        return 1 if rng.integers(5) < 3 else int(rng.integers(2, 6))
    if factor == "region":
        return "center" if scene.get("size") == "large" else pick(rng, tuple(REGIONS))
    if factor == "scale":
        return int(rng.integers(3, 5))
    if factor == "orientation":
        return pick(rng, ORIENTATIONS)
    if factor == "shapes":
        return tuple(SHAPES[i] for i in rng.permutation(len(SHAPES))[: int(rng.integers(2, 4))])
    pools = {
        "shape": SHAPES,
        "color": tuple(COLORS),
        "size": tuple(SIZES),
        "bg": BACKGROUNDS,
        "bgcolor": tuple(BG_COLORS),
        "char": DIGITS + LETTERS,
        "pattern": PATTERNS,
    }
    return pick(rng, pools[factor])


def sample_scene(rng: np.random.Generator, kind: str, fixed: dict | None = None) -> dict:
    """A scene of `kind`: each factor drawn from `fixed[factor]` (allowed values) or the world."""
    fixed = fixed or {}
    scene: dict = {"kind": kind}
    for factor in _FACTORS[kind]:
        scene[factor] = pick(rng, fixed[factor]) if factor in fixed else _world(rng, factor, scene)
    if kind == "multi" and "shapes" not in fixed and "classes" in fixed:
        pool = fixed["classes"]
        scene["shapes"] = tuple(pool[i] for i in rng.permutation(len(pool))[: int(rng.integers(2, 4))])
    if kind == "multi":
        colors = tuple(c for c in COLORS if c != scene["bgcolor"])
        scene["colors"] = tuple(pick(rng, colors) for _ in scene["shapes"])
    if kind in ("object", "glyph", "pattern") and scene["color"] == scene["bgcolor"]:
        others = [c for c in fixed.get("bgcolor", BG_COLORS) if c != scene["color"]]
        if others:
            scene["bgcolor"] = pick(rng, others)
        else:
            scene["color"] = pick(rng, [c for c in fixed.get("color", COLORS) if c != scene["bgcolor"]])
    if kind == "object" and scene["count"] > 1:
        scene["region"] = None
        if "size" not in fixed:
            scene["size"] = "small"  # several objects share a 3x3 layout
    return scene
