"""Multiple comparisons: Benjamini-Hochberg adjusted p-values within each family of tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ALPHA = 0.05  # the false discovery rate the findings hold each family to
CORRECTION = "Benjamini-Hochberg"


def bh_adjust(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (statsmodels' `multipletests`, "fdr_bh"); NaN stays NaN and
    is not counted as a test."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], alpha=ALPHA, method="fdr_bh")[1]
    return out


def adjust_within(table: pd.DataFrame, family: Sequence[str], p: str = "p_value", out: str = "p_adjusted"):
    """`table` with column `out`: the BH-adjusted `p` within each family (rows sharing the `family`
    columns' values)."""
    table = table.copy()
    table[out] = np.nan
    if table.empty:
        return table
    for _, idx in table.groupby(list(family), dropna=False, sort=False).groups.items():
        table.loc[idx, out] = bh_adjust(table.loc[idx, p].to_numpy(float))
    return table
