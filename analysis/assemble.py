"""Every number of the study report, computed once from a loaded study folder: cell counts, gains,
similarities, and per method setting the correlations, partial correlations, regression, ranking
scores, per-target statistics and model (with BH-adjusted p-values), noise and decomposition, and
the cells that kept their start. Pure tables in, tables out; drawing, sentences and pages live in
drawing.py, findings.py and page.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.adjust import adjust_within
from analysis.combine import combine_k, groups_table, multisource_table, source_prediction
from analysis.controls import exact_zero_gains, kept_by_stage, kept_per_method, self_control
from analysis.decompose import decompose
from analysis.gains import (
    SETTING_KEYS,
    gain_matrix,
    gain_summary,
    missing_counts,
    seed_gains,
    single_values,
    task_names,
    zeroshot_values,
)
from analysis.load import (
    EMBEDDINGS,
    LEGACY,
    ReportError,
    StudyTables,
    image_arrays,
    label_arrays,
    prompt_arrays,
    prompt_methods,
)
from analysis.model import collinear_split, crossed_effects
from analysis.noise import cell_errors, reliability_as_analysed, seed_noise
from analysis.order import similarity_order, task_order
from analysis.pertarget import per_target_summary
from analysis.ranking import ranking_summary
from analysis.relate import similarity_correlations
from analysis.similarity import label_best_match, label_similarity, prompt_similarity, visual_similarity
from analysis.stats import partial_correlations, regress
from analysis.summary import best_sources, method_summary
from pipeline.cell import STAGES  # the kernel's terms, from a module that needs neither torch nor numpy

METHOD_ORDER = ("zeroshot", "coop", "vpt", "upt")
# similarity key -> (name in text, axis label); the order is the order of tables and panels
SIMILARITIES = {
    "designed_visual": ("designed visual", "designed visual similarity (0 to 1)"),
    "designed_label": ("designed label", "designed label similarity (0 to 1)"),
    "same_factor": ("same factor", "same labelled factor (designed, 0 or 1)"),
    "aligned_words": ("aligned words", "shared words naming the same factor (designed, share)"),
    "crossed_words": ("crossed words", "shared words naming different factors (designed, share)"),
    "same_domain": ("same domain", "same renderer and scene kind (designed, 0 or 1)"),
    "visual": ("visual", "visual similarity (cosine of mean image embeddings)"),
    "label": ("label", "label similarity (cosine of mean label embeddings)"),
    "label_match": ("label best-match", "label best-match similarity (mean best cosine)"),
    "prompt": ("prompt", "prompt similarity (cosine of learned prompts)"),
}
PAIRS = (("visual", "label"), ("designed_visual", "designed_label"))  # partial correlation, regression
# the designed relations of the built-in suite, stored per pair, and what each means
RELATIONS = {
    "same_factor": "1 when the two tasks label a common factor (shape, colour, background colour...), else 0",
    "aligned_words": "share of the two tasks' class-name words that both use to name the same factor",
    "crossed_words": "share of the two tasks' class-name words that they use to name different factors",
    "same_domain": "1 when the two tasks come from the same renderer and scene kind (their domain), else 0",
}
DESIGNED_TEXT = {
    "designed_visual": "what the images share (renderer, background kinds, background and object colour "
    "distributions, objects drawn), with no label term, 0 to 1",
    "designed_label": "word overlap (Jaccard) of the class names; it is aligned words + crossed words",
    **RELATIONS,
}
# the crossed-effects models: their terms (the designed label similarity is left out of the first:
# it is aligned_words + crossed_words)
MODELS = {
    "designed": ("designed_visual", *RELATIONS),
    "measured": ("visual", "label", "prompt"),
}
# what the per-target headline reports, and the summary line's statistics
HEADLINE = ("spearman", "kendall", "ndcg@5", "regret@1")
MIN_GAINS = 4  # off-diagonal gains below which no statistic is attempted

Setting = tuple  # (method, mode, shots)
PARTS = ("correlations", "partial", "regression", "ranking", "decomposition", "per_target", "model", "noise")


@dataclass
class Analysis:
    """Every number the report shows, computed once."""

    tables: StudyTables
    n_boot: int
    seed: int
    tasks: list[str]  # the shared heatmap order
    order_note: str
    progress: pd.DataFrame
    nan_cells: int
    zeroshot: pd.Series
    singles: pd.DataFrame
    seed_table: pd.DataFrame
    summary: pd.DataFrame
    settings: list[Setting]
    gains: dict[Setting, pd.DataFrame]
    shared_sims: dict[str, pd.DataFrame]
    visual: dict[object, pd.DataFrame]
    prompt: dict[tuple, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    missing: pd.DataFrame | None = None
    correlations: pd.DataFrame | None = None
    partial: pd.DataFrame | None = None
    regression: pd.DataFrame | None = None
    ranking: pd.DataFrame | None = None
    decomposition: pd.DataFrame | None = None
    best: pd.DataFrame | None = None
    methods: pd.DataFrame | None = None
    per_target: pd.DataFrame | None = None
    model: pd.DataFrame | None = None
    noise: pd.DataFrame | None = None
    multisource: pd.DataFrame | None = None  # multisource cells against single, per policy
    groups: pd.DataFrame | None = None  # group cells against single, per policy
    prediction: pd.DataFrame | None = None  # sources predicted with the target held out, per setting
    prediction_targets: pd.DataFrame | None = None  # the same per target
    k: int | None = None  # how many sources the held-out prediction picks
    kept_start: pd.DataFrame | None = None  # per method, its tuned stages: cells that kept their start
    kept_cells: pd.DataFrame | None = None  # per setting and pair: whether a seed's prompt kept its start
    self_control: pd.DataFrame | None = None  # the target as its own source, per setting
    kept_stages: pd.DataFrame | None = None  # per tuned stage and method: cells that kept their start
    zero_gains: pd.DataFrame | None = None  # off-diagonal per-seed gains exactly 0

    def sims_for(self, method: str, shots) -> dict[str, pd.DataFrame]:
        """Every similarity that applies to one method setting, in SIMILARITIES order."""
        found = dict(self.shared_sims)
        if shots in self.visual:
            found["visual"] = self.visual[shots]
        if (method, shots) in self.prompt:
            found["prompt"] = self.prompt[(method, shots)]
        return {k: found[k] for k in SIMILARITIES if k in found}


def no_embeddings(tables: StudyTables) -> str:
    """What the report says in place of the similarities that need the embeddings."""
    unreadable = any(s.name in (EMBEDDINGS, LEGACY[EMBEDDINGS]) for s in tables.skipped)
    why = f"{EMBEDDINGS} unreadable" if unreadable else f"no {EMBEDDINGS}"
    return f"visual, label and prompt similarities: not computed ({why})"


def finite(x) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def shots_text(shots) -> str:
    return f"{int(shots)}" if finite(shots) else "?"


def setting_label(setting: Setting) -> str:
    method, mode, shots = setting
    return f"{method} {mode} {shots_text(shots)}-shot"


def method_key(method) -> tuple:
    m = str(method)
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def stat_row(a: Analysis, setting: Setting, key: str) -> pd.Series | None:
    c = a.correlations
    if c is None:
        return None
    hit = c[
        (c["method"] == setting[0])
        & (c["mode"] == setting[1])
        & (c["shots"] == setting[2])
        & (c["similarity"] == key)
        & (c["kind"] == "gain")
    ]
    return hit.iloc[0] if len(hit) else None


# --- analysis --------------------------------------------------------------------------------------


def progress_table(cells: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """Per stage and method: cells expected by the grid, stored, ok (a finite value), failed, ok but
    without a finite value ("nan"), and missing (expected but not stored)."""
    grid = meta.get("grid") if isinstance(meta.get("grid"), dict) else {}
    ok_status = cells["status"].eq("ok")
    finite = np.isfinite(cells["value"].to_numpy(float))
    df = cells.assign(ok=ok_status & finite, failed=~ok_status, nan=ok_status & ~finite)
    ident = "cell_id" if df["cell_id"].notna().all() else None
    keys = sorted(
        {*zip(df["stage"], df["method"], strict=True), *(tuple(k.split("/", 1)) for k in grid if "/" in k)},
        key=lambda k: (STAGES.index(k[0]) if k[0] in STAGES else 9, method_key(k[1])),
    )
    rows = []
    for stage, method in keys:
        part = df[(df["stage"] == stage) & (df["method"] == method)]
        stored = part[ident].nunique() if ident else len(part)
        expected = grid.get(f"{stage}/{method}")
        rows.append(
            {
                "stage": stage,
                "method": method,
                "expected": expected,
                "stored": stored,
                "ok": int(part["ok"].sum()),
                "failed": int(part["failed"].sum()),
                "nan": int(part["nan"].sum()),
                "missing": max(int(expected) - stored, 0) if expected is not None else None,
            }
        )
    return pd.DataFrame(
        rows, columns=["stage", "method", "expected", "stored", "ok", "failed", "nan", "missing"]
    )


def _study_tasks(tables: StudyTables) -> list[str]:
    """The study's tasks: the designed similarities' order where they cover them, then by name."""
    found = task_names(tables.cells)
    first = [t for t in (tables.designed.get("visual", pd.DataFrame()).index) if t in found]
    return first + sorted(t for t in found if t not in first)


def _restrict(sim: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    keep = [t for t in sim.index if t in set(tasks) and t in sim.columns]
    return sim.loc[keep, keep].astype(float)


def _similarities(a: Analysis, tables: StudyTables, shots_values: Sequence) -> None:
    """Fill the similarity matrices from the designed table and the embeddings, restricted to the tasks."""
    for kind, sim in tables.designed.items():
        if kind in ("visual", "label"):
            a.shared_sims[f"designed_{kind}"] = _restrict(sim, a.tasks)
        elif kind in RELATIONS:
            a.shared_sims[kind] = _restrict(sim, a.tasks)
    emb = tables.embeddings
    if emb is None:
        a.notes.append(no_embeddings(tables))
        return
    labels = {t: x for t, x in label_arrays(emb).items() if t in a.tasks}
    if len(labels) >= 2:
        a.shared_sims["label"] = label_similarity(labels)
        a.shared_sims["label_match"] = label_best_match(labels)
    for shots in shots_values or [None]:
        images = {t: x for t, x in image_arrays(emb, shots).items() if t in a.tasks}
        if len(images) >= 2:
            a.visual[shots] = visual_similarity(images)
    methods = sorted({m for m, _, _ in a.settings} | set(a.singles["method"]), key=method_key)
    for method in [m for m in methods if m in prompt_methods(emb)]:
        for shots in shots_values or [None]:
            prompts = {t: x for t, x in prompt_arrays(emb, method, shots).items() if t in a.tasks}
            if len(prompts) < 2:
                continue
            try:
                a.prompt[(method, shots)] = prompt_similarity(prompts)
            except ValueError as err:
                a.notes.append(f"prompt similarity of {method}: not computed ({err})")
    if not a.visual:
        a.notes.append(f"visual similarity: not computed (no image rows in {EMBEDDINGS})")
    if "label" not in a.shared_sims:
        a.notes.append(f"label similarity: not computed (no label rows in {EMBEDDINGS})")


def _trim(gain: pd.DataFrame) -> pd.DataFrame:
    """The gain matrix without tasks that have no off-diagonal gain at all (they would only thin out
    the task bootstrap)."""
    a = gain.to_numpy(float, copy=True)
    np.fill_diagonal(a, np.nan)
    keep = np.isfinite(a).any(axis=0) | np.isfinite(a).any(axis=1)
    return gain.loc[keep, keep]


def _setting_statistics(a: Analysis, setting: Setting, parts: dict[str, list]) -> None:
    method, mode, shots = setting
    gain = _trim(a.gains[setting])
    sims = a.sims_for(method, shots)
    tag = dict(zip(SETTING_KEYS, setting, strict=True))
    off = gain.to_numpy(float).copy()
    np.fill_diagonal(off, np.nan)
    if np.isfinite(off).sum() < MIN_GAINS or len(gain) < 3:
        n = int(np.isfinite(off).sum())
        a.notes.append(f"{setting_label(setting)}: too few gains for statistics ({n} off-diagonal)")
        return
    d = decompose(gain)
    parts["decomposition"].append(
        {**tag, "mean_gain_pts": d.mean, **{f"share_{k}": v for k, v in d.shares.items()}}
        | {"r2_additive": d.r2_additive, "n_cells": d.n_cells}
    )
    # one shared bootstrap per group of similarities that cover the same tasks
    groups = [
        [k for k in ("designed_visual", "designed_label", *RELATIONS) if k in sims],
        [k for k in ("visual", "label", "label_match") if k in sims],
        [k for k in ("prompt",) if k in sims],
    ]
    for group in filter(None, groups):
        table = similarity_correlations(gain, {k: sims[k] for k in group}, a.n_boot, a.seed)
        parts["correlations"].append(table.assign(**tag))
    for x, y in PAIRS:
        if x in sims and y in sims:
            pair = {x: sims[x], y: sims[y]}
            try:
                p = partial_correlations(gain, pair, a.n_boot, a.seed)
                parts["partial"].append(p.assign(controls=[y, x], **tag))
            except ValueError as err:  # e.g. a singular regression design
                a.notes.append(f"{setting_label(setting)}: partial correlations not computed ({err})")
            r = regress(gain, pair, a.n_boot, a.seed, standardize=True)
            parts["regression"].append(r.assign(predictors=f"{x} + {y}", **tag))
    if sims:
        parts["ranking"].append(ranking_summary(gain, sims).assign(**tag))
        single = a.singles[(a.singles["method"] == method) & (a.singles["shots"] == shots)]
        single = single.set_index("target")["single_pts"]
        table = per_target_summary(gain, sims, single, n_perm=a.n_boot, n_boot=a.n_boot, seed=a.seed)
        parts["per_target"].append(table.assign(**tag))
    _models(a, setting, gain, sims, parts)
    _noise_row(a, setting, d, parts)


def _models(a: Analysis, setting: Setting, gain: pd.DataFrame, sims: dict, parts: dict[str, list]) -> None:
    """The crossed-effects models of one setting; a model's terms that correlate above COLLINEAR go
    into separate models ("designed", "designed 2", ...), each coefficient with its relabelling p."""
    tag = dict(zip(SETTING_KEYS, setting, strict=True))
    for model, terms in MODELS.items():
        chosen = {k: sims[k] for k in terms if k in sims}
        if not chosen:
            continue
        for n, group in enumerate(collinear_split(gain, chosen)):
            name = model if n == 0 else f"{model} {n + 1}"
            fit = crossed_effects(
                gain, {k: chosen[k] for k in group}, n_perm=a.n_boot, seed=a.seed, n_boot=a.n_boot
            )
            if fit.table.empty:
                a.notes.append(
                    f"{setting_label(setting)}: {name} model not fitted (too few pairs for its terms)"
                )
                continue
            extra = {
                "model": name,
                "r2": fit.r2,
                "resid_var": fit.resid_var,
                "dropped": ", ".join(fit.dropped),
            }
            parts["model"].append(fit.table.assign(**extra, **tag))


def _noise_row(a: Analysis, setting: Setting, d, parts: dict[str, list]) -> None:
    """The seed noise of one setting beside its decomposition: pooled seed variance, the transfer
    cells' share of the gains' variance (the noise floor of the pairwise share; the single cell's
    noise is one shift per target column, which the target effect absorbs), the pairwise share above
    it, the reliability of the analysed matrix overall and within targets with intervals, and how
    many cells lie more than 2 SE from zero."""
    method, mode, shots = setting
    tag = dict(zip(SETTING_KEYS, setting, strict=True))
    seeds = a.seed_table[
        (a.seed_table["method"] == method) & (a.seed_table["mode"] == mode) & (a.seed_table["shots"] == shots)
    ]
    part = a.summary[
        (a.summary["method"] == method) & (a.summary["mode"] == mode) & (a.summary["shots"] == shots)
    ]
    noise = seed_noise(seeds)
    rel = reliability_as_analysed(seeds, n_boot=a.n_boot, seed=a.seed)
    off = part[(part["source"] != part["target"]) & part["gain_pts"].notna()]
    # the transfer cells' seed noise the pairwise residual holds, as a share of the total sum of
    # squares (comparable with the decomposition's shares): their mean variance over the pairs' seed
    # counts x the residual's degrees of freedom (cells minus the mean, source and target effects)
    n_tasks = int(np.isfinite(d.source.to_numpy(float)).sum())
    resid_df = max(d.n_cells - (2 * n_tasks - 1), 0)
    ss_total = float(off["gain_pts"].var()) * (d.n_cells - 1) if len(off) > 1 else float("nan")
    floor = float(np.mean(rel.pair_var / off["n_seeds"].to_numpy(float))) if len(off) else float("nan")
    noise_share = floor * resid_df / ss_total if np.isfinite(floor) and ss_total > 0 else float("nan")
    errors = cell_errors(part, noise)
    parts["noise"].append(
        {
            **tag,
            "measured": noise.measured,
            "seed_var_pts2": noise.variance,
            "seed_sd_pts": noise.sd,
            "transfer_sd_pts": float(np.sqrt(rel.pair_var)),
            "single_sd_pts": float(np.sqrt(rel.single_var)),
            "df": noise.df,
            "pairs_multi_seed": noise.n_pairs_multi,
            "pairs": noise.n_pairs,
            "noise_columns": rel.n_columns,
            "noise_share": noise_share,
            "pairwise_share": d.shares["residual"],
            "pairwise_above_noise": d.shares["residual"] - noise_share
            if np.isfinite(noise_share)
            else float("nan"),
            "reliability": rel.overall,
            "reliability_lo": rel.overall_lo,
            "reliability_hi": rel.overall_hi,
            "reliability_within": rel.within,
            "reliability_within_lo": rel.within_lo,
            "reliability_within_hi": rel.within_hi,
            # by the measured signal and noise: the seeds a pair for a reliability of 0.7
            "seeds_for_07": rel.seeds_for(0.7, within=False),
            "seeds_for_07_within": rel.seeds_for(0.7),
            "cells_beyond_2se": int(errors["beyond_2se"][errors["source"] != errors["target"]].sum()),
        }
    )


def _controls(a: Analysis) -> None:
    """The self control beside each setting's seed sd, the cells that kept their start, exact zeros."""
    sd = {}
    if a.noise is not None:
        sd = {tuple(r[k] for k in SETTING_KEYS): r["seed_sd_pts"] for _, r in a.noise.iterrows()}
    a.self_control = self_control(a.seed_table, sd)
    a.kept_stages = kept_by_stage(a.tables.cells)
    a.kept_start = kept_per_method(a.kept_stages)
    a.zero_gains = exact_zero_gains(a.seed_table)


# the families within which p-values are adjusted (Benjamini-Hochberg): a method setting's headline
# per-target statistics over every similarity; its model coefficients; a method's policies
FAMILY = SETTING_KEYS
POLICY_FAMILY = ["method", "shots"]


def _adjusted(parts: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The parts as one table with `p_adjusted` within each method setting. Per-target statistics
    outside HEADLINE belong to no family (the report shows HEADLINE only) and keep NaN."""
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True)
    shown = table["statistic"].isin(HEADLINE) if "statistic" in table else pd.Series(True, index=table.index)
    table["p_adjusted"] = np.nan
    if shown.any():
        table.loc[shown, "p_adjusted"] = adjust_within(table[shown], FAMILY)["p_adjusted"]
    return table


def _offdiag_missing(seed_table: pd.DataFrame) -> pd.DataFrame:
    """Why stored off-diagonal transfer cells have no gain. Pairs the study never planned, or has not
    run yet, are not counted here: what the grid expects is the progress table's."""
    off = seed_table[
        (seed_table["source"] != seed_table["target"]) & seed_table["transfer_status"].ne("absent")
    ]
    if off.empty:
        return pd.DataFrame(columns=[*SETTING_KEYS, "expected", "present", "missing"])
    return missing_counts(off)


def _with_errors(a: Analysis) -> pd.DataFrame:
    """The gain summary with each pair's standard error from its setting's pooled seed noise
    (`gain_se_pts`, NaN where noise is unmeasured) and whether it lies more than 2 SE from zero."""
    parts = []
    for setting, part in a.summary.groupby(SETTING_KEYS, dropna=False, sort=False):
        seeds = a.seed_table.merge(pd.DataFrame([setting], columns=SETTING_KEYS), on=SETTING_KEYS)
        errors = cell_errors(part, seed_noise(seeds))
        parts.append(part.assign(gain_se_pts=errors["gain_se_pts"], beyond_2se=errors["beyond_2se"]))
    return pd.concat(parts) if parts else a.summary.assign(gain_se_pts=np.nan, beyond_2se=False)


def _combine(a: Analysis) -> None:
    """The multi-source and group tables, and per method setting the sources each target would be
    given with its own gains held out (k: the study's multi-source set size; without multi-source
    cells 3, or fewer where there are few tasks)."""
    cells = a.tables.cells
    try:
        multisource = multisource_table(cells, a.n_boot, a.seed)
        groups = groups_table(cells, a.n_boot, a.seed)
    except ValueError as err:  # e.g. one cell stored with two metrics
        raise ReportError(f"cannot compute the multi-source gains from {a.tables.folder}: {err}") from err
    a.multisource = multisource if len(multisource) else None
    a.groups = groups if len(groups) else None
    a.k = combine_k(cells, default=max(1, min(3, len(a.tasks) - 2)))
    per_target, summary = [], []
    for setting in a.settings:
        gain = _trim(a.gains[setting])
        if len(gain) <= a.k + 1:
            a.notes.append(f"{setting_label(setting)}: too few tasks to predict {a.k} sources per target")
            continue
        sims = a.sims_for(setting[0], setting[2])
        targets, means = source_prediction(gain, sims, a.k, a.n_boot, a.seed)
        tag = dict(zip(SETTING_KEYS, setting, strict=True))
        per_target.append(targets.assign(**tag))
        summary.append(means.assign(**tag))
    a.prediction = pd.concat(summary, ignore_index=True) if summary else None
    a.prediction_targets = pd.concat(per_target, ignore_index=True) if per_target else None


def _gather(a: Analysis, parts: dict[str, list]) -> None:
    """The settings' statistics as one table each (None where no setting has any)."""
    for name in ("correlations", "partial", "regression", "ranking"):
        setattr(a, name, pd.concat(parts[name], ignore_index=True) if parts[name] else None)
    a.decomposition = pd.DataFrame(parts["decomposition"]) if parts["decomposition"] else None
    a.per_target = _adjusted(parts["per_target"])
    a.model = _adjusted(parts["model"])
    a.noise = pd.DataFrame(parts["noise"]) if parts["noise"] else None
    _controls(a)


def kept_pairs(cells: pd.DataFrame) -> pd.DataFrame | None:
    """From the rows' `moved` column (absent in older studies, null for rows that do not say): per
    setting and pair, whether any seed's transfer cell kept its start (the panel's crosses). None
    without the column or without a transfer cell that says."""
    if "moved" not in cells:
        return None
    part = cells[(cells["stage"] == "transfer") & cells["moved"].notna()]
    if part.empty:
        return None
    part = part.assign(kept=~part["moved"].astype(bool))
    return (
        part.groupby([*SETTING_KEYS, "source", "target"], dropna=False, sort=False)["kept"]
        .any()
        .reset_index()
    )


def analyse(tables: StudyTables, n_boot: int = 1000, seed: int = 0) -> Analysis:
    """Compute every table of the report from a loaded study."""
    cells = tables.cells
    tasks = _study_tasks(tables)
    try:
        zeroshot = zeroshot_values(cells)
        singles = single_values(cells)
        seeds = seed_gains(cells, tasks)
    except ValueError as err:  # e.g. one cell stored with two metrics
        raise ReportError(f"cannot compute gains from {tables.folder}: {err}") from err
    summary = gain_summary(seeds, zeroshot)
    settings = sorted(
        {tuple(k) for k in summary[SETTING_KEYS].itertuples(index=False)},
        key=lambda s: (method_key(s[0]), str(s[1]), float(s[2]) if finite(s[2]) else -1.0),
    )
    gains = {s: gain_matrix(summary, *s, tasks=tasks) for s in settings}
    progress = progress_table(cells, tables.meta)
    a = Analysis(
        tables=tables,
        n_boot=n_boot,
        seed=seed,
        tasks=tasks,
        order_note="by name",
        progress=progress,
        nan_cells=int(progress["nan"].sum()),
        zeroshot=zeroshot,
        singles=singles,
        seed_table=seeds,
        summary=summary,
        settings=settings,
        gains=gains,
        shared_sims={},
        visual={},
        prompt={},
    )
    shots_values = sorted({s[2] for s in settings} | set(singles["shots"].dropna()))
    _similarities(a, tables, shots_values)
    if gains:
        a.tasks = task_order(list(gains.values()), tasks)
        a.order_note = "average-linkage clustering of the tasks' gain profiles (as source and as target)"
    elif "visual" in a.shared_sims or a.visual or "designed_visual" in a.shared_sims:
        sim = next(iter(a.visual.values())) if a.visual else a.shared_sims["designed_visual"]
        a.tasks = similarity_order(sim) + [t for t in tasks if t not in sim.index]
        a.order_note = "average-linkage clustering of the visual similarity (no gains yet)"
    a.gains = {s: g.reindex(index=a.tasks, columns=a.tasks) for s, g in gains.items()}
    parts: dict[str, list] = {k: [] for k in PARTS}
    for setting in settings:
        _setting_statistics(a, setting, parts)
    _gather(a, parts)
    _combine(a)
    a.summary = _with_errors(a)
    a.missing = _offdiag_missing(seeds)
    a.best = best_sources(summary)
    a.kept_cells = kept_pairs(cells)
    methods = method_summary(summary, singles, zeroshot, a.correlations)
    rank = methods["method"].map(lambda m: method_key(m)[0])
    a.methods = (
        methods.assign(_rank=rank).sort_values(["_rank", "method"], kind="stable").drop(columns="_rank")
    )
    return a
