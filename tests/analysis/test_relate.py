"""The shared bootstrap for several similarities agrees with the one-similarity statistics."""

from __future__ import annotations

import numpy as np
import pytest
from tables import embedded_similarity, names, square

from analysis.decompose import residual_spearman
from analysis.relate import similarity_correlations
from analysis.stats import spearman_ci


def test_one_shared_bootstrap_equals_the_separate_ones():
    n = 12
    a, b = square(embedded_similarity(n, 0), names(n)), square(embedded_similarity(n, 1), names(n))
    noise = np.random.default_rng(2).normal(size=(n, n))
    gain = square(a.to_numpy() + 0.5 * b.to_numpy() + noise, names(n))
    table = similarity_correlations(gain, {"a": a, "b": b}, n_boot=200, seed=4).set_index(
        ["similarity", "kind"]
    )
    assert len(table) == 4
    for sim_name, sim in (("a", a), ("b", b)):
        alone = spearman_ci(gain, sim, n_boot=200, seed=4)
        assert table.loc[(sim_name, "gain"), "estimate"] == pytest.approx(alone.estimate)
        assert table.loc[(sim_name, "gain"), "lo"] == pytest.approx(alone.lo)
        resid = residual_spearman(gain, sim, n_boot=200, seed=4)
        assert table.loc[(sim_name, "residual"), "estimate"] == pytest.approx(resid.estimate)
        assert table.loc[(sim_name, "residual"), "hi"] == pytest.approx(resid.hi)
    assert table.loc[("a", "gain"), "estimate"] > table.loc[("b", "gain"), "estimate"] > 0


def test_no_similarities_give_an_empty_table():
    gain = square(np.ones((3, 3)), "abc")
    assert similarity_correlations(gain, {}).empty
