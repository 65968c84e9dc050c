"""The seeded K-shot sampler: the same seed and task give the same sample on any machine."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline.errors import MvlptError


@dataclass(frozen=True)
class FewShot:
    train: np.ndarray  # indices into the train split that are tuned on, grouped by class
    val: np.ndarray  # indices held out for best-validation selection (the training image at K = 1)


def val_shots(shots: int) -> int:
    """Validation shots per class out of K: ceil(0.2 K) held out for K > 1, none for K = 1 (the
    reference toolkit's split: 5 shots are 4 to train on and 1 to validate on)."""
    return 0 if shots == 1 else math.ceil(0.2 * shots)


def class_members(labels: np.ndarray, c: int) -> np.ndarray:
    """Indices of the images carrying class c (single-label ids or multi-hot rows)."""
    return np.flatnonzero(labels[:, c] > 0) if labels.ndim == 2 else np.flatnonzero(labels == c)


def few_shot(labels: np.ndarray, classnames, shots: int, seed: int, task: str) -> FewShot:
    """Draw `shots` images per class with numpy's PCG64, keyed by (seed, task name), and hold the
    first `val_shots(shots)` of each class out of training for validation.

    Seed 0 is a seed like any other. With K = 1 the one image per class is both trained and
    validated on (nothing is left to hold out). For multi-label tasks an image drawn for one class
    is not drawn again for a later class (so a class may end with more than K positives), and an
    image held out for one class is never trained on for another.
    """
    if shots < 1:
        raise MvlptError(f"shots must be at least 1, got {shots}")
    if seed < 0:
        raise MvlptError(f"seed must be non-negative, got {seed}")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(task.encode())])))
    n_val = val_shots(shots)
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
        if n_val == 0:
            val += pick
            train += pick
        else:
            val += pick[:n_val]
            train += pick[n_val:]
    val = list(dict.fromkeys(val))
    held = set(val) if n_val else set()
    train = [i for i in dict.fromkeys(train) if i not in held]
    return FewShot(np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64))
