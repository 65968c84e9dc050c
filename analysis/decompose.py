"""Split a gain matrix into mean + source effect + target effect + pairwise residual."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats import Arrays, Estimate, align, as_estimate, pair_values, spearman, task_bootstrap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decomposition:
    """gain[s, t] = mean + source[s] + target[t] + residual[s, t] on the off-diagonal cells.

    Effects are centred (mean zero over the tasks that have cells). `shares` are parts of the total
    sum of squares of the fitted cells: "source", "target", "residual", and "cross", the remainder
    (twice the covariance of the source and target terms, which the missing diagonal or missing cells
    make slightly non-zero); they sum to one. `r2_additive` = 1 - residual share."""

    mean: float
    source: pd.Series
    target: pd.Series
    residual: pd.DataFrame
    shares: dict[str, float]
    r2_additive: float
    n_cells: int


def additive_fit(
    gain: np.ndarray, tol: float = 1e-12, max_iter: int = 10_000
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares fit of mean + row effect + column effect to the finite off-diagonal cells of a
    square array, by backfitting (alternating row and column means of the partial residuals, which
    converges to the least-squares fit; one or two sweeps when few cells are missing, and it needs no
    LAPACK call, which is slow on small shared machines). Returns (mean, source effects, target
    effects, residual array with NaN elsewhere); a task without any cell in its row (column) gets a
    NaN source (target) effect."""
    keep = np.isfinite(gain)
    np.fill_diagonal(keep, False)
    w = keep.astype(float)
    y = np.where(keep, gain, 0.0)
    rows, cols = w.sum(axis=1), w.sum(axis=0)
    a, b = np.zeros(len(rows)), np.zeros(len(cols))
    scale = 1.0 + (np.abs(y).max() if keep.any() else 0.0)
    for _ in range(max_iter):
        a_new = (y - w * b[None, :]).sum(axis=1) / np.maximum(rows, 1.0)
        b_new = (y - w * a_new[:, None]).sum(axis=0) / np.maximum(cols, 1.0)
        delta = max(np.abs(a_new - a).max(initial=0.0), np.abs(b_new - b).max(initial=0.0))
        a, b = a_new, b_new
        if delta < tol * scale:
            break
    else:
        log.warning("additive fit stopped after %d sweeps without converging", max_iter)
    src = np.where(rows > 0, a, np.nan)
    tgt = np.where(cols > 0, b, np.nan)
    if not keep.any():
        return float("nan"), src, tgt, np.full(gain.shape, np.nan)
    mean = float(np.nanmean(src) + np.nanmean(tgt))
    src, tgt = src - np.nanmean(src), tgt - np.nanmean(tgt)  # same fit, effects centred
    resid = np.where(keep, gain - (a[:, None] + b[None, :]), np.nan)
    return mean, src, tgt, resid


def decompose(gain: pd.DataFrame) -> Decomposition:
    """The source / target / interaction decomposition of one gain matrix, with variance shares."""
    tasks, arrays = align({"gain": gain})
    a = arrays["gain"]
    mean, src, tgt, resid = additive_fit(a)
    keep = np.isfinite(resid)
    i, j = np.nonzero(keep)
    y = a[i, j]
    total = float(((y - y.mean()) ** 2).sum()) if y.size else float("nan")
    parts = {
        "source": float((src[i] ** 2).sum()),
        "target": float((tgt[j] ** 2).sum()),
        "residual": float((resid[i, j] ** 2).sum()),
    }
    shares = {k: v / total if total > 0 else float("nan") for k, v in parts.items()}
    shares["cross"] = 1.0 - sum(shares.values()) if total > 0 else float("nan")
    residual = pd.DataFrame(resid, index=tasks, columns=tasks)
    residual.index.name, residual.columns.name = "source", "target"
    return Decomposition(
        mean=mean,
        source=pd.Series(src, index=tasks, name="source_effect"),
        target=pd.Series(tgt, index=tasks, name="target_effect"),
        residual=residual,
        shares=shares,
        r2_additive=1.0 - shares["residual"] if total > 0 else float("nan"),
        n_cells=int(y.size),
    )


def residual_spearman(
    gain: pd.DataFrame, sim: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """Spearman correlation of a similarity with the pairwise residual of the gain (the part no source
    or target effect explains), refitting the decomposition in every task-bootstrap resample."""

    def stat(a: Arrays) -> float:
        *_, resid = additive_fit(a["gain"])
        p = pair_values({"resid": resid, "sim": a["sim"]})
        return spearman(p["resid"], p["sim"])

    return as_estimate(task_bootstrap({"gain": gain, "sim": sim}, stat, n_boot, seed, level))
