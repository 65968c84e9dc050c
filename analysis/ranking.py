"""Score similarity-based rankings of sources per target against the true gains: NDCG@k and regret@k
for one target's candidates, and per-target tables built on them.

The scores are those of `pertarget.py`: relevance for NDCG is max(gain, 0) with the discount
1/log2(rank+1); regret@k is the best candidate's gain minus the best gain among the top k, in the
gain's units (points). Tied scores are averaged over every order of the tied sources, never broken by
the order tasks are listed in. The random baseline is the exact expectation over uniformly random
rankings: the score of a constant similarity (or a seeded Monte Carlo estimate when asked for)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.pertarget import ndcg_rows, regret_rows


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 5) -> float:
    """NDCG@k of ranking candidates by `scores` (descending, ties averaged) when their true value is
    `gains`; NaN when no candidate has a positive gain."""
    gains = np.asarray(gains, float)
    return float(ndcg_rows(gains, np.asarray(scores, float), np.ones(gains.size, bool), k))


def regret_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 1) -> float:
    """Best gain minus the (expected, over tie orders) best gain among the top k candidates by score."""
    gains = np.asarray(gains, float)
    return float(regret_rows(gains, np.asarray(scores, float), np.ones(gains.size, bool), k))


def random_ranking(
    gains: np.ndarray, k_ndcg: int = 5, k_regret: int = 1, n_perm: int | None = None, seed: int = 0
) -> tuple[float, float]:
    """Expected (NDCG@k_ndcg, regret@k_regret) of a uniformly random ranking: exact by default (a
    constant score ties every candidate, which averages over every order), or the mean over `n_perm`
    seeded random permutations."""
    gains = np.asarray(gains, float)
    n = gains.size
    if n_perm is not None:
        rng = np.random.default_rng(seed)
        draws = [
            (
                ndcg_at_k(rng.permutation(n).astype(float), gains, k_ndcg),
                regret_at_k(rng.permutation(n).astype(float), gains, k_regret),
            )
            for _ in range(n_perm)
        ]
        return float(np.mean([d[0] for d in draws])), float(np.mean([d[1] for d in draws]))
    flat = np.zeros(n)
    return ndcg_at_k(flat, gains, k_ndcg), regret_at_k(flat, gains, k_regret)


def _unique_best(names: pd.Index, values: np.ndarray) -> str:
    top = np.flatnonzero(values == values.max())
    return str(names[top[0]]) if top.size == 1 else f"{top.size} tied"


def rank_sources(gain: pd.DataFrame, sim: pd.DataFrame, k: int = 5, k_regret: int = 1) -> pd.DataFrame:
    """Per target (a column of `gain`; rows are sources): rank the other sources by similarity and score
    it. Candidates are the sources other than the target whose gain and similarity are both finite.
    Columns: target, n_sources, top_source (by similarity; "n tied" when several share the top),
    best_source (by gain), ndcg, regret, random_ndcg, random_regret."""
    rows = []
    sim = sim.reindex(index=gain.index, columns=gain.columns)
    for target in gain.columns:
        g, s = gain[target].to_numpy(float), sim[target].to_numpy(float)
        keep = np.isfinite(g) & np.isfinite(s) & (gain.index != target)
        names = gain.index[keep]
        g, s = g[keep], s[keep]
        if g.size < 2:
            rows.append({"target": target, "n_sources": int(g.size)})
            continue
        rnd_ndcg, rnd_regret = random_ranking(g, k, k_regret)
        rows.append(
            {
                "target": target,
                "n_sources": int(g.size),
                "top_source": _unique_best(names, s),
                "best_source": _unique_best(names, g),
                "ndcg": ndcg_at_k(s, g, k),
                "regret": regret_at_k(s, g, k_regret),
                "random_ndcg": rnd_ndcg,
                "random_regret": rnd_regret,
            }
        )
    cols = [
        "target",
        "n_sources",
        "top_source",
        "best_source",
        "ndcg",
        "regret",
        "random_ndcg",
        "random_regret",
    ]
    return pd.DataFrame(rows).reindex(columns=cols)


def ranking_summary(
    gain: pd.DataFrame, sims: Mapping[str, pd.DataFrame], k: int = 5, k_regret: int = 1
) -> pd.DataFrame:
    """Mean NDCG@k and regret over targets for each similarity, and for a random ranking, one row each."""
    rows = []
    per = {name: rank_sources(gain, sim, k, k_regret) for name, sim in sims.items()}
    for name, table in per.items():
        rows.append(
            {
                "ranking": name,
                "ndcg": table["ndcg"].mean(),
                "regret": table["regret"].mean(),
                "n_targets": int(table["ndcg"].notna().sum()),
            }
        )
    if per:
        table = next(iter(per.values()))
        rows.append(
            {
                "ranking": "random",
                "ndcg": table["random_ndcg"].mean(),
                "regret": table["random_regret"].mean(),
                "n_targets": int(table["random_ndcg"].notna().sum()),
            }
        )
    return pd.DataFrame(rows, columns=["ranking", "ndcg", "regret", "n_targets"])
