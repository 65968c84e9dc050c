"""The report's entry point: analyse a study folder, then write report.html (findings first), one
PNG per figure (and the methods' panel as SVG), CSV tables and summary.md, from the folder alone (no
kernel, no model). Computing is assemble.py's, drawing drawing.py's, sentences findings.py's and
overview.py's, tables display.py's, pages page.py's (Jinja2 templates)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.assemble import SIMILARITIES, Analysis, analyse
from analysis.drawing import draw
from analysis.files import write_atomic
from analysis.findings import FindingTables, findings
from analysis.load import ReportError, load_study
from analysis.overview import overview_lines
from analysis.page import Page, markdown_tables, render_html, render_markdown, sections
from analysis.text import terminal_text

__all__ = ["Report", "ReportError", "make_report"]

log = logging.getLogger(__name__)

# Inside the study folder, but '_'-prefixed: dataset readers skip it, so the folder still reads as one
# Parquet table; a plain `report/` of CSV and PNG files would make pyarrow fail on them.
REPORT_DIR = "_report"
CSV_TABLES = {
    "summary.csv": "methods",
    "progress.csv": "progress",
    "singles.csv": "singles",
    "gains.csv": "summary",
    "best_sources.csv": "best",
    "missing.csv": "missing",
    "correlations.csv": "correlations",
    "partial_correlations.csv": "partial",
    "regression.csv": "regression",
    "ranking.csv": "ranking",
    "decomposition.csv": "decomposition",
    "per_target.csv": "per_target",
    "model.csv": "model",
    "noise.csv": "noise",
    "multisource.csv": "multisource",
    "groups.csv": "groups",
    "self_control.csv": "self_control",
    "kept_start_by_stage.csv": "kept_stages",
    "zero_gains.csv": "zero_gains",
    "source_prediction.csv": "prediction",
    "source_prediction_targets.csv": "prediction_targets",
    "kept_start.csv": "kept_start",
}


@dataclass(frozen=True)
class Report:
    """Where the report went, its findings and its overview lines (`lines`: findings first; also at the
    top of the HTML and of summary.md)."""

    folder: Path
    out: Path
    html: Path
    figures: tuple[Path, ...]
    tables: tuple[Path, ...]
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The lines for a terminal: control characters (escape codes in a study or task name) removed."""
        return terminal_text("\n".join(self.lines))


def finding_tables(a: Analysis) -> FindingTables:
    """The tables the findings are written from."""
    return FindingTables(
        per_target=a.per_target,
        model=a.model,
        noise=a.noise,
        multisource=a.multisource,
        groups=a.groups,
        prediction=a.prediction,
        kept_start=a.kept_start,
        self_control=a.self_control,
        names={k: v[0] for k, v in SIMILARITIES.items()},
    )


def write_tables(a: Analysis, out: Path, page: Page) -> list[Path]:
    """CSV files of the raw numbers and summary.md (findings, overview, the main tables)."""
    written = []
    for name, attribute in CSV_TABLES.items():
        table: pd.DataFrame | None = getattr(a, attribute)
        if table is not None:
            written.append(write_atomic(out / name, table.to_csv(index=False)))
    written.append(write_atomic(out / "summary.md", render_markdown(page)))
    return written


def _output_folder(folder: Path, out: str | Path | None) -> Path:
    if out is None and (folder / REPORT_DIR).is_symlink():
        # a folder from elsewhere could point its report at any folder of the user's
        raise ReportError(f"{folder / REPORT_DIR} is a symbolic link; remove it or pass --out")
    out = Path(out) if out is not None else folder / REPORT_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"cannot write the report to {out}: {err}") from err
    return out


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
    out = _output_folder(tables.folder, out)
    _check_outputs(out)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # means of empty slices: missing stays NaN
        a = analyse(tables, n_boot, seed)
        figures = draw(a, out)
    said, overview = findings(finding_tables(a)), overview_lines(a)
    page = Page(tables.name, said, overview, sections(a, figures, overview), markdown_tables(a))
    written = write_tables(a, out, page)
    html = write_atomic(out / "report.html", render_html(page))
    log.info("report of %s written to %s", tables.folder, html)
    return Report(
        folder=tables.folder,
        out=out,
        html=html,
        figures=tuple(f.path for group in figures.values() for f in group),
        tables=tuple(written),
        lines=tuple([*said, "", *overview]),
    )
