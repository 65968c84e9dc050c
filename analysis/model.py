"""The crossed-effects model of one gain matrix: gain ~ similarities + source + target.

Source and target enter as fixed effects, so a similarity that only tracks good donors or receptive
targets gets no credit; standard errors are clustered two ways, by source and by target (pairs that
share a task are not independent). A coefficient's p-value comes from relabelling its similarity's
tasks at random (rows and columns by one permutation), the test the per-target statistics use:
clustered errors from 20 clusters reject 7-13% of null matrices when pairwise structure is left out
of the model or terms are collinear (bench/calibration.py). Terms that correlate above
COLLINEAR over the pairs go into separate models (`collinear_split`). The model is fitted on the
pair means (over seeds): the pair effect of a several-seed study is the model's residual, and
`noise.py` splits it into seed noise and pairwise structure. statsmodels does the fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats import align, content_order, offdiag_pairs

log = logging.getLogger(__name__)

MODEL_COLUMNS = [
    "term",
    "estimate",
    "se",
    "lo",
    "hi",
    "p_value",
    "p_clustered",
    "n_perm",
    "n_pairs",
    "n_tasks",
]
COLLINEAR = 0.7  # |correlation| over the pairs above which two terms are fitted in separate models


@dataclass(frozen=True)
class ModelFit:
    """Coefficients of the similarity terms (`table`, MODEL_COLUMNS: points of gain per unit of the
    similarity, task-bootstrap intervals, relabelling-permutation p-values, clustered errors beside),
    the fit's R^2,
    the residual (pair) variance in points^2, and the terms left out because they were constant or
    collinear with others."""

    table: pd.DataFrame
    r2: float
    resid_var: float
    n_pairs: int
    dropped: tuple[str, ...] = ()


def _independent(x: np.ndarray, fixed: np.ndarray, names: list[str]) -> list[int]:
    """Columns of x that add rank to the fixed-effect design, kept in order (a similarity that is a
    sum of others, or constant within sources or targets, adds none): a column's residual on the fixed
    effects and the kept columns must keep more than 1e-9 of its sum of squares."""
    keep: list[int] = []
    for k in range(x.shape[1]):
        basis = np.column_stack([fixed, x[:, keep]])
        col = x[:, k] - x[:, k].mean()
        resid = col - basis @ np.linalg.lstsq(basis, col, rcond=None)[0]
        if float(col @ col) > 0 and float(resid @ resid) > 1e-9 * float(col @ col):
            keep.append(k)
        else:
            log.info("model term %s left out: no variation beyond the other terms", names[k])
    return keep


def _two_way_se(fit, source: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Standard errors of the first k coefficients clustered by source and by target (Cameron, Gelbach
    and Miller: the two one-way covariances minus the pair-level one, statsmodels' "cluster" with two
    group columns). Where that difference is not positive, the larger one-way variance is used. The t
    reference has the smaller number of clusters minus one degrees of freedom."""
    two = fit.get_robustcov_results(cov_type="cluster", groups=np.column_stack([source, target]))
    by_source = fit.get_robustcov_results(cov_type="cluster", groups=source)
    by_target = fit.get_robustcov_results(cov_type="cluster", groups=target)
    var = np.diag(np.asarray(two.cov_params()))[:k]
    one_way = np.maximum(
        np.diag(np.asarray(by_source.cov_params()))[:k], np.diag(np.asarray(by_target.cov_params()))[:k]
    )
    var = np.where(np.isfinite(var) & (var > 0), var, one_way)
    df = float(min(len(np.unique(source)), len(np.unique(target))) - 1)
    return np.sqrt(var), df


def collinear_split(gain: pd.DataFrame, sims: Mapping[str, pd.DataFrame], limit: float = COLLINEAR):
    """The terms in groups to fit as separate models: each term, in order, joins the first group in
    which its correlation with every member over the off-diagonal pairs is at most `limit` in size."""
    pairs = offdiag_pairs({"__gain__": gain, **sims})
    groups: list[list[str]] = []
    for name in sims:
        x = pairs[name].to_numpy(float)
        for group in groups:
            with np.errstate(invalid="ignore", divide="ignore"):
                r = [abs(np.corrcoef(x, pairs[o].to_numpy(float))[0, 1]) for o in group]
            if len(x) < 3 or all(not np.isfinite(v) or v <= limit for v in r):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def crossed_effects(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    level: float = 0.95,
    n_perm: int = 1000,
    seed: int = 0,
    n_boot: int = 1000,
) -> ModelFit:
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the tall design's SVDs take ~30x longer when threads fight over two cores
    with threadpool_limits(1):
        return _crossed_effects(gain, sims, level, n_perm, seed, n_boot)


def _design(pairs: pd.DataFrame, tasks: list[str]) -> tuple[np.ndarray, pd.Categorical, pd.Categorical]:
    src = pd.Categorical(pairs["source"], categories=tasks)
    tgt = pd.Categorical(pairs["target"], categories=tasks)
    dummies = np.column_stack(
        [
            np.ones(len(pairs)),
            pd.get_dummies(src, drop_first=True, dtype=float).to_numpy(),
            pd.get_dummies(tgt, drop_first=True, dtype=float).to_numpy(),
        ]
    )
    return dummies, src, tgt


def _relabelled_p(design: np.ndarray, y: np.ndarray, k: int, sim: np.ndarray, codes, n_perm: int, seed: int):
    """Two-sided p-value of column k's coefficient against `n_perm` relabellings of its similarity
    (`sim`: the tasks' matrix; `codes`: each pair's source and target index), the other columns held.
    Frisch-Waugh: the coefficient is the residualised column's slope on the residualised gain."""
    others = np.delete(design, k, axis=1)
    proj = np.linalg.pinv(others)
    y_res = y - others @ (proj @ y)

    def slopes(x: np.ndarray) -> np.ndarray:  # (pairs, m) -> (m,)
        r = x - others @ (proj @ x)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (r * y_res[:, None]).sum(0) / (r * r).sum(0)

    observed = slopes(design[:, k : k + 1])[0]
    perms = np.argsort(np.random.default_rng(seed).random((n_perm, len(sim))), axis=-1)
    src, tgt = codes
    null = np.concatenate([slopes(sim[pi[:, src], pi[:, tgt]].T) for pi in np.array_split(perms, 8)])
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    tol = 1e-12 * max(1.0, abs(observed))
    return float((1 + (np.abs(null) >= abs(observed) - tol).sum()) / (1 + null.size))


def _crossed_effects(
    gain, sims: Mapping[str, pd.DataFrame], level: float, n_perm: int, seed: int, n_boot: int
) -> ModelFit:
    """OLS of the off-diagonal gains on the similarities plus source and target fixed effects, over the
    pairs where the gain and every similarity are finite (statsmodels), with standard errors clustered
    by source and by target, task-bootstrap intervals and each coefficient's relabelling p-value. A similarity
    with no variation beyond the fixed effects and the other similarities is left out and named in
    `dropped`."""
    import statsmodels.api as sm

    names = list(sims)
    tasks, arrays = align({"__gain__": gain, **sims}, sorted(set(gain.index) & set(gain.columns), key=str))
    order = content_order(tasks, arrays)  # the relabellings draw by values, not by names
    tasks = [tasks[i] for i in order]
    pairs = offdiag_pairs({"__gain__": gain, **sims}, tasks)
    empty = ModelFit(pd.DataFrame(columns=MODEL_COLUMNS), np.nan, np.nan, len(pairs), tuple(names))
    if len(pairs) < 8 or not names:
        return empty
    dummies, src, tgt = _design(pairs, tasks)
    x = pairs[names].to_numpy(float)
    keep = _independent(x, dummies, names)
    dropped = tuple(n for k, n in enumerate(names) if k not in keep)
    if not keep or len(pairs) <= dummies.shape[1] + len(keep) + 1:
        return ModelFit(empty.table, np.nan, np.nan, len(pairs), tuple(names))
    design = np.column_stack([x[:, keep], dummies])
    y = pairs["__gain__"].to_numpy(float)
    base = sm.OLS(y, design).fit()
    rows = _rows(base, keep, names, src, tgt, level)
    terms = [arrays[names[k]][np.ix_(order, order)] for k in keep]
    lo, hi = _bootstrap(arrays["__gain__"][np.ix_(order, order)], terms, n_boot, seed, level)
    for i, row in enumerate(rows):
        row.update(lo=float(lo[i]), hi=float(hi[i]))
        sim = sims[names[keep[i]]].reindex(index=tasks, columns=tasks).to_numpy(float)
        codes = (src.codes, tgt.codes)
        row["p_value"] = _relabelled_p(design, y, i, sim, codes, n_perm, seed + i) if n_perm else np.nan
        row.update(
            n_perm=n_perm, n_pairs=len(pairs), n_tasks=int(len(set(pairs["source"]) | set(pairs["target"])))
        )
    resid_var = float(base.ssr / max(base.df_resid, 1.0))
    table = pd.DataFrame(rows, columns=MODEL_COLUMNS)
    return ModelFit(table, float(base.rsquared), resid_var, len(pairs), dropped)


def _coefficients(gain: np.ndarray, terms: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The terms' coefficients refitted on the tasks `idx` (drawn with replacement: each copy is a task
    of its own, and two copies of one task meet in a dropped cell)."""
    sub = [a[np.ix_(idx, idx)] for a in (gain, *terms)]
    keep = (idx[:, None] != idx[None, :]) & np.all([np.isfinite(a) for a in sub], axis=0)
    i, j = np.nonzero(keep)
    n = len(idx)
    design = np.column_stack([*(a[i, j] for a in sub[1:]), np.eye(n)[i], np.eye(n)[j][:, 1:]])
    if len(i) <= design.shape[1]:
        return np.full(len(terms), np.nan)
    # minimum-norm least squares through the small normal equations (one one-hot column is redundant)
    return (np.linalg.pinv(design.T @ design) @ (design.T @ sub[0][i, j]))[: len(terms)]


def _bootstrap(gain: np.ndarray, terms: list[np.ndarray], n_boot: int, seed: int, level: float):
    """Percentile task-bootstrap intervals of the coefficients (the model refitted on each resample):
    clustered t intervals from 20 tasks covered a planted coefficient 91-93% of the time."""
    nan = np.full(len(terms), np.nan)
    if n_boot < 2:
        return nan, nan
    rng = np.random.default_rng(seed)
    draws = np.array(
        [_coefficients(gain, terms, rng.integers(0, len(gain), len(gain))) for _ in range(n_boot)]
    )
    lo, hi = nan.copy(), nan.copy()
    for k in range(len(terms)):
        d = draws[:, k][np.isfinite(draws[:, k])]
        if d.size >= 2:
            lo[k], hi[k] = np.quantile(d, [(1 - level) / 2, (1 + level) / 2])
    return lo, hi


def _rows(base, keep: list[int], names: list[str], src, tgt, level: float) -> list[dict]:
    """The kept terms' estimates with clustered standard errors, t intervals and p-values."""
    from scipy.stats import t as student

    k = len(keep)
    se, df = _two_way_se(base, src.codes, tgt.codes, k)
    est = np.asarray(base.params[:k], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = student.ppf(0.5 + level / 2.0, df) * se
        p_value = 2.0 * student.sf(np.abs(est / se), df)
    return [
        {
            "term": names[keep[i]],
            "estimate": float(est[i]),
            "se": float(se[i]),
            "lo": float(est[i] - half[i]),
            "hi": float(est[i] + half[i]),
            "p_clustered": float(p_value[i]),
        }
        for i in range(k)
    ]
