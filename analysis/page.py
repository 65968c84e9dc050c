"""The report's pages: what each section shows, as plain values, rendered by the Jinja2 templates of
analysis/templates (report.html, escaped as HTML; summary.md, escaped as Markdown)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.assemble import DESIGNED_TEXT, SIMILARITIES, Analysis, shots_text
from analysis.display import (
    best_display,
    correlation_display,
    decomposition_display,
    groups_display,
    method_table,
    model_tables,
    multisource_display,
    noise_display,
    partial_display,
    per_target_tables,
    prediction_display,
    prediction_targets_display,
    progress_display,
    ranking_display,
    regression_display,
    singles_display,
)
from analysis.drawing import Figure
from analysis.files import markdown_text
from analysis.overview import missing_lines

NUMERIC = re.compile(r"^(?:[-+]?\d|–$|n/a|\?$)")  # a display value that reads as a number


@dataclass(frozen=True)
class TableView:
    """A table of display strings; `numeric`: per column, whether every value reads as a number."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    groups: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class FigureView:
    title: str
    caption: str
    data: str  # the PNG, base64


@dataclass(frozen=True)
class Block:
    """One element of a section: kind "p", "h3", "note", "lines", "list", "table" or "figure"."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    table: TableView | None = None
    figure: FigureView | None = None


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    blocks: list[Block]


def table_view(df: pd.DataFrame, groups: Sequence[tuple[str, int]] = ()) -> TableView:
    """Display values as strings, missing ones shown as "–"."""
    rows = [
        ["–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in row]
        for row in df.itertuples(index=False, name=None)
    ]
    numeric = [bool(rows) and all(NUMERIC.match(r[k]) for r in rows) for k in range(df.shape[1])]
    return TableView([str(c) for c in df.columns], rows, numeric, list(groups))


def _p(text: str) -> Block:
    return Block("p", text)


def _table(df: pd.DataFrame, groups: Sequence[tuple[str, int]] = ()) -> Block:
    return Block("table", table=table_view(df, groups))


def _figure(fig: Figure) -> Block:
    data = base64.b64encode(fig.path.read_bytes()).decode("ascii")
    return Block("figure", figure=FigureView(fig.title, fig.caption, data))


METHOD_TEXT = (
    "gain(source, target) = metric of the transfer run minus metric of the target's single-task run, "
    "same method, shots and seed, in points; then the mean over seeds. A cell that failed, was not "
    "stored, or has a NaN value gives no gain (shown blank), never a zero. Statistics use the "
    "off-diagonal pairs only. Per target, the target's sources are ranked by a similarity and scored "
    "(ties averaged, never broken by the listing order); their mean over targets gets a p-value from "
    "{n_boot} random relabellings of the similarity's tasks, which keeps good donors and receptive "
    "targets from passing for pairwise structure, and an interval from {n_boot} bootstrap resamples of "
    "tasks; the model's coefficients likewise. p-values are adjusted within each family "
    "(Benjamini-Hochberg), and the findings claim only what the adjusted p-value and the interval "
    "support (bench/calibration.py shows the rates these tests and intervals keep). Monte Carlo draws "
    "index the tasks in an order set by their values, not their names. The global correlations' "
    "intervals are percentile intervals "
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


STATISTICS_TEXT = {
    "per_target": (
        "For each target its sources are ranked by a similarity and the ranking is scored against the "
        "target's gains: Spearman ρ and Kendall τb over its sources, NDCG@5 (relevance max(gain, 0)) and "
        "regret@1 (the best source's gain minus that of the top-ranked one, in points), ties averaged; then "
        "the mean over targets. Interval: 95% task bootstrap ({n_boot} resamples; the percentile interval "
        "moved by the bootstrap's bias). p: from "
        "{n_boot} random relabellings of the similarity's tasks (two-sided for ρ and τb, one-sided towards "
        "better for NDCG and regret), which keeps good donors and receptive targets from passing for "
        "pairwise structure; adjusted: Benjamini-Hochberg over every similarity and statistic of the table. "
        "NDCG and regret stand beside a random ranking's expectation."
    ),
    "model": (
        "OLS of the pair means on the term plus a fixed effect per source and per target, so a term that "
        "only tracks good donors or receptive targets gets no credit. Interval: 95% percentile bootstrap "
        "of tasks ({n_boot} resamples, the model refitted on each). p: from {n_boot} relabellings of "
        "the term's tasks (the "
        "clustered p-value beside it rejects too often on null matrices; bench/calibration.py); adjusted: "
        "Benjamini-Hochberg over the setting's terms. Terms that correlate above 0.7 are fitted in separate "
        "models (e.g. same factor and aligned words)."
    ),
}


def _header(a: Analysis) -> list[Block]:
    t = a.tables
    spec = t.meta.get("spec") if isinstance(t.meta.get("spec"), dict) else {}
    facts = [
        f"backbone: {t.backbone or 'unknown'}",
        f"{len(a.tasks)} tasks",
        f"shots: {', '.join(shots_text(s) for s in sorted(set(a.singles['shots'].dropna())) or ['–'])}",
        f"seeds: {', '.join(str(s) for s in spec.get('seeds', [])) or '–'}",
        f"transfer modes: {', '.join(spec.get('modes', [])) or '–'}",
    ]
    blocks = [_p(" · ".join(facts)), _p(f"Folder: {t.folder}")]
    if t.skipped:
        blocks.append(Block("note", f"Skipped {len(t.skipped)} unreadable file(s):"))
        blocks.append(Block("list", items=tuple(f"{s.name}: {s.reason}" for s in t.skipped)))
    if a.nan_cells:
        blocks.append(
            Block(
                "note",
                f"{a.nan_cells} cell(s) report status ok without a finite value (NaN); "
                "they count as missing.",
            )
        )
    return blocks


def _summary(a: Analysis, overview: Sequence[str]) -> list[Block]:
    blocks = [Block("lines", items=tuple(overview)), _table(progress_display(a))]
    if a.methods is not None and len(a.methods):
        blocks.append(_table(method_table(a)))
    blocks.append(
        _p(
            "Points of each task's metric (x100). Mean gain and positive share over the off-diagonal "
            "pairs with a gain; ρ: Spearman correlation of gain with each similarity over those pairs, "
            f"95% interval from {a.n_boot} bootstrap resamples of tasks."
        )
    )
    return blocks + [_p(line) for line in missing_lines(a)]


def _similarities(a: Analysis, figures: Mapping[str, list[Figure]]) -> list[Block]:
    blocks = [Block("note", n) for n in a.notes] + [_figure(f) for f in figures["similarity"]]
    if not a.tables.designed:
        blocks.append(_p("Designed similarities: none (the study is not on the built-in suite)."))
    else:
        blocks.append(_p("Designed similarities and relations of the built-in suite:"))
        items = [f"{SIMILARITIES[k][0]}: {text}" for k, text in DESIGNED_TEXT.items() if k in a.shared_sims]
        blocks.append(Block("list", items=tuple(items)))
    return blocks


def _statistics(a: Analysis) -> list[Block]:
    """Per method setting the per-target and model tables with their explanations, then the secondary
    statistics."""
    blocks: list[Block] = []
    if a.per_target is not None:
        blocks += [Block("h3", "Per target: each target's sources ranked by a similarity, mean over targets")]
        blocks.append(_p(STATISTICS_TEXT["per_target"].format(n_boot=a.n_boot)))
        for label, table in per_target_tables(a):
            blocks += [_p(f"{label}:"), _table(table)]
    if a.model is not None:
        blocks += [Block("h3", "Crossed-effects model: gain ~ term + source + target")]
        blocks.append(_p(STATISTICS_TEXT["model"].format(n_boot=a.n_boot)))
        for label, table in model_tables(a):
            blocks += [_p(f"{label}:"), _table(table)]
    if a.noise is not None:
        blocks += [Block("h3", "Seed noise"), _table(noise_display(a))]
    secondary = (
        (
            "Global Spearman correlation with gain and with the pairwise residual (secondary)",
            a.correlations,
            correlation_display,
        ),
        ("Partial correlations", a.partial, partial_display),
        ("Regression of gain on two similarities (standardised)", a.regression, regression_display),
        ("Ranking the sources of each target by similarity (mean over targets)", a.ranking, ranking_display),
        ("Variance decomposition: source, target and interaction", a.decomposition, decomposition_display),
    )
    for title, table, display in secondary:
        if table is not None:
            blocks += [Block("h3", title), _table(display(a))]
    if a.correlations is None:
        blocks.append(_p("Correlations: not computed (no similarity, or too few gains)."))
    return blocks


def _combine(a: Analysis) -> list[Block]:
    """The multi-source and group results and the held-out choice of sources (empty when none)."""
    boot = f" Intervals: 95% percentile bootstrap over targets ({a.n_boot} resamples)."
    tests = " p: t-test over targets; adjusted: Benjamini-Hochberg over the method's policies."
    blocks: list[Block] = []
    if a.multisource is not None:
        blocks += [Block("h3", "Multi-source initialisation against single-task tuning")]
        blocks += [_p(COMBINE_TEXT["multisource"] + boot + tests), _table(multisource_display(a))]
    if a.groups is not None:
        blocks += [Block("h3", "Groups tuned jointly against single-task tuning")]
        blocks += [_p(COMBINE_TEXT["groups"] + boot + tests), _table(groups_display(a))]
    if a.prediction is not None:
        donor = (
            " The donor rows' intervals resample the whole leave-one-out (the targets share donor scores)."
        )
        blocks += [Block("h3", "Predicted and actual best sources, each target held out")]
        blocks += [_p(COMBINE_TEXT["prediction"] + boot + donor), _table(prediction_display(a))]
        blocks += [_table(prediction_targets_display(a))]
    elif a.settings:
        blocks.append(
            _p(f"Predicted sources: not computed (too few tasks with gains to choose {a.k} of them).")
        )
    return blocks


def sections(a: Analysis, figures: Mapping[str, list[Figure]], overview: Sequence[str]) -> list[Section]:
    """The page after its findings, in order."""
    out = [Section("study", "The study", _header(a) + _summary(a, overview))]
    if figures["panel"]:
        out.insert(
            0, Section("panel", "Gains of the methods side by side", [_figure(f) for f in figures["panel"]])
        )
    if a.settings:
        out.append(Section("gains", "Gain heatmaps per method", [_figure(f) for f in figures["gains"]]))
    else:
        none = (
            "No transfer cells in this study: no gains, heatmaps or correlations. What exists is shown "
            "below (single-task and zero-shot runs)."
        )
        out.append(Section("gains", "Gain heatmaps per method", [Block("note", none)]))
    points = [_figure(f) for f in figures["points"]] + (
        [_table(singles_display(a))] if len(a.singles) else []
    )
    out.append(Section("points", "Single-task and zero-shot results", points or [_p("No single runs.")]))
    out.append(Section("similarity", "Task similarities", _similarities(a, figures)))
    if a.settings:
        scatter = [_figure(f) for f in figures["scatter"]] or [_p("No similarity to relate gains to.")]
        out.append(Section("scatter", "Gain vs similarity", scatter))
        best = [
            _p("The off-diagonal source with the largest mean gain (± sd over seeds)."),
            _table(*best_display(a)),
        ]
        out.append(Section("best", "Best source per target", best))
        out.append(Section("statistics", "Statistics", _statistics(a)))
    combine = _combine(a)
    if combine:
        out.append(Section("combine", "Which sources to combine", combine))
    out.append(Section("method", "How these numbers are made", [_p(METHOD_TEXT.format(n_boot=a.n_boot))]))
    return out


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("analysis", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["md"] = markdown_text
    return env


@dataclass(frozen=True)
class Page:
    """What both templates fill in: the study's name, the findings, the overview lines, the sections
    (HTML) and the titled tables (Markdown)."""

    name: str
    findings: list[str]
    overview: list[str]
    sections: list[Section] = field(default_factory=list)
    tables: list[tuple[str, TableView]] = field(default_factory=list)


def render_html(page: Page) -> str:
    return _environment().get_template("report.html").render(page=page)


def render_markdown(page: Page) -> str:
    return _environment().get_template("summary.md").render(page=page)


def markdown_tables(a: Analysis) -> list[tuple[str, TableView]]:
    """The tables summary.md holds: per method, per target (per setting), the model, the policies."""
    out = [("Per method (points of the metric)", table_view(method_table(a)))]
    if a.per_target is not None:
        out += [
            (f"Per target, {label}: sources ranked by each similarity", table_view(t))
            for label, t in per_target_tables(a)
        ]
    if a.model is not None:
        out += [
            (f"Crossed-effects model, {label}: gain ~ term + source + target", table_view(t))
            for label, t in model_tables(a)
        ]
    if a.correlations is not None:
        out.append(
            (
                "Global Spearman correlations with gain (95% task-bootstrap intervals)",
                table_view(correlation_display(a)),
            )
        )
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
            out.append((title, table_view(display(a))))
    return out
