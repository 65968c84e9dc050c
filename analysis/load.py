"""Read a study folder into pandas without the kernel: cell rows, metadata, embeddings, designed similarities.

A study folder holds one `<cell_id>.parquet` per cell (names starting with '.' or '_' are not cells),
`_study.json` (its metadata), and optionally `_tables/embeddings.parquet` (image, label and prompt
embeddings, long format) and `_tables/designed.parquet` (the built-in suite's designed similarities),
kept in a '_' folder so that a `DIR/*.parquet` glob reads the cells alone. A cell file that cannot be
read, or that holds another study's row, is skipped and named, never fatal: one torn file must not
hide a study.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import first_line  # the kernel's one-line error text; torch-free

log = logging.getLogger(__name__)

STUDY_JSON = "_study.json"
TABLES_DIR = "_tables"
EMBEDDINGS = f"{TABLES_DIR}/embeddings.parquet"
DESIGNED = f"{TABLES_DIR}/designed.parquet"
# where earlier versions kept them, beside the cells; still read
LEGACY = {EMBEDDINGS: "_embeddings.parquet", DESIGNED: "_designed.parquet"}
# what a row needs to count as a cell; the store writes more (see Results in the README), the
# report reads these
CELL_COLUMNS = ("stage", "method", "target", "value", "status")
# `policy` (how a multisource cell chose its source set, or what a group was clustered by) is absent
# from folders written before those stages: read as null
OPTIONAL_COLUMNS = (
    "study",
    "cell_id",
    "mode",
    "backbone",
    "source",
    "shots",
    "seed",
    "metric",
    "error",
    "policy",
    "moved",  # whether a tuned cell's kept prompt left its start; null in older folders
)
EMBEDDING_COLUMNS = ("kind", "method", "task", "shots", "seed", "item", "vector")
DESIGNED_COLUMNS = ("kind", "source", "target", "value")


class ReportError(ValueError):
    """Input the report cannot work from (no folder, not a study, no cells); str(err) is one line."""


class SkippedFile(NamedTuple):
    """A file of the study folder that could not be read, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class StudyTables:
    """Everything the report reads from a study folder. `embeddings` is None when the folder has no
    (readable) `_embeddings.parquet`; `designed` maps a kind ("visual", "label") to a square task x
    task DataFrame (sources as rows), empty when the folder has no designed similarities."""

    folder: Path
    meta: dict
    cells: pd.DataFrame
    skipped: tuple[SkippedFile, ...] = ()
    embeddings: pd.DataFrame | None = None
    designed: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        if self.meta.get("name"):
            return str(self.meta["name"])
        studies = self.cells["study"].dropna().unique() if "study" in self.cells else []
        return str(studies[0]) if len(studies) == 1 else self.folder.name

    @property
    def backbone(self) -> str | None:
        spec = self.meta.get("spec")
        if isinstance(spec, dict) and spec.get("backbone"):
            return str(spec["backbone"])
        found = sorted(self.cells["backbone"].dropna().unique()) if "backbone" in self.cells else []
        return ", ".join(map(str, found)) or None


def _read_parquet(path: Path, required: tuple[str, ...]) -> tuple[pa.Table | None, str | None]:
    """(table, None) or (None, why it cannot be used)."""
    try:
        table = pq.ParquetFile(path).read()
    except Exception as err:  # a torn or foreign file: pyarrow raises ArrowInvalid, OSError and others
        return None, f"unreadable: {first_line(err)}"
    lacking = [c for c in required if c not in table.column_names]
    if lacking:
        return None, f"not a result file: no column {', '.join(lacking)}"
    return table, None


# the kind of value each cell column must hold; a file with another (a foreign schema) is not a cell file
_COLUMN_KINDS = {
    "value": ("a number", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)),
    "shots": ("an integer", pa.types.is_integer),
    "seed": ("an integer", pa.types.is_integer),
    **{c: ("a string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))
       for c in ("study", "cell_id", "stage", "mode", "method", "source", "target", "status", "metric",
                 "policy")},
}  # fmt: skip


def _foreign_column(table: pa.Table) -> str | None:
    """Why the table cannot be a cell file by its column types, or None."""
    for name, (kind, ok) in _COLUMN_KINDS.items():
        if name in table.column_names:
            t = table.schema.field(name).type
            if not (pa.types.is_null(t) or ok(t)):
                return f"not a result file: column '{name}' is {t}, expected {kind}"
    return None


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # schemas that arrow will not unify (an older writer)
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def _cell_problem(table: pa.Table, name: str, study: str | None, known: frozenset | None) -> str | None:
    """Why the rows of the cell file `name` are not cells of the study, or None."""
    if (why := _foreign_column(table)) is not None:
        return why
    if study is not None and "study" in table.column_names:
        foreign = {s for s in table.column("study").to_pylist() if s is not None and s != study}
        if foreign:
            return f"a row of another study ({sorted(map(str, foreign))[0]!r})"
    if "cell_id" in table.column_names:
        ids = table.column("cell_id").to_pylist()
        if ids != [name.removesuffix(".parquet")]:
            return "its row is not the cell its file name says"
        if known is not None and ids[0] not in known:
            return "not a cell of this study's grid"
    return None


def read_cells(
    folder: Path, study: str | None = None, known: frozenset | None = None
) -> tuple[pd.DataFrame, tuple[SkippedFile, ...]]:
    """All cell rows of a folder, read file by file; unreadable files, rows of a study other than
    `study` (when given), rows under another file name or outside the study's grid (`known` ids,
    when recorded), and entries named like cells that are not plain files are skipped and returned."""
    entries = sorted(
        p for p in folder.iterdir() if p.name.endswith(".parquet") and not p.name.startswith((".", "_"))
    )
    tables, skipped = [], []
    for path in entries:
        name = path.name
        if path.is_symlink() or not path.is_file():
            kind = "link" if path.is_symlink() else "folder" if path.is_dir() else "special file"
            why = f"a {kind}, not a cell file"
            table = None
        else:
            table, why = _read_parquet(path, CELL_COLUMNS)
        if table is not None and (why := _cell_problem(table, name, study, known)) is not None:
            table = None
        if table is None:
            log.warning("skipped %s: %s", name, why)
            skipped.append(SkippedFile(name, why))
        elif table.num_rows:
            tables.append(table)
    cells = _concat(tables) if tables else pd.DataFrame(columns=[*CELL_COLUMNS, *OPTIONAL_COLUMNS])
    for col in OPTIONAL_COLUMNS:
        if col not in cells:
            cells[col] = None
    cells["value"] = pd.to_numeric(cells["value"], errors="coerce").astype(float)
    return cells, tuple(skipped)


def read_meta(folder: Path) -> dict:
    path = folder / STUDY_JSON
    if not path.is_file():
        raise ReportError(f"not a study folder (no {STUDY_JSON}): {folder}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"unreadable {STUDY_JSON} in {folder}: {err}") from err
    if not isinstance(meta, dict):
        raise ReportError(f"{folder / STUDY_JSON} is not a JSON object")
    return meta


def _square(part: pd.DataFrame) -> pd.DataFrame:
    names = list(dict.fromkeys([*part["source"], *part["target"]]))
    m = part.pivot_table(index="source", columns="target", values="value", aggfunc="mean")
    m = m.reindex(index=names, columns=names).astype(float)
    m.index.name, m.columns.name = "source", "target"
    return m


def _table_path(folder: Path, name: str) -> Path | None:
    """Where the folder keeps the non-cell table `name` (or kept it before), None if nowhere."""
    for candidate in (folder / name, folder / LEGACY[name]):
        if candidate.is_file():
            return candidate
    return None


def load_study(folder: str | Path) -> StudyTables:
    """Read a study folder. Raises ReportError when the folder is missing or is not a study; a study
    without cells is returned as it is (the report decides what to say)."""
    folder = Path(folder)
    if not folder.exists():
        raise ReportError(f"no such folder: {folder}")
    if not folder.is_dir():
        raise ReportError(f"not a folder: {folder}")
    meta = read_meta(folder)
    name, ids = meta.get("name"), meta.get("cell_ids")
    known = frozenset(ids) if isinstance(ids, list) else None
    cells, skipped = read_cells(folder, name if isinstance(name, str) else None, known)
    skipped = list(skipped)
    embeddings = None
    if (path := _table_path(folder, EMBEDDINGS)) is not None:
        table, why = _read_parquet(path, ("kind", "task", "vector"))
        if table is None:
            skipped.append(SkippedFile(path.relative_to(folder).as_posix(), why))
        else:
            embeddings = table.to_pandas()
            for col in EMBEDDING_COLUMNS:
                if col not in embeddings:
                    embeddings[col] = None
    designed = {}
    if (path := _table_path(folder, DESIGNED)) is not None:
        table, why = _read_parquet(path, DESIGNED_COLUMNS)
        if table is None:
            skipped.append(SkippedFile(path.relative_to(folder).as_posix(), why))
        else:
            df = table.to_pandas()
            designed = {str(k): _square(part) for k, part in df.groupby("kind", sort=False)}
    return StudyTables(folder, meta, cells, tuple(skipped), embeddings, designed)


# --- embeddings as arrays by task ------------------------------------------------------------------


def _rows(embeddings: pd.DataFrame, kind: str, method: str | None = None, shots=None) -> pd.DataFrame:
    part = embeddings[embeddings["kind"] == kind]
    if method is not None:
        part = part[part["method"] == method]
    if shots is not None and (part["shots"] == shots).any():
        part = part[part["shots"] == shots]
    return part


def _stack(part: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=float) for v in part["vector"]])


def image_arrays(embeddings: pd.DataFrame, shots=None) -> dict[str, np.ndarray]:
    """task -> (images, d) raw image embeddings: the K-shot images of `shots` when the table has them,
    else every image row of the task (all shots and seeds pooled)."""
    part = _rows(embeddings, "image", shots=shots)
    return {str(t): _stack(p) for t, p in part.groupby("task", sort=False)}


def label_arrays(embeddings: pd.DataFrame) -> dict[str, np.ndarray]:
    """task -> (classes, d) text embeddings of its class names, one row per class."""
    part = _rows(embeddings, "label").drop_duplicates(["task", "item"])
    return {str(t): _stack(p) for t, p in part.groupby("task", sort=False)}


def prompt_arrays(embeddings: pd.DataFrame, method: str, shots=None) -> dict[str, np.ndarray]:
    """task -> the method's learned prompt of the task's single runs, averaged over seeds."""
    part = _rows(embeddings, "prompt", method=method, shots=shots)
    return {str(t): _stack(p).mean(axis=0) for t, p in part.groupby("task", sort=False)}


def prompt_methods(embeddings: pd.DataFrame) -> list[str]:
    return [str(m) for m in dict.fromkeys(embeddings.loc[embeddings["kind"] == "prompt", "method"].dropna())]
