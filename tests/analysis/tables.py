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
