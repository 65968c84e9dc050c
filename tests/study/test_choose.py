"""Choosing the multisource and groups stages' task sets from what a study folder holds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import MvlptError
from study.choose import Evidence, cluster, gather, random_groups, random_k, top_k
from study.grid import expand
from study.spec import spec_from_dict
from study.store import Store

TASKS = ["a", "b", "c", "d", "e"]


def _spec(**extra):
    data = {
        "name": "choose",
        "backbone": "tiny",
        "tasks": TASKS,
        "methods": {"coop": {}},
        "stages": ["single", "transfer", "multisource", "groups"],
        "multisource": {"policies": ["all", "random_k", "top_k:gain", "top_k:visual"], "k": 2},
        "groups": {"by": ["gain"], "n_groups": 2},
        **extra,
    }
    return spec_from_dict(data)


def _matrix(values) -> pd.DataFrame:
    return pd.DataFrame(values, index=TASKS, columns=TASKS)


def test_no_policy_ever_chooses_the_target_and_all_means_every_other_task():
    rng = np.random.default_rng(0)
    evidence = Evidence(
        visual={(5, 0): _matrix(rng.random((5, 5)))}, gain={("coop", 5, 0): _matrix(rng.random((5, 5)))}
    )
    grid = expand(_spec(), evidence)
    chosen = [c for c in grid.cells if c.stage == "multisource"]
    assert len(chosen) == 5 * 4 and not grid.pending
    assert all(c.target not in c.tasks for c in chosen)
    assert all(set(c.tasks) == set(TASKS) - {c.target} for c in chosen if c.policy == "all")
    assert all(len(c.tasks) == 2 for c in chosen if c.policy != "all")
    # a source set shared by several targets or policies is one multitask cell
    multitask = [c for c in grid.cells if c.stage == "multitask"]
    assert len(multitask) == len({c.tasks for c in grid.cells if c.stage in ("multisource", "groups")})


def test_a_choice_waits_for_its_evidence_and_counts_as_pending():
    grid = expand(_spec(), Evidence())
    assert grid.pending == {("multisource", "coop"): 2 * 5, ("groups", "coop"): 2 * 5}
    assert {c.policy for c in grid.cells if c.stage == "multisource"} == {"all", "random_k"}
    gain = _matrix(np.ones((5, 5)))
    gain.loc["a", "b"] = np.nan  # target b's column is incomplete: b waits, the others are chosen
    grid = expand(_spec(), Evidence(gain={("coop", 5, 0): gain}))
    waiting = {c.target for c in grid.cells if c.policy == "top_k:gain"}
    assert waiting == set(TASKS) - {"b"}


def test_top_k_ranks_by_score_and_breaks_ties_with_the_seed_not_the_task_list():
    scores = pd.Series([5.0, 1.0, 3.0, 3.0, 0.0], index=TASKS)
    assert top_k(scores, 2, seed=0, target="e")[0] == "a"
    tied = {top_k(scores, 2, seed=s, target="a")[1] for s in range(20)}
    assert tied == {"c", "d"}  # either of the tied sources, by the draw
    assert random_k(TASKS, 3, 0, "a") == random_k(TASKS, 3, 0, "a") and "a" not in random_k(TASKS, 4, 1, "a")


def test_clusters_of_a_planted_block_structure_and_random_groups_of_their_sizes():
    block = np.full((5, 5), -1.0)
    block[np.ix_([0, 1, 2], [0, 1, 2])] = 4.0
    block[np.ix_([3, 4], [3, 4])] = 2.0
    groups = cluster(_matrix(block), 2)
    assert sorted(groups) == [("a", "b", "c"), ("d", "e")]
    drawn = random_groups(TASKS, [3, 2], seed=0, by="gain")
    assert [len(g) for g in drawn] == [3, 2] and sorted(sum(drawn, ())) == TASKS
    assert cluster(_matrix(block), 5) == [(t,) for t in TASKS]


def test_groups_come_from_pairwise_affinity_not_donors_and_receivers_and_stay_bounded():
    """Planted: two blocks of four tasks that help each other, under a strong donor effect (row) and
    a strong receiver effect (column). Raw gains put the donors together; the double-centred matrix
    finds the blocks; no group exceeds half the tasks."""
    from study.choose import Evidence, double_centred

    names = [f"t{i}" for i in range(8)]
    rng = np.random.default_rng(0)
    donor, receiver = rng.normal(0, 4, 8), rng.normal(0, 4, 8)
    pair = np.full((8, 8), -1.0)
    pair[np.ix_(range(4), range(4))] = pair[np.ix_(range(4, 8), range(4, 8))] = 1.0
    values = donor[:, None] + receiver[None, :] + pair
    np.fill_diagonal(values, np.nan)
    gain = pd.DataFrame(values, index=names, columns=names)
    found = Evidence(gain={("coop", 5, 0): gain}).groups("gain", ("coop", 5, 0), 2, max_size=4)
    assert sorted(found) == [tuple(names[:4]), tuple(names[4:])]
    assert sorted(cluster(gain.fillna(0.0), 2, max_size=4)) != sorted(found)  # raw: donors together
    assert np.allclose(double_centred(gain).sum(axis=0), 0, atol=1e-6)
    # a cut that would make one group above the bound cuts finer instead
    lopsided = cluster(_matrix(np.eye(5) + np.ones((5, 5))), 1, max_size=2)
    assert max(map(len, lopsided)) <= 2 and sorted(sum(lopsided, ())) == TASKS


def test_folds_partition_the_tasks_and_a_targets_fold_is_left_out_of_its_set():
    from study.choose import fold_of

    names = [f"t{i:02d}" for i in range(20)]
    folds = {fold_of(names, 4, seed=1, target=t) for t in names}
    assert sorted(len(f) for f in folds) == [5, 5, 5, 5] and sorted(sum(folds, ())) == names
    assert fold_of(names, 4, 1, "t03") == fold_of(names, 4, 1, "t03")  # the same deal every time
    assert {fold_of(names, 4, s, "t03") for s in range(5)} != {fold_of(names, 4, 1, "t03")}


def _row(cell_id: str, stage: str, source, target: str, value: float, val_value: float) -> dict:
    return dict(
        study="choose",
        cell_id=cell_id,
        stage=stage,
        mode="joint" if stage == "transfer" else None,
        method="coop",
        source=source,
        target=target,
        shots=5,
        seed=0,
        value=value,
        val_value=val_value,
        status="ok",
    )


def _store(tmp_path, test_value) -> Store:
    """Single and transfer rows whose validation gains rank the sources of every target s0 > s1 > ...
    and whose test values are `test_value(source, target)`."""
    store = Store(tmp_path)
    store.create()
    for j, t in enumerate(TASKS):
        store.write_cell(_row(f"s{j}", "single", None, t, 0.5, 0.5))
        for i, s in enumerate(TASKS):
            store.write_cell(_row(f"t{i}{j}", "transfer", s, t, test_value(i, j), 0.5 + 0.01 * (5 - i)))
    return store


def test_top_k_gain_reads_validation_scores_never_test_scores(tmp_path):
    spec = _spec()
    fair = gather(spec, _store(tmp_path / "fair", lambda i, j: 0.5))
    # the test scores rank the sources the other way round: the choice must not move
    poisoned = gather(spec, _store(tmp_path / "poisoned", lambda i, j: 0.1 * i))
    for target in TASKS:
        chosen = fair.top_k("gain", ("coop", 5, 0), target, 2)
        assert chosen == poisoned.top_k("gain", ("coop", 5, 0), target, 2)
        assert chosen == tuple([s for s in TASKS if s != target][:2])
    assert fair.groups("gain", ("coop", 5, 0), 2, 3) == poisoned.groups("gain", ("coop", 5, 0), 2, 3)


def test_a_spec_names_its_policies_and_the_cells_they_read(tmp_path):
    with pytest.raises(MvlptError, match="unknown value 'top_k:test'"):
        _spec(multisource={"policies": ["top_k:test"]})
    with pytest.raises(MvlptError, match="'multisource.k' must be between 1 and 4"):
        _spec(multisource={"policies": ["all"], "k": 5})
    with pytest.raises(MvlptError, match="reads the study's transfer cells"):
        _spec(stages=["single", "multisource"])
    with pytest.raises(MvlptError, match="'groups.n_groups' must be between 1 and 5"):
        _spec(groups={"by": ["visual"], "n_groups": 0})
    with pytest.raises(MvlptError, match="unknown value 'multitask'"):
        _spec(stages=["single", "multitask"])


def test_a_folder_refuses_another_k_or_number_of_groups_but_takes_more_policies(tmp_path):
    from collections import Counter

    from study.launch import check_folder, write_meta

    store = Store(tmp_path / "choose")
    store.create()
    write_meta(_spec(), store, Counter(), None)
    more = {"policies": ["all", "random_k", "top_k:gain", "top_k:visual", "top_k:label"], "k": 2}
    check_folder(_spec(multisource=more), store)  # a policy more: new cells, none of them mixed
    with pytest.raises(MvlptError, match=r"'multisource.k' differs from the stored study's \(2 -> 3\)"):
        check_folder(_spec(multisource={**more, "k": 3}), store)
    with pytest.raises(MvlptError, match=r"'groups.n_groups' differs"):
        check_folder(_spec(groups={"by": ["gain"], "n_groups": 3}), store)
