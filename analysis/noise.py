"""Seed noise of the gains: the seed variance, each pair's standard error, the reliability of the
gain matrix as analysed, and how much of its pairwise share lies above the noise floor.

A study may run extra seeds on only some pairs. The seed variance of a gain is pooled over the pairs
that have two or more seeds (their within-pair variances, weighted by degrees of freedom) and used as
the noise of every pair, one-seed pairs included: their standard error is that pooled sd over the
square root of their seed count. With no pair of two or more seeds, noise is unmeasured (NaN).

A gain is transfer minus single, so its seed noise has two parts: the transfer cell's, its own, and
the single cell's, which every source of the target shares at that seed. Within a target's column
the single cell's part is one shift, which the per-target statistics and the target effect absorb:
it is never pairwise noise. Whole target columns run at extra seeds measure the transfer part alone
(the column's differences between two seeds less their mean); the single cells at those seeds
measure the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

PAIR = ["source", "target"]


@dataclass(frozen=True)
class SeedNoise:
    """Pooled seed variance of one setting's gains (points^2), its degrees of freedom, and how many
    pairs had two or more seeds (and of how many pairs in all)."""

    variance: float
    df: int
    n_pairs_multi: int
    n_pairs: int

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.variance)) if np.isfinite(self.variance) else float("nan")

    @property
    def measured(self) -> bool:
        return self.df > 0


def _offdiag(seed_table: pd.DataFrame) -> pd.DataFrame:
    df = seed_table[seed_table["source"] != seed_table["target"]]
    return df[np.isfinite(df["gain_pts"].to_numpy(float))]


def seed_noise(seed_table: pd.DataFrame) -> SeedNoise:
    """The seed noise of one setting's per-seed gains (columns source, target, seed, gain_pts)."""
    df = _offdiag(seed_table)
    g = df.groupby(PAIR, sort=False)["gain_pts"]
    n = g.count()
    # squared deviations taken from each pair's first seed, so that identical seeds give exactly 0
    first = df.groupby(PAIR, sort=False)["gain_pts"].transform("first")
    shifted = (df["gain_pts"] - first).groupby([df["source"], df["target"]], sort=False)
    ss = shifted.apply(lambda x: float((x**2).sum() - x.sum() ** 2 / len(x)))
    dof = int((n - 1).clip(lower=0).sum())
    variance = float(ss.sum() / dof) if dof > 0 else float("nan")
    return SeedNoise(variance, dof, int((n >= 2).sum()), int(len(n)))


def cell_errors(summary: pd.DataFrame, noise: SeedNoise) -> pd.DataFrame:
    """Per pair of a setting's gain summary (columns source, target, gain_pts, n_seeds): `gain_se_pts`,
    the pooled seed sd over sqrt(n_seeds) (NaN when noise is unmeasured), and `beyond_2se`, whether the
    mean gain is more than two standard errors from zero."""
    out = summary[[*PAIR, "gain_pts", "n_seeds"]].copy()
    n = out["n_seeds"].to_numpy(float)
    se = np.where(n > 0, noise.sd / np.sqrt(np.where(n > 0, n, 1.0)), np.nan) if noise.measured else np.nan
    out["gain_se_pts"] = se
    out["beyond_2se"] = np.abs(out["gain_pts"].to_numpy(float)) > 2 * out["gain_se_pts"].to_numpy(float)
    return out


@dataclass(frozen=True)
class Reliability:
    """How much of the analysed gain matrix (each pair's mean over its seeds) is not seed noise, over
    all off-diagonal pairs and within targets (each column less its mean: what per-target statistics
    see), each with a 95% bootstrap interval. `pair_var`: the transfer cell's seed variance, the
    noise within a column; `single_var`: the single cell's, shared by its column (points^2).
    `source`: "columns" (whole target columns at two or more seeds), "pairs" (pairs with several
    seeds less the single cells' variance) or "" (unmeasured: every figure NaN). The signals (the
    observed variances less their noise floors) give the reliability at any other number of seeds
    a pair, each seed's noise being independent of the others'."""

    overall: float
    overall_lo: float
    overall_hi: float
    within: float
    within_lo: float
    within_hi: float
    pair_var: float
    single_var: float
    n_columns: int
    source: str
    signal_overall: float = float("nan")  # the true gains' variance (points^2): total and within targets
    signal_within: float = float("nan")

    def _signal_noise(self, within: bool) -> tuple[float, float]:
        """(signal, one seed's noise) within targets (the transfer cell's), or overall (both cells')."""
        if within:
            return self.signal_within, self.pair_var
        return self.signal_overall, self.pair_var + self.single_var

    def overall_at(self, n_seeds: float) -> float:
        """The overall reliability the matrix would have with `n_seeds` seeds on every pair."""
        return _at(*self._signal_noise(False), n_seeds)

    def within_at(self, n_seeds: float) -> float:
        """The within-target reliability the matrix would have with `n_seeds` seeds on every pair."""
        return _at(*self._signal_noise(True), n_seeds)

    def seeds_for(self, level: float = 0.7, within: bool = True) -> float:
        """How many seeds a pair the matrix needs for a reliability of `level` (within targets, or
        overall), by its measured signal and noise: the smallest whole number, at least 1; inf
        where no signal stands above the noise, NaN where either is unmeasured."""
        signal, noise = self._signal_noise(within)
        if not (np.isfinite(signal) and np.isfinite(noise)):
            return float("nan")
        if signal <= 0:
            return float("inf")
        return float(max(1, math.ceil(level / (1 - level) * noise / signal - 1e-9)))


def _at(signal: float, noise: float, n_seeds: float) -> float:
    """signal / (signal + noise / n): the reliability of a mean over n seeds (0 without signal)."""
    if not (np.isfinite(signal) and np.isfinite(noise)):
        return float("nan")
    signal = max(signal, 0.0)
    observed = signal + noise / n_seeds
    return float(signal / observed) if observed > 0 else float("nan")


def _column_ss(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Per target column run at two or more seeds over three or more common sources: the residual sum
    of squares of its (source x seed) gains after the source and seed means, and its degrees of
    freedom. The seed means hold the single cell's noise, so the residual is the transfer cells'."""
    df = _offdiag(seed_table)
    rows = []
    for target, col in df.groupby("target", sort=False):
        table = col.pivot_table(index="source", columns="seed", values="gain_pts").dropna()
        if table.shape[0] < 3 or table.shape[1] < 2:
            continue
        resid = (
            table.sub(table.mean(axis=1), axis=0).sub(table.mean(axis=0), axis=1) + table.to_numpy().mean()
        )
        rows.append(
            (target, float((resid.to_numpy() ** 2).sum()), (table.shape[0] - 1) * (table.shape[1] - 1))
        )
    return pd.DataFrame(rows, columns=["target", "ss", "df"])


def _single_ss(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Per target: the sum of squares of its single cell's value over its seeds, and its dof."""
    singles = seed_table.drop_duplicates(["target", "seed"]).dropna(subset=["single_pts"])
    g = singles.groupby("target")["single_pts"]
    return pd.DataFrame({"ss": g.var(ddof=1).fillna(0.0) * (g.count() - 1), "df": g.count() - 1})


def _pooled(ss: pd.DataFrame) -> float:
    return float(ss["ss"].sum() / ss["df"].sum()) if len(ss) and ss["df"].sum() > 0 else float("nan")


def _target_stats(means: pd.DataFrame) -> np.ndarray:
    """Per target column of pair means (columns target, gain, n): pairs, sum and sum of squares of
    the gains, the column's sum of squares about its mean, and the sum of 1 / seed count."""
    g = means.groupby("target", sort=False)
    out = pd.DataFrame(
        {
            "k": g["gain"].count(),
            "sum": g["gain"].sum(),
            "sq": g["gain"].apply(lambda x: float((x**2).sum())),
            "ss": g["gain"].apply(lambda x: float(((x - x.mean()) ** 2).sum())),
            "inv_n": g["n"].apply(lambda x: float((1.0 / x).sum())),
        }
    )
    return out.to_numpy(float)


def _observed(stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(total variance, pooled within-target variance, mean 1 / seed count) of the pair means."""
    k, total_sum, sq, ss, inv_n = np.moveaxis(stats, -1, 0)
    n, n_targets = k.sum(-1), k.shape[-1]
    total = (sq.sum(-1) - total_sum.sum(-1) ** 2 / n) / (n - 1)
    return total, ss.sum(-1) / (n - n_targets), inv_n.sum(-1) / n


def _matrix_reliability(observed, pair_var, single_var) -> tuple[np.ndarray, np.ndarray]:
    """(overall, within-target) reliability from `_observed`'s variances (as many draws as the noise
    variances, or one): 1 - noise floor / observed variance."""
    total, within, mean_inv_n = observed
    with np.errstate(divide="ignore", invalid="ignore"):
        overall = 1.0 - (np.asarray(pair_var) + np.asarray(single_var)) * mean_inv_n / total
        inside = 1.0 - np.asarray(pair_var) * mean_inv_n / within
    return overall, inside


def _noise_variances(seed_table: pd.DataFrame, columns: pd.DataFrame, singles: pd.DataFrame):
    """(pair_var, single_var, source) from whole columns, else from multi-seed pairs."""
    single_var = _pooled(singles)
    if len(columns):
        return _pooled(columns), single_var, "columns"
    noise = seed_noise(seed_table)
    if noise.measured and np.isfinite(single_var):
        return max(noise.variance - single_var, 0.0), single_var, "pairs"
    return float("nan"), single_var, ""


def _boot_pooled(ss: pd.DataFrame, fallback: float, rng, n_boot: int) -> np.ndarray:
    """n_boot pooled variances of `ss` resampled by row (its fallback where it has no rows)."""
    if not len(ss):
        return np.full(n_boot, fallback)
    idx = rng.integers(0, len(ss), (n_boot, len(ss)))
    total, dof = ss["ss"].to_numpy(float)[idx].sum(1), ss["df"].to_numpy(float)[idx].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dof > 0, total / dof, np.nan)


def reliability_as_analysed(seed_table: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> Reliability:
    """The reliability of one setting's analysed gain matrix from its per-seed gains (columns source,
    target, seed, gain_pts, single_pts), with 95% intervals from resampling targets (and, apart, the
    noise columns and the single cells): as many seeds as each pair has, no step-up beyond them."""
    df = _offdiag(seed_table)
    means = df.groupby(PAIR, sort=False)["gain_pts"].agg(gain="mean", n="count").reset_index()
    columns, singles = _column_ss(seed_table), _single_ss(seed_table)
    pair_var, single_var, source = _noise_variances(seed_table, columns, singles)
    nan = float("nan")
    if not source or means["target"].nunique() < 2 or len(means) < 3:
        return Reliability(nan, nan, nan, nan, nan, nan, pair_var, single_var, len(columns), "")
    stats = _target_stats(means)
    observed = _observed(stats)
    overall, within = _matrix_reliability(observed, pair_var, single_var)
    rng = np.random.default_rng(seed)
    picked = stats[rng.integers(0, len(stats), (n_boot, len(stats)))]  # (B, T, 5)
    p_var = _boot_pooled(columns, pair_var, rng, n_boot) if source == "columns" else np.full(n_boot, pair_var)
    s_var = _boot_pooled(singles, single_var, rng, n_boot)
    draws = np.stack(_matrix_reliability(_observed(picked), p_var, s_var), axis=1)
    lo, hi = np.nanpercentile(draws, [2.5, 97.5], axis=0)
    total_obs, within_obs, mean_inv_n = observed
    return Reliability(
        float(overall),
        lo[0],
        hi[0],
        float(within),
        lo[1],
        hi[1],
        pair_var,
        single_var,
        len(columns),
        source,
        signal_overall=float(total_obs - (pair_var + single_var) * mean_inv_n),
        signal_within=float(within_obs - pair_var * mean_inv_n),
    )
