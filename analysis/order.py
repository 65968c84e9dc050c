"""One shared, deterministic task order for every heatmap, from average-linkage clustering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def average_linkage_order(dist: np.ndarray) -> list[int]:
    """Leaf order of average-linkage (UPGMA) agglomerative clustering of a symmetric distance array.

    At each step the two closest clusters merge (ties: the pair whose smallest member indices come
    first); the merged cluster lists the leaves of the cluster holding the smaller original index
    first. Non-finite distances count as the largest finite distance plus one."""
    d = np.array(dist, dtype=float)
    n = d.shape[0]
    finite = np.isfinite(d)
    d[~finite] = (d[finite].max() + 1.0) if finite.any() else 1.0
    d = (d + d.T) / 2.0
    clusters: list[list[int]] = [[i] for i in range(n)]
    while len(clusters) > 1:
        best, pair = np.inf, (0, 1)
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = d[np.ix_(clusters[a], clusters[b])].mean()
                if link < best - 1e-12:
                    best, pair = link, (a, b)
        a, b = pair
        first, second = sorted((clusters[a], clusters[b]), key=min)
        clusters = [c for k, c in enumerate(clusters) if k not in pair]
        clusters.append(first + second)
        clusters.sort(key=min)  # keeps the scan order, hence the tie-breaking, independent of history
    return clusters[0] if clusters else []


def profile_distance(matrices: Sequence[pd.DataFrame], tasks: Sequence[str] | None = None) -> pd.DataFrame:
    """Distance between tasks from their gain profiles: task i's row (as a source) and column (as a
    target) of every matrix, compared with task j's over the third tasks k (k not i or j) where both
    are finite; root mean squared difference. Two tasks that give and take alike are close."""
    tasks = list(tasks) if tasks is not None else list(matrices[0].index)
    arrays = [m.reindex(index=tasks, columns=tasks).to_numpy(float) for m in matrices]
    n = len(tasks)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            third = np.ones(n, bool)
            third[[i, j]] = False
            diffs = np.concatenate(
                [np.r_[a[i, third] - a[j, third], a[third, i] - a[third, j]] for a in arrays]
            )
            diffs = diffs[np.isfinite(diffs)]
            out[i, j] = out[j, i] = np.sqrt(np.mean(diffs**2)) if diffs.size else np.nan
    return pd.DataFrame(out, index=tasks, columns=tasks)


def task_order(matrices: Sequence[pd.DataFrame], tasks: Sequence[str] | None = None) -> list[str]:
    """The shared heatmap order: average-linkage leaf order on the gain-profile distance pooled over
    all given gain matrices (e.g. every method and mode), so one order serves every figure."""
    dist = profile_distance(matrices, tasks)
    return [dist.index[k] for k in average_linkage_order(dist.to_numpy())]


def similarity_order(sim: pd.DataFrame) -> list[str]:
    """Average-linkage leaf order on 1 - similarity (symmetrised), for when no gains exist yet."""
    d = 1.0 - sim.to_numpy(float)
    np.fill_diagonal(d, 0.0)
    return [sim.index[k] for k in average_linkage_order(d)]
