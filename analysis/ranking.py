"""Score similarity-based rankings of sources per target against the true gains: NDCG@k and regret@k.

Relevance for NDCG is the gain shifted so the worst candidate source of that target scores zero
(rel = gain - min gain over the target's candidates), with linear gain and the usual 1/log2(rank+1)
discount; NDCG is NaN when every candidate has the same gain. Regret@k is the best candidate's gain
minus the best gain among the top k ranked, in the gain's units (points). Sources are ranked by
decreasing score; ties keep the task order. The random baseline is the exact expectation over
uniformly random rankings (or a seeded Monte Carlo estimate when asked for)."""

from __future__ import annotations

from collections.abc import Mapping
from math import comb

import numpy as np
import pandas as pd


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def _order(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-np.asarray(scores, float), kind="stable")


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 5) -> float:
    """NDCG@k of ranking candidates by `scores` (descending) when their true value is `gains`."""
    gains = np.asarray(gains, float)
    rel = gains - gains.min()
    k = min(k, gains.size)
    disc = _discounts(k)
    ideal = float(np.sort(rel)[::-1][:k] @ disc)
    if ideal <= 0:
        return float("nan")
    return float(rel[_order(scores)][:k] @ disc) / ideal


def regret_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 1) -> float:
    """Best gain minus the best gain among the top k candidates by score."""
    gains = np.asarray(gains, float)
    return float(gains.max() - gains[_order(scores)][:k].max())


def random_ranking(
    gains: np.ndarray, k_ndcg: int = 5, k_regret: int = 1, n_perm: int | None = None, seed: int = 0
) -> tuple[float, float]:
    """Expected (NDCG@k_ndcg, regret@k_regret) of a uniformly random ranking: exact by default (every
    rank position holds the mean relevance; the top-k maximum follows from order statistics), or the
    mean over `n_perm` seeded random permutations."""
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
    rel = gains - gains.min()
    k = min(k_ndcg, n)
    disc = _discounts(k)
    ideal = float(np.sort(rel)[::-1][:k] @ disc)
    ndcg = float(rel.mean() * disc.sum() / ideal) if ideal > 0 else float("nan")
    kr = min(k_regret, n)
    ascending = np.sort(gains)
    # P(max of a random k-subset is the r-th smallest) = C(r-1, k-1) / C(n, k), r = 1..n
    p = np.array([comb(r - 1, kr - 1) for r in range(1, n + 1)], float) / comb(n, kr)
    return ndcg, float(gains.max() - p @ ascending)


def rank_sources(gain: pd.DataFrame, sim: pd.DataFrame, k: int = 5, k_regret: int = 1) -> pd.DataFrame:
    """Per target (a column of `gain`; rows are sources): rank the other sources by similarity and score
    it. Candidates are the sources other than the target whose gain and similarity are both finite.
    Columns: target, n_sources, top_source (by similarity), best_source (by gain), ndcg, regret,
    random_ndcg, random_regret."""
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
                "top_source": names[_order(s)[0]],
                "best_source": names[int(np.argmax(g))],
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
