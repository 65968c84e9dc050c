"""Builders of small result tables and synthetic matrices for the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def row(
    stage, method, target, value, seed=0, source=None, mode=None, shots=4, metric="accuracy", status="ok"
):
    return dict(
        stage=stage,
        mode=mode,
        method=method,
        source=source,
        target=target,
        shots=shots,
        seed=seed,
        metric=metric,
        value=value,
        status=status,
    )


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows)


def square(values, tasks) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, float), index=list(tasks), columns=list(tasks))


def embedded_similarity(n: int, seed: int, dim: int = 3) -> np.ndarray:
    """A symmetric similarity from random task embeddings: minus the Euclidean distance."""
    x = np.random.default_rng(seed).normal(size=(n, dim))
    return -np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


def names(n: int) -> list[str]:
    return [f"t{i:02d}" for i in range(n)]


def planted_gain(
    sim: np.ndarray, effect: float, seed: int, noise: float = 2.5, donor: float = 3.0, receiver: float = 3.0
) -> np.ndarray:
    """effect x similarity + a source (donor) effect + a target (receiver) effect + Gaussian noise, in
    points, with a NaN diagonal: the gain matrix of a study whose pairwise structure is known."""
    n = sim.shape[0]
    rng = np.random.default_rng(seed)
    gain = (
        effect * sim
        + rng.normal(0, donor, n)[:, None]
        + rng.normal(0, receiver, n)[None, :]
        + rng.normal(0, noise, (n, n))
    )
    np.fill_diagonal(gain, np.nan)
    return gain


def word_ring(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(aligned, crossed) 0/1 relations of a suite-like ring: each task shares label words with the
    two tasks on either side; with the nearer one the words name the same factor (aligned), with the
    farther one another factor (crossed). Word overlap is their sum, and each target has as many
    aligned as crossed sources."""
    i = np.arange(n)
    step = np.abs(i[:, None] - i[None, :])
    step = np.minimum(step, n - step)
    return (step == 1).astype(float), (step == 2).astype(float)
