"""Correlate several similarities with one gain matrix and with its pairwise residual, on one shared
task bootstrap (one resample set serves every similarity, so the report stays fast)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.decompose import additive_fit
from analysis.stats import Arrays, as_estimate, pearson, rankdata, task_bootstrap

GAIN = "__gain__"


def similarity_correlations(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    residual: bool = True,
) -> pd.DataFrame:
    """One row per similarity and kind: kind "gain" is the Spearman correlation with the gain, kind
    "residual" the one with the residual of the source + target decomposition (refitted in every
    resample), both over the off-diagonal pairs where the gain and every similarity are finite, with
    percentile intervals from one task bootstrap. Columns: similarity, kind, and the Estimate fields."""
    names = list(sims)
    if not names:
        return pd.DataFrame(
            columns=["similarity", "kind", "estimate", "lo", "hi", "n_pairs", "n_tasks", "n_boot"]
        )

    def stat(a: Arrays) -> np.ndarray:
        keep = np.isfinite(np.stack(list(a.values()))).all(axis=0)
        np.fill_diagonal(keep, False)
        ranks = {n: rankdata(a[n][keep]) for n in names}
        g = rankdata(a[GAIN][keep])
        out = [pearson(g, ranks[n]) for n in names]
        if residual:
            *_, resid = additive_fit(a[GAIN])
            r = rankdata(resid[keep])
            out += [pearson(r, ranks[n]) for n in names]
        return np.array(out)

    result = task_bootstrap({GAIN: gain, **sims}, stat, n_boot, seed, level)
    kinds = ["gain", "residual"] if residual else ["gain"]
    rows = [
        {"similarity": n, "kind": kind, **vars(as_estimate(result, k * len(names) + i))}
        for k, kind in enumerate(kinds)
        for i, n in enumerate(names)
    ]
    return pd.DataFrame(rows)
