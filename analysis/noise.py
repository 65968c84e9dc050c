"""Seed noise of the gains: the seed variance, each pair's standard error, the split-half
reliability of a gain matrix, and how much of its pairwise share lies above the noise floor.

A study may run extra seeds on only some pairs. The seed variance of a gain is pooled over the pairs
that have two or more seeds (their within-pair variances, weighted by degrees of freedom) and used as
the noise of every pair, one-seed pairs included: their standard error is that pooled sd over the
square root of their seed count. With no pair of two or more seeds, noise is unmeasured (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PAIR = ["source", "target"]


@dataclass(frozen=True)
class SeedNoise:
    """Pooled seed variance of one setting's gains (points^2), its degrees of freedom, how many pairs
    had two or more seeds (and of how many pairs in all), and the split-half reliability of the gain
    matrix over those pairs (Spearman-Brown corrected; NaN below three such pairs)."""

    variance: float
    df: int
    n_pairs_multi: int
    n_pairs: int
    split_half: float

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.variance)) if np.isfinite(self.variance) else float("nan")

    @property
    def measured(self) -> bool:
        return self.df > 0


def _offdiag(seed_table: pd.DataFrame) -> pd.DataFrame:
    df = seed_table[seed_table["source"] != seed_table["target"]]
    return df[np.isfinite(df["gain_pts"].to_numpy(float))]


def split_half(seed_table: pd.DataFrame) -> float:
    """Correlation over pairs with two or more seeds of the mean gain of their seeds at even and at odd
    positions (seeds sorted by number), stepped up to the full seed count by Spearman-Brown (2r/(1+r))."""
    df = _offdiag(seed_table).sort_values([*PAIR, "seed"], kind="stable")
    position = df.groupby(PAIR, sort=False).cumcount()
    halves = df.assign(half=position % 2).pivot_table(index=PAIR, columns="half", values="gain_pts")
    if 1 not in halves.columns:
        return float("nan")
    halves = halves.dropna()
    if len(halves) < 3 or halves[0].std() == 0 or halves[1].std() == 0:
        return float("nan")
    r = float(np.corrcoef(halves[0], halves[1])[0, 1])
    return 2 * r / (1 + r) if r > -1 else float("nan")


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
    return SeedNoise(variance, dof, int((n >= 2).sum()), int(len(n)), split_half(seed_table))


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


def noise_floor(summary: pd.DataFrame, noise: SeedNoise) -> float:
    """The mean seed variance of an off-diagonal pair's mean gain (points^2): pooled variance over the
    pair's seed count, averaged over pairs with a gain; NaN when noise is unmeasured."""
    off = summary[(summary["source"] != summary["target"]) & summary["gain_pts"].notna()]
    n = off["n_seeds"].to_numpy(float)
    if not noise.measured or not len(off):
        return float("nan")
    return float(np.mean(noise.variance / n[n > 0]))


def reliability(gain_var: float, floor: float) -> float:
    """Share of the variance of the pair means that is not seed noise, 1 - floor / variance: the ceiling
    for any similarity's correlation with the gains (as a squared correlation)."""
    if not (np.isfinite(gain_var) and np.isfinite(floor)) or gain_var <= 0:
        return float("nan")
    return float(1.0 - floor / gain_var)
