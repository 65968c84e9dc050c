"""What a protocol's numbers can be trusted for: the self control and the cells that kept their start.

The self control is the joint cell whose source is its own target (its batches counted twice,
nothing new): its gain is what the bigger joint step does alone. A recipe is tuned when that gain is
within seed noise of zero; a source's gain is read against it. A tuned cell that kept its untuned
prompt (`moved` false) says nothing about its source: the report counts such cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.gains import SETTING_KEYS
from pipeline.cell import STAGES

TUNED_STAGES = tuple(s for s in STAGES if s not in ("zeroshot", "groups"))


def self_control(seed_table: pd.DataFrame, seed_sd: dict | None = None) -> pd.DataFrame:
    """Per method setting: the self control's gain (points), the mean over targets of each target's
    mean over seeds, with its standard error over targets, how many targets have one, and, given each
    setting's seed sd of a gain (`seed_sd`: setting tuple -> points), whether the mean lies within
    one seed sd of zero."""
    diag = seed_table[(seed_table["source"] == seed_table["target"]) & seed_table["gain_pts"].notna()]
    rows = []
    for setting, part in diag.groupby(SETTING_KEYS, dropna=False, sort=False):
        per_target = part.groupby("target")["gain_pts"].mean()
        n = len(per_target)
        se = float(per_target.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        sd = (seed_sd or {}).get(tuple(setting), float("nan"))
        rows.append(
            {
                **dict(zip(SETTING_KEYS, setting, strict=True)),
                "self_gain_pts": float(per_target.mean()),
                "self_se_pts": se,
                "targets": n,
                "seed_sd_pts": sd,
                "within_seed_sd": bool(abs(per_target.mean()) <= sd) if np.isfinite(sd) else None,
            }
        )
    columns = [*SETTING_KEYS, "self_gain_pts", "self_se_pts", "targets", "seed_sd_pts", "within_seed_sd"]
    return pd.DataFrame(rows, columns=columns)


def kept_by_stage(cells: pd.DataFrame) -> pd.DataFrame:
    """Per tuned stage and method: ok cells, how many say whether their prompt moved (`known`), how many
    kept their untuned prompt, and their share of those that say. Rows written before the `moved`
    column have it null and count as unknown, not as kept."""
    if "moved" not in cells.columns:
        cells = cells.assign(moved=pd.NA)
    ok = cells[(cells["status"] == "ok") & cells["stage"].isin(TUNED_STAGES)]
    rows = []
    for (stage, method), part in ok.groupby(["stage", "method"], sort=False):
        known = part["moved"].dropna()
        kept = int((known == False).sum())  # noqa: E712 (a column of booleans)
        rows.append(
            {
                "stage": stage,
                "method": method,
                "cells": len(part),
                "known": len(known),
                "kept_start": kept,
                "share": kept / len(known) if len(known) else float("nan"),
            }
        )
    out = pd.DataFrame(rows, columns=["stage", "method", "cells", "known", "kept_start", "share"])
    rank = {s: i for i, s in enumerate(STAGES)}
    return out.sort_values(["stage", "method"], key=lambda c: c.map(rank) if c.name == "stage" else c)


def kept_per_method(stages: pd.DataFrame | None) -> pd.DataFrame | None:
    """Per method, over its tuned stages (kept_by_stage's rows): the cells that kept their start
    (`kept`) of the cells that say (`cells`); None where no cell says."""
    if stages is None or not len(stages) or not stages["known"].sum():
        return None
    g = stages[stages["known"] > 0].groupby("method", sort=False)
    return pd.DataFrame({"kept": g["kept_start"].sum(), "cells": g["known"].sum()}).reset_index()


def exact_zero_gains(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Per method setting: off-diagonal per-seed gains, and the share that is exactly 0 (both cells
    scored alike on every test image's metric: usually both kept the same prompt)."""
    off = seed_table[(seed_table["source"] != seed_table["target"]) & seed_table["gain_pts"].notna()]
    g = off.groupby(SETTING_KEYS, dropna=False, sort=False)["gain_pts"]
    out = pd.DataFrame({"gains": g.size(), "zero": g.apply(lambda x: int((x == 0).sum()))}).reset_index()
    out["share"] = out["zero"] / out["gains"]
    return out
