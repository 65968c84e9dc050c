"""The source / target / interaction decomposition: planted effects, donors versus pairs."""

from __future__ import annotations

import numpy as np
import pytest
from tables import embedded_similarity, names, square

from analysis.decompose import additive_fit, decompose, residual_spearman
from analysis.stats import spearman_ci


def planted(n: int, seed: int):
    rng = np.random.default_rng(seed)
    src, tgt = rng.normal(size=n) * 3, rng.normal(size=n) * 2
    src, tgt = src - src.mean(), tgt - tgt.mean()
    return 1.5, src, tgt


def test_recovers_planted_source_and_target_effects_exactly_without_interaction():
    n = 8
    mu, src, tgt = planted(n, 0)
    gain = mu + src[:, None] + tgt[None, :]
    gain[np.eye(n, dtype=bool)] = 99.0  # the diagonal is not fitted
    gain[2, 5] = gain[6, 1] = np.nan  # nor are missing cells
    d = decompose(square(gain, names(n)))
    assert d.mean == pytest.approx(mu)
    assert np.allclose(d.source.to_numpy(), src) and np.allclose(d.target.to_numpy(), tgt)
    assert np.nanmax(np.abs(d.residual.to_numpy())) < 1e-9
    assert np.isnan(d.residual.loc["t02", "t05"]) and np.isnan(d.residual.loc["t03", "t03"])
    assert d.shares["residual"] == pytest.approx(0.0, abs=1e-12) and d.r2_additive == pytest.approx(1.0)
    assert d.n_cells == n * (n - 1) - 2


def test_matches_a_direct_least_squares_fit_with_noise_and_shares_sum_to_one():
    n = 10
    mu, src, tgt = planted(n, 1)
    gain = mu + src[:, None] + tgt[None, :] + np.random.default_rng(5).normal(size=(n, n))
    gain[0, 3] = np.nan
    keep = np.isfinite(gain) & ~np.eye(n, dtype=bool)
    i, j = np.nonzero(keep)
    design = np.column_stack([np.ones(i.size), np.eye(n)[i], np.eye(n)[j]])
    coef, *_ = np.linalg.lstsq(design, gain[i, j], rcond=None)
    _, _, _, resid = additive_fit(gain)
    assert np.allclose(resid[i, j], gain[i, j] - design @ coef, atol=1e-9)
    d = decompose(square(gain, names(n)))
    assert sum(d.shares.values()) == pytest.approx(1.0)
    assert abs(d.shares["cross"]) < 0.05
    assert d.shares["source"] > d.shares["target"] > 0  # planted spreads 3 and 2
    assert np.corrcoef(d.source, src)[0, 1] > 0.95


def test_a_donor_only_similarity_explains_raw_gain_but_not_the_residual():
    n = 20
    mu, src, tgt = planted(n, 2)
    *_, pairwise = additive_fit(embedded_similarity(n, 3))  # a similarity with no donor/receiver part
    np.fill_diagonal(pairwise, 0.0)
    pairwise /= pairwise.std()
    gain = square(mu + src[:, None] + tgt[None, :] + 0.7 * pairwise, names(n))
    donor = square(np.repeat(src[:, None], n, axis=1), names(n))  # "how good a donor s is", per pair
    pair_sim = square(pairwise, names(n))
    assert spearman_ci(gain, donor, n_boot=20).estimate > 0.5
    donor_resid = residual_spearman(gain, donor, n_boot=200, seed=0)
    pair_resid = residual_spearman(gain, pair_sim, n_boot=200, seed=0)
    assert abs(donor_resid.estimate) < 0.1
    assert pair_resid.estimate == pytest.approx(1.0, abs=1e-3) and pair_resid.lo > 0.5


def test_empty_and_all_missing_matrices_give_nan_not_numbers():
    d = decompose(square(np.full((3, 3), np.nan), "abc"))
    assert np.isnan(d.mean) and d.n_cells == 0 and np.isnan(d.r2_additive)
    assert d.source.isna().all()
