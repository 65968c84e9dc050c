"""A corpus of damaged study folders: torn, zero-byte, foreign, wrong-typed, misnamed, stray,
directory-shaped and linked cells; damaged, missing and linked prompts, tables and metadata. Every
command either works on the sound cells and names the rest, or stops with one line; it never says
"unexpected" and never writes outside the folder. Then Hypothesis varies the metadata's fields."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from study.cli import main
from tests.study.finished import cell_ids, copy_of, resume_here

COMMANDS = ("status", "resume --dry-run", "run --dry-run", "report", "resume")


class Damage(NamedTuple):
    """One kind of damage: `apply(folder, outside, ids)` breaks a copy and returns the name of what
    it broke as the commands of `named_by` must name it when they work."""

    apply: Callable[[Path, Path, dict], str | None]
    named_by: tuple[str, ...] = ()


def _parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def _cell(folder: Path, cid: str) -> Path:
    return folder / f"{cid}.parquet"


def _rewrite(folder: Path, cid: str, **changes) -> str:
    row = {**pq.read_table(_cell(folder, cid)).to_pylist()[0], **changes}
    _cell(folder, cid).write_bytes(_parquet([row]))
    return f"{cid}.parquet"


def _torn(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _moved_out(folder: Path, outside: Path, name: str) -> str:
    """Move `name` out of the folder and leave a link to it in its place."""
    shutil.move(folder / name, outside / name.replace("/", "-"))
    (folder / name).symlink_to(outside / name.replace("/", "-"))
    return name


def _two_rows(folder: Path, cid: str) -> str:
    table = pq.read_table(_cell(folder, cid))
    sink = io.BytesIO()
    pq.write_table(pa.concat_tables([table, table]), sink)
    _cell(folder, cid).write_bytes(sink.getvalue())
    return f"{cid}.parquet"


def _meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "_study.json").read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    (folder / "_study.json").write_text(json.dumps(meta))


def _no_prompt(folder: Path, cid: str) -> str:
    (folder / "_prompts" / f"{cid}.pt").unlink()
    return f"_prompts/{cid}.pt"


def _write(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return name


def _copied(folder: Path, cid: str, name: str) -> str:
    shutil.copy(_cell(folder, cid), folder / name)
    return name


def _torn_file(folder: Path, name: str) -> str:
    _torn(folder / name)
    return name


ALL = ("status", "resume --dry-run", "report")
LAUNCH = ("status", "resume --dry-run")  # what the report does not read: statuses, prompts
# damage to cells, prompts and tables: every command works on the rest; one folder holds them all
CELLS = {
    "torn cell": Damage(lambda f, o, ids: _torn_file(f, f"{ids['single'][0]}.parquet"), ALL),
    "zero-byte cell": Damage(lambda f, o, ids: _write(f, f"{ids['transfer'][0]}.parquet", b""), ALL),
    "foreign parquet": Damage(lambda f, o, ids: _write(f, "foreign.parquet", _parquet([{"x": 1}])), ALL),
    "wrong-typed value": Damage(lambda f, o, ids: _rewrite(f, ids["transfer"][1], value="0.5"), ALL),
    "only id and status": Damage(
        lambda f, o, ids: _write(
            f, f"{ids['transfer'][2]}.parquet", _parquet([{"cell_id": ids["transfer"][2], "status": "ok"}])
        ),
        ALL,
    ),
    "another study's row": Damage(lambda f, o, ids: _rewrite(f, ids["transfer"][3], study="other"), ALL),
    "misnamed row": Damage(
        lambda f, o, ids: _copied(f, ids["zeroshot"][0], f"{ids['zeroshot'][1]}.parquet"), ALL
    ),
    "stray row under its own id": Damage(
        lambda f, o, ids: _copied(f, ids["zeroshot"][0], "zzz.parquet") and _rewrite(f, "zzz", cell_id="zzz"),
        ALL,
    ),
    "two rows in a cell file": Damage(lambda f, o, ids: _two_rows(f, ids["multitask"][0]), ALL),
    "unknown status": Damage(lambda f, o, ids: _rewrite(f, ids["multisource"][0], status="maybe"), LAUNCH),
    "junk prompt": Damage(lambda f, o, ids: _write(f, f"_prompts/{ids['single'][1]}.pt", b"junk"), LAUNCH),
    "torn prompt": Damage(lambda f, o, ids: _torn_file(f, f"_prompts/{ids['multitask'][1]}.pt"), LAUNCH),
    "missing prompt": Damage(lambda f, o, ids: _no_prompt(f, ids["multisource"][1]), LAUNCH),
    "torn embeddings": Damage(
        lambda f, o, ids: _torn_file(f, "_tables/embeddings.parquet"), ("resume --dry-run", "report")
    ),
    "zero-byte designed table": Damage(
        lambda f, o, ids: _write(f, "_tables/designed.parquet", b""), ("report",)
    ),
    "a killed writer's temporary file": Damage(
        lambda f, o, ids: _write(f, f".{ids['zeroshot'][0]}.parquet.0a1b.tmp", b"PAR1")
    ),
}


def _fifo(folder: Path, name: str) -> str:
    os.mkfifo(folder / name)
    return name


def _file_for_folder(folder: Path, name: str) -> None:
    shutil.rmtree(folder / name)
    (folder / name).write_text("x")


def _cell_folder(folder: Path, cid: str) -> str:
    """The cell's file moved into a folder of its own name: the cell is missing, the folder in its way."""
    shutil.move(_cell(folder, cid), folder / "moved.tmp")
    _cell(folder, cid).mkdir()
    shutil.move(folder / "moved.tmp", _cell(folder, cid) / "part.parquet")
    return f"{cid}.parquet"


# damage to the folder's own structure and metadata: a launch stops; one folder per kind
READERS = ("status", "report")
STRUCTURE = {
    "folder named like a cell": Damage(lambda f, o, ids: _cell_folder(f, ids["transfer"][0]), READERS),
    "pipe named like a cell": Damage(lambda f, o, ids: _fifo(f, "pipe.parquet"), READERS),
    "linked cell file": Damage(lambda f, o, ids: _moved_out(f, o, f"{ids['single'][0]}.parquet"), READERS),
    "linked prompts folder": Damage(lambda f, o, ids: _moved_out(f, o, "_prompts")),
    "linked tables folder": Damage(lambda f, o, ids: _moved_out(f, o, "_tables")),
    "linked prompt file": Damage(
        lambda f, o, ids: _moved_out(f, o, f"_prompts/{ids['single'][1]}.pt"), ("status",)
    ),
    "linked metadata": Damage(lambda f, o, ids: _moved_out(f, o, "_study.json")),
    "torn metadata": Damage(lambda f, o, ids: _torn(f / "_study.json")),
    "metadata with a wrong-typed grid": Damage(lambda f, o, ids: _meta(f, grid=[1])),
    "metadata without its spec": Damage(lambda f, o, ids: _meta(f, spec=None)),
    "no metadata": Damage(lambda f, o, ids: (f / "_study.json").unlink()),
    "metadata of protocol 1": Damage(lambda f, o, ids: _meta(f, protocol=1)),
    "lock that is a folder": Damage(lambda f, o, ids: (f / "_study.lock").mkdir()),
    "unreadable lock": Damage(lambda f, o, ids: (f / "_study.lock").write_text("{")),
    "prompts folder that is a file": Damage(lambda f, o, ids: _file_for_folder(f, "_prompts")),
}  # fmt: skip


def _snapshot(root: Path, inside: Path) -> dict[str, str]:
    """Every entry under `root` outside the study folder `inside`, with a digest of its content."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path == inside or inside in path.parents:
            continue
        kind = (
            "link" if path.is_symlink() else "dir" if path.is_dir() else "file" if path.is_file() else "other"
        )
        data = (
            path.read_bytes() if kind == "file" else str(path.readlink()).encode() if kind == "link" else b""
        )
        out[path.relative_to(root).as_posix()] = f"{kind}:{hashlib.sha256(data).hexdigest()}"
    return out


def _run(command: str, root: Path, folder: Path, monkeypatch) -> int:
    if command == "resume":
        return resume_here(folder, monkeypatch)
    argv = {
        "status": ["status", folder],
        "resume --dry-run": ["resume", folder, "--dry-run"],
        "run --dry-run": ["run", root / "given.toml", "--out", folder.parent, "--dry-run"],
        "report": ["report", folder, "--boot", "0"],
    }[command]
    return main([str(a) for a in argv])


def _check(kinds: dict[str, Damage], commands, capsys, caplog, monkeypatch, finished, root: Path) -> dict:
    """Damage one copy with every kind of `kinds`, run the commands on it, check the promise.
    -> command: exit code."""
    folder, outside = copy_of(finished, root), root / "outside"
    outside.mkdir()
    ids = cell_ids(finished)
    names = {kind: damage.apply(folder, outside, ids) for kind, damage in kinds.items()}
    before = _snapshot(root, folder)
    codes = {}
    for command in commands:
        caplog.clear()
        with caplog.at_level("WARNING"):
            codes[command] = _run(command, root, folder, monkeypatch)
        out, err = capsys.readouterr()
        where = f"{', '.join(kinds)} / {command}"
        assert codes[command] in (0, 2), f"{where}: exit {codes[command]}: {err[-500:]}"
        if codes[command] == 2:
            err = err.strip().splitlines()[-1] if command == "resume" else err.strip()
            assert err.startswith("mvlpt: error:") and "\n" not in err, f"{where}: {err}"
        else:
            said = out + caplog.text
            unnamed = [k for k, d in kinds.items() if command in d.named_by and names[k] not in said]
            assert not unnamed, f"{where}: {unnamed} not named in {said[-1500:]}"
        assert "unexpected" not in err, f"{where}: {err}"
        assert _snapshot(root, folder) == before, f"{where}: wrote outside the folder"
    return codes


def test_damaged_cells_prompts_and_tables_are_named_and_the_rest_works(
    capsys, caplog, monkeypatch, finished_study, tmp_path
):
    codes = _check(CELLS, COMMANDS, capsys, caplog, monkeypatch, finished_study, tmp_path)
    assert codes == dict.fromkeys(COMMANDS, 0)
    out = capsys.readouterr().out
    assert main(["status", str(tmp_path / "results" / "given")]) == 0  # the resume recomputed the rest
    out = capsys.readouterr().out
    assert _counts(out) == ["12", "0", "12"], out
    assert out.splitlines()[-1].startswith(
        "skipped 2 file(s) that are not cells of this study: foreign.parquet"
    )


def _counts(status: str) -> list[str]:
    line = next(line for line in status.splitlines() if line.startswith("all "))
    return [w for w in line.split() if w.isdigit()][:3]


@pytest.mark.parametrize("kind", sorted(STRUCTURE))
def test_a_damaged_structure_stops_a_launch_in_one_line_and_the_rest_works(
    capsys, caplog, monkeypatch, finished_study, tmp_path, kind
):
    commands = ("status", "resume --dry-run", "run --dry-run", "resume")
    codes = _check({kind: STRUCTURE[kind]}, commands, capsys, caplog, monkeypatch, finished_study, tmp_path)
    assert codes["resume"] == 2, codes


def test_a_report_works_on_a_folder_with_odd_entries_and_names_them(
    capsys, caplog, monkeypatch, finished_study, tmp_path
):
    odd = {
        k: STRUCTURE[k] for k in ("folder named like a cell", "pipe named like a cell", "linked cell file")
    }
    linked = {
        k: STRUCTURE[k] for k in ("linked prompts folder", "linked tables folder", "linked prompt file")
    }
    codes = _check({**odd, **linked}, ("report",), capsys, caplog, monkeypatch, finished_study, tmp_path)
    assert codes == {"report": 0}


META_FIELDS = (
    "name",
    "grid",
    "spec",
    "identity",
    "protocol",
    "cell_ids",
    "weights_sha256",
    "backbone_identity",
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(field=st.sampled_from(META_FIELDS), value=JSON)
def test_any_value_of_a_metadata_field_is_read_or_refused_in_one_line(
    capsys, finished_study, tmp_path_factory, field, value
):
    folder = copy_of(finished_study, tmp_path_factory.mktemp("meta"))
    _meta(folder, **{field: value})
    for argv in (["status", folder], ["resume", folder, "--dry-run"]):
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert rc in (0, 2) and "\n" not in err and "unexpected" not in err, (field, value, err)


SCALAR = st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=True) | st.text(max_size=4)


@st.composite
def _rows(draw) -> dict:
    """A row of a real cell's file with some columns dropped or given other values of any type."""
    from study.store import SCHEMA

    fields = draw(st.lists(st.sampled_from(SCHEMA.names), unique=True, max_size=6))
    return {name: draw(SCALAR) for name in fields}


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(changes=_rows())
def test_any_row_in_a_cell_file_counts_only_when_it_is_a_cell_and_is_named_otherwise(
    capsys, finished_study, tmp_path_factory, changes
):
    from study.store import CELL_KEYS

    folder = copy_of(finished_study, tmp_path_factory.mktemp("row"))
    cid = cell_ids(finished_study)["single"][0]
    row = {**pq.read_table(_cell(folder, cid)).to_pylist()[0], **changes}
    try:
        data = _parquet([row])
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # values arrow itself cannot store
        return
    _cell(folder, cid).write_bytes(data)
    assert main(["status", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "unexpected" not in err and _counts(out)[0] in ("11", "12"), out
    broken = any(not isinstance(row[k], str) for k in CELL_KEYS if k != "target") or row["cell_id"] != cid
    if broken or row["status"] not in ("ok", "failed"):
        assert f"{cid}.parquet (" in out, (changes, out)
