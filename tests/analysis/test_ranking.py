"""NDCG@k and regret@k on small cases computed by hand, and per-target ranking of sources."""

from __future__ import annotations

import numpy as np
import pytest
from tables import square

from analysis.ranking import ndcg_at_k, random_ranking, rank_sources, ranking_summary, regret_at_k

GAINS = np.array([3.0, 1.0, 0.0, 2.0])  # sources a, b, c, d
SCORES = np.array([0.8, 0.9, 0.1, 0.5])  # ranks them b, a, d, c


def test_ndcg_by_hand():
    # DCG@3 = 1/log2(2) + 3/log2(3) + 2/log2(4) = 3.892789; ideal 3 + 2/log2(3) + 1/2 = 4.761860
    assert ndcg_at_k(SCORES, GAINS, k=3) == pytest.approx(3.892789 / 4.761860, abs=1e-6)
    assert ndcg_at_k(GAINS, GAINS, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(-GAINS, GAINS, k=4) == pytest.approx(
        (0 + 1 / np.log2(3) + 2 / 2 + 3 / np.log2(5)) / (3 + 2 / np.log2(3) + 1 / 2 + 0)
    )
    assert ndcg_at_k(SCORES, GAINS, k=10) == ndcg_at_k(SCORES, GAINS, k=4)  # k past the candidates


def test_relevance_is_the_positive_part_of_the_gain():
    # gains 2, 0, -1, 1 count as 2, 0, 0, 1: a harmful source is as irrelevant as a neutral one
    assert ndcg_at_k(SCORES, GAINS - 1.0, k=3) == pytest.approx(ndcg_at_k(SCORES, [2.0, 0.0, 0.0, 1.0], k=3))
    assert np.isnan(ndcg_at_k(SCORES, np.full(4, -2.0), k=3))  # no source helps: nothing to find


def test_tied_scores_are_averaged_not_broken_by_position():
    tied = np.array([0.5, 0.5, 0.1, 0.1])  # a and b tie at the top
    flipped = [1, 0, 3, 2]
    assert ndcg_at_k(tied, GAINS, k=1) == pytest.approx(((3 + 1) / 2) / 3)
    assert ndcg_at_k(tied, GAINS, k=1) == ndcg_at_k(tied[flipped], GAINS[flipped], k=1)
    assert regret_at_k(tied, GAINS, k=1) == pytest.approx(3.0 - 2.0)  # a or b, each half the time


def test_regret_by_hand():
    assert regret_at_k(SCORES, GAINS, k=1) == pytest.approx(2.0)  # picks b (1) instead of a (3)
    assert regret_at_k(SCORES, GAINS, k=2) == pytest.approx(0.0)
    assert regret_at_k(GAINS, GAINS) == 0.0


def test_random_ranking_exact_by_hand_and_by_permutations():
    ndcg, regret = random_ranking(GAINS, k_ndcg=3, k_regret=1)
    assert regret == pytest.approx(3.0 - 1.5)  # best minus the mean gain
    assert ndcg == pytest.approx(1.5 * (1 + 1 / np.log2(3) + 0.5) / 4.761860, abs=1e-6)
    _, regret2 = random_ranking(GAINS, k_regret=2)
    assert regret2 == pytest.approx(3.0 - 14.0 / 6.0)  # mean max over the six pairs
    rng_gains = np.random.default_rng(0).normal(size=9)
    exact = random_ranking(rng_gains, 5, 2)
    sampled = random_ranking(rng_gains, 5, 2, n_perm=3000, seed=1)
    assert sampled == pytest.approx(exact, abs=0.03)


def test_rank_sources_excludes_the_target_and_reports_per_target():
    tasks = ["a", "b", "c", "d"]
    gain = square([[9, 1, 0, 2], [3, 9, 1, 0], [0, 2, 9, 1], [1, 0, 3, 9]], tasks)
    sim = square(
        [[1.0, 0.95, 0.1, 0.9], [0.9, 1.0, 0.3, 0.1], [0.1, 0.8, 1.0, 0.2], [0.2, 0.1, 0.9, 1.0]], tasks
    )
    table = rank_sources(gain, sim, k=2).set_index("target")
    assert (table["n_sources"] == 3).all()
    assert table.loc["a", "top_source"] == "b" and table.loc["a", "best_source"] == "b"
    assert table.loc["a", "regret"] == 0.0 and table.loc["a", "ndcg"] == pytest.approx(1.0)
    # target b: similarity picks a (gain 1), the best is c (gain 2)
    assert table.loc["b", "top_source"] == "a" and table.loc["b", "best_source"] == "c"
    assert table.loc["b", "regret"] == pytest.approx(1.0)
    assert table.loc["b", "ndcg"] == pytest.approx((1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3)))
    assert table.loc["c", "top_source"] == "d" and table.loc["c", "best_source"] == "d"
    assert (table.index != table["top_source"]).all()
    summary = ranking_summary(gain, {"sim": sim}, k=2).set_index("ranking")
    assert summary.loc["sim", "ndcg"] > summary.loc["random", "ndcg"]
    assert summary.loc["sim", "regret"] < summary.loc["random", "regret"]


def test_rank_sources_skips_missing_gains():
    tasks = ["a", "b", "c"]
    gain = square([[0, np.nan, 1], [2, 0, 3], [1, 1, 0]], tasks)
    sim = square(np.ones((3, 3)), tasks)
    table = rank_sources(gain, sim).set_index("target")
    assert table.loc["b", "n_sources"] == 1 and np.isnan(table.loc["b", "ndcg"])
    assert table.loc["a", "n_sources"] == 2
