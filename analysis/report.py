"""The study report: gains, similarities and their statistics drawn into one self-contained HTML file,
one PNG per figure, and CSV / Markdown tables, from a study folder alone (no kernel, no model).

Numbers are in points of each task's metric (x100). A gain or a statistic that cannot be computed is
shown as missing ("–", a hatched cell, "n/a"), never filled in."""

from __future__ import annotations

import base64
import html
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.assemble import (
    DESIGNED_TEXT,
    HEADLINE,
    SIMILARITIES,
    Analysis,
    Setting,
    analyse,
    finite,
    method_key,
    no_embeddings,
    setting_label,
    shots_text,
    stat_row,
)
from analysis.combine import DONOR
from analysis.figures import Panel, heatmap, save, scatter_grid
from analysis.files import markdown_text, write_atomic
from analysis.gains import SETTING_KEYS
from analysis.load import ReportError, load_study
from analysis.stats import offdiag_pairs

__all__ = ["Report", "ReportError", "make_report"]

log = logging.getLogger(__name__)

# Inside the study folder, but '_'-prefixed: dataset readers skip it, so the folder still reads as one
# Parquet table; a plain `report/` of CSV and PNG files would make pyarrow fail on them.
REPORT_DIR = "_report"


@dataclass(frozen=True)
class Report:
    """Where the report went and its short text summary (`lines`, also at the top of the HTML)."""

    folder: Path
    out: Path
    html: Path
    figures: tuple[Path, ...]
    tables: tuple[Path, ...]
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# --- formatting ------------------------------------------------------------------------------------


def _num(x, digits: int = 1, missing: str = "–") -> str:
    return f"{float(x):.{digits}f}" if finite(x) else missing


def _interval(est, lo, hi, digits: int = 2) -> str:
    if not finite(est):
        return "n/a"
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if finite(lo) and finite(hi) else " [interval n/a]"
    return f"{est:.{digits}f}{ci}"


def _slug(*parts) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


# --- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """A PNG of the report with the title and caption the HTML shows beside it."""

    path: Path
    title: str
    caption: str


def _gain_figure(a: Analysis, setting: Setting, out: Path) -> Figure:
    gain = a.gains[setting]
    values = gain.to_numpy(float)
    size = np.abs(values[np.isfinite(values)])
    # symmetric, so white is zero; past 50 cells the colours stop at the 98th percentile of |gain| so that
    # one outlier does not wash out the rest (the numbers in the cells stay exact)
    top = float(size.max()) if size.size else 1.0
    vmax = max(float(np.percentile(size, 98)) if size.size >= 50 else top, 0.5)
    clipped = top > vmax
    title = f"{setting_label(setting)}: gain of transfer over single-task tuning (points)"
    fig = heatmap(
        gain,
        title=title,
        cbar_label="gain (points of the metric)",
        xlabel="target task",
        ylabel="source task",
        cmap="RdBu_r",
        vmin=-vmax,
        vmax=vmax,
        digits=1,
        outline_diagonal=True,
        extend="both" if clipped else "neither",
        marks=_marks(a, setting),
    )
    n_missing = int(np.isnan(values).sum())
    scale = f"±{vmax:.1f} points" + (
        f"; larger gains take the end colours, up to {top:.1f}" if clipped else ""
    )
    caption = (
        f"Cell (source row, target column): mean over seeds of transfer minus single-task points on the "
        f"target; red = the source helps, blue = it hurts (colour scale symmetric, {scale}). "
        f"{n_missing} of {gain.size} cells have no gain and are left blank (hatched). The outlined "
        f"diagonal (source = target) is not used in any statistic. Task order: {a.order_note}. "
        + _noise_caption(a, setting)
    )
    name = _slug("gain", *setting[:2], f"{shots_text(setting[2])}shot")
    return Figure(save(fig, out / f"{name}.png"), title, caption)


def _noise_row(a: Analysis, setting: Setting) -> pd.Series | None:
    if a.noise is None:
        return None
    n = a.noise
    hit = n[(n["method"] == setting[0]) & (n["mode"] == setting[1]) & (n["shots"] == setting[2])]
    return hit.iloc[0] if len(hit) else None


def _marks(a: Analysis, setting: Setting) -> pd.DataFrame | None:
    """Cells whose mean gain lies more than 2 SE from zero (None when noise is unmeasured)."""
    row = _noise_row(a, setting)
    if row is None or not row["measured"]:
        return None
    s = a.summary
    part = s[(s["method"] == setting[0]) & (s["mode"] == setting[1]) & (s["shots"] == setting[2])]
    m = part.pivot_table(index="source", columns="target", values="beyond_2se", aggfunc="first")
    return m.reindex(index=a.tasks, columns=a.tasks).fillna(False).astype(bool)


def _noise_caption(a: Analysis, setting: Setting) -> str:
    row = _noise_row(a, setting)
    if row is None or not row["measured"]:
        return (
            "Seed noise unmeasured (one seed per pair): no cell is marked, and a gain of a few points "
            "may be noise."
        )
    return (
        f"Outlined cells: mean gain more than 2 standard errors from zero ({int(row['cells_beyond_2se'])} "
        f"cells); the seed sd of a gain, {row['seed_sd_pts']:.2f} points, is pooled over the "
        f"{int(row['pairs_multi_seed'])} pairs with two or more seeds and serves every pair."
    )


def _similarity_figure(a: Analysis, key: str, sim: pd.DataFrame, out: Path, suffix: str = "") -> Figure:
    m = sim.reindex(index=a.tasks, columns=a.tasks)
    values = m.to_numpy(float).copy()
    np.fill_diagonal(values, np.nan)
    present = values[np.isfinite(values)]
    lo, hi = (float(present.min()), float(present.max())) if present.size else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    name, axis = SIMILARITIES[key]
    title = f"{name} similarity{suffix}"
    fig = heatmap(
        m,
        title=title,
        cbar_label=axis,
        xlabel="target task",
        ylabel="source task",
        vmin=lo,
        vmax=hi,
        digits=2,
    )
    caption = (
        f"{axis[0].upper()}{axis[1:]}; the colour scale spans the off-diagonal values "
        f"({lo:.2f} to {hi:.2f}). Blank (hatched) cells: no value. Same task order as the gain heatmaps."
    )
    if key == "label_match":
        caption += " Asymmetric: mean over the target's classes of the best-matching source class."
    if key in DESIGNED_TEXT:
        caption += f" Designed by construction of the suite: {DESIGNED_TEXT[key]}."
    stem = _slug("similarity", key, suffix.strip(" ()").replace(" ", "-"))
    return Figure(save(fig, out / f"{stem}.png"), title, caption)


def _scatter_figure(a: Analysis, setting: Setting, out: Path) -> Figure | None:
    panels = []
    for key, sim in a.sims_for(setting[0], setting[2]).items():
        pairs = offdiag_pairs({"gain": a.gains[setting], "sim": sim})
        row = stat_row(a, setting, key)
        stat = _interval(row["estimate"], row["lo"], row["hi"]) if row is not None else "n/a"
        panels.append(
            Panel(
                x=pairs["sim"].to_numpy(float),
                y=pairs["gain"].to_numpy(float),
                title=f"{SIMILARITIES[key][0]}: Spearman ρ = {stat}\nn = {len(pairs)} pairs",
                xlabel=SIMILARITIES[key][1],
                ylabel="gain (points)",
            )
        )
    if not panels:
        return None
    title = f"{setting_label(setting)}: gain vs task similarity"
    fig = scatter_grid(panels, title + " (off-diagonal pairs)")
    caption = (
        "Each point is one source → target pair (mean gain over seeds, in points). Red line: least-squares "
        f"fit. ρ: Spearman correlation with its 95% interval from {a.n_boot} bootstrap resamples of tasks."
    )
    name = _slug("scatter", *setting[:2], f"{shots_text(setting[2])}shot")
    return Figure(save(fig, out / f"{name}.png"), title, caption)


def _points_figure(a: Analysis, out: Path) -> Figure | None:
    rows = {}
    if len(a.zeroshot):
        rows["zero-shot"] = a.zeroshot.groupby(level=0).mean()
    several = a.singles["shots"].nunique() > 1
    for (method, shots), part in a.singles.groupby(["method", "shots"], sort=False):
        name = f"{method} single" + (f" {shots_text(shots)}-shot" if several else "")
        rows[name] = part.set_index("target")["single_pts"]
    if not rows:
        return None
    order = sorted(rows, key=lambda r: (r != "zero-shot", method_key(r.split(" ")[0]), r))
    m = pd.DataFrame({r: rows[r] for r in order}).T.reindex(columns=a.tasks).astype(float)
    title = "Single-task tuning and zero-shot, per task (points)"
    fig = heatmap(
        m, title=title, cbar_label="points of the metric", xlabel="task", ylabel="run", vmin=0.0, vmax=100.0
    )
    caption = (
        "Mean over seeds of each method's single-task run, and the frozen model with the hand-made "
        "template (zero-shot), in points of each task's metric. Blank (hatched): no finite value."
    )
    return Figure(save(fig, out / "points-single-zeroshot.png"), title, caption)


def draw(a: Analysis, out: Path) -> dict[str, list[Figure]]:
    """Every figure, grouped by report section."""
    figures: dict[str, list[Figure]] = {"gains": [], "points": [], "similarity": [], "scatter": []}
    figures["gains"] = [_gain_figure(a, s, out) for s in a.settings]
    points = _points_figure(a, out)
    figures["points"] = [points] if points else []
    several_visual = len(a.visual) > 1
    several_prompt = len({s for _, s in a.prompt}) > 1
    for key in SIMILARITIES:
        if key in a.shared_sims:
            figures["similarity"].append(_similarity_figure(a, key, a.shared_sims[key], out))
        elif key == "visual":
            for shots, sim in a.visual.items():
                suffix = f" ({shots_text(shots)}-shot)" if several_visual else ""
                figures["similarity"].append(_similarity_figure(a, key, sim, out, suffix))
        elif key == "prompt":
            for (method, shots), sim in sorted(a.prompt.items(), key=lambda kv: method_key(kv[0][0])):
                suffix = f" ({method}" + (f", {shots_text(shots)}-shot)" if several_prompt else ")")
                figures["similarity"].append(_similarity_figure(a, key, sim, out, suffix))
    figures["scatter"] = [f for s in a.settings if (f := _scatter_figure(a, s, out)) is not None]
    return figures


# --- tables ----------------------------------------------------------------------------------------


def _setting_col(df: pd.DataFrame) -> pd.Series:
    return pd.Series([setting_label(s) for s in df[SETTING_KEYS].itertuples(index=False)], index=df.index)


def method_table(a: Analysis) -> pd.DataFrame:
    """The per-method summary as display strings."""
    m = a.methods
    out = pd.DataFrame(
        {
            "setting": [
                setting_label(s)
                if isinstance(s[1], str)
                else f"{s[0]} {shots_text(s[2])}-shot (no transfers)"
                for s in m[SETTING_KEYS].itertuples(index=False)
            ],
            "zero-shot (pts)": m["mean_zeroshot_pts"].map(_num),
            "single (pts)": m["mean_single_pts"].map(_num),
            "mean gain (pts)": m["mean_gain_pts"].map(lambda x: _num(x, 2)),
            "positive gains": m["share_positive"].map(lambda x: f"{100 * x:.0f}%" if finite(x) else "–"),
            "pairs with a gain": m["n_pairs"].map(lambda x: f"{int(x)}" if finite(x) else "0"),
            "pairs missing": m["n_missing_pairs"].map(lambda x: f"{int(x)}" if finite(x) else "–"),
        }
    )
    for key, (name, _) in SIMILARITIES.items():
        if f"rho_{key}" in m:
            out[f"ρ {name}"] = [
                _interval(r[f"rho_{key}"], r[f"rho_{key}_lo"], r[f"rho_{key}_hi"]) for _, r in m.iterrows()
            ]
    return out


def correlation_display(a: Analysis) -> pd.DataFrame:
    """One row per setting and similarity: Spearman ρ with the gain and with the pairwise residual."""
    c = a.correlations
    rows = []
    for (method, mode, shots, key), part in c.groupby([*SETTING_KEYS, "similarity"], sort=False):
        by = part.set_index("kind")
        row = {"setting": setting_label((method, mode, shots)), "similarity": SIMILARITIES[key][0]}
        for kind, name in (("gain", "ρ with gain"), ("residual", "ρ with pairwise residual")):
            e = by.loc[kind] if kind in by.index else None
            row[f"{name} [95% interval]"] = (
                _interval(e["estimate"], e["lo"], e["hi"]) if e is not None else "n/a"
            )
        first = part.iloc[0]
        row.update(pairs=first["n_pairs"], tasks=first["n_tasks"], **{"valid resamples": first["n_boot"]})
        rows.append(row)
    return pd.DataFrame(rows)


def _partial_display(a: Analysis) -> pd.DataFrame:
    p = a.partial
    return pd.DataFrame(
        {
            "setting": _setting_col(p),
            "similarity": p["similarity"].map(lambda k: SIMILARITIES[k][0]),
            "controlling for": p["controls"].map(lambda k: SIMILARITIES[k][0]),
            "partial Spearman ρ [95% interval]": [
                _interval(e, lo, hi) for e, lo, hi in zip(p["estimate"], p["lo"], p["hi"], strict=True)
            ],
            "pairs": p["n_pairs"],
        }
    )


def _regression_display(a: Analysis) -> pd.DataFrame:
    r = a.regression
    terms = {"intercept": "intercept (points)", "r2": "R²"}
    return pd.DataFrame(
        {
            "setting": _setting_col(r),
            "predictors": r["predictors"].map(
                lambda s: " + ".join(SIMILARITIES[k][0] for k in s.split(" + "))
            ),
            "term": r["term"].map(
                lambda t: terms[t] if t in terms else f"{SIMILARITIES[t][0]} (points per SD)"
            ),
            "estimate [95% interval]": [
                _interval(e, lo, hi) for e, lo, hi in zip(r["estimate"], r["lo"], r["hi"], strict=True)
            ],
            "pairs": r["n_pairs"],
        }
    )


def _ranking_display(a: Analysis) -> pd.DataFrame:
    r = a.ranking
    return pd.DataFrame(
        {
            "setting": _setting_col(r),
            "sources ranked by": r["ranking"].map(lambda k: SIMILARITIES[k][0] if k in SIMILARITIES else k),
            "NDCG@5": r["ndcg"].map(lambda x: _num(x, 3)),
            "regret@1 (points)": r["regret"].map(lambda x: _num(x, 2)),
            "targets": r["n_targets"],
        }
    )


def _pvalue(x) -> str:
    if not finite(x):
        return "n/a"
    return f"{x:.3f}" if x >= 0.001 else "<0.001"


PER_TARGET_NAMES = {
    "spearman": "Spearman ρ",
    "kendall": "Kendall τb",
    "ndcg@3": "NDCG@3",
    "ndcg@5": "NDCG@5",
    "regret@1": "regret@1 (points)",
    "regret@3": "regret@3 (points)",
    "rel_regret@1": "regret@1 (share of best)",
    "rel_regret@3": "regret@3 (share of best)",
}


def per_target_display(a: Analysis, statistics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """One row per setting and similarity: each per-target statistic's mean over targets with its
    interval and p-value, NDCG and regret beside their random expectation."""
    t = a.per_target
    rows = []
    for (method, mode, shots, key), part in t.groupby([*SETTING_KEYS, "similarity"], sort=False):
        by = part.set_index("statistic")
        row = {"setting": setting_label((method, mode, shots)), "similarity": SIMILARITIES[key][0]}
        for st in statistics:
            if st not in by.index:
                continue
            e = by.loc[st]
            text = f"{_interval(e['estimate'], e['lo'], e['hi'])}, p {_pvalue(e['p_value'])}"
            if st not in ("spearman", "kendall"):
                text += f" (random {_num(e['random'], 2)})"
            row[PER_TARGET_NAMES[st]] = text
        row["targets"] = int(part["n_targets"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def model_display(a: Analysis) -> pd.DataFrame:
    """One row per setting, model and term: points of gain per unit of the term, interval, p-value."""
    m = a.model
    return pd.DataFrame(
        {
            "setting": _setting_col(m),
            "model": m["model"],
            "term": m["term"].map(lambda k: SIMILARITIES[k][0]),
            "points per unit [95% interval]": [
                _interval(e, lo, hi) for e, lo, hi in zip(m["estimate"], m["lo"], m["hi"], strict=True)
            ],
            "p-value": m["p_value"].map(_pvalue),
            "R² (with source and target)": m["r2"].map(lambda x: _num(x, 3)),
            "pairs": m["n_pairs"],
        }
    )


def _interval_col(n: pd.DataFrame, name: str) -> list[str]:
    return [
        f"{_num(x, 2, 'n/a')} [{_num(lo, 2, 'n/a')}, {_num(hi, 2, 'n/a')}]" if finite(x) else "n/a"
        for x, lo, hi in zip(n[name], n[f"{name}_lo"], n[f"{name}_hi"], strict=True)
    ]


def _noise_display(a: Analysis) -> pd.DataFrame:
    n = a.noise
    pct = lambda x: f"{100 * x:.1f}%" if finite(x) else "n/a"  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(n),
            "seed sd of a gain (pts)": n["seed_sd_pts"].map(lambda x: _num(x, 2, "unmeasured")),
            "pairs with 2+ seeds": [
                f"{int(m)} of {int(p)}" for m, p in zip(n["pairs_multi_seed"], n["pairs"], strict=True)
            ],
            "pairwise share": n["pairwise_share"].map(pct),
            "noise floor (share)": n["noise_share"].map(pct),
            "pairwise above noise": n["pairwise_above_noise"].map(pct),
            "reliability": _interval_col(n, "reliability"),
            "reliability within targets": _interval_col(n, "reliability_within"),
            "cells > 2 SE": n["cells_beyond_2se"].where(n["measured"]).map(lambda x: _num(x, 0, "n/a")),
        }
    )


def _decomposition_display(a: Analysis) -> pd.DataFrame:
    d = a.decomposition
    if a.noise is not None:  # the seed noise beside the shares: how much of the pairwise part it is
        d = d.merge(
            a.noise[[*SETTING_KEYS, "noise_share", "pairwise_above_noise"]], on=SETTING_KEYS, how="left"
        )
    else:
        d = d.assign(noise_share=np.nan, pairwise_above_noise=np.nan)
    pct = lambda x: f"{100 * x:.1f}%" if finite(x) else "n/a"  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(d),
            "mean gain (pts)": d["mean_gain_pts"].map(lambda x: _num(x, 2)),
            "source effect": d["share_source"].map(pct),
            "target effect": d["share_target"].map(pct),
            "interaction (pairwise)": d["share_residual"].map(pct),
            "of which seed noise": d["noise_share"].map(lambda x: pct(x) if finite(x) else "unmeasured"),
            "pairwise above noise": d["pairwise_above_noise"].map(pct),
            "cross term": d["share_cross"].map(pct),
            "additive R²": d["r2_additive"].map(lambda x: _num(x, 3)),
            "cells": d["n_cells"],
        }
    )


def _best_display(a: Analysis) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Rows: targets in the shared order; per setting the target's single points, its best off-diagonal
    source and that source's gain. Returns the table and its header groups (one per setting)."""
    b = a.best
    zeroshot = a.zeroshot.groupby(level=0).mean().reindex(a.tasks).map(_num)
    table = pd.DataFrame({"target": a.tasks, "zero-shot (pts)": zeroshot.to_numpy()})
    groups = [("", 2)]
    for setting in a.settings:
        part = b[(b["method"] == setting[0]) & (b["mode"] == setting[1]) & (b["shots"] == setting[2])]
        part = part.set_index("target").reindex(a.tasks)
        gains = [
            f"{g:+.1f}" + (f" ± {sd:.1f}" if finite(sd) else "") if finite(g) else "–"
            for g, sd in zip(part["best_gain_pts"], part["best_gain_sd_pts"], strict=True)
        ]
        extra = pd.DataFrame(
            {
                "single (pts)": part["single_pts"].map(_num).to_numpy(),
                "best source": part["best_source"].map(lambda s: s if isinstance(s, str) else "–").to_numpy(),
                "its gain (pts)": gains,
            }
        )
        table = pd.concat([table, extra], axis=1)
        groups.append((setting_label(setting), 3))
    return table, groups


def _claim(est, lo, hi, digits: int = 1, unit: str = "pts") -> str:
    """A signed estimate in `unit` with its interval, saying so when the interval includes 0."""
    if not finite(est):
        return "n/a"
    value = f"{est:+.{digits}f} {unit}".rstrip()
    if not (finite(lo) and finite(hi)):
        return f"{value} [interval n/a]"
    text = f"{value} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return text + (" (interval includes 0: no claim)" if lo <= 0 <= hi else "")


def _left_out(r: pd.Series) -> str:
    parts = [
        (r["n_failed"], "failed"),
        (r["n_no_single"], "without a single run"),
        (r["n_missing"], "missing"),
    ]
    return ", ".join(f"{int(n)} {why}" for n, why in parts if finite(n) and n) or "none"


def _claims(df: pd.DataFrame, est: str, lo: str, hi: str, digits: int = 1) -> list[str]:
    # the table's column names carry the unit
    return [
        _claim(e, low, high, digits, unit="") for e, low, high in zip(df[est], df[lo], df[hi], strict=True)
    ]


def _policy_display(t: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The columns a multi-source and a group table share, one row per method, shots and policy."""
    lead = [
        f"{c}, {int(n)} targets" if finite(n) else "–"
        for c, n in zip(
            _claims(t, "diff_random_pts", "diff_random_lo", "diff_random_hi"), t["n_paired"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "setting": [f"{m} {shots_text(k)}-shot" for m, k in zip(t["method"], t["shots"], strict=True)],
            "policy": t["policy"],
            "gain over single (pts) [95% interval]": _claims(t, "gain_pts", "gain_lo", "gain_hi"),
            "wins over single": [
                f"{int(w)} of {int(n)}" for w, n in zip(t["wins"], t["n_targets"], strict=True)
            ],
            f"minus {baseline} (pts) [95% interval]": lead,
            "cells left out": [_left_out(r) for _, r in t.iterrows()],
        }
    )


def multisource_display(a: Analysis) -> pd.DataFrame:
    """Per method, shots and policy: the multi-source gain over single, wins, and the lead over random_k."""
    return _policy_display(a.multisource, "random_k")


def groups_display(a: Analysis) -> pd.DataFrame:
    """Per method, shots and policy: the groups found, their members' gain over single, and the lead
    over random groups of the same sizes."""
    g = a.groups
    out = _policy_display(g, "random groups")
    out.insert(2, "groups", g["groups"].to_numpy())
    return out


def _predictor_name(key: str) -> str:
    return "donor (mean gain on the other targets)" if key == DONOR else SIMILARITIES.get(key, (key,))[0]


def prediction_display(a: Analysis) -> pd.DataFrame:
    """Per setting and predictor: the mean actual gain of the predicted k sources beside the best k and
    k at random, the lead over random and the regret with their intervals, and how often the best
    source is among the predicted."""
    p = a.prediction
    pts = lambda x: _num(x, 2)  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(p),
            "predictor": p["predictor"].map(_predictor_name),
            "k": p["k"],
            "predicted k (pts)": p["predicted_gain_pts"].map(pts),
            "best k (pts)": p["oracle_gain_pts"].map(pts),
            "random k (pts)": p["random_gain_pts"].map(pts),
            "predicted − random [95% interval]": _claims(
                p, "vs_random_pts", "vs_random_lo", "vs_random_hi", 2
            ),
            "regret: best − predicted [95% interval]": [
                _interval(e, lo, hi)
                for e, lo, hi in zip(p["regret_pts"], p["regret_lo"], p["regret_hi"], strict=True)
            ],
            "best source among predicted": p["hit_rate"].map(
                lambda x: f"{100 * x:.0f}%" if finite(x) else "–"
            ),
            "targets": p["n_targets"],
        }
    )


def prediction_targets_display(a: Analysis) -> pd.DataFrame:
    """Per setting and target: its best source by gain, then the k sources each predictor chose."""
    p = a.prediction_targets
    wide = p.pivot_table(
        index=[*SETTING_KEYS, "target", "best_source"],
        columns="predictor",
        values="predicted",
        aggfunc="first",
    )
    wide = wide[list(dict.fromkeys(p["predictor"]))].reset_index()
    out = pd.DataFrame(
        {"setting": _setting_col(wide), "target": wide["target"], "best source": wide["best_source"]}
    )
    for key in dict.fromkeys(p["predictor"]):
        out[f"chosen by {_predictor_name(key)}"] = wide[key].to_numpy()
    return out


def _singles_display(a: Analysis) -> pd.DataFrame:
    s = a.singles.copy()
    s["order"] = s["target"].map({t: i for i, t in enumerate(a.tasks)})
    s["rank"] = s["method"].map(lambda m: method_key(m)[0])
    s = s.sort_values(["rank", "method", "shots", "order"])
    return pd.DataFrame(
        {
            "method": s["method"],
            "shots": s["shots"].map(shots_text),
            "task": s["target"],
            "single (pts)": s["single_pts"].map(_num),
            "sd over seeds": s["single_sd_pts"].map(_num),
            "seeds with a value": s["n_seeds"],
        }
    )


def _progress_display(a: Analysis) -> pd.DataFrame:
    p = a.progress.copy()
    for col in ("expected", "missing"):
        p[col] = p[col].map(lambda x: f"{int(x)}" if finite(x) else "?")
    return p.rename(columns={"nan": "ok but NaN value"})


def _missing_lines(a: Analysis) -> list[str]:
    lines = []
    n_seeds = a.seed_table.groupby(SETTING_KEYS, dropna=False, sort=False)["seed"].nunique()
    for _, r in a.missing.iterrows():
        setting = tuple(r[k] for k in SETTING_KEYS)
        seeds = int(n_seeds.get(setting, 0)) if setting in n_seeds.index else 0
        per = "pairs" if seeds == 1 else "(pair, seed) combinations"
        present = f"{int(r['present'])} of {int(r['expected'])} off-diagonal {per} have a gain"
        text = f"{setting_label(setting)}: {present}"
        if r["missing"]:
            reasons = [
                (r["transfer_absent"], "transfer cell not stored"),
                (r["transfer_failed"], "transfer failed or NaN"),
                (r["single_absent"], "single run of the target not stored"),
                (r["single_failed"], "single run failed or NaN"),
            ]
            why = ", ".join(f"{int(n)} {w}" for n, w in reasons if n)
            text += f"; {int(r['missing'])} missing ({why})"
        else:
            text += "; none missing"
        lines.append(text)
    p = a.progress
    for _, r in p[(p["stage"] == "transfer") & (p["stored"] == 0)].iterrows():
        lines.append(f"{r['method']}: no transfer cells stored yet ({_num(r['expected'], 0, '?')} expected)")
    return lines


def _markdown(df: pd.DataFrame) -> str:
    cells = df.astype(str).map(markdown_text)
    head = "| " + " | ".join(map(markdown_text, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, rule, *("| " + " | ".join(row) + " |" for row in cells.to_numpy())])


def write_tables(a: Analysis, out: Path, lines: Sequence[str]) -> list[Path]:
    """CSV files of the raw numbers and summary.md with the formatted summary and correlation tables."""
    written = []

    def csv(name: str, df: pd.DataFrame | None) -> None:
        if df is not None:
            written.append(write_atomic(out / name, df.to_csv(index=False)))

    csv("summary.csv", a.methods)
    csv("progress.csv", a.progress)
    csv("singles.csv", a.singles)
    csv("gains.csv", a.summary)
    csv("best_sources.csv", a.best)
    csv("missing.csv", a.missing)
    csv("correlations.csv", a.correlations)
    csv("partial_correlations.csv", a.partial)
    csv("regression.csv", a.regression)
    csv("ranking.csv", a.ranking)
    csv("decomposition.csv", a.decomposition)
    csv("per_target.csv", a.per_target)
    csv("model.csv", a.model)
    csv("noise.csv", a.noise)
    csv("multisource.csv", a.multisource)
    csv("groups.csv", a.groups)
    csv("source_prediction.csv", a.prediction)
    csv("source_prediction_targets.csv", a.prediction_targets)
    md = [
        f"# Study {markdown_text(a.tables.name)}: summary",
        "",
        *(f"- {markdown_text(line)}" for line in lines),
        "",
    ]
    md += ["## Per method (points of the metric)", "", _markdown(method_table(a)), ""]
    if a.per_target is not None:
        md += ["## Per target: sources ranked by each similarity, mean over targets", ""]
        md += [_markdown(per_target_display(a)), ""]
    if a.model is not None:
        md += ["## Crossed-effects model: gain ~ terms + source + target", ""]
        md += [_markdown(model_display(a)), ""]
    if a.correlations is not None:
        md += ["## Global Spearman correlations with gain (95% task-bootstrap intervals)", ""]
        md += [_markdown(correlation_display(a)), ""]
    for title, table, display in (
        (
            "Multi-source initialisation against single-task tuning (points)",
            a.multisource,
            multisource_display,
        ),
        ("Groups tuned jointly against single-task tuning (points)", a.groups, groups_display),
        ("Sources chosen with each target held out (points)", a.prediction, prediction_display),
    ):
        if table is not None:
            md += [f"## {title}", "", _markdown(display(a)), ""]
    written.append(write_atomic(out / "summary.md", "\n".join(md)))
    return written


# --- text summary ----------------------------------------------------------------------------------


def summary_lines(a: Analysis) -> list[str]:
    """The short text summary: counts, unreadable files, and per method setting its gain and the
    Spearman correlations of gain with the similarities (designed first)."""
    p = a.progress
    expected = p["expected"].dropna()
    total = f"{int(expected.sum())}" if len(expected) == len(p) else "?"
    missing = int(p["missing"].dropna().sum())
    backbone = f" (backbone {a.tables.backbone})" if a.tables.backbone else ""
    lines = [
        f"study {a.tables.name}{backbone}: {int(p['stored'].sum())} of {total} expected cells stored; "
        f"{int(p['ok'].sum())} ok, {int(p['failed'].sum())} failed, {a.nan_cells} NaN, {missing} missing"
    ]
    if a.tables.skipped:
        names = ", ".join(f"{s.name} ({s.reason})" for s in a.tables.skipped)
        lines.append(f"skipped {len(a.tables.skipped)} unreadable file(s): {names}")
    if not a.settings:
        methods = ", ".join(dict.fromkeys(a.singles["method"])) or "none"
        lines.append(f"no transfer cells: no gains to report (single runs of: {methods})")
    m = a.methods.set_index(SETTING_KEYS) if a.settings else None
    for setting in a.settings:
        r = m.loc[setting]
        share = f", {100 * r['share_positive']:.0f}% positive" if finite(r["share_positive"]) else ""
        lines.append(
            f"{setting_label(setting)}: mean gain {_num(r['mean_gain_pts'], 2, 'n/a')} points over "
            f"{int(r['n_pairs'])} pairs{share}; {int(r['n_missing_pairs'])} pairs missing"
        )
        lines += _headline(a, setting)
        for key in ("designed_visual", "designed_label", "visual", "label"):
            row = stat_row(a, setting, key)
            if row is not None:
                lines.append(
                    f"{setting_label(setting)}: Spearman(gain, {SIMILARITIES[key][0]}) = "
                    f"{_interval(row['estimate'], row['lo'], row['hi'])} over {int(row['n_pairs'])} pairs"
                )
    lines += combine_lines(a)
    if a.tables.embeddings is None:
        lines.append(no_embeddings(a.tables))
    return lines


def combine_lines(a: Analysis) -> list[str]:
    """Per method and shots: the multi-source "all" policy against single and each other policy's lead
    over random_k; each clustered group policy against single and its random groups."""
    lines = []
    for table, what in ((a.multisource, "multi-source"), (a.groups, "groups")):
        if table is None:
            continue
        for (method, shots), part in table.groupby(["method", "shots"], sort=False):
            items = []
            for _, r in part.iterrows():
                if r["policy"] == "all" or (what == "groups" and finite(r["diff_random_pts"])):
                    items.append(
                        f"{r['policy']} vs single: {_claim(r['gain_pts'], r['gain_lo'], r['gain_hi'])}, "
                        f"wins {int(r['wins'])}/{int(r['n_targets'])}"
                    )
                if finite(r["diff_random_pts"]):
                    base = "random_k" if what == "multi-source" else "random groups"
                    lead = _claim(r["diff_random_pts"], r["diff_random_lo"], r["diff_random_hi"])
                    items.append(f"{r['policy']} - {base}: {lead}")
            lines.append(f"{method} {shots_text(shots)}-shot {what}: " + "; ".join(items))
    return lines


def _headline(a: Analysis, setting: Setting) -> list[str]:
    """The setting's per-target Spearman and model coefficient for each similarity, then its noise."""
    label = setting_label(setting)
    lines = []
    if a.per_target is not None:
        t = a.per_target
        part = t[
            (t["method"] == setting[0]) & (t["mode"] == setting[1]) & (t["shots"] == setting[2])
            & (t["statistic"] == "spearman")
        ]  # fmt: skip
        for _, r in part.iterrows():
            lines.append(
                f"{label}: per-target Spearman(gain, {SIMILARITIES[r['similarity']][0]}) = "
                f"{_interval(r['estimate'], r['lo'], r['hi'])}, p {_pvalue(r['p_value'])}, "
                f"mean over {int(r['n_targets'])} targets"
            )
    if a.model is not None:
        m = a.model
        part = m[(m["method"] == setting[0]) & (m["mode"] == setting[1]) & (m["shots"] == setting[2])]
        for _, r in part.iterrows():
            lines.append(
                f"{label}: model ({r['model']} terms + source + target): {SIMILARITIES[r['term']][0]} "
                f"{_interval(r['estimate'], r['lo'], r['hi'])} points per unit, p {_pvalue(r['p_value'])}"
            )
    row = _noise_row(a, setting)
    if row is not None and row["measured"]:
        lines.append(
            f"{label}: seed noise sd {row['seed_sd_pts']:.2f} points (pooled over "
            f"{int(row['pairs_multi_seed'])} pairs with 2+ seeds, used for all {int(row['pairs'])}); "
            f"{int(row['cells_beyond_2se'])} cells > 2 SE from 0; pairwise share "
            f"{100 * row['pairwise_share']:.1f}%, of which noise {100 * row['noise_share']:.1f}%; "
            f"reliability {_num(row['reliability'], 2, 'n/a')}"
        )
    elif row is not None:
        lines.append(
            f"{label}: NOISE UNMEASURED: one seed per pair, so no standard errors; a gain of a few points "
            "may be seed noise, and the pairwise share includes it"
        )
    return lines


# --- HTML ------------------------------------------------------------------------------------------

NUMERIC = re.compile(r"^(?:[-+]?\d|–$|n/a|\?$)")  # a display value that reads as a number
CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px auto;
       max-width: 1360px; padding: 0 16px; color: #222; line-height: 1.45; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 8px 0 18px; font-size: 13px; }
th, td { border: 1px solid #d4d4d4; padding: 3px 8px; text-align: left; white-space: nowrap; }
th { background: #f2f2f2; white-space: normal; } .n { text-align: right; }
figure { margin: 14px 0 26px; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 13px; color: #444; max-width: 1100px; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 12px; margin: 8px 0; }
.lines { background: #f6f8fa; padding: 10px 14px; font-size: 13px; white-space: pre-wrap; }
nav a { margin-right: 14px; }
"""


def _table_html(df: pd.DataFrame, groups: Sequence[tuple[str, int]] = ()) -> str:
    """A table of display values (missing ones shown as "–"); columns whose every value reads as a
    number are right-aligned. `groups`: an optional header row above, (label, columns spanned)."""
    esc = html.escape
    rows = [
        ["–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in row]
        for row in df.itertuples(index=False, name=None)
    ]
    numeric = [bool(rows) and all(NUMERIC.match(r[k]) for r in rows) for k in range(df.shape[1])]
    align = ['class="n"' if n else "" for n in numeric]
    head = "".join(f"<th {a}>{esc(str(c))}</th>" for c, a in zip(df.columns, align, strict=True))
    top = "".join(f'<th colspan="{n}">{esc(label)}</th>' for label, n in groups)
    body = "".join(
        "<tr>" + "".join(f"<td {a}>{esc(v)}</td>" for v, a in zip(r, align, strict=True)) + "</tr>"
        for r in rows
    )
    top_row = f"<tr>{top}</tr>" if groups else ""
    return f"<table><thead>{top_row}<tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(fig.title)}">'
        f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}</figcaption></figure>"
    )


def _notes_html(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)


def _section(anchor: str, title: str, body: Sequence[str]) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>\n' + "\n".join(body)


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _header_html(a: Analysis, lines: Sequence[str]) -> list[str]:
    t = a.tables
    spec = t.meta.get("spec") if isinstance(t.meta.get("spec"), dict) else {}
    facts = [
        f"backbone: {t.backbone or 'unknown'}",
        f"{len(a.tasks)} tasks",
        f"shots: {', '.join(shots_text(s) for s in sorted(set(a.singles['shots'].dropna())) or ['–'])}",
        f"seeds: {', '.join(str(s) for s in spec.get('seeds', [])) or '–'}",
        f"transfer modes: {', '.join(spec.get('modes', [])) or '–'}",
    ]
    body = [f"<h1>Transfer study report: {html.escape(t.name)}</h1>", _p(" · ".join(facts))]
    body.append(_p(f"Folder: {t.folder}"))
    if t.skipped:
        items = "".join(f"<li>{html.escape(s.name)}: {html.escape(s.reason)}</li>" for s in t.skipped)
        body.append(f'<div class="note">Skipped {len(t.skipped)} unreadable file(s):<ul>{items}</ul></div>')
    if a.nan_cells:
        nan = f"{a.nan_cells} cell(s) report status ok without a finite value (NaN); they count as missing."
        body.append(_notes_html([nan]))
    body.append(f'<div class="lines">{html.escape(chr(10).join(lines))}</div>')
    body.append(_section("progress", "Cells: done, failed and missing", [_table_html(_progress_display(a))]))
    return body


def render_html(a: Analysis, figures: Mapping[str, list[Figure]], lines: Sequence[str]) -> str:
    """The whole report as one self-contained HTML page (inline CSS, images as data URIs)."""
    body = _header_html(a, lines)
    summary = [_table_html(method_table(a))] if a.methods is not None and len(a.methods) else []
    summary.append(
        _p(
            "Points of each task's metric (x100). Mean gain and positive share over the off-diagonal "
            "pairs with a gain; ρ: Spearman correlation of gain with each similarity over those pairs, "
            f"95% interval from {a.n_boot} bootstrap resamples of tasks."
        )
    )
    summary += [_p(line) for line in _missing_lines(a)]
    body.append(_section("summary", "Summary per method", summary))
    if a.settings:
        body.append(_section("gains", "Gain heatmaps", [_figure_html(f) for f in figures["gains"]]))
    else:
        none = (
            "No transfer cells in this study: no gains, heatmaps or correlations. What exists is shown "
            "below (single-task and zero-shot runs)."
        )
        body.append(_section("gains", "Gain heatmaps", [_notes_html([none])]))
    points = [_figure_html(f) for f in figures["points"]]
    if len(a.singles):
        points.append(_table_html(_singles_display(a)))
    body.append(_section("points", "Single-task and zero-shot results", points or [_p("No single runs.")]))
    sims = _notes_html(a.notes) + "".join(_figure_html(f) for f in figures["similarity"])
    if not a.tables.designed:
        sims += _p("Designed similarities: none (the study is not on the built-in suite).")
    else:
        items = "".join(
            f"<li><b>{html.escape(SIMILARITIES[k][0])}</b>: {html.escape(text)}</li>"
            for k, text in DESIGNED_TEXT.items()
            if k in a.shared_sims
        )
        sims += f"<p>Designed similarities and relations of the built-in suite:</p><ul>{items}</ul>"
    body.append(_section("similarity", "Task similarities", [sims]))
    if a.settings:
        scatter = [_figure_html(f) for f in figures["scatter"]] or [_p("No similarity to relate gains to.")]
        body.append(_section("scatter", "Gain vs similarity", scatter))
        body.append(
            _section(
                "best",
                "Best source per target",
                [_p("The off-diagonal source with the largest mean gain (± sd over seeds)."),
                 _table_html(*_best_display(a))],
            )
        )  # fmt: skip
        body.append(_section("statistics", "Statistics", _statistics_html(a)))
    combine = _combine_html(a)
    if combine:
        body.append(_section("combine", "Which sources to combine", combine))
    body.append(_section("method", "How these numbers are made", [_p(METHOD_TEXT.format(n_boot=a.n_boot))]))
    links = [("summary", "summary"), ("gains", "gains"), ("similarity", "similarities")]
    if a.settings:
        links += [("scatter", "scatter"), ("best", "best sources"), ("statistics", "statistics")]
    if combine:
        links.append(("combine", "sources to combine"))
    nav = "".join(f'<a href="#{k}">{v}</a>' for k, v in links)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Study report: '
        f"{html.escape(a.tables.name)}</title><style>{CSS}</style></head><body>\n<nav>{nav}</nav>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


METHOD_TEXT = (
    "gain(source, target) = metric of the transfer run minus metric of the target's single-task run, "
    "same method, shots and seed, in points; then the mean over seeds. A cell that failed, was not "
    "stored, or has a NaN value gives no gain (shown blank), never a zero. Statistics use the "
    "off-diagonal pairs only. Per target, the target's sources are ranked by a similarity and scored "
    "(ties averaged, never broken by the listing order); their mean over targets gets a p-value and an "
    "interval from {n_boot} random relabellings of the similarity's tasks, which keeps good donors and "
    "receptive targets from passing for pairwise structure. The model's intervals use standard errors "
    "clustered by source and by target. The global correlations' intervals are percentile intervals "
    "from {n_boot} bootstrap resamples of tasks (pairs that share a task are not independent). With "
    "several seeds on some pairs, the seed variance of a gain is pooled over those pairs and gives "
    "every pair its standard error. The decomposition fits gain = mean + source "
    "effect + target effect + interaction on the off-diagonal cells; a similarity that tracks the "
    "interaction (pairwise residual) carries pairwise structure, one that tracks only the raw gain may "
    "only pick good donors or receptive targets. Regression coefficients are points of gain per "
    "standard deviation of the similarity."
)


COMBINE_TEXT = {
    "multisource": (
        "Gain of each multi-source cell (one prompt tuned jointly on a set of source tasks, then tuned on "
        "the target) over the target's single-task run of the same method, shots and seed, in points; "
        "each target's gain is averaged over its seeds, then over targets. Wins: targets with a positive "
        "gain. The lead over random_k is paired by target (the policy's gain minus that of k sources drawn "
        "at random)."
    ),
    "groups": (
        "Each group's tasks tuned jointly on one prompt and evaluated on each member, against the member's "
        "single-task run, in points. The lead over random groups (the same sizes, members drawn at random) "
        "is paired by member."
    ),
    "prediction": (
        "For each target, its k sources are chosen without any of its own gains: by donor score (each "
        "source's mean gain over the other targets, from the gain matrix without the target's row and "
        "column) or as the k tasks most similar to it. Then the target's actual gains score the choice: "
        "their mean over the chosen k, beside the best k and k at random (the mean over all its sources); "
        "regret is best minus chosen. Transfer gains of pairs, so this says which single sources a target "
        "should be given; the multi-source cells above test whether combining them pays."
    ),
}


def _combine_html(a: Analysis) -> list[str]:
    """The multi-source and group results and the held-out choice of sources (empty when none)."""
    boot = f" Intervals: 95% percentile bootstrap over targets ({a.n_boot} resamples)."
    out = []
    if a.multisource is not None:
        out += ["<h3>Multi-source initialisation against single-task tuning</h3>"]
        out += [_p(COMBINE_TEXT["multisource"] + boot), _table_html(multisource_display(a))]
    if a.groups is not None:
        out += ["<h3>Groups tuned jointly against single-task tuning</h3>"]
        out += [_p(COMBINE_TEXT["groups"] + boot), _table_html(groups_display(a))]
    if a.prediction is not None:
        out += ["<h3>Predicted and actual best sources, each target held out</h3>"]
        out += [_p(COMBINE_TEXT["prediction"] + boot), _table_html(prediction_display(a))]
        out += [_table_html(prediction_targets_display(a))]
    elif a.settings:
        out.append(_p(f"Predicted sources: not computed (too few tasks with gains to choose {a.k} of them)."))
    return out


def _statistics_html(a: Analysis) -> list[str]:
    out = []
    if a.per_target is not None:
        out += [
            "<h3>Per target: each target's sources ranked by a similarity, mean over targets</h3>",
            _p(
                "Spearman and Kendall τb over each target's sources, NDCG@5 (relevance max(gain, 0)) and "
                "regret@1, ties averaged; 95% intervals and p-values from "
                f"{a.n_boot} random relabellings of the similarity's tasks."
            ),
            _table_html(per_target_display(a)),
        ]
    if a.model is not None:
        out += [
            "<h3>Crossed-effects model: gain ~ terms + source + target</h3>",
            _p(
                "OLS on the pair means with a fixed effect per source and per target, standard errors "
                "clustered by source and by target; a term that only tracks good donors or receptive "
                "targets gets no credit."
            ),
            _table_html(model_display(a)),
        ]
    if a.noise is not None:
        out += ["<h3>Seed noise</h3>", _table_html(_noise_display(a))]
    if a.correlations is not None:
        out += [
            "<h3>Global Spearman correlation with gain and with the pairwise residual (secondary)</h3>",
            _table_html(correlation_display(a)),
        ]
    else:
        out.append(_p("Correlations: not computed (no similarity, or too few gains)."))
    if a.partial is not None:
        out += ["<h3>Partial correlations</h3>", _table_html(_partial_display(a))]
    if a.regression is not None:
        out += [
            "<h3>Regression of gain on two similarities (standardised)</h3>",
            _table_html(_regression_display(a)),
        ]
    if a.ranking is not None:
        out += [
            "<h3>Ranking the sources of each target by similarity</h3>",
            _p("Mean over targets; random: the expectation over uniformly random rankings."),
            _table_html(_ranking_display(a)),
        ]
    if a.decomposition is not None:
        out += [
            "<h3>Variance decomposition: source, target and interaction</h3>",
            _table_html(_decomposition_display(a)),
        ]
    return out


# --- entry point -----------------------------------------------------------------------------------


# the kinds of file the report writes into its folder (tables, figures, summary, page)
REPORT_SUFFIXES = (".html", ".md", ".csv", ".png", ".svg", ".pdf")


def _check_outputs(out: Path) -> None:
    """Refuse, before anything is written, a report folder where a name of a report file is taken by
    something that is not a file (a folder, a pipe): the report would stop half written."""
    for entry in sorted(out.iterdir()):
        if entry.suffix in REPORT_SUFFIXES and not entry.is_symlink() and not entry.is_file():
            raise ReportError(f"{entry} is not a file, and the report writes a file there; move it away")


def make_report(
    folder: str | Path, out: str | Path | None = None, n_boot: int = 1000, seed: int = 0
) -> Report:
    """Write the report of a study folder into `out` (default `<folder>/_report/`): report.html, one PNG
    per figure, CSV tables and summary.md. Raises ReportError for a missing folder, a folder that is
    not a study, and a study without any readable cell."""
    if n_boot < 0:
        raise ReportError(f"the number of bootstrap resamples must be 0 or more, got {n_boot}")
    tables = load_study(folder)
    if tables.cells.empty:
        why = f"; {len(tables.skipped)} unreadable file(s) skipped" if tables.skipped else ""
        raise ReportError(f"empty study: no cells in {tables.folder}{why}")
    if out is None and (tables.folder / REPORT_DIR).is_symlink():
        # a folder from elsewhere could point its report at any folder of the user's
        raise ReportError(f"{tables.folder / REPORT_DIR} is a symbolic link; remove it or pass --out")
    out = Path(out) if out is not None else tables.folder / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot write the report to {out}: {err}") from err
    _check_outputs(out)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # means of empty slices: missing stays NaN
        a = analyse(tables, n_boot, seed)
        figures = draw(a, out)
    lines = summary_lines(a)
    written = write_tables(a, out, lines)
    page = out / "report.html"
    write_atomic(page, render_html(a, figures, lines))
    log.info("report of %s written to %s", tables.folder, page)
    return Report(
        folder=tables.folder,
        out=out,
        html=page,
        figures=tuple(f.path for group in figures.values() for f in group),
        tables=tuple(written),
        lines=tuple(lines),
    )
