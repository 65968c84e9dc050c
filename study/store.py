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
import stat
import uuid
import zipfile
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


def local_location(location: str) -> str:
    """A `file://` URI as the local path it names (it gets exactly the checks of a path); any other
    location unchanged."""
    if not location.lower().startswith("file:"):
        return location
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, OSError) as err:
        raise MvlptError(f"cannot open store location '{location}': {err}") from err
    if not isinstance(fs, pafs.LocalFileSystem):
        raise MvlptError(f"'{location}' is not a local folder")
    return path


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
        self.location = local_location(str(location))
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

    def entries(self, folder: str | None = None) -> list[tuple[str, str]]:
        """(name, kind) of a folder's entries without following links: kind is 'file' (a regular
        file), 'dir', 'link' or 'other' (a pipe, a socket, a device: never opened)."""
        where = self.root if folder is None else self._path(folder)
        if isinstance(self.fs, pafs.LocalFileSystem):
            try:
                with os.scandir(where) as it:
                    return [(e.name, _kind(e.stat(follow_symlinks=False).st_mode)) for e in it]
            except (FileNotFoundError, NotADirectoryError):
                return []
        if self.fs.get_file_info(where).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(where, recursive=False))
        kinds = {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}
        return [(i.base_name, kinds.get(i.type, "other")) for i in infos]

    def cell_files(self) -> list[str]:
        """The paths of the folder's cell files: plain files named `*.parquet` (not '.' or '_')."""
        return [self._path(n) for n, kind in sorted(self.entries()) if _cell_name(n) and kind == "file"]

    def odd_cells(self) -> list[SkippedFile]:
        """Entries named like cells that are not plain files of the folder (a folder, a link)."""
        return [
            SkippedFile(n, f"a {_KIND_TEXT[kind]}, not a cell file")
            for n, kind in sorted(self.entries())
            if _cell_name(n) and kind != "file"
        ]

    def links(self) -> list[str]:
        """The folder's own entries, and those of its `_` folders, that are links (or not plain
        files and folders): a write through one would land outside the folder."""
        out = []
        for name, kind in sorted(self.entries()):
            if kind in ("link", "other"):
                out.append(name)
            elif kind == "dir" and name.startswith("_"):
                out += [f"{name}/{n}" for n, k in sorted(self.entries(name)) if k in ("link", "other")]
        return out

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """The rows of this study's cells. A file that is not one (unreadable, foreign columns or
        types, a row of another study, under another file name or outside the study's grid, an ok
        row whose prompt is damaged) is left out, logged and listed in `self.skipped`, so that it
        never counts as done and never stops the study."""
        wanted = list(SCHEMA.names) if columns is None else list(columns)
        meta = self.meta()
        study = meta.get("name") if meta is not None else None
        known = frozenset(meta["cell_ids"]) if meta is not None and "cell_ids" in meta else None
        keys = list(dict.fromkeys([*wanted, *CELL_KEYS, "study", "prompt_path"]))
        table, skipped = _scan(self.fs, self.cell_files(), study, keys)
        table, unsound = self._sound_rows(table, known)
        self.skipped = tuple([*self.odd_cells(), *skipped, *unsound])
        for s in self.skipped:
            log.warning("skipped %s: %s", s.name, s.reason)
        return table.select(wanted)

    def _sound_rows(
        self, table: pa.Table, known: frozenset[str] | None
    ) -> tuple[pa.Table, list[SkippedFile]]:
        """Leave out rows outside the study's grid (`known` ids; None: not recorded) and ok rows
        whose stored prompt is missing or damaged (the cell runs again)."""
        keep, skipped = [], []
        prompts = dict(self.entries(PROMPTS)) if table.num_rows else {}
        rows = table.select(["cell_id", "status", "prompt_path"]).to_pylist()
        for r in rows:
            cid, prompt = r["cell_id"], r["prompt_path"]
            why, name = None, f"{cid}.parquet"
            if known is not None and cid not in known:
                why = "not a cell of this study's grid"
            elif r["status"] == "ok" and prompt is not None:
                name = f"{PROMPTS}/{cid}.pt"
                why = (
                    "its row names another prompt file"
                    if prompt != name
                    else self._prompt_problem(name, prompts)
                )
            keep.append(why is None)
            if why is not None:
                skipped.append(SkippedFile(name, why))
        return (table.filter(pa.array(keep, pa.bool_())) if skipped else table), skipped

    def _prompt_problem(self, name: str, kinds: dict[str, str]) -> str | None:
        """Why the stored prompt `name` cannot be loaded, or None (`kinds`: the prompt folder's
        entries). torch writes a zip archive; a prompt that passes this check and still fails to
        load names itself when a cell starts from it."""
        kind = kinds.get(name.rpartition("/")[2])
        if kind != "file":
            return "the cell's prompt is missing" if kind is None else f"its prompt is a {_KIND_TEXT[kind]}"
        try:  # the archive's directory is at its end: a torn or foreign file has none
            with zipfile.ZipFile(io.BytesIO(self.read_bytes(name) or b"")):
                return None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            return f"damaged prompt ({first_line(err)}); the cell runs again"

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
        try:
            with self.fs.open_input_stream(path) as f:
                return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        except Exception as err:  # torch's unpickler raises any type on junk bytes
            raise MvlptError(f"damaged prompt {path}: {type(err).__name__}: {first_line(err)}") from err

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
        if meta is not None and (problem := meta_problem(meta)) is not None:
            raise MvlptError(f"{where}: {problem}; restore it from a copy of the study")
        return meta


_KIND_TEXT = {"dir": "folder", "link": "link", "other": "special file", "file": "file"}


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"


def _cell_name(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _stem(path: str) -> str:
    return path.rpartition("/")[2][: -len(".parquet")]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# the sections of a stored spec that are tables, and the metadata fields that are plain strings
_SPEC_TABLES = ("recipe", "methods", "multisource", "groups", "noise", "resources")
_META_STRINGS = ("spec_hash", "weights_sha256", "backbone_identity", "created_at", "updated_at")


def meta_problem(meta: dict) -> str | None:
    """What is wrong with the types of a study's metadata, naming the field, or None."""
    grid, spec, identity = meta.get("grid", {}), meta.get("spec", {}), meta.get("identity", {})
    if "protocol" in meta and not _is_int(meta["protocol"]):
        return f"'protocol' must be an integer, got {meta['protocol']!r}"
    if not isinstance(grid, dict) or not all(
        isinstance(k, str) and k.count("/") == 1 and _is_int(v) and v >= 0 for k, v in grid.items()
    ):
        return "'grid' must map 'stage/method' to a count of cells"
    if not isinstance(spec, dict):
        return "'spec' must be a table of the study's spec"
    for key in _SPEC_TABLES:
        if key in spec and not isinstance(spec[key], dict):
            return f"'spec.{key}' must be a table, got {spec[key]!r}"
    if not isinstance(identity, dict) or not isinstance(identity.get("methods", {}), dict):
        return "'identity' must be a table of the fields that enter every cell's identity"
    ids = meta.get("cell_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "'cell_ids' must be a list of cell ids"
    bad = [k for k in _META_STRINGS if k in meta and not isinstance(meta[k], str)]
    return f"'{bad[0]}' must be a string, got {meta[bad[0]]!r}" if bad else None


def _schema_problem(schema: pa.Schema) -> str | None:
    """Why a file with this schema is not a cell file (a key column missing, a column of another
    type than the store's SCHEMA gives it), or None. Columns outside SCHEMA are ignored."""
    lacking = [c for c in CELL_KEYS if c not in schema.names]
    if lacking:
        return f"not a cell file: no column {', '.join(lacking)}"
    for field in SCHEMA:
        if field.name in schema.names:
            t = schema.field(field.name).type
            if t != field.type and not pa.types.is_null(t):
                return f"column '{field.name}' is {t}, expected {field.type}"
    return None


def _row_problem(row: dict, stem: str, study: str | None) -> str | None:
    """Why the one row of the file `stem`.parquet is not a cell of `study`, or None."""
    if row["cell_id"] != stem:
        return "its row is not the cell its file name says"
    if not _SAFE_ID.fullmatch(stem) or len(stem) > 128:
        return "not a valid cell id"
    # a multitask cell has no target: the keys every count groups by
    empty = [k for k in ("cell_id", "status", "stage", "method") if row[k] is None]
    if empty:
        return f"its row has no {empty[0]}"
    if row["status"] not in ("ok", "failed"):
        return f"its status is {row['status']!r}, not 'ok' or 'failed'"
    if study is not None and row["study"] not in (study, None):
        return f"a row of another study ({row['study']!r})"
    return None


def _scan(
    fs: pafs.FileSystem, files: list[str], study: str | None, columns: list[str]
) -> tuple[pa.Table, list[SkippedFile]]:
    """The `columns` of the cell files' rows in the store's schema, and the files left out with why."""
    if not files:
        return pa.schema([SCHEMA.field(c) for c in columns]).empty_table(), []
    try:  # one multi-threaded scan: 3x faster than a file at a time over a thousand cells
        dataset = ds.dataset(files, schema=SCHEMA, format="parquet", filesystem=fs)
        table = dataset.to_table(columns=columns)
        schemas: list[pa.Schema] = []  # the files' distinct schemas: one or two in a study
        for fragment in dataset.get_fragments():
            if not any(fragment.physical_schema.equals(seen) for seen in schemas):
                schemas.append(fragment.physical_schema)
        sound = table.num_rows == len(files) and not any(_schema_problem(s) for s in schemas)
        keys = table.select([*CELL_KEYS, "study"]).to_pylist()
        stems = sorted(_stem(f) for f in files)
        same_ids = sorted(r["cell_id"] or "" for r in keys) == stems
        if sound and same_ids and not any(_row_problem(r, r["cell_id"], study) for r in keys):
            return table, []
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError):
        pass  # read them one by one to name the files that are not cells
    tables, skipped = [], []
    for path in files:
        table, why = _read_cell_file(fs, path, study)
        if why is not None:
            skipped.append(SkippedFile(path.rpartition("/")[2], why))
        else:
            tables.append(table.select(columns))
    empty = pa.schema([SCHEMA.field(c) for c in columns]).empty_table()
    return (pa.concat_tables(tables) if tables else empty), skipped


def _read_cell_file(fs: pafs.FileSystem, path: str, study: str | None) -> tuple[pa.Table | None, str | None]:
    """(the file's rows in the store's schema, None) or (None, why it is not a cell of `study`)."""
    try:
        table = pq.read_table(path, filesystem=fs)
    except Exception as err:  # torn or foreign bytes: pyarrow raises ArrowInvalid, OSError and others
        return None, f"unreadable: {first_line(err)}"
    if (why := _schema_problem(table.schema)) is not None:
        return None, why
    if table.num_rows != 1:
        return None, f"holds {table.num_rows} rows, a cell file holds one"
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(1, f.type)
        for f in SCHEMA
    ]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    why = _row_problem(table.to_pylist()[0], _stem(path), study)
    return (None, why) if why is not None else (table, None)


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
