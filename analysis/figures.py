"""Drawing for the report: annotated task x task heatmaps (seaborn) and gain-vs-similarity scatter
panels, each returned as a Figure (Agg, no pyplot state) and saved as PNG. matplotlib and seaborn are
imported inside the functions: heavy imports that `mvlpt --help` should not pay for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DPI = 100


@dataclass(frozen=True)
class Panel:
    """One scatter panel: x and y values, a title and axis labels."""

    x: np.ndarray
    y: np.ndarray
    title: str
    xlabel: str
    ylabel: str


def new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig, path: Path) -> Path:
    import io

    from analysis.files import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")  # titles never clipped
    return write_atomic(path, buffer.getvalue())


def heatmap(
    matrix: pd.DataFrame,
    *,
    title: str,
    cbar_label: str,
    xlabel: str,
    ylabel: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    digits: int = 1,
    outline_diagonal: bool = False,
    extend: str = "neither",
    marks: pd.DataFrame | None = None,
):
    """An annotated seaborn heatmap of a DataFrame (rows top to bottom, columns left to right). NaN
    cells stay blank over a hatched background, so a missing value never looks like a small one.
    Values beyond vmin / vmax take the end colours (`extend` draws the colour bar's arrows for that).
    `marks`: a boolean frame of the same shape; its True cells get a thick outline."""
    import seaborn as sns
    from matplotlib.patches import Rectangle

    values = matrix.to_numpy(float)
    n_rows, n_cols = values.shape
    fig = new_figure(3.4 + 0.52 * n_cols, 2.4 + 0.46 * n_rows)
    ax = fig.add_subplot()
    ax.add_patch(
        Rectangle((0, 0), n_cols, n_rows, facecolor="white", edgecolor="0.65", hatch="///", lw=0, zorder=0)
    )
    size = 10 if max(n_rows, n_cols) <= 8 else 8.5 if max(n_rows, n_cols) <= 14 else 7
    sns.heatmap(
        matrix.astype(float),
        ax=ax,
        mask=~np.isfinite(values),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        annot=True,
        fmt=f".{digits}f",
        annot_kws={"fontsize": size},
        cbar_kws={"shrink": 0.8, "pad": 0.02, "extend": extend, "label": cbar_label},
        xticklabels=[str(c) for c in matrix.columns],
        yticklabels=[str(r) for r in matrix.index],
    )
    for text in ax.texts:
        text.set_in_layout(False)  # inside the axes anyway; measuring 400 texts doubles the layout time
    if outline_diagonal:
        for i in range(min(n_rows, n_cols)):
            ax.add_patch(Rectangle((i, i), 1, 1, fill=False, edgecolor="black", lw=1.0, zorder=3))
    if marks is not None:
        flagged = marks.reindex(index=matrix.index, columns=matrix.columns).fillna(False).to_numpy(bool)
        for i, j in zip(*np.nonzero(flagged), strict=True):
            ax.add_patch(Rectangle((j + 0.06, i + 0.06), 0.88, 0.88, fill=False, edgecolor="black", lw=1.8))
    ax.set_xticklabels(ax.get_xticklabels(), rotation=45, ha="right")
    ax.tick_params(labelsize=size + 1)
    ax.set_xlabel(xlabel, fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    ax.set_title(title, fontsize=12)
    return fig


def scatter_grid(panels: Sequence[Panel], title: str, ncols: int = 3):
    """Scatter panels side by side, each with a zero line and its least-squares line (when x varies)."""
    n = len(panels)
    cols = min(ncols, n)
    rows = -(-n // cols)
    fig = new_figure(5.0 * cols, 4.2 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, p in zip(axes, panels, strict=False):
        x, y = np.asarray(p.x, float), np.asarray(p.y, float)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.scatter(x, y, s=14, alpha=0.6, color="tab:blue", edgecolors="none")
        if len(x) >= 3 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            ends = np.array([x.min(), x.max()])
            ax.plot(ends, intercept + slope * ends, color="tab:red", lw=1.5)
        ax.set_title(p.title, fontsize=10)
        ax.set_xlabel(p.xlabel, fontsize=9)
        ax.set_ylabel(p.ylabel, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=12)
    return fig


def heatmap_row(
    matrices: Sequence[pd.DataFrame],
    titles: Sequence[str],
    *,
    vmax: float,
    cbar_label: str,
    within: Sequence[pd.DataFrame | None],
    kept: Sequence[pd.DataFrame | None],
):
    """Heatmaps side by side on one symmetric colour scale (RdBu_r, -vmax..vmax) with one colour bar,
    rows and columns in the order given. Per panel, the True cells of `within` get a small grey dot
    (within 2 SE of zero) and those of `kept` a black cross (the prompt kept its start); NaN cells are
    hatched."""
    import seaborn as sns
    from matplotlib.patches import Rectangle

    n = len(matrices[0])
    fig = new_figure(1.2 + 5.6 * len(matrices), 6.4)
    axes = fig.subplots(1, len(matrices), squeeze=False).ravel()
    for k, (ax, m) in enumerate(zip(axes, matrices, strict=True)):
        values = m.to_numpy(float)
        ax.add_patch(
            Rectangle((0, 0), n, n, facecolor="white", edgecolor="0.65", hatch="///", lw=0, zorder=0)
        )
        last = k == len(matrices) - 1
        sns.heatmap(
            m.astype(float), ax=ax, mask=~np.isfinite(values), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
            cbar=last, cbar_kws={"label": cbar_label, "shrink": 0.8} if last else {}, square=True,
            xticklabels=list(map(str, m.columns)), yticklabels=list(map(str, m.index)) if not k else False,
        )  # fmt: skip
        for flags, style in (
            (within[k], dict(marker="o", s=6, c="0.35")),
            (kept[k], dict(marker="x", s=22, c="k")),
        ):
            if flags is not None:
                i, j = np.nonzero(
                    flags.reindex(index=m.index, columns=m.columns).fillna(False).to_numpy(bool)
                )
                ax.scatter(j + 0.5, i + 0.5, linewidths=1.0, **style)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("target task")
        ax.set_ylabel("source task" if k == 0 else "")
        ax.set_title(titles[k], fontsize=11)
    return fig


def save_vector(fig, path: Path) -> Path:
    """The figure as SVG (text kept as text), written atomically."""
    import io

    from analysis.files import write_atomic

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    return write_atomic(path, buffer.getvalue())
