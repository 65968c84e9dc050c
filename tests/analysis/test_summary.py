"""Best source per target and the method-by-method summary."""

from __future__ import annotations

import pandas as pd
import pytest
from tables import row, table

from analysis.gains import gain_summary, seed_gains, single_values, zeroshot_values
from analysis.summary import best_sources, method_summary

TASKS = ["A", "B", "C"]
# transfer value of (source, target); singles are 0.5 everywhere, so gain = 100 * (value - 0.5)
VALUES = {
    ("A", "B"): 0.52,
    ("C", "B"): 0.56,
    ("B", "A"): 0.47,
    ("C", "A"): 0.44,
    ("A", "C"): 0.60,
    ("B", "C"): 0.51,
}


def cells(drop=()):
    rows = [row("zeroshot", "zeroshot", t, 0.3, seed=None, shots=None) for t in TASKS]
    for method in ("coop", "vpt"):
        for t in TASKS:
            rows.append(row("single", method, t, 0.5))
            rows.append(row("transfer", method, t, 0.9, source=t, mode="joint"))  # a diagonal that would win
        for (s, t), v in VALUES.items():
            if (s, t) not in drop:
                rows.append(row("transfer", method, t, v, source=s, mode="joint"))
    rows.append(row("single", "upt", "A", 0.7))  # a method with single runs only
    return table(rows)


def test_best_source_is_off_diagonal_and_a_target_with_no_gains_has_none():
    c = cells(drop={("B", "A"), ("C", "A")})
    summary = gain_summary(seed_gains(c), zeroshot_values(c))
    best = best_sources(summary)
    coop = best[best["method"] == "coop"].set_index("target")
    assert coop.loc["B", "best_source"] == "C" and coop.loc["B", "best_gain_pts"] == pytest.approx(6.0)
    assert coop.loc["C", "best_source"] == "A" and coop.loc["C", "mean_gain_pts"] == pytest.approx(5.5)
    assert pd.isna(coop.loc["A", "best_source"]) and coop.loc["A", "n_sources"] == 0
    assert coop.loc["B", "zeroshot_pts"] == pytest.approx(30.0)


def test_method_summary_counts_positive_and_missing_pairs_and_keeps_single_only_methods():
    c = cells(drop={("C", "A")})
    summary = gain_summary(seed_gains(c))
    corr = pd.DataFrame(  # the report's correlations: per setting, similarity and kind
        {
            "method": ["coop", "coop", "vpt"],
            "mode": "joint",
            "shots": 4,
            "similarity": "visual",
            "kind": ["gain", "residual", "gain"],
            "estimate": [0.4, 0.9, -0.2],
            "lo": [0.1, 0.5, -0.6],
            "hi": [0.7, 1.0, 0.3],
        }
    )
    table_ = method_summary(summary, single_values(c), zeroshot_values(c), corr).set_index("method")
    coop = table_.loc["coop"]
    assert coop["mean_single_pts"] == pytest.approx(50.0) and coop["mean_zeroshot_pts"] == pytest.approx(30.0)
    assert coop["n_pairs"] == 5 and coop["n_missing_pairs"] == 1
    assert coop["mean_gain_pts"] == pytest.approx((2 + 6 - 3 + 10 + 1) / 5)
    assert coop["share_positive"] == pytest.approx(4 / 5)
    assert (coop["rho_visual"], coop["rho_visual_lo"], coop["rho_visual_hi"]) == (0.4, 0.1, 0.7)
    assert table_.loc["vpt", "rho_visual"] == -0.2 and pd.isna(table_.loc["upt", "rho_visual"])
    assert table_.loc["upt", "mean_single_pts"] == pytest.approx(70.0) and pd.isna(table_.loc["upt", "mode"])


def test_a_study_with_only_single_runs_summarises_without_inventing_gains():
    c = table([row("single", "coop", t, 0.5 + 0.1 * k) for k, t in enumerate(TASKS)])
    summary = gain_summary(seed_gains(c))
    assert summary.empty and best_sources(summary).empty
    out = method_summary(summary, single_values(c), zeroshot_values(c))
    assert len(out) == 1 and out.iloc[0]["mean_single_pts"] == pytest.approx(60.0)
    assert pd.isna(out.iloc[0]["mean_gain_pts"]) and pd.isna(out.iloc[0]["share_positive"])
