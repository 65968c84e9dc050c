"""One shared, deterministic task order for every heatmap, from average-linkage clustering (scipy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def average_linkage_order(dist: np.ndarray) -> list[int]:
    """Leaf order of average-linkage (UPGMA) clustering of a symmetric distance array, with scipy's
    optimal leaf ordering (neighbouring leaves as close as the tree allows). Non-finite distances
    count as the largest finite distance plus one. Display only: no statistic depends on it."""
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    d = np.array(dist, dtype=float)
    n = d.shape[0]
    if n < 3:
        return list(range(n))
    finite = np.isfinite(d)
    d[~finite] = (d[finite].max() + 1.0) if finite.any() else 1.0
    d = (d + d.T) / 2.0
    np.fill_diagonal(d, 0.0)
    condensed = squareform(d, checks=False)
    tree = optimal_leaf_ordering(linkage(condensed, method="average"), condensed)
    return [int(k) for k in leaves_list(tree)]


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
