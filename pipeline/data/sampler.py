"""The seeded K-shot sampler (SPEC 4): the same seed and task give the same sample on any machine."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.errors import MvlptError


@dataclass(frozen=True)
class FewShot:
    train: np.ndarray  # indices into the train split, grouped by class
    val: np.ndarray  # the first ceil(0.2 K) shots of each class (a subset of train)


def class_members(labels: np.ndarray, c: int) -> np.ndarray:
    """Indices of the images carrying class c (single-label ids or multi-hot rows)."""
    return np.flatnonzero(labels[:, c] > 0) if labels.ndim == 2 else np.flatnonzero(labels == c)


def few_shot(labels: np.ndarray, classnames, shots: int, seed: int, task: str) -> FewShot:
    """Draw `shots` training images per class with numpy's PCG64, keyed by (seed, task name).

    Seed 0 is a seed like any other. For multi-label tasks an image drawn for one class is not
    drawn again for a later class (so a class may end with more than K positives).
    """
    if shots < 1:
        raise MvlptError(f"shots must be at least 1, got {shots}")
    if seed < 0:
        raise MvlptError(f"seed must be non-negative, got {seed}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(task.encode())])))
    n_val = math.ceil(0.2 * shots)
    train, val, taken = [], [], set()
    for c, name in enumerate(classnames):
        pool = class_members(labels, c)
        if len(pool) == 0:
            raise MvlptError(f"task '{task}': class '{name}' has no training images")
        if len(pool) < shots:
            raise MvlptError(
                f"task '{task}': {shots} shots asked but class '{name}' has only {len(pool)} training images"
            )
        order = pool[rng.permutation(len(pool))]
        pick = [int(i) for i in order if int(i) not in taken][:shots]
        if len(pick) < shots:  # multi-label: earlier classes took the images this one needs
            pick = [int(i) for i in order[:shots]]
        taken.update(pick)
        train += [i for i in pick if i not in train] if labels.ndim == 2 else pick
        val += pick[:n_val]
    return FewShot(
        np.asarray(train, dtype=np.int64),
        np.asarray(sorted(set(val), key=val.index), dtype=np.int64),
    )
