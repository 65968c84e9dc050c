"""Gains from hand-built result tables: values, seeds, orientation, and missing cells kept missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tables import row, table

from analysis.gains import (
    gain_matrix,
    gain_summary,
    missing_counts,
    seed_gains,
    single_values,
    zeroshot_values,
)

SINGLE = {("A", 0): 0.50, ("A", 1): 0.60, ("B", 0): 0.70, ("B", 1): 0.80}
TRANSFER = {("A", "B", 0): 0.75, ("A", "B", 1): 0.82, ("B", "A", 0): 0.55, ("B", "A", 1): 0.58}


def two_task_rows(drop=(), fail=()):
    rows = [
        row("zeroshot", "zeroshot", "A", 0.40, seed=None, shots=None),
        row("zeroshot", "zeroshot", "B", 0.45, seed=None, shots=None),
    ]
    for (t, seed), v in SINGLE.items():
        status = "failed" if ("single", t, seed) in fail else "ok"
        rows.append(row("single", "coop", t, v, seed=seed, status=status))
    for (s, t, seed), v in {**TRANSFER, **{(t, t, seed): v for (t, seed), v in SINGLE.items()}}.items():
        if (s, t, seed) not in drop:
            status = "failed" if ("transfer", s, t, seed) in fail else "ok"
            rows.append(row("transfer", "coop", t, v, seed=seed, source=s, mode="joint", status=status))
    return rows


def pair(summary, s, t):
    return summary[(summary["source"] == s) & (summary["target"] == t)].iloc[0]


def test_gain_is_transfer_minus_the_targets_single_per_seed_in_points():
    seeds = seed_gains(table(two_task_rows()))
    ab = seeds[(seeds["source"] == "A") & (seeds["target"] == "B")].set_index("seed")
    assert ab.loc[0, "gain_pts"] == pytest.approx(5.0)  # 75 - 70 (B's single, not A's)
    assert ab.loc[1, "gain_pts"] == pytest.approx(2.0)
    assert ab.loc[0, "rel_gain"] == pytest.approx(5.0 / 70.0)
    assert len(seeds) == 2 * 2 * 2  # seeds x sources x targets, the diagonal included
    diag = seeds[seeds["source"] == seeds["target"]]
    assert np.allclose(diag["gain_pts"], 0.0)


def test_mean_and_spread_over_seeds_relative_gain_and_zeroshot_beside():
    cells = table(two_task_rows())
    summary = gain_summary(seed_gains(cells), zeroshot_values(cells))
    ab, ba = pair(summary, "A", "B"), pair(summary, "B", "A")
    assert ab["gain_pts"] == pytest.approx(3.5)
    assert ab["gain_sd_pts"] == pytest.approx(np.std([5.0, 2.0], ddof=1))
    assert ab["single_pts"] == pytest.approx(75.0) and ab["transfer_pts"] == pytest.approx(78.5)
    assert ab["rel_gain"] == pytest.approx(3.5 / 75.0)
    assert ba["gain_pts"] == pytest.approx(1.5)  # (55-50) and (58-60)
    assert ab["n_seeds"] == 2 and ab["n_expected"] == 2
    assert ab["zeroshot_pts"] == pytest.approx(45.0) and ba["zeroshot_pts"] == pytest.approx(40.0)


def test_gain_matrix_has_sources_as_rows_and_targets_as_columns():
    summary = gain_summary(seed_gains(table(two_task_rows())))
    m = gain_matrix(summary, "coop", "joint")
    assert list(m.index) == ["A", "B"] and list(m.columns) == ["A", "B"]
    assert m.loc["A", "B"] == pytest.approx(3.5) and m.loc["B", "A"] == pytest.approx(1.5)
    assert m.index.name == "source" and m.columns.name == "target"


def test_a_missing_transfer_cell_is_nan_and_counted_not_zero():
    cells = table(two_task_rows(drop={("A", "B", 0), ("A", "B", 1)}))
    seeds = seed_gains(cells)
    ab = seeds[(seeds["source"] == "A") & (seeds["target"] == "B")]
    assert ab["gain_pts"].isna().all() and (ab["transfer_status"] == "absent").all()
    m = gain_matrix(gain_summary(seeds), "coop", "joint")
    assert np.isnan(m.loc["A", "B"])
    counts = missing_counts(seeds).iloc[0]
    assert counts["expected"] == 8 and counts["present"] == 6 and counts["missing"] == 2
    assert counts["transfer_absent"] == 2 and counts["single_failed"] == 0


def test_a_failed_single_or_nan_value_makes_its_gains_missing_and_the_mean_uses_the_rest():
    rows = two_task_rows(fail={("single", "B", 0)})
    rows.append(row("transfer", "coop", "A", float("nan"), seed=1, source="B", mode="joint"))  # ok but NaN
    rows = [
        r
        for r in rows
        if not (
            r["stage"] == "transfer"
            and r["source"] == "B"
            and r["target"] == "A"
            and r["seed"] == 1
            and not np.isnan(r["value"])
        )
    ]
    seeds = seed_gains(table(rows))
    counts = missing_counts(seeds).iloc[0]
    assert counts["single_failed"] == 2  # B's seed-0 single spoils (A,B) and (B,B) at seed 0
    assert counts["transfer_failed"] == 1
    assert counts["missing"] == 3  # A->B s0, B->B s0 (no single), B->A s1 (NaN transfer)
    summary = gain_summary(seeds)
    ab = pair(summary, "A", "B")
    assert ab["n_seeds"] == 1 and ab["gain_pts"] == pytest.approx(2.0) and np.isnan(ab["gain_sd_pts"])
    assert ab["single_pts"] == pytest.approx(80.0)  # means over the seeds that have a gain
    assert pair(summary, "B", "A")["gain_pts"] == pytest.approx(5.0)


def test_single_failed_counts_every_pair_it_spoils():
    seeds = seed_gains(table(two_task_rows(fail={("single", "B", 0)})))
    spoiled = seeds[seeds["single_status"] == "failed"]
    assert set(zip(spoiled["source"], spoiled["target"], spoiled["seed"], strict=True)) == {
        ("A", "B", 0),
        ("B", "B", 0),
    }
    assert spoiled["gain_pts"].isna().all()


def test_a_task_with_no_cells_at_all_still_appears_as_missing_when_named():
    seeds = seed_gains(table(two_task_rows()), tasks=["A", "B", "C"])
    m = gain_matrix(gain_summary(seeds), "coop", "joint", tasks=["A", "B", "C"])
    assert m.shape == (3, 3) and m.loc["C"].isna().all() and m["C"].isna().all()
    assert missing_counts(seeds).iloc[0]["missing"] == 2 * 9 - 8


def test_normalised_gain_is_a_z_score_among_the_targets_sources():
    rows = []
    tasks = ["A", "B", "C", "D"]
    rng = np.random.default_rng(0)
    for t in tasks:
        rows.append(row("single", "vpt", t, 0.5))
        for s in tasks:
            rows.append(row("transfer", "vpt", t, 0.5 + rng.uniform(-0.1, 0.1), source=s, mode="init"))
    summary = gain_summary(seed_gains(table(rows)))
    off = summary[summary["source"] != summary["target"]]
    for _, part in off.groupby("target"):
        assert part["gain_z"].mean() == pytest.approx(0.0, abs=1e-9)
        assert part["gain_z"].std() == pytest.approx(1.0)
        assert np.argmax(part["gain_z"].to_numpy()) == np.argmax(part["gain_pts"].to_numpy())


def test_zero_single_gives_nan_relative_gain_not_infinity():
    rows = [
        row("single", "coop", "A", 0.0),
        row("single", "coop", "B", 0.5),
        row("transfer", "coop", "A", 0.1, source="B", mode="init"),
    ]
    seeds = seed_gains(table(rows))
    ba = seeds[(seeds["source"] == "B") & (seeds["target"] == "A")].iloc[0]
    assert ba["gain_pts"] == pytest.approx(10.0) and np.isnan(ba["rel_gain"])


def test_several_metrics_per_cell_must_be_disambiguated():
    rows = two_task_rows() + [dict(r, metric="map11", value=0.1) for r in two_task_rows()]
    with pytest.raises(ValueError, match="metric="):
        seed_gains(table(rows))
    assert seed_gains(table(rows), metric="accuracy")["gain_pts"].notna().all()


def test_single_values_and_an_empty_transfer_stage():
    rows = [r for r in two_task_rows() if r["stage"] != "transfer"]
    cells = table(rows)
    assert seed_gains(cells).empty
    singles = single_values(cells).set_index("target")
    assert singles.loc["A", "single_pts"] == pytest.approx(55.0) and singles.loc["B", "n_seeds"] == 2
    assert isinstance(zeroshot_values(cells), pd.Series)
