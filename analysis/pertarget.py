"""Per-target statistics: for each target, rank its sources by a similarity and score the
ranking against the gains, then average over targets, with a task-bootstrap interval and a
permutation p-value.

Per target, the candidates are the other tasks whose gain and similarity are both finite. Scores:
Spearman and Kendall tau-b over the candidates; NDCG@k with relevance max(gain, 0); regret@k, the
best candidate's gain minus the best gain among the top k (in points, and relative to the best
source's transfer points as in Vu et al. 2020). Ties in the similarity are averaged over every
order of the tied sources, never broken by the order tasks are listed in, so a constant
similarity scores exactly a random ranking's expectation (which is how the random expectations
here are computed).

Every score is written for a batch of rows (`..., n` arrays, the last axis the candidates, NaN
for none) so that one vectorised call scores every target of every resample: scipy's rank
correlations and scikit-learn's `ndcg_score` (ties averaged likewise) are the references the tests
compare these with, but calling them once per target per resample would cost 10^5 calls a
similarity. The task bootstrap is `scipy.stats.bootstrap` over task indices; it gives the
intervals. The permutation null
is the one scipy's `permutation_test` cannot express (each target's sources shuffled on their
own), written here vectorised.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.stats import align, content_order

# statistic -> (kind, k, direction of "better"); kind picks the scoring function
STATISTICS = {
    "spearman": ("spearman", 0, "two-sided"),
    "kendall": ("kendall", 0, "two-sided"),
    "ndcg@3": ("ndcg", 3, "greater"),
    "ndcg@5": ("ndcg", 5, "greater"),
    "regret@1": ("regret", 1, "less"),
    "regret@3": ("regret", 3, "less"),
    "rel_regret@1": ("rel_regret", 1, "less"),
    "rel_regret@3": ("rel_regret", 3, "less"),
}
RANK_STATS = ("spearman", "kendall")
STATISTIC_NAMES = {
    "spearman": "Spearman ρ",
    "kendall": "Kendall τb",
    "ndcg@3": "NDCG@3",
    "ndcg@5": "NDCG@5",
    "regret@1": "regret@1 (points)",
    "regret@3": "regret@3 (points)",
    "rel_regret@1": "regret@1 (share of best)",
    "rel_regret@3": "regret@3 (share of best)",
}
SUMMARY_COLUMNS = [
    "similarity",
    "statistic",
    "estimate",
    "lo",
    "hi",
    "p_value",
    "random",
    "null_mean",
    "n_targets",
    "n_tasks",
    "n_perm",
    "n_boot",
]


# --- scores of a batch of rows (the last axis holds one target's candidate sources) ---------------


def _ranks(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Average ranks among the valid entries of each row (NaN elsewhere); invalid entries are moved
    past every valid one, so they never shift a valid entry's rank."""
    from scipy.stats import rankdata

    r = rankdata(np.where(valid, x, np.inf), axis=-1)
    return np.where(valid, r, np.nan)


def _pearson(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    n = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(valid, x - np.nansum(x, axis=-1, keepdims=True) / n[..., None], 0.0)
        dy = np.where(valid, y - np.nansum(y, axis=-1, keepdims=True) / n[..., None], 0.0)
        den = np.sqrt((dx * dx).sum(-1) * (dy * dy).sum(-1))
        out = (dx * dy).sum(-1) / den
    # a constant side (den 0) or fewer than three candidates: undefined; rounding can leave den tiny
    return np.where((n >= 3) & (den > 1e-12 * np.maximum(n, 1)), out, np.nan)


def spearman_rows(g: np.ndarray, s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Spearman correlation per row over its valid entries (ties get average ranks)."""
    return _pearson(_ranks(g, valid), _ranks(s, valid), valid)


def _signs(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    z = np.where(valid, x, 0.0)
    both = valid[..., :, None] & valid[..., None, :]
    n = x.shape[-1]
    upper = np.triu(np.ones((n, n), bool), 1)
    return np.where(both & upper, np.sign(z[..., :, None] - z[..., None, :]), 0.0)  # (..., n, n)


def kendall_rows(g: np.ndarray, s: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Kendall tau-b per row over its valid entries: (concordant - discordant) / sqrt(pairs untied in
    g x pairs untied in s)."""
    dg, ds = _signs(g, valid), _signs(s, valid)
    num = (dg * ds).sum(axis=(-2, -1))
    den = np.sqrt((dg != 0).sum(axis=(-2, -1)) * (ds != 0).sum(axis=(-2, -1)).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where((valid.sum(-1) >= 2) & (den > 0), out, np.nan)


def _tie_groups(s: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per entry: how many valid entries score strictly higher, and how many score the same (itself
    included). A tie group of c entries after `higher` others fills positions higher .. higher + c - 1."""
    z = np.where(valid, s, -np.inf)
    other = valid[..., None, :]
    higher = ((z[..., None, :] > z[..., :, None]) & other).sum(-1)
    same = ((z[..., None, :] == z[..., :, None]) & other).sum(-1)
    return higher, np.maximum(same, 1)


def ndcg_rows(g: np.ndarray, s: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per row with relevance max(g, 0) and the discount 1 / log2(position + 1); tied scores
    share the mean discount of the positions they fill. NaN when no candidate has a positive gain."""
    n = g.shape[-1]
    rel = np.where(valid, np.maximum(g, 0.0), 0.0)
    disc = 1.0 / np.log2(np.arange(2, n + 2))
    disc[k:] = 0.0
    cum = np.r_[0.0, np.cumsum(disc)]
    higher, same = _tie_groups(s, valid)
    weight = np.where(valid, (cum[higher + same] - cum[higher]) / same, 0.0)
    dcg = (rel * weight).sum(-1)
    ideal = (-np.sort(-rel, axis=-1) * disc).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


def top_k_best(g: np.ndarray, s: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Expected best gain among the top k by score, every order of tied scores equally likely.

    Entries whose tie group ends within the top k are in for sure; at most one group straddles
    position k and gives its free slots to a uniformly random subset of its members. An entry is
    the best of the top k when it is in and no entry above it (larger gain, or equal gain and a
    smaller index) is: a hypergeometric probability over the straddling group."""
    from scipy.special import comb

    n = g.shape[-1]
    higher, same = _tie_groups(s, valid)
    inside = valid & (higher + same <= k)
    straddle = valid & (higher < k) & (higher + same > k)
    gz = np.where(valid, g, -np.inf)
    index = np.arange(n)
    above = valid[..., None, :] & (
        (gz[..., None, :] > gz[..., :, None])
        | ((gz[..., None, :] == gz[..., :, None]) & (index[None, :] < index[:, None]))
    )  # above[..., i, j]: j ranks above i by gain
    blocked = (above & inside[..., None, :]).any(-1)
    h = (above & straddle[..., None, :]).sum(-1)
    members = straddle.sum(-1, keepdims=True)
    slots = np.where(straddle, k - higher, 0).max(-1, keepdims=True)
    total = comb(members, slots)
    p_in = np.where(members > 0, comb(members - h, slots) / np.where(total > 0, total, 1), 1.0)
    p_mid = comb(members - 1 - h, slots - 1) / np.where(total > 0, total, 1)
    p = np.where(inside & ~blocked, p_in, np.where(straddle & ~blocked, p_mid, 0.0))
    return (p * np.where(valid, g, 0.0)).sum(-1)


def regret_rows(g: np.ndarray, s: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    """Regret@k per row: the best candidate's gain minus the expected best gain among the top k."""
    best = np.where(valid, g, -np.inf).max(-1)
    return np.where(valid.any(-1), best - top_k_best(g, s, valid, k), np.nan)


def score_rows(
    statistic: str, g: np.ndarray, s: np.ndarray, valid: np.ndarray, best_points: np.ndarray | None = None
) -> np.ndarray:
    """One statistic of STATISTICS per row. `best_points` (rows' shape): the best source's transfer
    points of each row's target, the denominator of the relative regret (NaN without it)."""
    kind, k, _ = STATISTICS[statistic]
    if kind == "spearman":
        return spearman_rows(g, s, valid)
    if kind == "kendall":
        return kendall_rows(g, s, valid)
    if kind == "ndcg":
        return ndcg_rows(g, s, valid, k)
    regret = regret_rows(g, s, valid, k)
    if kind == "regret":
        return regret
    if best_points is None:
        return np.full(regret.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(best_points > 0, regret / best_points, np.nan)


# --- matrices: targets as rows, their sources as the last axis ------------------------------------


def _by_target(gain: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(..., T, T) source x target arrays -> (g, s, valid) with targets on axis -2, sources last."""
    g, s = np.swapaxes(gain, -1, -2), np.swapaxes(sim, -1, -2)
    valid = np.isfinite(g) & np.isfinite(s)
    n = g.shape[-1]
    valid &= ~np.eye(n, dtype=bool)
    return g, s, valid


def _best_points(g: np.ndarray, valid: np.ndarray, single: np.ndarray | None) -> np.ndarray | None:
    if single is None:
        return None
    best = np.where(valid, g, -np.inf).max(-1)
    return np.where(np.isfinite(best), single + best, np.nan)


def _mean_over_targets(x: np.ndarray) -> np.ndarray:
    n = np.isfinite(x).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(x, -1) / n, np.nan)


@dataclass(frozen=True)
class _Prepared:
    tasks: list[str]
    gain: np.ndarray  # (T, T) sources x targets, NaN diagonal
    sims: dict[str, np.ndarray]
    single: np.ndarray | None  # (T,) the targets' single-run points


def _prepare(gain: pd.DataFrame, sims: Mapping[str, pd.DataFrame], single: pd.Series | None) -> _Prepared:
    # tasks in an order fixed by the values, not by how the matrices list or name them: the bootstrap
    # and the relabellings draw index sets, so the order fixes which tasks a seed draws
    common = set(gain.index) & set(gain.columns)
    for m in sims.values():
        common &= set(m.index) & set(m.columns)
    tasks, arrays = align({"__gain__": gain, **sims}, sorted(common, key=str))
    order = content_order(tasks, arrays)
    tasks = [tasks[i] for i in order]
    arrays = {k: a[np.ix_(order, order)] for k, a in arrays.items()}
    points = None
    if single is not None:
        points = single.groupby(level=0).mean().reindex(tasks).to_numpy(float)
    return _Prepared(tasks, arrays.pop("__gain__"), arrays, points)


def per_target_table(
    gain: pd.DataFrame, sims: Mapping[str, pd.DataFrame], single: pd.Series | None = None
) -> pd.DataFrame:
    """Every statistic per target and similarity: one row per (similarity, target) with n_sources,
    the similarity's top source and the best source by gain (NaN-free ties: the top source is named
    only when it is unique), each statistic, and its random expectation (`random_<statistic>`).
    `single`: target -> single-run points, for the relative regret."""
    p = _prepare(gain, sims, single)
    rows = []
    names = np.array(p.tasks, dtype=object)
    for name, sim in p.sims.items():
        g, s, valid = _by_target(p.gain, sim)
        best_pts = _best_points(g, valid, p.single)
        flat = np.zeros_like(s)
        scores = {st: score_rows(st, g, s, valid, best_pts) for st in STATISTICS}
        random = {st: score_rows(st, g, flat, valid, best_pts) for st in STATISTICS if st not in RANK_STATS}
        for j, target in enumerate(p.tasks):
            v = valid[j]
            row = {"similarity": name, "target": target, "n_sources": int(v.sum())}
            if v.any():
                top = np.flatnonzero(v & (s[j] == s[j][v].max()))
                best = np.flatnonzero(v & (g[j] == g[j][v].max()))
                row["top_source"] = names[top[0]] if top.size == 1 else f"{top.size} tied"
                row["best_source"] = names[best[0]] if best.size == 1 else f"{best.size} tied"
            row.update({st: float(x[j]) for st, x in scores.items()})
            row.update({f"random_{st}": float(x[j]) for st, x in random.items()})
            rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    rank = {k: i for i, k in enumerate(p.sims)}  # the similarities' order, each one's targets by name
    key = out["similarity"].map(rank).astype(str).str.zfill(4) + "/" + out["target"].astype(str)
    return out.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def _relabellings(n: int, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm, n) random permutations of the task indices."""
    return np.argsort(rng.random((n_perm, n)), axis=-1)


def _p_value(observed: float, null: np.ndarray, direction: str, centre: float) -> float:
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return float("nan")
    tol = 1e-12 * max(1.0, abs(observed))  # equal up to rounding counts as at least as extreme
    if direction == "greater":
        hits = (null >= observed - tol).sum()
    elif direction == "less":
        hits = (null <= observed + tol).sum()
    else:
        hits = (np.abs(null - centre) >= abs(observed - centre) - tol).sum()
    return float((1 + hits) / (1 + null.size))


BOUNDS = {
    "spearman": (-1, 1),
    "kendall": (-1, 1),
    "ndcg": (0, 1),
    "regret": (0, np.inf),
    "rel_regret": (0, np.inf),
}


def _task_bootstrap(p: _Prepared, sim: np.ndarray, statistics, observed, n_boot, seed, level) -> tuple:
    """Task-bootstrap interval of each statistic's mean over targets: each resample draws tasks with
    replacement and keeps the sub-matrix of the drawn tasks (two copies of one task meet in a diagonal
    cell, which drops out). The percentile interval is moved by the bootstrap's bias (the resamples'
    mean minus the estimate), then kept within the statistic's range: a resample holds fewer distinct
    sources, which lowers regret@1 in every resample and left the plain percentile interval covering
    a binary relation's regret in 89% of simulated studies (bench/calibration.py).
    -> (lo, hi, valid resamples)."""
    from scipy.stats import bootstrap

    n = len(p.tasks)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        copies = idx[..., :, None] == idx[..., None, :]
        sub_g = np.where(copies, np.nan, p.gain[idx[..., :, None], idx[..., None, :]])
        sub_s = np.where(copies, np.nan, sim[idx[..., :, None], idx[..., None, :]])
        g, s, valid = _by_target(sub_g, sub_s)
        best = _best_points(g, valid, p.single[idx] if p.single is not None else None)
        return np.stack([_mean_over_targets(score_rows(st, g, s, valid, best)) for st in statistics])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of a degenerate distribution (a constant similarity)
        res = bootstrap(
            (np.arange(n),),
            statistic,
            n_resamples=n_boot,
            vectorized=True,
            batch=max(1, 20_000 // (n * n)),
            method="percentile",  # BCa and basic intervals covered regret@1 less often (bench/calibration.py)
            rng=np.random.default_rng(seed),
        )
    dist = np.atleast_2d(res.bootstrap_distribution)  # (statistics, n_boot)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.full(len(statistics), np.nan), np.full(len(statistics), np.nan)
    for k, row in enumerate(dist):  # each statistic over its own defined resamples
        row = row[np.isfinite(row)]
        if row.size >= 2 and np.isfinite(observed[k]):
            bias = row.mean() - observed[k]
            low, high = BOUNDS[STATISTICS[statistics[k]][0]]
            lo[k], hi[k] = np.clip(np.quantile(row, [alpha, 1.0 - alpha]) - bias, low, high)
    return lo, hi, int(np.isfinite(dist).any(axis=0).sum())


def _relabelled_null(p: _Prepared, sim: np.ndarray, statistics, n_perm: int, seed: int) -> np.ndarray:
    """(statistics, n_perm): each statistic's mean over targets when the similarity's tasks are
    relabelled at random (rows and columns by one permutation), the gains left as they are."""
    n = len(p.tasks)
    g, _, _ = _by_target(p.gain, sim)
    perms = _relabellings(n, n_perm, np.random.default_rng(seed))
    chunk = max(1, 20_000 // (n * n))
    out = []
    for start in range(0, n_perm, chunk):
        pi = perms[start : start + chunk]
        shuffled = sim[pi[:, :, None], pi[:, None, :]]  # (chunk, T, T)
        _, s, valid = _by_target(np.broadcast_to(p.gain, shuffled.shape), shuffled)
        best = _best_points(np.broadcast_to(g, s.shape), valid, p.single)
        out.append(np.stack([_mean_over_targets(score_rows(st, g, s, valid, best)) for st in statistics]))
    return np.concatenate(out, axis=1)


def _observed(p: _Prepared, sim: np.ndarray, statistics) -> tuple[list[float], list[float], int]:
    """Each statistic's mean over targets, its random expectation (0 for the rank correlations), and
    how many targets have two or more sources."""
    g, s, valid = _by_target(p.gain, sim)
    best_pts = _best_points(g, valid, p.single)
    observed = [float(_mean_over_targets(score_rows(st, g, s, valid, best_pts))) for st in statistics]
    flat = np.zeros_like(s)
    random = [
        0.0 if st in RANK_STATS else float(_mean_over_targets(score_rows(st, g, flat, valid, best_pts)))
        for st in statistics
    ]
    return observed, random, int((valid.sum(-1) >= 2).sum())


def _permutation_p(p: _Prepared, sim: np.ndarray, statistics, observed, n_perm: int, seed: int):
    """(p-values, null means) of each statistic from `n_perm` relabellings of the similarity."""
    nan = np.full(len(statistics), np.nan)
    if n_perm < 1 or len(p.tasks) < 3:
        return nan, nan
    null = _relabelled_null(p, sim, statistics, n_perm, seed + 1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic undefined everywhere stays NaN
        centre = np.nanmean(null, axis=1)
    pv = nan.copy()
    for k, st in enumerate(statistics):
        ref = 0.0 if st in RANK_STATS else centre[k]
        pv[k] = _p_value(observed[k], null[k], STATISTICS[st][2], ref)
    return pv, centre


def per_target_summary(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    single: pd.Series | None = None,
    n_perm: int = 1000,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    statistics: tuple[str, ...] = tuple(STATISTICS),
) -> pd.DataFrame:
    """Mean over targets of each per-target statistic, per similarity, with its null and interval.

    The null relabels the similarity's tasks at random (one permutation for its rows and columns),
    keeping the gains: a similarity unrelated to the gains is then exchangeable with its relabellings
    even when some tasks are good donors or receptive targets. (Shuffling each target's sources on
    its own is not: a task that is both a good donor and similar to many tasks lifts every target's
    correlation at once, which independent shuffles never do; on simulated null matrices with source
    effects such a test rejected at 5% a third of the time.) `p_value`: two-sided for the rank
    correlations, one-sided towards "better" for NDCG (greater) and regret (less), from `n_perm`
    relabellings. `lo`/`hi`: the bias-corrected task-bootstrap interval from `n_boot` resamples (the
    estimate plus or minus the null's spread would cover a planted NDCG@5 only 81-90% of the time; see
    bench/calibration.py). `random`: the mean random expectation (0 for the rank correlations).
    `single`: target -> single-run points, for the relative regret."""
    p = _prepare(gain, sims, single)
    n = len(p.tasks)
    rows = []
    for name, sim in p.sims.items():
        observed, random, n_targets = _observed(p, sim, statistics)
        pv, centre = _permutation_p(p, sim, statistics, observed, n_perm, seed)
        lo, hi, valid_boot = np.full(len(statistics), np.nan), np.full(len(statistics), np.nan), 0
        if n_boot >= 2 and n >= 3:
            lo, hi, valid_boot = _task_bootstrap(p, sim, statistics, observed, n_boot, seed, level)
        for k, st in enumerate(statistics):
            rows.append(
                {
                    "similarity": name,
                    "statistic": st,
                    "estimate": observed[k],
                    "lo": float(lo[k]),
                    "hi": float(hi[k]),
                    "p_value": float(pv[k]),
                    "random": random[k],
                    "null_mean": float(centre[k]),
                    "n_targets": n_targets,
                    "n_tasks": n,
                    "n_perm": n_perm if n >= 3 else 0,
                    "n_boot": valid_boot,
                }
            )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
