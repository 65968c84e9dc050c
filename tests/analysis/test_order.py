"""The shared task order: average-linkage leaf order keeps planted blocks contiguous, deterministically."""

from __future__ import annotations

import numpy as np
from tables import square

from analysis.order import average_linkage_order, profile_distance, similarity_order, task_order


def contiguous(order: list[str], block: dict[str, int]) -> bool:
    labels = [block[t] for t in order]
    changes = sum(a != b for a, b in zip(labels, labels[1:], strict=False))
    return changes == len(set(labels)) - 1


def block_gain(seed: int):
    """Nine tasks in three blocks, interleaved in input order: within-block pairs gain, others lose."""
    tasks = [f"{b}{i}" for i in range(3) for b in "xyz"]  # x0 y0 z0 x1 y1 ...
    block = {t: "xyz".index(t[0]) for t in tasks}
    rng = np.random.default_rng(seed)
    g = np.array([[3.0 if block[s] == block[t] else -2.0 for t in tasks] for s in tasks])
    return square(g + 0.3 * rng.normal(size=g.shape), tasks), block


def test_points_on_a_line_by_hand():
    x = np.array([0.0, 10.0, 1.0, 11.0, 5.2])
    order = average_linkage_order(np.abs(x[:, None] - x[None, :]))
    # {0,2} then {1,3}, 5.2 joins {0,2} (avg 4.7 < 5.3), then all; the tree may be read either way
    assert order in ([0, 2, 4, 1, 3], [3, 1, 4, 2, 0])


def test_blocks_come_out_contiguous_and_the_order_is_deterministic():
    gain, block = block_gain(0)
    order = task_order([gain])
    assert sorted(order) == sorted(gain.index) and contiguous(order, block)
    assert task_order([gain]) == order
    other, _ = block_gain(1)  # a second method with the same structure: one pooled order
    assert contiguous(task_order([gain, other]), block)


def test_profile_distance_ignores_missing_cells_and_the_pair_itself():
    gain, block = block_gain(2)
    values = gain.to_numpy(copy=True)
    values[0, 5] = values[4, 1] = np.nan
    d = profile_distance([square(values, gain.index)])
    assert np.isfinite(d.to_numpy()).all() and np.allclose(np.diag(d), 0.0)
    same = [d.loc[a, b] for a in d.index for b in d.index if a != b and block[a] == block[b]]
    across = [d.loc[a, b] for a in d.index for b in d.index if block[a] != block[b]]
    assert max(same) < min(across)
    assert contiguous(task_order([square(values, gain.index)]), block)


def test_similarity_order_groups_similar_tasks():
    tasks = ["a1", "b1", "a2", "b2", "a3"]
    block = {t: t[0] for t in tasks}
    sim = square([[1.0 if block[s] == block[t] else 0.1 for t in tasks] for s in tasks], tasks)
    order = similarity_order(sim)
    assert contiguous(order, block) and similarity_order(sim) == order
