"""Gains of transfer over single-task tuning per seed, over seeds and as matrices."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PTS = 100.0  # store values are fractions; every `*_pts` column is in points of the metric (x100)
SINGLE_KEYS = ["method", "shots", "seed", "target"]
TRANSFER_KEYS = ["method", "mode", "shots", "seed", "source", "target"]
PAIR_KEYS = ["method", "mode", "shots", "source", "target"]
SETTING_KEYS = ["method", "mode", "shots"]
# the stages whose rows name one task as target and one as source: the task list and the pairwise
# gains read these alone (a multitask cell's target is a set of tasks, "a+b+c", not a task)
PAIR_STAGES = ("zeroshot", "single", "transfer")


def task_names(cells: pd.DataFrame) -> list[str]:
    """The tasks of a result table in order of first appearance: targets first, then any other sources.
    Rows of other stages than PAIR_STAGES (task sets, groups) do not name tasks here."""
    if "stage" in cells:
        cells = cells[cells["stage"].isin(PAIR_STAGES)]
    names = list(dict.fromkeys(cells["target"].dropna()))
    if "source" in cells:
        names += [s for s in dict.fromkeys(cells["source"].dropna()) if s not in names]
    return names


def stage_values(
    cells: pd.DataFrame, stage: str, keys: Sequence[str], metric: str | None = None
) -> pd.DataFrame:
    """One row per cell of a stage: `value_pts` (NaN for a failed cell or a NaN metric), `status`
    ("ok" when some row of the cell has a finite ok value, else "failed"), `metric`, `n_rows`.
    Duplicate rows of one cell (reruns) are averaged over their ok values."""
    df = cells[cells["stage"] == stage]
    if metric is not None:
        df = df[df["metric"] == metric]
    keys = list(keys)
    if df.empty:
        return pd.DataFrame(columns=[*keys, "value_pts", "status", "metric", "n_rows"])
    ok = df["status"].eq("ok") & np.isfinite(pd.to_numeric(df["value"], errors="coerce"))
    df = df.assign(value_pts=np.where(ok, pd.to_numeric(df["value"], errors="coerce") * PTS, np.nan), ok=ok)
    grouped = df.groupby(keys, dropna=False, sort=False)
    out = grouped.agg(
        value_pts=("value_pts", "mean"),
        ok=("ok", "any"),
        n_metrics=("metric", "nunique"),
        metric=("metric", "first"),
        n_rows=("value_pts", "size"),
    ).reset_index()
    if (out["n_metrics"] > 1).any():
        raise ValueError(
            f"{stage} cells carry several metrics ({sorted(df['metric'].unique())}); pass metric="
        )
    if (out["n_rows"] > 1).any():
        log.warning(
            "%d %s cells have duplicate rows; their ok values are averaged", (out["n_rows"] > 1).sum(), stage
        )
    out["status"] = np.where(out.pop("ok"), "ok", "failed")
    return out.drop(columns="n_metrics")


def _expected_grid(single: pd.DataFrame, transfer: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Every (source, target, seed) of each method setting that has transfer cells; the diagonal included."""
    rows = []
    for (method, mode, shots), part in transfer.groupby(SETTING_KEYS, dropna=False, sort=False):
        same = single[(single["method"] == method) & (single["shots"] == shots)]
        seeds = sorted(set(part["seed"]) | set(same["seed"]))
        rows += [(method, mode, shots, seed, s, t) for seed in seeds for s in tasks for t in tasks]
    return pd.DataFrame(rows, columns=TRANSFER_KEYS)


def seed_gains(
    cells: pd.DataFrame, tasks: Sequence[str] | None = None, metric: str | None = None
) -> pd.DataFrame:
    """Per (method, mode, shots, seed, source, target): `transfer_pts`, `single_pts` (the target's single
    run, same method, shots and seed), `gain_pts` = transfer - single, `rel_gain` = gain / single (a
    fraction; NaN where single is 0), and `transfer_status` / `single_status` in {"ok", "failed",
    "absent"}. The grid is complete over `tasks` (default: every task in the table), so a missing or
    failed cell appears as a row with NaN, never as a zero."""
    tasks = list(tasks) if tasks is not None else task_names(cells)
    single = stage_values(cells, "single", SINGLE_KEYS, metric)
    transfer = stage_values(cells, "transfer", TRANSFER_KEYS, metric)
    grid = _expected_grid(single, transfer, tasks)
    if grid.empty:
        return pd.DataFrame(
            columns=[
                *TRANSFER_KEYS,
                "metric",
                "transfer_pts",
                "single_pts",
                "gain_pts",
                "rel_gain",
                "transfer_status",
                "single_status",
            ]
        )
    t = transfer[[*TRANSFER_KEYS, "value_pts", "status", "metric"]].rename(
        columns={"value_pts": "transfer_pts", "status": "transfer_status"}
    )
    s = single[[*SINGLE_KEYS, "value_pts", "status", "metric"]].rename(
        columns={"value_pts": "single_pts", "status": "single_status", "metric": "single_metric"}
    )
    out = grid.merge(t, how="left", on=TRANSFER_KEYS).merge(s, how="left", on=SINGLE_KEYS)
    out["metric"] = out["metric"].fillna(out.pop("single_metric"))
    for col in ("transfer_status", "single_status"):
        out[col] = out[col].fillna("absent")
    out["transfer_pts"] = out["transfer_pts"].astype(float)
    out["single_pts"] = out["single_pts"].astype(float)
    out["gain_pts"] = out["transfer_pts"] - out["single_pts"]
    out["rel_gain"] = out["gain_pts"] / out["single_pts"].where(out["single_pts"] != 0)
    n_missing = int(out["gain_pts"].isna().sum())
    if n_missing:
        log.info("%d of %d (setting, seed, pair) gains are missing", n_missing, len(out))
    return out


def missing_counts(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Per method setting: expected per-seed pairs, present gains, and why the rest are missing
    (transfer absent or failed, single absent or failed; a pair can lack both)."""
    df = seed_table.assign(
        present=seed_table["gain_pts"].notna(),
        transfer_absent=seed_table["transfer_status"].eq("absent"),
        transfer_failed=seed_table["transfer_status"].eq("failed"),
        single_absent=seed_table["single_status"].eq("absent"),
        single_failed=seed_table["single_status"].eq("failed"),
    )
    cols = ["present", "transfer_absent", "transfer_failed", "single_absent", "single_failed"]
    out = df.groupby(SETTING_KEYS, dropna=False, sort=False)[cols].sum().reset_index()
    out.insert(3, "expected", df.groupby(SETTING_KEYS, dropna=False, sort=False).size().to_numpy())
    out.insert(5, "missing", out["expected"] - out["present"])
    return out


def _per_target_z(gain: pd.Series, source: pd.Series, target: pd.Series) -> pd.Series:
    """z-score of each pair's mean gain among the target's off-diagonal sources (diagonal scored too)."""
    off = gain.where(source != target)
    mu = off.groupby(target).transform("mean")
    sd = off.groupby(target).transform("std")  # ddof=1
    return (gain - mu) / sd.where(sd > 0)


def gain_summary(seed_table: pd.DataFrame, zeroshot: pd.Series | None = None) -> pd.DataFrame:
    """Per (method, mode, shots, source, target): the mean over seeds with a finite gain of transfer,
    single and gain (`*_pts`), `gain_sd_pts` (sample sd over seeds, NaN below two), `n_seeds` present
    of `n_expected`, `rel_gain` = mean gain / mean single, and `gain_z`: the per-target normalised gain,
    the pair's mean gain as a z-score among that target's off-diagonal sources (so targets with large
    and small spreads become comparable; it removes the target effect). `zeroshot_pts` of the target
    sits beside when given (a Series target -> points, from `zeroshot_values`)."""
    df = seed_table.assign(
        transfer_ok=seed_table["transfer_pts"].where(seed_table["gain_pts"].notna()),
        single_ok=seed_table["single_pts"].where(seed_table["gain_pts"].notna()),
    )
    g = df.groupby(PAIR_KEYS, dropna=False, sort=False)
    out = g.agg(
        metric=("metric", "first"),
        transfer_pts=("transfer_ok", "mean"),
        single_pts=("single_ok", "mean"),
        gain_pts=("gain_pts", "mean"),
        gain_sd_pts=("gain_pts", "std"),
        n_seeds=("gain_pts", "count"),
        n_expected=("gain_pts", "size"),
    ).reset_index()
    out["rel_gain"] = out["gain_pts"] / out["single_pts"].where(out["single_pts"] != 0)
    z = []
    for _, part in out.groupby(SETTING_KEYS, dropna=False, sort=False):
        z.append(_per_target_z(part["gain_pts"], part["source"], part["target"]))
    out["gain_z"] = pd.concat(z) if z else pd.Series(dtype=float)
    if zeroshot is not None:
        out["zeroshot_pts"] = out["target"].map(zeroshot).astype(float)
    return out


def zeroshot_values(cells: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """Zero-shot points per target (NaN for a failed or NaN cell), named `zeroshot_pts`."""
    z = stage_values(cells, "zeroshot", ["target"], metric)
    return pd.Series(
        z["value_pts"].to_numpy(float), index=pd.Index(z["target"], name="target"), name="zeroshot_pts"
    )


def single_values(cells: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Single-run points per (method, shots, target): the mean over ok seeds, their sd and count."""
    s = stage_values(cells, "single", SINGLE_KEYS, metric)
    g = s.groupby(["method", "shots", "target"], dropna=False, sort=False)["value_pts"]
    return g.agg(single_pts="mean", single_sd_pts="std", n_seeds="count").reset_index()


def gain_matrix(
    summary: pd.DataFrame,
    method: str,
    mode: str,
    shots: int | None = None,
    value: str = "gain_pts",
    tasks: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Task x task matrix of one summary column (source rows, target columns) for one method and mode;
    absent pairs are NaN. `shots` may be left out when the summary holds one shots value."""
    part = summary[(summary["method"] == method) & (summary["mode"] == mode)]
    if shots is not None:
        part = part[part["shots"] == shots]
    elif part["shots"].nunique() > 1:
        raise ValueError(
            f"{method}/{mode} has several shots values {sorted(part['shots'].unique())}; pass shots="
        )
    m = part.pivot_table(index="source", columns="target", values=value, aggfunc="first", dropna=False)
    names = list(tasks) if tasks is not None else list(dict.fromkeys([*part["source"], *part["target"]]))
    m = m.reindex(index=names, columns=names).astype(float)
    m.index.name, m.columns.name = "source", "target"
    return m
