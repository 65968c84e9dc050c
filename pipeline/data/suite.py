"""The built-in suite: 20 tasks defined on the generated world, their data, and their designed relations.

Each task fixes some factors of its scenes and labels one (or two) of the others; its images are
rendered from seeded streams (pipeline.data.render), so the same name and split give the same
pixels on any machine. The designed similarities and relations between tasks are computed from
these definitions. Building a registry Task from the data is pipeline.data.tasks's job.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.data.render import render
from pipeline.data.scenes import (
    BACKGROUNDS,
    BG_COLORS,
    COLORS,
    DIGITS,
    GENERATOR_VERSION,
    LETTERS,
    NUMBERS,
    PATTERNS,
    SHAPES,
    SIZES,
    TEXTURES,
    sample_scene,
)

N_TRAIN, N_TEST = 24, 50  # images per class (multi-label tasks: see MULTI_IMAGES)
# A task's test split holds at least this many images (more per class for tasks of few classes):
# two prompts of equal worth score apart by about sqrt(disagreement / images), and at 100 to 300
# images that evaluation noise was a third (CoOp, VPT) to three fifths (UPT) of a cell's seed
# variance.
MIN_TEST = 800
MULTI_IMAGES = {"train": 120, "test": 240}
CORNERS = ("top left", "top right", "bottom left", "bottom right", "center")


@dataclass(frozen=True)
class SuiteTask:
    """One task of the suite: the scenes it draws, the factor its classes set, how it is scored."""

    kind: str  # the renderer: object, multi (several objects, multi-label), glyph or pattern
    label: tuple[str, ...]  # the factor(s) a class sets
    values: tuple  # one per class (a tuple of values when the task labels two factors)
    domain: str  # the renderer and scene kind, as the study reports it
    classnames: tuple[str, ...] = ()  # one per class; the values themselves when empty
    fixed: dict[str, tuple] = field(default_factory=dict)  # allowed values of other factors
    metric: str = "accuracy"

    def __post_init__(self):
        if not self.classnames:
            object.__setattr__(self, "classnames", tuple(self.values))

    @property
    def multilabel(self) -> bool:
        return self.kind == "multi"


# ---- the 20 tasks -----------------------------------------------------------------------------
# Factors a task does not fix come from the world distribution (pipeline.data.scenes).
_COL8 = tuple(COLORS)
_BG6 = ("gray", "white", "black", "red", "green", "blue")
_SHAPE6 = ("circle", "square", "triangle", "diamond", "ring", "plus")
_COL5 = ("red", "green", "blue", "yellow", "white")
_BG_NAMES = tuple(f"{c} background" for c in _BG6)  # the background-colour family's class names
_SHAPE_COLORS = tuple((s, c) for c in _COL5 for s in _SHAPE6)  # shape-colors and its twin
_CLUTTER = ("noisy", "grid")
SUITE: dict[str, SuiteTask] = {
    "shapes": SuiteTask(
        kind="object",
        label=("shape",),
        values=SHAPES,
        fixed={"bg": ("plain",), "size": ("medium", "large"), "count": (1,)},
        domain="objects/plain",
    ),
    "shapes-clutter": SuiteTask(
        kind="object",
        label=("shape",),
        values=SHAPES,
        fixed={"bg": _CLUTTER, "size": ("medium", "large"), "count": (1,)},
        domain="objects/clutter",
    ),
    "colors": SuiteTask(
        kind="object",
        label=("color",),
        values=_COL8,
        fixed={"bg": ("plain",), "count": (1,)},
        domain="objects/plain",
    ),
    "glyph-colors": SuiteTask(
        kind="glyph",
        label=("color",),
        values=_COL8,
        fixed={"bg": ("plain", "gradient")},
        metric="mean_per_class",
        domain="glyphs",
    ),
    "sizes": SuiteTask(
        kind="object",
        label=("size",),
        values=tuple(SIZES),
        fixed={"bg": ("plain", "gradient"), "count": (1,), "region": ("center",)},
        domain="objects/plain",
    ),
    "positions": SuiteTask(
        kind="object",
        label=("region",),
        values=CORNERS,
        fixed={"bg": ("plain",), "size": ("small", "medium"), "count": (1,)},
        domain="objects/plain",
    ),
    "counts": SuiteTask(
        kind="object",
        label=("count",),
        values=(1, 2, 3, 4, 5),
        classnames=NUMBERS[1:6],
        fixed={"bg": ("plain",), "size": ("small",)},
        domain="objects/plain",
    ),
    "counts-clutter": SuiteTask(
        kind="object",
        label=("count",),
        values=(1, 2, 3, 4, 5),
        classnames=NUMBERS[1:6],
        fixed={"bg": _CLUTTER, "size": ("small",)},
        metric="mean_per_class",
        domain="objects/clutter",
    ),
    "digits": SuiteTask(
        kind="glyph",
        label=("char",),
        values=DIGITS,
        classnames=NUMBERS,
        fixed={"bg": ("plain",), "char": DIGITS},
        domain="glyphs",
    ),
    "letters": SuiteTask(
        kind="glyph",
        label=("char",),
        values=LETTERS,
        classnames=tuple(f"letter {c}" for c in LETTERS),
        fixed={"bg": ("plain", "gradient"), "char": LETTERS},
        domain="glyphs",
    ),
    "glyph-kinds": SuiteTask(
        kind="glyph",
        label=("glyph",),
        values=("digit", "letter"),
        fixed={"bg": ("plain", "gradient")},
        domain="glyphs",
    ),
    "textures": SuiteTask(
        kind="pattern",
        label=("pattern",),
        values=PATTERNS,
        domain="patterns",
    ),
    "object-textures": SuiteTask(
        kind="object",
        label=("texture",),
        values=TEXTURES,
        fixed={"bg": ("plain",), "size": ("large",), "count": (1,), "region": ("center",)},
        domain="objects/plain",
    ),
    "backgrounds": SuiteTask(
        kind="object",
        label=("bgcolor",),
        values=_BG6,
        classnames=_BG_NAMES,
        fixed={"bg": ("plain", "noisy")},
        domain="objects/backgrounds",
    ),
    "backgrounds-clutter": SuiteTask(
        kind="object",
        label=("bgcolor",),
        values=_BG6,
        classnames=_BG_NAMES,
        fixed={"bg": ("gradient", "grid")},
        domain="objects/clutter",
    ),
    "glyph-backgrounds": SuiteTask(
        kind="glyph",
        label=("bgcolor",),
        values=_BG6,
        classnames=_BG_NAMES,
        fixed={"bg": ("plain", "noisy")},
        domain="glyphs",
    ),
    "pattern-backgrounds": SuiteTask(
        kind="pattern",
        label=("bgcolor",),
        values=_BG6,
        classnames=_BG_NAMES,
        metric="mean_per_class",
        domain="patterns",
    ),
    "shape-colors": SuiteTask(
        kind="object",
        label=("shape", "color"),
        values=_SHAPE_COLORS,
        classnames=tuple(f"{c} {s}" for s, c in _SHAPE_COLORS),
        fixed={"bg": ("plain",), "size": ("medium", "large"), "count": (1,), "texture": ("solid",)},
        metric="mean_per_class",
        domain="objects/plain",
    ),
    "shape-colors-clutter": SuiteTask(
        kind="object",
        label=("shape", "color"),
        values=_SHAPE_COLORS,
        classnames=tuple(f"{c} {s}" for s, c in _SHAPE_COLORS),
        fixed={"bg": _CLUTTER, "size": ("medium", "large"), "count": (1,), "texture": ("solid",)},
        metric="mean_per_class",
        domain="objects/clutter",
    ),
    "shape-scenes": SuiteTask(
        kind="multi",
        label=("shape",),
        values=_SHAPE6,
        fixed={"bg": ("plain", "gradient")},
        metric="map11",
        domain="objects/scenes",
    ),
}

# Pairs (source, target) used to check transfer structure. Similar: a source labelling the same
# factor with the same class names in another domain (a background colour under glyphs, patterns,
# clutter; colour-shapes on clutter). Dissimilar: a source sharing neither factor nor words with
# the same five targets.
SIMILAR_PAIRS = (
    ("glyph-backgrounds", "backgrounds"),
    ("backgrounds", "glyph-backgrounds"),
    ("backgrounds", "backgrounds-clutter"),
    ("backgrounds-clutter", "pattern-backgrounds"),
    ("shape-colors-clutter", "shape-colors"),
)
DISSIMILAR_PAIRS = (
    ("textures", "backgrounds"),
    ("counts-clutter", "glyph-backgrounds"),
    ("letters", "backgrounds-clutter"),
    ("shapes", "pattern-backgrounds"),
    ("digits", "shape-colors"),
)


def _class_fixed(spec: SuiteTask, value) -> dict:
    """The allowed factor values for images of one class of a task."""
    fixed = {k: tuple(v) for k, v in spec.fixed.items()}
    label = spec.label
    if label == ("glyph",):
        fixed["char"] = DIGITS if value == "digit" else LETTERS
    elif spec.kind != "multi":
        values = value if isinstance(value, tuple) else (value,)
        fixed.update({f: (v,) for f, v in zip(label, values, strict=True)})
    return fixed


# ---- task data ---------------------------------------------------------------------------------


def _seed(*parts) -> np.random.Generator:
    """A PCG64 generator keyed by the generator version and `parts` (ints or strings)."""
    keys = [GENERATOR_VERSION] + [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(keys)))


def test_per_class(n_classes: int) -> int:
    """Test images per class of a single-label task: N_TEST, or more to reach MIN_TEST in all."""
    return max(N_TEST, -(-MIN_TEST // n_classes))


def task_images(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and labels ((N,) ints, or (N, C) multi-hot) of one split."""
    spec = SUITE[name]
    rng = _seed("task", name, split)
    n_classes = len(spec.values)
    if spec.kind == "multi":
        n = MULTI_IMAGES[split] if split == "train" else max(MULTI_IMAGES[split], MIN_TEST)
        fixed = {**spec.fixed, "classes": spec.values}
        scenes = [sample_scene(rng, "multi", fixed) for _ in range(n)]
        labels = np.zeros((n, n_classes), dtype=np.float32)
        for i, s in enumerate(scenes):
            labels[i, [spec.values.index(sh) for sh in s["shapes"]]] = 1.0
    else:
        per_class = N_TRAIN if split == "train" else test_per_class(n_classes)
        labels = np.repeat(np.arange(n_classes), per_class)
        scenes = [sample_scene(rng, spec.kind, _class_fixed(spec, spec.values[c])) for c in labels]
    images = np.stack([render(rng, s) for s in scenes])
    return images, labels


def chance(name: str) -> float:
    """The metric's value for a random guess (multi-label: the mean positive rate)."""
    spec = SUITE[name]
    if spec.kind == "multi":
        return 2.5 / len(spec.values)  # 2 or 3 of the classes are present
    return 1.0 / len(spec.values)


# ---- designed similarities --------------------------------------------------------------------


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _overlap(p: dict, q: dict) -> float:
    """Shared mass of two distributions (dicts value -> probability): 1 when equal, 0 when disjoint."""
    return sum(min(p[k], q[k]) for k in p.keys() & q.keys())


def _labelled_factors(spec: SuiteTask) -> set:
    return {"char" if f == "glyph" else f for f in spec.label}


def _uniform(values) -> dict:
    values = tuple(values)
    return {v: 1.0 / len(values) for v in values}


def _drawn(spec: SuiteTask, factor: str, world) -> dict:
    """The distribution of a factor over a task's images: its class values when the task labels it,
    its allowed values when fixed, else the world's (each uniform; the rare redraws that keep an
    object's colour off its background are ignored)."""
    if factor in spec.label:
        k = spec.label.index(factor)
        return _uniform(dict.fromkeys(v[k] if isinstance(v, tuple) else v for v in spec.values))
    return _uniform(spec.fixed.get(factor, world))


def _objects(spec: SuiteTask) -> dict:
    """What the images show besides their background: shapes, characters or patterns, as a
    distribution over (kind of thing, thing)."""
    if spec.kind == "glyph":
        chars = spec.fixed.get("char", DIGITS + LETTERS)
        return {("char", c): p for c, p in _uniform(chars).items()}
    if spec.kind == "pattern":
        return {("pattern", v): p for v, p in _drawn(spec, "pattern", PATTERNS).items()}
    pool = spec.values if spec.kind == "multi" else None
    shapes = _uniform(pool) if pool is not None else _drawn(spec, "shape", SHAPES)
    return {("shape", v): p for v, p in shapes.items()}


def _backdrop(spec: SuiteTask) -> set:
    """The background kinds a task's images are drawn on (a pattern fills the whole image)."""
    return {"pattern"} if spec.kind == "pattern" else set(spec.fixed.get("bg", BACKGROUNDS))


def visual_similarity(a: str, b: str) -> float:
    """Designed visual similarity, from what the images share and nothing of the labels: the
    renderer (0.3; objects and multi-object scenes count half), the background kinds (0.2, Jaccard),
    the colour distributions of background and foreground (0.3, shared mass, half each) and the
    objects drawn (0.2, shared mass of shapes, characters or patterns)."""
    if a == b:
        return 1.0
    sa, sb = SUITE[a], SUITE[b]
    kinds = {sa.kind, sb.kind}
    renderer = 1.0 if len(kinds) == 1 else 0.5 if kinds == {"object", "multi"} else 0.0
    backdrop = _jaccard(_backdrop(sa), _backdrop(sb))
    colours = 0.5 * _overlap(_drawn(sa, "bgcolor", BG_COLORS), _drawn(sb, "bgcolor", BG_COLORS))
    if "multi" not in kinds:  # a multi-object scene's colours are drawn per object, from all colours
        colours += 0.5 * _overlap(_drawn(sa, "color", COLORS), _drawn(sb, "color", COLORS))
    else:
        colours += 0.5 * _overlap(*(_drawn(s, "color", COLORS) if s.kind != "multi" else _uniform(COLORS)
                                    for s in (sa, sb)))  # fmt: skip
    return round(
        0.3 * renderer + 0.2 * backdrop + 0.3 * colours + 0.2 * _overlap(_objects(sa), _objects(sb)), 6
    )


def _word_factors(spec: SuiteTask) -> dict[str, set]:
    """word of a class name -> the labelled factors it names: for a two-factor class ("red circle")
    each word names the factor whose value it spells, a word that spells none ("background",
    "letter") names every labelled factor of the task."""
    out: dict[str, set] = {}
    factors = ["char" if f == "glyph" else f for f in spec.label]
    for value, name in zip(spec.values, spec.classnames, strict=True):
        values = value if isinstance(value, tuple) else (value,)
        for word in name.split():
            named = {f for f, v in zip(factors, values, strict=False) if word in str(v).split()}
            out.setdefault(word, set()).update(named or factors)
    return out


def label_similarity(a: str, b: str) -> float:
    """Designed label similarity: Jaccard overlap of the words of the two tasks' class names (it is
    `aligned_words` + `crossed_words`)."""
    words = [{w for c in SUITE[t].classnames for w in c.split()} for t in (a, b)]
    return round(_jaccard(*words), 6)


def _shared_words(a: str, b: str) -> tuple[float, float]:
    """(aligned, crossed): the share of the two tasks' words (of their union) that both use for the
    same labelled factor, and that both use for different factors."""
    wa, wb = _word_factors(SUITE[a]), _word_factors(SUITE[b])
    union = len(wa.keys() | wb.keys())
    shared = wa.keys() & wb.keys()
    aligned = sum(1 for w in shared if wa[w] & wb[w])
    return aligned / union, (len(shared) - aligned) / union


# name -> its value for two task names (the report explains each kind in one line)
RELATIONS = {
    # 1 when the two tasks label a common factor (shape, colour, background colour, ...)
    "same_factor": lambda a, b: float(bool(_labelled_factors(SUITE[a]) & _labelled_factors(SUITE[b]))),
    # share of the two tasks' class-name words that both use to name the same factor
    "aligned_words": lambda a, b: round(_shared_words(a, b)[0], 6),
    # share of the two tasks' class-name words that they use to name different factors
    "crossed_words": lambda a, b: round(_shared_words(a, b)[1], 6),
    # 1 when the two tasks come from the same renderer and scene kind (their domain)
    "same_domain": lambda a, b: float(SUITE[a].domain == SUITE[b].domain),
}
# every designed kind written per pair: the two similarities, then the relations
DESIGNED_KINDS = ("visual", "label", *RELATIONS)


def similarity_matrix(kind: str = "visual") -> tuple[list[str], np.ndarray]:
    """(task names, (20, 20) matrix) of a designed kind: 'visual', 'label' or a RELATIONS name."""
    if kind not in DESIGNED_KINDS:
        raise ValueError(f"unknown designed kind {kind!r}; known: {', '.join(DESIGNED_KINDS)}")
    fn = {"visual": visual_similarity, "label": label_similarity, **RELATIONS}[kind]
    names = list(SUITE)
    return names, np.array([[fn(a, b) for b in names] for a in names])
