"""The results store: one Parquet file per cell, written atomically, readable as one dataset.

Layout of a study folder (any pyarrow filesystem URI, or a local path):
    <cell_id>.parquet     one row per evaluated cell (ok or failed); a retry replaces the file
    _prompts/<cell_id>.pt the learned prompt state of that cell
    _study.toml, _study.json  the spec and its identity
Names starting with '_' or '.' are skipped by pyarrow's dataset discovery, so pandas, pyarrow and
DuckDB read the folder itself as the table. Temporary files start with '.', so a reader never sees
a torn file and a killed writer leaves nothing that counts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import MvlptError

# Every cell file has exactly this schema (SPEC 7), so any reader sees one table whatever row it
# opens first: a failed cell has nulls where a finished one has numbers.
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
        ("shots", pa.int64()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("val_value", pa.float64()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("epochs_run", pa.int64()),
        ("best_epoch", pa.int64()),
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
        """Write under a hidden temporary name, then rename into place."""
        final = self._path(name)
        head, _, tail = final.rpartition("/")
        tmp = f"{head}/.tmp-{uuid.uuid4().hex}-{tail}"
        try:
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

    def has(self, name: str) -> bool:
        return self.fs.get_file_info(self._path(name)).type == pafs.FileType.File

    def read_text(self, name: str) -> str | None:
        path = self._path(name)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read().decode()

    def write_cell(self, row: dict, prompt_state: dict | None = None) -> None:
        """Store one cell's row (and its prompt): the prompt first, so a row never points nowhere."""
        row = dict(row)
        if prompt_state is not None:
            import torch

            buffer = io.BytesIO()
            torch.save(prompt_state, buffer)
            name = f"{PROMPTS}/{row['cell_id']}.pt"
            self._write_atomic(name, buffer.getvalue())
            row["prompt_path"] = name
        else:
            row.setdefault("prompt_path", None)
        unknown = set(row) - set(SCHEMA.names)
        if unknown:
            raise MvlptError(f"result row has columns outside the store schema: {sorted(unknown)}")
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist([row], schema=SCHEMA), sink)
        self._write_atomic(f"{row['cell_id']}.parquet", sink.getvalue().to_pybytes())

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
        """All cell rows; a file that cannot be read is named in the error."""
        files = self.cell_files()
        if not files:
            schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        try:  # one multi-threaded scan: 3x faster than a file at a time over a thousand cells
            return ds.dataset(files, schema=SCHEMA, format="parquet", filesystem=self.fs).to_table(
                columns=columns
            )
        except (pa.ArrowInvalid, OSError):
            pass  # read them one by one to name the file that fails
        tables = []
        for path in files:
            try:
                tables.append(pq.read_table(path, filesystem=self.fs, columns=columns))
            except (pa.ArrowInvalid, OSError) as err:
                raise MvlptError(f"unreadable result file {path}: {err}") from err
        return pa.concat_tables(tables)

    def status_of(self) -> dict[str, str]:
        """cell_id -> status for every stored cell."""
        table = self.read(["cell_id", "status"])
        return dict(zip(table.column("cell_id").to_pylist(), table.column("status").to_pylist(), strict=True))

    def done(self) -> set[str]:
        return {cid for cid, status in self.status_of().items() if status == "ok"}

    def load_prompt(self, cell_id: str) -> dict:
        import torch

        path = self._path(PROMPTS, f"{cell_id}.pt")
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise MvlptError(f"no stored prompt for cell {cell_id} in {self.location}")
        with self.fs.open_input_stream(path) as f:
            return torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)

    def meta(self) -> dict | None:
        text = self.read_text(SPEC_JSON)
        return json.loads(text) if text is not None else None
