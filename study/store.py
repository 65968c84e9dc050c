"""The results store: one Parquet file per cell, written atomically, readable as one dataset.

Layout of a study folder (any pyarrow filesystem URI, or a local path):
    <cell_id>.parquet     one row per evaluated cell (ok or failed); a retry replaces the file
    _prompts/<cell_id>.pt the learned prompt state of that cell
    _study.toml, _study.json  the spec and its identity
    _tables/              tables that are not cells (embeddings, designed similarities)
    _study.lock           who is running the study now (host and pid)
Names starting with '_' or '.' are skipped by pyarrow's dataset discovery, and the only top-level
`*.parquet` files are cells, so pandas, pyarrow, polars and DuckDB (`'DIR/*.parquet'`) read the folder
as the table. Temporary files start with '.' and end in '.tmp', so a reader never sees a torn file
and a killed writer leaves nothing that counts. A file that is not a cell of this study (torn,
foreign, another study's row) is skipped and named, never counted as done.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import uuid
from typing import NamedTuple

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import MvlptError, first_line

log = logging.getLogger(__name__)

# Every cell file has exactly this schema, so any reader sees one table whatever row it opens first:
# a failed cell has nulls where a finished one has numbers. Its columns are the fields of
# pipeline.run.CellResult's row plus `study` and `prompt_path`, which the study adds.
SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("cell_id", pa.string()),
        ("stage", pa.string()),
        ("mode", pa.string()),
        ("label_space", pa.string()),
        ("joint_sampling", pa.string()),
        ("method", pa.string()),
        ("backbone", pa.string()),
        ("source", pa.string()),
        ("target", pa.string()),
        ("policy", pa.string()),  # multisource and groups cells: the rule that chose their task set
        ("budget", pa.string()),  # multitask, multisource and groups cells: the set prompt's steps
        ("shots", pa.int64()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("val_value", pa.float64()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("epochs_run", pa.int64()),
        ("best_epoch", pa.int64()),
        ("moved", pa.bool_()),  # whether the kept prompt differs from its start; null: not tuned
        ("wall_s", pa.float64()),
        ("peak_mem_mb", pa.float64()),
        ("device", pa.string()),
        ("node", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("code_version", pa.string()),
        ("created_at", pa.string()),
        ("method_config", pa.string()),
        ("prompt_path", pa.string()),
    ]
)

PROMPTS = "_prompts"
SPEC_TOML = "_study.toml"
SPEC_JSON = "_study.json"
# what a row needs to be a cell at all; every other column may be missing (filled with nulls)
CELL_KEYS = ("cell_id", "status", "stage", "method", "target")
# a cell id names files in the folder: nothing that could leave it (no '/', no '..', no leading '.')
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_cell_id(cell_id) -> str:
    """`cell_id` when it is safe as a file name in the folder, else one clear error."""
    if not isinstance(cell_id, str) or not _SAFE_ID.fullmatch(cell_id) or len(cell_id) > 128:
        raise MvlptError(f"invalid cell id {cell_id!r}: expected letters, digits, '-' or '_'")
    return cell_id


class SkippedFile(NamedTuple):
    """A file of the folder that is not a readable cell of this study, and why."""

    name: str
    reason: str


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, OSError) as err:
            raise MvlptError(f"cannot open store location '{location}': {err}") from err
    return pafs.LocalFileSystem(), os.path.abspath(location)


class Store:
    """One study's folder of results."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        self.fs, self.root = _filesystem(self.location)
        self.skipped: tuple[SkippedFile, ...] = ()  # what the last read() left out, and why

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def create(self) -> None:
        try:
            self.fs.create_dir(self._path(PROMPTS), recursive=True)
            probe = self._path(f".probe-{uuid.uuid4().hex}")
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise MvlptError(f"results folder is not writable: {self.location} ({err})") from err

    def _write_atomic(self, name: str, data: bytes) -> None:
        """Write under a hidden temporary name, then rename into place; on a local disk the file and
        its folder entry are flushed to the device first, so a power loss leaves the old file or the
        new one, never an empty one that would count as a cell."""
        final = self._path(name)
        head, _, tail = final.rpartition("/")
        # hidden, and not ending in .parquet: DuckDB's and polars' `*.parquet` globs match hidden files
        tmp = f"{head}/.{tail}.{uuid.uuid4().hex}.tmp"
        try:
            if "/" in name:
                self.fs.create_dir(head, recursive=True)
            if isinstance(self.fs, pafs.LocalFileSystem):
                write_durably(tmp, final, data)
                return
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, final)
        except OSError as err:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise MvlptError(f"could not write {final}: {err}") from err

    def write_text(self, name: str, text: str) -> None:
        self._write_atomic(name, text.encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        self._write_atomic(name, data)

    def delete(self, name: str) -> None:
        """Remove the file `name` of the folder if it is there."""
        if self.has(name):
            self.fs.delete_file(self._path(name))

    def has(self, name: str) -> bool:
        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def read_bytes(self, name: str) -> bytes | None:
        path = self._path(name)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def read_text(self, name: str) -> str | None:
        data = self.read_bytes(name)
        return None if data is None else data.decode()

    def write_cell(self, row: dict, prompt_state: dict | None = None) -> None:
        """Store one cell's row (and its prompt): the prompt first, so a row never points nowhere."""
        row = dict(row)
        if prompt_state is not None:
            import torch

            buffer = io.BytesIO()
            torch.save(prompt_state, buffer)
            name = f"{PROMPTS}/{check_cell_id(row['cell_id'])}.pt"
            self._write_atomic(name, buffer.getvalue())
            row["prompt_path"] = name
        else:
            row.setdefault("prompt_path", None)
        unknown = set(row) - set(SCHEMA.names)
        if unknown:
            raise MvlptError(f"result row has columns outside the store schema: {sorted(unknown)}")
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), sink)
        self._write_atomic(f"{check_cell_id(row['cell_id'])}.parquet", sink.getvalue().to_pybytes())

    def cell_files(self) -> list[str]:
        if not self.exists():
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=False))
        return [
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.endswith(".parquet")
            and not i.base_name.startswith((".", "_"))
        ]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The rows of this study's cells. A file that is not one (unreadable, foreign columns or
        types, a row of another study or under another file name) is left out, logged and listed in
        `self.skipped`, so that it never counts as done and never stops the study."""
        files = self.cell_files()
        wanted = list(SCHEMA.names) if columns is None else list(columns)
        schema = pa.schema([SCHEMA.field(c) for c in wanted])
        self.skipped = ()
        if not files:
            return schema.empty_table()
        meta = self.meta()
        study = meta.get("name") if meta is not None else None
        keys = list(dict.fromkeys([*wanted, "cell_id", "study"]))
        try:  # one multi-threaded scan: 3x faster than a file at a time over a thousand cells
            table = ds.dataset(files, schema=SCHEMA, format="parquet", filesystem=self.fs).to_table(
                columns=keys
            )
            stems = sorted((_stem(f) for f in files), key=str)
            if sorted(table.column("cell_id").to_pylist(), key=str) == stems and (
                study is None or set(table.column("study").to_pylist()) <= {study, None}
            ):
                return table.select(wanted)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError):
            pass  # read them one by one to name the files that are not cells
        tables, skipped = [], []
        for path in files:
            table, why = _read_cell_file(self.fs, path, study)
            if why is not None:
                skipped.append(SkippedFile(path.rpartition("/")[2], why))
                log.warning("skipped %s: %s", path, why)
            else:
                tables.append(table.select(wanted))
        self.skipped = tuple(skipped)
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def status_of(self) -> dict[str, str]:
        """cell_id -> status for every stored cell."""
        table = self.read(["cell_id", "status"])
        return dict(zip(table.column("cell_id").to_pylist(), table.column("status").to_pylist(), strict=True))

    def done(self) -> set[str]:
        return {cid for cid, status in self.status_of().items() if status == "ok"}

    def load_prompt(self, cell_id: str) -> dict:
        import torch

        path = self._path(PROMPTS, f"{check_cell_id(cell_id)}.pt")
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise MvlptError(f"no stored prompt for cell {cell_id} in {self.location}")
        with self.fs.open_input_stream(path) as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)

    def meta(self) -> dict | None:
        """The study's metadata, None without `_study.json`; a damaged one is one clear error."""
        where = self._path(SPEC_JSON)
        try:
            text = self.read_text(SPEC_JSON)
            meta = json.loads(text) if text is not None else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MvlptError(f"unreadable {where} ({err}); restore it from a copy of the study") from err
        if meta is not None and (not isinstance(meta, dict) or not isinstance(meta.get("name"), str)):
            raise MvlptError(f"{where} is not a study's metadata (a JSON object with its name)")
        return meta


def _stem(path: str) -> str:
    return path.rpartition("/")[2][: -len(".parquet")]


def _read_cell_file(fs: pafs.FileSystem, path: str, study: str | None) -> tuple[pa.Table | None, str | None]:
    """(the file's rows in the store's schema, None) or (None, why it is not a cell of `study`)."""
    try:
        table = pq.read_table(path, filesystem=fs)
    except Exception as err:  # torn or foreign bytes: pyarrow raises ArrowInvalid, OSError and others
        return None, f"unreadable: {first_line(err)}"
    lacking = [c for c in CELL_KEYS if c not in table.column_names]
    if lacking:
        return None, f"not a cell file: no column {', '.join(lacking)}"
    columns = []
    for field in SCHEMA:
        if field.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type and not pa.types.is_null(column.type):
            return None, f"column '{field.name}' is {column.type}, expected {field.type}"
        columns.append(column.cast(field.type))
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    if table.column("cell_id").to_pylist() != [_stem(path)]:
        return None, "its row is not the cell its file name says"
    if study is not None and table.column("study").to_pylist() not in ([study], [None]):
        return None, f"a row of another study ({table.column('study')[0].as_py()!r})"
    return table, None


def write_durably(tmp: str, final: str, data: bytes) -> None:
    """Write `data` to the local file `tmp`, flush it to the device, rename it to `final`, and flush
    the folder entry: after this returns, `final` holds `data` across a power loss."""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    folder = os.open(os.path.dirname(final) or ".", os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
