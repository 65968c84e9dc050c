"""Multi-source and group cells against single-task tuning, and sources predicted with the target's own
gains held out: planted effects found, noise left without a claim, new stages kept out of the gains."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from study_folders import TASKS, cell, toy_rows, write_study

from analysis.assemble import analyse
from analysis.gains import seed_gains, task_names
from analysis.load import load_study

N_BOOT = 200


def new_stage_rows(method="coop", seeds=(0,), gains=None, shots=4) -> list[dict]:
    """Rows of the stages written after the `policy` column appeared: a multitask cell per source set,
    multisource cells per policy and target, and group cells. `gains`: policy -> target -> points over
    the single run (0.5); multisource unless the policy is a group policy (one of GROUPS below)."""
    gains = gains if gains is not None else {"all": dict.fromkeys(TASKS, 2.0)}
    rows = []
    for seed in seeds:
        for policy, by_target in gains.items():
            for target, g in by_target.items():
                stage = "groups" if policy in GROUP_POLICIES else "multisource"
                others = "+".join(t for t in TASKS if t != target)
                source = GROUP_POLICIES.get(policy, {}).get(target) or others
                row = cell(stage, method, target, 0.5 + g / 100, source=source, shots=shots, seed=seed)
                rows.append(
                    {**row, "policy": policy, "cell_id": f"{row['cell_id']}-{policy.replace(':', '-')}"}
                )
        multitask = cell("multitask", method, "+".join(TASKS), 0.7, shots=shots, seed=seed)
        rows.append({**multitask, "metric": "mean_validation", "policy": None})
    return rows


# group policy -> member -> its group (as stored: sorted names joined by "+")
GROUP_POLICIES = {
    "visual": {"a": "a+b", "b": "a+b", "c": "c+d", "d": "c+d"},
    "random:visual": {"a": "a+c", "c": "a+c", "b": "b+d", "d": "b+d"},
}


def add_rows(folder, rows) -> None:
    """Cell files written the way a kernel with the newer stages writes them (with `policy`)."""
    for r in rows:
        pq.write_table(pa.Table.from_pylist([r]), folder / f"{r['cell_id']}.parquet")


def test_rows_of_the_new_stages_do_not_enter_the_tasks_or_the_pairwise_gains(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(methods=("coop",)))
    old = seed_gains(load_study(folder).cells)
    add_rows(folder, new_stage_rows())
    cells = load_study(folder).cells
    assert {"multitask", "multisource"} <= set(cells["stage"])
    assert sorted(task_names(cells)) == TASKS
    keys = ["mode", "seed", "source", "target"]
    new = seed_gains(cells, TASKS).sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(new, seed_gains(cells).sort_values(keys, ignore_index=True))
    pd.testing.assert_frame_equal(new, old.sort_values(keys, ignore_index=True))
    a = analyse(load_study(folder), n_boot=0)
    assert sorted(a.tasks) == TASKS and all(g.shape == (4, 4) for g in a.gains.values())
    assert set(a.progress["stage"]) >= {"multitask", "multisource"}  # counted, not read as gains


def test_a_folder_written_before_the_policy_column_reads_it_as_null(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(methods=("coop",)))
    assert "policy" not in pq.read_schema(next(folder.glob("*.parquet"))).names
    cells = load_study(folder).cells
    assert cells["policy"].isna().all()
    add_rows(folder, new_stage_rows())  # old and new files side by side
    cells = load_study(folder).cells
    assert cells.loc[cells["stage"] == "transfer", "policy"].isna().all()
    assert set(cells.loc[cells["stage"] == "multisource", "policy"]) == {"all"}
