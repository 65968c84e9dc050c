"""The report's figures: per method setting a gain heatmap and gain-vs-similarity scatter panels, the
similarity heatmaps, single and zero-shot points, and the three methods' gains side by side in one
panel (PNG and SVG), each with the title and caption the page shows beside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.assemble import (
    DESIGNED_TEXT,
    SIMILARITIES,
    Analysis,
    Setting,
    method_key,
    setting_label,
    shots_text,
    stat_row,
)
from analysis.figures import Panel, heatmap, heatmap_row, save, save_vector, scatter_grid
from analysis.stats import offdiag_pairs
from analysis.text import interval, slug


@dataclass(frozen=True)
class Figure:
    """A PNG of the report with the title and caption the HTML shows beside it."""

    path: Path
    title: str
    caption: str
    vector: Path | None = None  # the same figure as SVG, for papers


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
    name = slug("gain", *setting[:2], f"{shots_text(setting[2])}shot")
    return Figure(save(fig, out / f"{name}.png"), title, caption)


def noise_row(a: Analysis, setting: Setting) -> pd.Series | None:
    if a.noise is None:
        return None
    n = a.noise
    hit = n[(n["method"] == setting[0]) & (n["mode"] == setting[1]) & (n["shots"] == setting[2])]
    return hit.iloc[0] if len(hit) else None


def _marks(a: Analysis, setting: Setting) -> pd.DataFrame | None:
    """Cells whose mean gain lies more than 2 SE from zero (None when noise is unmeasured)."""
    row = noise_row(a, setting)
    if row is None or not row["measured"]:
        return None
    s = a.summary
    part = s[(s["method"] == setting[0]) & (s["mode"] == setting[1]) & (s["shots"] == setting[2])]
    m = part.pivot_table(index="source", columns="target", values="beyond_2se", aggfunc="first")
    return m.reindex(index=a.tasks, columns=a.tasks).fillna(False).astype(bool)


def _noise_caption(a: Analysis, setting: Setting) -> str:
    row = noise_row(a, setting)
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
    stem = slug("similarity", key, suffix.strip(" ()").replace(" ", "-"))
    return Figure(save(fig, out / f"{stem}.png"), title, caption)


def _scatter_figure(a: Analysis, setting: Setting, out: Path) -> Figure | None:
    panels = []
    for key, sim in a.sims_for(setting[0], setting[2]).items():
        pairs = offdiag_pairs({"gain": a.gains[setting], "sim": sim})
        row = stat_row(a, setting, key)
        stat = interval(row["estimate"], row["lo"], row["hi"]) if row is not None else "n/a"
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
    name = slug("scatter", *setting[:2], f"{shots_text(setting[2])}shot")
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
    figures: dict[str, list[Figure]] = {
        "panel": [],
        "gains": [],
        "points": [],
        "similarity": [],
        "scatter": [],
    }
    panel = panel_figure(a, out)
    figures["panel"] = [panel] if panel else []
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


def panel_settings(a: Analysis) -> list[Setting]:
    """The panel's settings: each method's first (in the report's order), zero-shot aside."""
    first: dict[str, Setting] = {}
    for setting in a.settings:
        first.setdefault(setting[0], setting)
    return list(first.values())


def _setting_frame(
    a: Analysis, table: pd.DataFrame | None, setting: Setting, column: str
) -> pd.DataFrame | None:
    if table is None or column not in table:
        return None
    t = table[
        (table["method"] == setting[0]) & (table["mode"] == setting[1]) & (table["shots"] == setting[2])
    ]
    m = t.pivot_table(index="source", columns="target", values=column, aggfunc="max")
    return m.reindex(index=a.tasks, columns=a.tasks).fillna(False).astype(bool)


def _within_2se(a: Analysis, setting: Setting) -> pd.DataFrame | None:
    """Cells whose mean gain lies within 2 SE of zero (None when the setting's noise is unmeasured)."""
    row = noise_row(a, setting)
    if row is None or not row["measured"]:
        return None
    s = a.summary
    s = s.assign(within=s["gain_pts"].notna() & s["gain_se_pts"].notna() & ~s["beyond_2se"].astype(bool))
    return _setting_frame(a, s, setting, "within")


def panel_figure(a: Analysis, out: Path) -> Figure | None:
    """The three methods' gain heatmaps side by side: one task order, one colour scale."""
    settings = panel_settings(a)
    if not settings:
        return None
    mats = [a.gains[s] for s in settings]
    size = np.abs(np.concatenate([m.to_numpy(float).ravel() for m in mats]))
    size = size[np.isfinite(size)]
    vmax = max(float(np.percentile(size, 98)) if size.size >= 50 else float(size.max(initial=1.0)), 0.5)
    within = [_within_2se(a, s) for s in settings]
    kept = [_setting_frame(a, a.kept_cells, s, "kept") for s in settings]
    fig = heatmap_row(
        mats,
        [setting_label(s) for s in settings],
        vmax=vmax,
        cbar_label="gain (points)",
        within=within,
        kept=kept,
    )
    png, svg = save(fig, out / "panel-gains.png"), save_vector(fig, out / "panel-gains.svg")
    marks = []
    if any(w is not None for w in within):
        marks.append("a grey dot marks a gain within 2 standard errors of zero")
    else:
        marks.append("seed noise is unmeasured, so no cell is marked as within noise")
    if any(k is not None for k in kept):
        marks.append("a cross marks a cell whose prompt kept its start")
    caption = (
        f"Gain of transfer over single-task tuning (points), sources as rows and targets as columns, one "
        f"task order for all ({a.order_note}) and one colour scale (±{vmax:.1f} points; red helps, blue "
        f"hurts); {'; '.join(marks)}. Hatched: no gain. Also written as {svg.name} for papers."
    )
    title = "The methods side by side: " + ", ".join(setting_label(s) for s in settings)
    return Figure(png, title, caption, svg)
