"""Drawing a scene: shapes, object textures, backgrounds, glyphs and patterns on a 32x32 canvas.

Integer numpy arithmetic only, with the randomness (jitter, radius, offsets, noise) drawn from the
caller's generator in a fixed order, so the same seed gives the same pixels on any machine.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.scenes import BG_COLORS, COLORS, REGIONS, SIZES

SIZE = 32

# 5x7 bitmap font: digits and ten letters with distinct outlines.
FONT = {
    "0": (" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"),
    "3": ("#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "),
    "4": ("   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "),
    "5": ("#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "),
    "6": ("  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "),
    "8": (" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "),
    "9": (" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "),
    "a": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "c": (" ### ", "#   #", "#    ", "#    ", "#    ", "#   #", " ### "),
    "e": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"),
    "f": ("#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#    "),
    "h": ("#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "k": ("#   #", "#  # ", "# #  ", "##   ", "# #  ", "#  # ", "#   #"),
    "l": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "p": ("#### ", "#   #", "#   #", "#### ", "#    ", "#    ", "#    "),
    "t": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    "x": ("#   #", "#   #", " # # ", "  #  ", " # # ", "#   #", "#   #"),
}
_BITMAPS = {c: np.array([[ch == "#" for ch in row] for row in rows]) for c, rows in FONT.items()}
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def _shape_mask(shape: str, cx: int, cy: int, r: int) -> np.ndarray:
    """(32, 32) bool mask of a shape of radius r at (cx, cy); integer arithmetic only."""
    dx, dy = _XX - cx, _YY - cy
    ax, ay = np.abs(dx), np.abs(dy)
    w = max(1, r // 3)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(ax, ay) <= (r * 4) // 5
    if shape == "triangle":
        return (2 * ax <= dy + r) & (dy <= (r * 3) // 4)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (100 * d2 >= 30 * r * r)
    if shape == "plus":
        return ((ax <= w // 2 + 0) & (ay <= r)) | ((ay <= w // 2) & (ax <= r))
    if shape == "cross":
        return ((np.abs(dx - dy) <= w) | (np.abs(dx + dy) <= w)) & (np.maximum(ax, ay) <= (r * 4) // 5)
    if shape == "bar":
        return (ax <= r) & (ay <= max(1, r // 3))
    raise ValueError(f"unknown shape {shape}")


def _dark(rgb) -> np.ndarray:
    """A darker (or, for near-black, lighter) shade of a colour, for textures and grid lines."""
    c = np.asarray(rgb, dtype=np.int64)
    return c * 9 // 20 if c.sum() > 150 else c + 110


def _texture_mask(texture: str, phase: int) -> np.ndarray:
    x, y = _XX + phase, _YY + phase
    if texture == "striped":
        return (y // 2) % 2 == 0
    if texture == "dotted":
        return (x % 4 < 2) & (y % 4 < 2)
    if texture == "checkered":
        return (x // 3 + y // 3) % 2 == 0
    return np.zeros((SIZE, SIZE), dtype=bool)


def _background(rng: np.random.Generator, kind: str, rgb) -> np.ndarray:
    """(32, 32, 3) int64 canvas of background type `kind` in colour `rgb`."""
    base = np.broadcast_to(np.asarray(rgb, dtype=np.int64), (SIZE, SIZE, 3)).copy()
    if kind == "noisy":
        base += rng.integers(-60, 61, size=(SIZE, SIZE, 3))
    elif kind == "gradient":
        axis = _XX if rng.integers(2) == 0 else _YY
        base = base * (40 + axis[..., None]) // 56
    elif kind == "grid":
        step, off = int(rng.integers(5, 9)), int(rng.integers(0, 5))
        lines = ((_XX + off) % step == 0) | ((_YY + off) % step == 0)
        base[lines] = _dark(rgb)
    return base


def _paint(canvas: np.ndarray, mask: np.ndarray, rgb, texture: str, phase: int) -> None:
    canvas[mask] = np.asarray(rgb, dtype=np.int64)
    tex = mask & _texture_mask(texture, phase)
    canvas[tex] = _dark(rgb)


def _cells(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """Centres of n distinct cells of a 3x3 layout, jittered by one pixel."""
    picks = rng.permutation(9)[:n]
    out = []
    for p in picks:
        jx, jy = rng.integers(-1, 2, size=2)
        out.append((5 + 11 * int(p % 3) + int(jx), 5 + 11 * int(p // 3) + int(jy)))
    return out


def _render_object(rng: np.random.Generator, s: dict) -> np.ndarray:
    canvas = _background(rng, s["bg"], BG_COLORS[s["bgcolor"]])
    phase = int(rng.integers(0, 4))
    lo, hi = SIZES[s["size"]]
    if s["count"] == 1:
        cx, cy = REGIONS[s["region"]]
        jx, jy = rng.integers(-2, 3, size=2)
        r = int(rng.integers(lo, hi + 1))
        _paint(
            canvas,
            _shape_mask(s["shape"], cx + int(jx), cy + int(jy), r),
            COLORS[s["color"]],
            s["texture"],
            phase,
        )
    else:
        for cx, cy in _cells(rng, s["count"]):
            r = int(rng.integers(lo, hi + 1))
            _paint(canvas, _shape_mask(s["shape"], cx, cy, r), COLORS[s["color"]], s["texture"], phase)
    return canvas


def _render_multi(rng: np.random.Generator, s: dict) -> np.ndarray:
    canvas = _background(rng, s["bg"], BG_COLORS[s["bgcolor"]])
    for shape, color, (cx, cy) in zip(s["shapes"], s["colors"], _cells(rng, len(s["shapes"])), strict=True):
        _paint(canvas, _shape_mask(shape, cx, cy, int(rng.integers(4, 6))), COLORS[color], "solid", 0)
    return canvas


def _render_glyph(rng: np.random.Generator, s: dict) -> np.ndarray:
    canvas = _background(rng, s["bg"], BG_COLORS[s["bgcolor"]])
    scale = s["scale"]
    bitmap = np.kron(_BITMAPS[s["char"]], np.ones((scale, scale), dtype=bool))  # (7s, 5s)
    h, w = bitmap.shape
    ox, oy = int(rng.integers(0, SIZE - w + 1)), int(rng.integers(0, SIZE - h + 1))
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[oy : oy + h, ox : ox + w] = bitmap
    canvas[mask] = np.asarray(COLORS[s["color"]], dtype=np.int64)
    return canvas


def _render_pattern(rng: np.random.Generator, s: dict) -> np.ndarray:
    fg, bg = np.asarray(COLORS[s["color"]]), np.asarray(BG_COLORS[s["bgcolor"]])
    step, ox, oy = int(rng.integers(3, 7)), int(rng.integers(0, 8)), int(rng.integers(0, 8))
    x, y = _XX + ox, _YY + oy
    p = s["pattern"]
    if p == "striped":
        mask = ((y if s["orientation"] == "horizontal" else x) // max(2, step // 2 + 1)) % 2 == 0
    elif p == "dotted":
        mask = (x % step < 2) & (y % step < 2)
    elif p == "checkered":
        mask = (x // step + y // step) % 2 == 0
    elif p == "grid":
        mask = (x % step == 0) | (y % step == 0)
    else:  # speckled
        mask = rng.integers(0, 100, size=(SIZE, SIZE)) < 30
    canvas = np.where(mask[..., None], fg, bg).astype(np.int64)
    return canvas + rng.integers(-12, 13, size=(SIZE, SIZE, 3))


_RENDER = {
    "object": _render_object,
    "multi": _render_multi,
    "glyph": _render_glyph,
    "pattern": _render_pattern,
}


def render(rng: np.random.Generator, scene: dict) -> np.ndarray:
    """(3, 32, 32) uint8 image of a scene (a dict of factors)."""
    img = _RENDER[scene["kind"]](rng, scene)
    return np.clip(img, 0, 255).astype(np.uint8).transpose(2, 0, 1)
