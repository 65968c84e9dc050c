"""Spearman, the task bootstrap, partial correlation and regression on matrices with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from tables import embedded_similarity, names, square

from analysis.stats import (
    align,
    offdiag_pairs,
    partial_correlations,
    partial_spearman,
    pearson,
    rankdata,
    regress,
    spearman,
    spearman_ci,
    task_bootstrap,
)

OFF = lambda n: ~np.eye(n, dtype=bool)  # noqa: E731


def synthetic(n: int, seed: int, noise: float = 1.0):
    """Gain = similarity + Gaussian noise, both as task x task frames."""
    s = embedded_similarity(n, seed)
    g = s + noise * np.random.default_rng(seed + 1000).normal(size=(n, n))
    return square(g, names(n)), square(s, names(n))


def test_rankdata_averages_ties_and_spearman_is_rank_based():
    assert rankdata(np.array([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]
    x = np.arange(10.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)  # monotone, far from linear
    assert pearson(x, np.exp(x)) < 0.9
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    y = np.exp(x)
    y[3] = np.nan
    assert spearman(x, y) == pytest.approx(1.0)  # the NaN pair is dropped
    assert np.isnan(spearman(x, np.ones(10)))


def test_offdiag_pairs_leave_out_the_diagonal_and_missing_cells():
    g = square([[9, 1, 2], [3, 9, np.nan], [5, 6, 9]], "abc")
    s = square(np.arange(9).reshape(3, 3), "abc")
    pairs = offdiag_pairs({"gain": g, "sim": s})
    assert len(pairs) == 5 and 9 not in pairs["gain"].tolist()
    row = pairs[(pairs["source"] == "c") & (pairs["target"] == "a")].iloc[0]
    assert row["gain"] == 5 and row["sim"] == 6


def test_align_keeps_the_tasks_every_matrix_has():
    g = square(np.ones((3, 3)), "abc")
    s = square(np.ones((2, 2)), "ca")
    tasks, arrays = align({"g": g, "s": s})
    assert tasks == ["a", "c"] and np.isnan(np.diag(arrays["s"])).all()


def test_bootstrap_interval_contains_the_population_correlation_in_most_replications():
    # the population value: the same generative process with many tasks
    g_big, s_big = synthetic(300, seed=7)
    truth = spearman(g_big.to_numpy()[OFF(300)], s_big.to_numpy()[OFF(300)])
    hits, widths = 0, []
    for rep in range(8):
        g, s = synthetic(20, seed=rep)
        est = spearman_ci(g, s, n_boot=300, seed=rep)
        assert est.lo <= est.estimate <= est.hi
        assert est.n_pairs == 380 and est.n_tasks == 20 and est.n_boot == 300
        hits += est.lo <= truth <= est.hi
        widths.append(est.hi - est.lo)
    assert hits >= 7  # nominal 95%
    assert 0.05 < np.mean(widths) < 0.6  # informative: neither degenerate nor the whole range


def test_bootstrap_is_seeded_and_never_sees_the_diagonal():
    g, s = synthetic(12, seed=3)
    assert spearman_ci(g, s, n_boot=200, seed=5) == spearman_ci(g, s, n_boot=200, seed=5)
    assert spearman_ci(g, s, n_boot=200, seed=5) != spearman_ci(g, s, n_boot=200, seed=6)
    values = g.to_numpy(copy=True)
    np.fill_diagonal(values, 1e6)  # a task drawn twice must not pair with its copy
    g_diag = square(values, g.index)
    est, lo, hi, *_ = task_bootstrap({"g": g_diag}, lambda a: np.nanmax(a["g"]), n_boot=300, seed=0)
    assert hi[0] < 1e6 and est[0] < 1e6


def test_bootstrap_counts_pairs_of_distinct_tasks_only():
    g, _ = synthetic(6, seed=1)
    # with multiplicities m_k the resample has T^2 - sum(m_k^2) pairs of distinct tasks, at most T(T-1)
    est, lo, hi, *_ = task_bootstrap({"g": g}, lambda a: np.isfinite(a["g"]).sum(), n_boot=300, seed=0)
    assert est[0] == 30 and hi[0] <= 30 and lo[0] < 30


def test_partial_spearman_matches_the_formula_with_one_control():
    rng = np.random.default_rng(0)
    z = rng.normal(size=200)
    x, y = z + rng.normal(size=200), z + rng.normal(size=200)
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    expected = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert partial_spearman(y, x, z) == pytest.approx(expected, abs=1e-10)


def test_partial_of_a_proxy_given_the_true_driver_is_near_zero():
    n = 25
    g, a = synthetic(n, seed=11, noise=0.3)
    b = a + 0.3 * square(np.random.default_rng(99).normal(size=(n, n)), names(n))  # B tracks A
    assert spearman_ci(g, b, n_boot=50).estimate > 0.5  # B alone looks predictive
    table = partial_correlations(g, {"A": a, "B": b}, n_boot=200, seed=0).set_index("similarity")
    assert abs(table.loc["B", "estimate"]) < 0.15
    assert table.loc["B", "lo"] < 0 < table.loc["B", "hi"]
    assert table.loc["A", "estimate"] > 0.4 and table.loc["A", "lo"] > 0


def test_regression_recovers_planted_coefficients_with_intervals():
    n = 15
    a, b = embedded_similarity(n, 1), embedded_similarity(n, 2)
    exact = regress(
        square(2 + 3 * a - 1 * b, names(n)), {"A": square(a, names(n)), "B": square(b, names(n))}, n_boot=100
    ).set_index("term")
    assert exact.loc["intercept", "estimate"] == pytest.approx(2.0)
    assert exact.loc["A", "estimate"] == pytest.approx(3.0) and exact.loc["B", "estimate"] == pytest.approx(
        -1.0
    )
    assert exact.loc["r2", "estimate"] == pytest.approx(1.0)
    assert exact.loc["A", "hi"] - exact.loc["A", "lo"] < 1e-8  # no noise: every resample agrees
    noise = 0.5 * np.random.default_rng(3).normal(size=(n, n))
    noisy = regress(
        square(2 + 3 * a - 1 * b + noise, names(n)),
        {"A": square(a, names(n)), "B": square(b, names(n))},
        n_boot=300,
    ).set_index("term")
    assert noisy.loc["A", "lo"] < 3.0 < noisy.loc["A", "hi"]
    assert noisy.loc["B", "lo"] < -1.0 < noisy.loc["B", "hi"]
    assert 0 < noisy.loc["r2", "estimate"] < 1


def test_standardised_regression_scales_by_the_predictors_spread():
    n = 10
    a = embedded_similarity(n, 4)
    g = square(5 * a, names(n))
    out = regress(g, {"A": square(a, names(n))}, n_boot=20, standardize=True).set_index("term")
    assert out.loc["A", "estimate"] == pytest.approx(5 * a[OFF(n)].std())


def test_partial_correlation_of_too_few_pairs_is_undefined_not_a_crash():
    from analysis.stats import partial_spearman

    y, x, c = np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([[0.0], [1.0]])
    assert np.isnan(partial_spearman(y, x, c))
    assert np.isnan(partial_spearman(np.array([]), np.array([]), np.zeros((0, 1))))
