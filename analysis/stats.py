"""Statistics relating gain matrices to similarity matrices: Spearman, partial, OLS, decomposition,
each with a percentile bootstrap that resamples tasks."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]  # name -> (T, T) matrix, rows sources, columns targets, NaN diagonal


@dataclass(frozen=True)
class Estimate:
    """A statistic with its percentile bootstrap interval; `n_boot` counts the resamples it was defined on."""

    estimate: float
    lo: float
    hi: float
    n_pairs: int
    n_tasks: int
    n_boot: int


# --- plain statistics on vectors -------------------------------------------------------------------


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (like scipy.stats.rankdata's default)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], x.size]
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(x.size)
    ranks[order] = average[np.cumsum(new) - 1]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than three points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation over the pairs where both values are finite."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    return pearson(rankdata(x[keep]), rankdata(y[keep]))


def _least_squares(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares coefficients through the (small) normal equations: np.linalg.lstsq
    on the tall design spins up LAPACK threads that cost ~40x more on a busy two-core machine."""
    return np.linalg.pinv(design.T @ design) @ (design.T @ y)


def _residualise(y: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """y minus its least-squares fit on an intercept and the control columns."""
    design = np.column_stack([np.ones(len(y)), controls])
    return y - design @ _least_squares(design, y)


def partial_spearman(y: np.ndarray, x: np.ndarray, controls: np.ndarray) -> float:
    """Rank-based partial correlation of x with y given the controls (each column ranked first), over
    rows where everything is finite."""
    if len(y) < 3:
        return float("nan")
    controls = np.asarray(controls, float).reshape(len(y), -1)
    keep = np.isfinite(y) & np.isfinite(x) & np.isfinite(controls).all(axis=1)
    if keep.sum() < 3:  # too few pairs (a bootstrap resample of very few tasks): undefined
        return float("nan")
    ranked = np.column_stack([rankdata(c) for c in controls[keep].T])
    return pearson(_residualise(rankdata(y[keep]), ranked), _residualise(rankdata(x[keep]), ranked))


def ols(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least squares of y on an intercept and the columns of x: (coefficients, intercept first; R^2)."""
    design = np.column_stack([np.ones(len(y)), x])
    coef = _least_squares(design, y)
    resid = y - design @ coef
    total = float(((y - y.mean()) ** 2).sum())
    return coef, (1.0 - float(resid @ resid) / total) if total > 0 else float("nan")


# --- matrices, pairs and the task bootstrap --------------------------------------------------------


def align(
    matrices: Mapping[str, pd.DataFrame], tasks: Sequence[str] | None = None
) -> tuple[list[str], Arrays]:
    """Matrices reindexed to one task list (default: the tasks every matrix has, in the first one's
    order) as float arrays with the diagonal set to NaN: statistics here are off-diagonal."""
    frames = list(matrices.values())
    if tasks is None:
        common = set.intersection(*({*m.index} & {*m.columns} for m in frames))
        tasks = [t for t in frames[0].index if t in common]
        dropped = set(frames[0].index) - common
        if dropped:
            log.info("tasks without every matrix left out: %s", sorted(dropped))
    tasks = list(tasks)
    arrays = {}
    for name, m in matrices.items():
        a = m.reindex(index=tasks, columns=tasks).to_numpy(dtype=float, copy=True)
        np.fill_diagonal(a, np.nan)
        arrays[name] = a
    return tasks, arrays


def content_order(tasks: Sequence[str], arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """An order of the tasks fixed by the values of the matrices alone (each task's row and column
    means, matrix by matrix), the name breaking only exact ties: the Monte Carlo draws index tasks in
    this order, so renaming tasks, or listing them otherwise, draws the same resamples."""
    keys = []
    for a in arrays.values():
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row without a value: NaN, sorted last
            keys += [np.round(np.nanmean(a, axis=1), 9), np.round(np.nanmean(a, axis=0), 9)]
    names = np.array([str(t) for t in tasks])
    return np.lexsort([names, *[np.nan_to_num(k, nan=np.inf) for k in reversed(keys)]])


def pair_values(arrays: Arrays) -> Arrays:
    """The off-diagonal cells where every matrix is finite, as aligned vectors."""
    stacked = np.stack(list(arrays.values()))
    keep = np.isfinite(stacked).all(axis=0)
    np.fill_diagonal(keep, False)
    return {k: a[keep] for k, a in arrays.items()}


def offdiag_pairs(matrices: Mapping[str, pd.DataFrame], tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Long table of the off-diagonal pairs where every matrix is finite: source, target, one column each."""
    names, arrays = align(matrices, tasks)
    stacked = np.stack(list(arrays.values()))
    keep = np.isfinite(stacked).all(axis=0)
    i, j = np.nonzero(keep)
    out = pd.DataFrame({"source": [names[k] for k in i], "target": [names[k] for k in j]})
    for k, a in arrays.items():
        out[k] = a[i, j]
    return out


def task_bootstrap(
    matrices: Mapping[str, pd.DataFrame],
    statistic: Callable[[Arrays], float | np.ndarray],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    """Percentile bootstrap over tasks. Each resample draws T tasks with replacement and takes the
    sub-matrix of the drawn tasks (rows and columns alike); a pair of two copies of one task is a
    diagonal cell and drops out, while a task drawn twice contributes its pairs with others twice
    (a cluster bootstrap: cells that share a task are not independent). Each component's interval
    skips the resamples where that component is not finite. Returns (estimate, lo, hi, n_pairs,
    n_tasks, resamples where any component is finite)."""
    names, arrays = align(matrices)
    order = content_order(names, arrays)  # the resamples draw by values, not by names or listing
    names, arrays = [names[i] for i in order], {k: a[np.ix_(order, order)] for k, a in arrays.items()}
    estimate = np.atleast_1d(np.asarray(statistic(arrays), dtype=float))
    n_pairs = len(next(iter(pair_values(arrays).values())))
    rng = np.random.default_rng(seed)
    n = len(names)
    draws = np.full((n_boot, estimate.size), np.nan)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        copies = idx[:, None] == idx[None, :]
        sample = {k: np.where(copies, np.nan, a[np.ix_(idx, idx)]) for k, a in arrays.items()}
        draws[b] = statistic(sample)
    # each component over the resamples where it is finite: one undefined component (a constant
    # similarity) must not void the others' intervals
    lo, hi = np.full(estimate.size, np.nan), np.full(estimate.size, np.nan)
    alpha = (1.0 - level) / 2.0
    for k in range(estimate.size):
        d = draws[:, k][np.isfinite(draws[:, k])]
        if d.size >= 2:
            lo[k], hi[k] = np.quantile(d, [alpha, 1.0 - alpha])
    return estimate, lo, hi, n_pairs, n, int(np.isfinite(draws).any(axis=1).sum())


def as_estimate(result: tuple, k: int = 0) -> Estimate:
    """Component k of a `task_bootstrap` result as an Estimate."""
    est, lo, hi, n_pairs, n_tasks, n_boot = result
    return Estimate(float(est[k]), float(lo[k]), float(hi[k]), n_pairs, n_tasks, n_boot)


def spearman_ci(
    gain: pd.DataFrame, sim: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """Spearman correlation of gain with a similarity over the off-diagonal pairs, task-bootstrap interval."""

    def stat(a: Arrays) -> float:
        p = pair_values(a)
        return spearman(p["gain"], p["sim"])

    return as_estimate(task_bootstrap({"gain": gain, "sim": sim}, stat, n_boot, seed, level))


def partial_correlations(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """For each similarity: its partial Spearman correlation with gain controlling for all the other
    similarities (ranks residualised on the others' ranks), with a task-bootstrap interval."""
    names = list(sims)
    if len(names) < 2:
        raise ValueError("a partial correlation needs at least two similarities")

    def stat(a: Arrays) -> np.ndarray:
        p = pair_values(a)
        out = []
        for name in names:
            others = np.column_stack([p[o] for o in names if o != name])
            out.append(partial_spearman(p["__gain__"], p[name], others))
        return np.array(out)

    result = task_bootstrap({"__gain__": gain, **sims}, stat, n_boot, seed, level)
    rows = [{"similarity": n, **vars(as_estimate(result, k))} for k, n in enumerate(names)]
    return pd.DataFrame(rows)


def regress(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    standardize: bool = False,
) -> pd.DataFrame:
    """OLS of gain on the similarities over the off-diagonal pairs: one row per term ("intercept", each
    similarity, "r2") with a task-bootstrap percentile interval (classical intervals would treat pairs
    sharing a task as independent). With `standardize`, predictors are z-scored within each sample, so
    coefficients are points of gain per standard deviation of similarity."""
    names = list(sims)

    def stat(a: Arrays) -> np.ndarray:
        p = pair_values(a)
        x = np.column_stack([p[n] for n in names])
        if len(x) <= len(names) + 1:
            return np.full(len(names) + 2, np.nan)
        if standardize:
            sd = x.std(axis=0)
            x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, np.nan)
            if not np.isfinite(x).all():
                return np.full(len(names) + 2, np.nan)
        coef, r2 = ols(p["__gain__"], x)
        return np.r_[coef, r2]

    result = task_bootstrap({"__gain__": gain, **sims}, stat, n_boot, seed, level)
    terms = ["intercept", *names, "r2"]
    return pd.DataFrame([{"term": t, **vars(as_estimate(result, k))} for k, t in enumerate(terms)])
