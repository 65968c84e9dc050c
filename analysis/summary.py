"""Report tables built from the gain summary: best source per target, per-method summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.gains import SETTING_KEYS


def _offdiag(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["source"] != summary["target"]]


def best_sources(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (method, mode, shots, target): the off-diagonal source with the largest mean gain, its gain
    and spread over seeds, the target's mean gain over all its sources, and single / zero-shot points.
    A target whose gains are all missing gets no best source (NaN), not a made-up one."""
    rows = []
    zs = "zeroshot_pts" in summary
    for (method, mode, shots, target), part in _offdiag(summary).groupby(
        [*SETTING_KEYS, "target"], dropna=False, sort=False
    ):
        g = part["gain_pts"].to_numpy(float)
        row = {
            "method": method,
            "mode": mode,
            "shots": shots,
            "target": target,
            "n_sources": int(np.isfinite(g).sum()),
            "mean_gain_pts": np.nanmean(g) if np.isfinite(g).any() else np.nan,
            "single_pts": part["single_pts"].mean(),
            "zeroshot_pts": part["zeroshot_pts"].iloc[0] if zs else np.nan,
        }
        if np.isfinite(g).any():
            best = part.iloc[int(np.nanargmax(g))]
            row.update(
                best_source=best["source"],
                best_gain_pts=best["gain_pts"],
                best_gain_sd_pts=best["gain_sd_pts"],
            )
        rows.append(row)
    cols = [
        *SETTING_KEYS,
        "target",
        "best_source",
        "best_gain_pts",
        "best_gain_sd_pts",
        "mean_gain_pts",
        "n_sources",
        "single_pts",
        "zeroshot_pts",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)


def method_summary(
    summary: pd.DataFrame,
    singles: pd.DataFrame,
    zeroshot: pd.Series | None = None,
    correlations: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per method setting: mean single points over targets, mean zero-shot, mean gain and the
    share of positive gains over the off-diagonal pairs with a gain, how many pairs lack one, and, when
    given, `rho_<similarity>` with `_lo` / `_hi` from the report's correlations (kind "gain"). Methods with
    single runs but no transfers keep a row (mode NaN) so the table shows what exists."""
    off = _offdiag(summary)
    g = off.groupby(SETTING_KEYS, dropna=False, sort=False)["gain_pts"]
    gains = g.agg(mean_gain_pts="mean", n_pairs="count", n_expected="size").reset_index()
    gains["share_positive"] = g.apply(
        lambda s: (s.dropna() > 0).mean() if s.notna().any() else np.nan
    ).to_numpy()
    gains["n_missing_pairs"] = gains["n_expected"] - gains["n_pairs"]
    single = singles.groupby(["method", "shots"], sort=False)["single_pts"].mean().rename("mean_single_pts")
    out = single.reset_index().merge(gains, how="outer", on=["method", "shots"])
    out["mean_zeroshot_pts"] = float(zeroshot.mean()) if zeroshot is not None and len(zeroshot) else np.nan
    if correlations is not None and len(correlations):
        c = correlations[correlations["kind"] == "gain"]
        for name, part in c.groupby("similarity", sort=False):
            part = part[[*SETTING_KEYS, "estimate", "lo", "hi"]].rename(
                columns={"estimate": f"rho_{name}", "lo": f"rho_{name}_lo", "hi": f"rho_{name}_hi"}
            )
            out = out.merge(part, how="left", on=SETTING_KEYS)
    first = [
        "method",
        "mode",
        "shots",
        "mean_zeroshot_pts",
        "mean_single_pts",
        "mean_gain_pts",
        "share_positive",
        "n_pairs",
        "n_missing_pairs",
    ]
    return out[first + [c for c in out.columns if c not in first and c != "n_expected"]]
