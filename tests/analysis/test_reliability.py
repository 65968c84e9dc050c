"""The reliability of the gain matrix as analysed, checked on synthetic studies whose truth is known."""

from __future__ import annotations

import numpy as np

from analysis.noise import reliability_as_analysed
from bench.calibration import SINGLE_SD, TRANSFER_SD, seed_study
from bench.calibration import T as N


def test_reliability_is_unbiased_and_its_intervals_cover_on_synthetic_studies():
    rng = np.random.default_rng(7)
    estimates, covered = [], []
    for _ in range(40):
        table, overall, within = seed_study(rng)
        r = reliability_as_analysed(table, n_boot=300, seed=1)
        assert r.source == "columns" and r.n_columns == 5
        estimates.append((r.overall - overall, r.within - within))
        covered.append((r.overall_lo <= overall <= r.overall_hi, r.within_lo <= within <= r.within_hi))
    bias = np.mean(estimates, axis=0)
    assert np.all(np.abs(bias) < 0.05), bias
    assert np.all(np.mean(covered, axis=0) >= 0.85), np.mean(covered, axis=0)


def test_the_single_cells_noise_is_not_pairwise_noise_and_one_seed_is_unmeasured():
    rng = np.random.default_rng(3)
    table, _, within = seed_study(rng)
    noisy_single = table.copy()
    # a much noisier single cell at seed 1 moves every gain of its column alike: within targets
    # nothing changes
    shift = noisy_single["seed"].eq(1) * noisy_single["target"].map(lambda t: 10.0 * (hash(t) % 3))
    noisy_single["gain_pts"] = noisy_single["gain_pts"] + shift.where(
        noisy_single["source"] != noisy_single["target"], 0
    )
    a = reliability_as_analysed(table, n_boot=50)
    b = reliability_as_analysed(noisy_single, n_boot=50)
    assert np.isclose(a.pair_var, b.pair_var) and abs(a.within - within) < 0.15
    one_seed = reliability_as_analysed(table[table["seed"] == 0], n_boot=50)
    assert one_seed.source == "" and np.isnan(one_seed.within) and np.isnan(one_seed.overall)


def test_the_seeds_a_pair_needs_are_projected_from_the_measured_signal_and_noise():
    """With every column at two seeds, the reliability projected to 3 and 6 seeds a pair matches the
    truth at that many seeds, and the seeds needed for 0.7 within targets are the truth's in most
    studies."""
    rng = np.random.default_rng(11)
    errors, agree = [], []
    for _ in range(40):
        table, overall, within = seed_study(rng, noise_columns=N)  # the truth at 2 seeds a pair
        # the true gains' variances behind it: reliability = signal / (signal + noise / 2)
        within_true = within * TRANSFER_SD**2 / 2 / (1 - within)
        total_true = overall * (TRANSFER_SD**2 + SINGLE_SD**2) / 2 / (1 - overall)
        r = reliability_as_analysed(table, n_boot=50, seed=1)
        for n in (2, 3, 6):
            truth_w = within_true / (within_true + TRANSFER_SD**2 / n)
            truth_o = total_true / (total_true + (TRANSFER_SD**2 + SINGLE_SD**2) / n)
            errors.append((r.within_at(n) - truth_w, r.overall_at(n) - truth_o))
        need = max(1, int(np.ceil(0.7 / 0.3 * TRANSFER_SD**2 / within_true)))
        agree.append(r.seeds_for(0.7) == need)
    bias = np.mean(errors, axis=0)
    assert np.all(np.abs(bias) < 0.05), bias
    assert np.mean(agree) >= 0.7, np.mean(agree)


def test_seeds_for_says_none_without_signal_and_nan_when_unmeasured():
    from analysis.noise import Reliability

    nan = float("nan")
    flat = Reliability(nan, nan, nan, nan, nan, nan, 4.0, 9.0, 20, "columns", -1.0, -0.5)
    assert flat.seeds_for(0.7) == float("inf") and flat.within_at(3) == 0.0
    strong = Reliability(nan, nan, nan, nan, nan, nan, 4.0, 9.0, 20, "columns", 13.0, 4.0)
    # 0.7 within targets: 4 / (4 + 4 / n) >= 0.7 from n = 7 / 3, so 3 seeds; overall 13 / (13 + 13 / n): 3
    assert strong.seeds_for(0.7) == 3 and strong.seeds_for(0.7, within=False) == 3
    assert strong.within_at(3) >= 0.7 > strong.within_at(2)
    unmeasured = Reliability(nan, nan, nan, nan, nan, nan, nan, nan, 0, "")
    assert np.isnan(unmeasured.seeds_for(0.7)) and np.isnan(unmeasured.within_at(2))
