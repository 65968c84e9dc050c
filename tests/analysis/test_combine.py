"""Multi-source and group cells against single-task tuning, and sources predicted with the target's own
gains held out: planted effects found, noise left without a claim, new stages kept out of the gains."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from study_folders import TASKS, cell, toy_rows, write_study

from analysis.assemble import analyse
from analysis.combine import (
    GROUPS_COLUMNS,
    MULTISOURCE_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTION_SUMMARY_COLUMNS,
    groups_table,
    multisource_table,
    source_prediction,
    top_k_weights,
)
from analysis.gains import seed_gains, task_names
from analysis.load import load_study
from analysis.report import make_report

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
                others = [t for t in TASKS if t != target]
                others = "+".join(others[:2] if policy.startswith(("top_k", "random_k")) else others)
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
    for path in folder.glob("*.parquet"):  # as an earlier version wrote them: no policy column
        pq.write_table(pq.read_table(path).drop_columns(["policy"]), path)
    assert "policy" not in pq.read_schema(next(folder.glob("*.parquet"))).names
    cells = load_study(folder).cells
    assert cells["policy"].isna().all()
    add_rows(folder, new_stage_rows())  # old and new files side by side
    cells = load_study(folder).cells
    assert cells.loc[cells["stage"] == "transfer", "policy"].isna().all()
    assert set(cells.loc[cells["stage"] == "multisource", "policy"]) == {"all"}


# --- the tables, on in-memory cells -----------------------------------------------------------------

MANY = [f"t{i:02d}" for i in range(12)]


def synthetic(gains: dict, seeds=(0, 1), stage="multisource", sources=None) -> pd.DataFrame:
    """Cells of `stage`: `gains` maps policy -> (seed, target) -> points over the single run (0.5, or
    None for a failed cell); singles for every target and seed."""
    rows = []
    targets = sorted({t for g in gains.values() for _, t in g})
    for seed in seeds:
        rows += [cell("single", "coop", t, 0.5, seed=seed) for t in targets]
    for policy, by_cell in gains.items():
        for (seed, target), g in by_cell.items():
            source = (sources or {}).get((policy, target), "x+y")
            value, status = (0.5 + g / 100, "ok") if g is not None else (float("nan"), "failed")
            row = cell(stage, "coop", target, value, source=source, seed=seed, status=status)
            rows.append({**row, "policy": policy})
    return pd.DataFrame(rows)


def test_a_planted_policy_gain_is_found_with_its_wins_and_its_lead_over_random_k():
    rng = np.random.default_rng(1)
    top = {(s, t): 3.0 + rng.normal(0, 0.5) for s in (0, 1) for t in MANY}
    rand = {(s, t): rng.normal(0, 0.5) for s in (0, 1) for t in MANY}
    table = multisource_table(synthetic({"top_k:gain": top, "random_k": rand}), n_boot=N_BOOT)
    row = table.set_index("policy").loc["top_k:gain"]
    per_target = {t: (top[0, t] + top[1, t]) / 2 for t in MANY}  # seeds averaged first
    assert row["n_targets"] == 12 and row["wins"] == sum(g > 0 for g in per_target.values()) == 12
    assert row["gain_pts"] == pytest.approx(np.mean(list(per_target.values())))
    lead = np.mean([per_target[t] - (rand[0, t] + rand[1, t]) / 2 for t in MANY])
    assert row["diff_random_pts"] == pytest.approx(lead) and row["n_paired"] == 12
    assert 0 < row["diff_random_lo"] < lead < row["diff_random_hi"]
    assert 0 < row["gain_lo"] < row["gain_hi"]
    base = table.set_index("policy").loc["random_k"]
    assert pd.isna(base["diff_random_pts"]) and pd.isna(base["n_paired"])
    assert list(table.columns) == MULTISOURCE_COLUMNS


def test_pure_noise_gives_intervals_that_include_zero():
    rng = np.random.default_rng(2)
    gains = {p: {(0, t): rng.normal(0, 2.0) for t in MANY} for p in ("all", "top_k:visual", "random_k")}
    table = multisource_table(synthetic(gains, seeds=(0,)), n_boot=N_BOOT).set_index("policy")
    for policy in ("all", "top_k:visual"):
        row = table.loc[policy]
        assert row["gain_lo"] < 0 < row["gain_hi"]
        assert row["diff_random_lo"] < 0 < row["diff_random_hi"]


def test_failed_and_missing_cells_are_left_out_and_counted():
    gains = {"all": {(s, t): 2.0 for s in (0, 1) for t in MANY}, "random_k": {}}
    gains["all"][1, "t00"] = None  # failed: t00 keeps seed 0's gain
    del gains["all"][0, "t01"], gains["all"][1, "t01"]  # t01 never stored for "all"
    gains["random_k"] = {(s, t): 0.0 for s in (0, 1) for t in MANY}
    cells = synthetic(gains)
    cells = cells[~((cells["stage"] == "single") & (cells["target"] == "t02") & (cells["seed"] == 0))]
    row = multisource_table(cells, n_boot=N_BOOT).set_index("policy").loc["all"]
    assert row["n_targets"] == 11 and row["gain_pts"] == pytest.approx(2.0)
    assert (row["n_failed"], row["n_no_single"], row["n_missing"]) == (1, 1, 2)


def test_groups_are_named_and_compared_with_random_groups_of_the_same_sizes():
    visual = {"a": "a+b", "b": "a+b", "c": "c+d", "d": "c+d"}
    shuffled = {"a": "a+c", "c": "a+c", "b": "b+d", "d": "b+d"}
    gains = {"visual": {(0, t): 2.0 + i for i, t in enumerate(TASKS)}, "random:visual": {}}
    gains["random:visual"] = {(0, t): -1.0 for t in TASKS}
    sources = {("visual", t): g for t, g in visual.items()} | {
        ("random:visual", t): g for t, g in shuffled.items()
    }
    table = groups_table(synthetic(gains, seeds=(0,), stage="groups", sources=sources), n_boot=N_BOOT)
    row = table.set_index("policy").loc["visual"]
    assert row["groups"] == "{a, b} {c, d}" and row["n_groups"] == 2
    assert row["gain_pts"] == pytest.approx(3.5) and row["wins"] == 4
    assert row["diff_random_pts"] == pytest.approx(4.5) and row["diff_random_lo"] > 0
    rand = table.set_index("policy").loc["random:visual"]
    assert rand["groups"] == "{a, c} {b, d}" and rand["wins"] == 0 and pd.isna(rand["diff_random_pts"])
    assert list(table.columns) == GROUPS_COLUMNS


def test_without_cells_of_the_new_stages_the_tables_are_empty_with_their_columns():
    cells = pd.DataFrame([cell("single", "coop", t, 0.5) for t in TASKS])  # no policy column at all
    assert multisource_table(cells).empty and list(multisource_table(cells).columns) == MULTISOURCE_COLUMNS
    assert groups_table(cells).empty and list(groups_table(cells).columns) == GROUPS_COLUMNS


# --- sources predicted with the target held out -------------------------------------------------------


def _matrix(values, names) -> pd.DataFrame:
    m = pd.DataFrame(np.asarray(values, float), index=names, columns=names)
    return m.mask(np.eye(len(names), dtype=bool))


def test_the_prediction_for_a_target_never_reads_its_own_row_or_column():
    rng = np.random.default_rng(3)
    names = MANY[:8]
    gain = _matrix(rng.normal(0, 2, (8, 8)), names)
    sims = {"visual": _matrix(rng.random((8, 8)), names)}

    def predicted(g: pd.DataFrame) -> pd.Series:
        return source_prediction(g, sims, 3, n_boot=0)[0].set_index(["predictor", "target"])["predicted"]

    before = predicted(gain)
    for t in ("t00", "t05"):
        changed = gain.copy()
        changed.loc[t, :] = rng.normal(0, 50, 8)  # the target as a source
        changed.loc[:, t] = changed[t].where(changed[t].isna(), rng.normal(0, 50, 8))  # its own gains
        after = predicted(changed)
        assert after.xs(t, level="target").equals(before.xs(t, level="target"))
        # the change did reach the other targets' predictions
        assert not after.drop(index=t, level="target").equals(before.drop(index=t, level="target"))


def test_a_planted_donor_is_predicted_and_a_constant_similarity_scores_random():
    names = MANY[:8]
    donor = np.arange(8.0)  # source i gives every target i points
    gain = _matrix(np.repeat(donor[:, None], 8, axis=1), names)
    sims = {"flat": _matrix(np.ones((8, 8)), names), "anti": _matrix(-np.repeat(donor[:, None], 8, 1), names)}
    per_target, summary = source_prediction(gain, sims, 2, n_boot=N_BOOT)
    s = summary.set_index("predictor")
    assert s.loc["donor", "regret_pts"] == pytest.approx(0) and s.loc["donor", "hit_rate"] == 1
    assert s.loc["donor", "vs_random_lo"] > 0
    assert s.loc["flat", "vs_random_pts"] == pytest.approx(0) and s.loc["flat", "hit_rate"] == pytest.approx(
        2 / 7
    )
    assert s.loc["anti", "hit_rate"] == 0 and s.loc["anti", "vs_random_hi"] < 0
    row = per_target.set_index(["predictor", "target"]).loc[("donor", "t00")]
    assert row["predicted"] == "t07, t06" and row["best_source"] == "t07" and row["n_sources"] == 7
    assert row["oracle_gain_pts"] == 6.5 and row["random_gain_pts"] == pytest.approx(28 / 7)
    assert list(per_target.columns) == PREDICTION_COLUMNS
    assert list(summary.columns) == PREDICTION_SUMMARY_COLUMNS


def test_tied_scores_share_the_free_slots():
    w = top_k_weights(np.array([5.0, 3.0, 3.0, 3.0, np.nan]), 2)
    assert w == pytest.approx([1, 1 / 3, 1 / 3, 1 / 3, 0])
    assert top_k_weights(np.array([np.nan, 1.0, np.nan]), 2) == pytest.approx([0.5, 1, 0.5])


# --- the report --------------------------------------------------------------------------------------


def test_the_report_shows_which_sources_to_combine(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(methods=("coop",)))
    policies = {"all": 2.0, "top_k:gain": 3.0, "random_k": 0.0, "visual": 1.0, "random:visual": -1.0}
    gains = {p: {t: g + 0.2 * i for i, t in enumerate(TASKS)} for p, g in policies.items()}  # mean g + 0.3
    add_rows(folder, new_stage_rows(gains=gains))
    report = make_report(folder, n_boot=N_BOOT)
    page = report.html.read_text()
    assert '<section id="combine"><h2>Which sources to combine</h2>' in page and 'href="#combine"' in page
    assert "{a, b} {c, d}" in page and "chosen by donor" in page
    multisource = pd.read_csv(report.out / "multisource.csv").set_index("policy")
    assert multisource.loc["top_k:gain", "gain_pts"] == pytest.approx(3.3)
    assert multisource.loc["top_k:gain", "diff_random_pts"] == pytest.approx(3.0)
    assert multisource.loc["all", "wins"] == 4 and set(multisource.index) == {"all", "top_k:gain", "random_k"}
    groups = pd.read_csv(report.out / "groups.csv").set_index("policy")
    assert groups.loc["visual", "diff_random_pts"] == pytest.approx(2.0)
    assert (pd.read_csv(report.out / "source_prediction.csv")["k"] == 2).all()  # the top_k sets' size
    said = next(x for x in report.lines if x.startswith("coop: multi-source"))  # a finding, adjusted p
    assert "multi-source all beats single-task tuning by +2.3 [" in said
    assert "multi-source all beats random_k by +2.0 [+2.0, +2.0] points (adjusted p <0.001)" in said
    assert "and 4 more in the tables below" in said  # three named, the rest counted
    assert any("no claim for multi-source random_k" in x for x in report.lines)  # random_k against single
    multisource = pd.read_csv(report.out / "multisource.csv").set_index("policy")
    assert multisource.loc["all", "gain_p_adjusted"] >= multisource.loc["all", "gain_p"]
    assert "Multi-source initialisation" in (report.out / "summary.md").read_text()
    tables = page[page.index('id="study"') :]  # every number of the findings is in a table below them
    for figure in re.findall(r"[+-]?\d+\.\d+ \[[^\]]*\]", " ".join(report.lines[: report.lines.index("")])):
        assert figure in tables, figure


def test_an_old_folder_reports_the_held_out_choice_of_sources_only(tmp_path):
    report = make_report(write_study(tmp_path / "toy", toy_rows()), n_boot=N_BOOT)
    page = report.html.read_text()
    assert "Which sources to combine" in page and "Predicted and actual best sources" in page
    assert "Multi-source initialisation" not in page and not (report.out / "multisource.csv").exists()
    assert not any("multi-source" in line for line in report.lines)
    prediction = pd.read_csv(report.out / "source_prediction.csv")
    assert set(prediction["method"]) == {"coop", "vpt"} and (prediction["k"] == 2).all()
