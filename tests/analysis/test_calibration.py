"""A fast run of bench/calibration.py: on null matrices built like the suite's the reported tests
reject about 5% of the time, and on a planted effect the intervals cover the truth (few replicates,
so the bounds are looser than the bench's)."""

from __future__ import annotations

import numpy as np

from bench.calibration import (
    NOT_REPORTED,
    NULLS,
    calibration_table,
    make_study,
    reliability_draws,
    reliability_rows,
    run,
)


def test_the_scenarios_are_built_like_the_suite():
    study = make_study("additive", 3)
    same, aligned = study.sims["same_factor"].to_numpy(), study.sims["aligned_words"].to_numpy()
    off = ~np.eye(len(same), dtype=bool)
    assert len(study.gain) == 20 and np.isnan(np.diag(study.gain.to_numpy())).all()
    assert np.corrcoef(same[off], aligned[off])[0, 1] > 0.8  # collinear, as the suite's relations are
    assert make_study("planted", 3).effect > 0 and study.effect == 0


def test_reported_tests_keep_their_false_positive_rate_and_intervals_their_coverage():
    draws = run(replicates=8, n_perm=30, n_boot=30, seed=1, null_replicates=10)
    assert draws["scenario"].value_counts().to_dict() == {**dict.fromkeys(NULLS, 10), "planted": 8}
    # the nulls skip the bootstraps only coverage reads; the donor lead's interval is its test
    null, planted = draws[draws["scenario"] != "planted"], draws[draws["scenario"] == "planted"]
    spearman = "per-target spearman (visual)"
    assert null[f"{spearman}|lo"].isna().all() and planted[f"{spearman}|lo"].notna().all()
    assert null["donor lead over random|lo"].notna().all()
    table = calibration_table(draws)
    reported = table[~table["statistic"].str.startswith(NOT_REPORTED)]
    for scenario in NULLS:  # pooled over the tests: 8 studies each are too few to judge one test
        rate = reported[f"false+ {scenario}"].dropna()
        assert rate.mean() <= 0.10, (scenario, rate.to_dict())
    assert reported["coverage planted"].dropna().mean() >= 0.88, reported["coverage planted"].to_dict()
    donor = table.set_index("statistic").loc["donor lead over random"]
    assert donor["false+ unmodelled"] <= 0.1 and donor["coverage planted"] >= 0.9


def test_the_reliability_intervals_cover_and_its_projection_errs_little_on_seed_studies():
    draws = reliability_draws(replicates=12, n_boot=100, seed=2)
    rows = reliability_rows(draws).set_index("statistic")
    assert list(rows.index) == [
        "reliability overall (seed studies)",
        "reliability within targets (seed studies)",
    ]
    assert (rows["coverage planted"] >= 0.8).all(), rows["coverage planted"].to_dict()
    error = draws["projection error at 4 seeds"]
    assert abs(error.mean()) < 0.05 and error.abs().max() < 0.2
