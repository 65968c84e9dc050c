"""The study folder is the table and only the table: every client counts the cells alone, nothing
leaves the folder, a damaged or contended folder never stops a study nor counts foreign rows."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import MvlptError
from study.cli import main
from study.store import Store


def _row(cid: str, study: str = "s", **kw) -> dict:
    return {"study": study, "cell_id": cid, "stage": "single", "method": "coop", "target": "t",
            "status": "ok", "value": 0.5, "shots": 2, "seed": 0, "metric": "accuracy", **kw}  # fmt: skip


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _study(folder, n: int = 3, name: str = "s") -> Store:
    store = Store(folder)
    store.create()
    store.write_text("_study.json", json.dumps({"name": name, "grid": {"single/coop": n}}))
    for k in range(n):
        store.write_cell(_row(f"c{k}", study=name))
    return store


def _fails(capsys, argv, message, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.count("\n") == 0 and err.startswith("mvlpt: error:") and message in err, err
    return err


def test_duckdb_polars_and_pandas_read_exactly_the_cells(tmp_path):
    import duckdb
    import polars as pl

    from analysis.load import DESIGNED, EMBEDDINGS
    from study.embed import designed_table

    store = _study(tmp_path / "s")
    store.write_bytes(EMBEDDINGS, _parquet(pa.table({"kind": ["image"] * 5, "task": ["t"] * 5})))
    store.write_bytes(DESIGNED, _parquet(designed_table(["shapes", "colors"])))
    folder = tmp_path / "s"
    assert duckdb.sql(f"select count(*) from '{folder}/*.parquet'").fetchall()[0][0] == 3
    assert pl.read_parquet(f"{folder}/*.parquet").height == 3
    assert len(pd.read_parquet(folder)) == 3
    assert set(pd.read_parquet(folder).method) == {"coop"}


def test_a_cell_id_can_never_name_a_file_outside_the_folder(tmp_path):
    from study.embed import stored_prompt_rows

    store = _study(tmp_path / "s", n=1)
    for bad in ("../escaped", "a/b", "..", ".hidden", ""):
        with pytest.raises(MvlptError, match="invalid cell id"):
            store.write_cell(_row(bad), {"ctx": 1})
        with pytest.raises(MvlptError, match="invalid cell id"):
            store.load_prompt(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    # a row that claims a path as its id (a folder from elsewhere) is not a cell: never read through
    (tmp_path / "s" / "x.parquet").write_bytes(
        _parquet(pa.Table.from_pylist([_row("../../x", stage="single")]))
    )
    assert store.done() == {"c0"} and [s.name for s in store.skipped] == ["x.parquet"]
    assert stored_prompt_rows(store) == []


def _damage(folder) -> dict[str, str]:
    """Write the kinds of damage a folder meets; -> file name: what the skip reason says."""
    (folder / "c9.parquet").write_bytes(b"")  # a power loss before the data reached the disk
    (folder / "foreign.parquet").write_bytes(_parquet(pa.table({"x": [1, 2]})))
    (folder / "c7.parquet").write_bytes(_parquet(pa.Table.from_pylist([_row("c7", value="high")])))
    other = pa.Table.from_pylist([_row("c1", study="other")])  # another study's row of a real cell
    (folder / "c1.parquet").write_bytes(_parquet(other))
    return {
        "c9.parquet": "unreadable",
        "foreign.parquet": "not a cell file",
        "c7.parquet": "column 'value'",
        "c1.parquet": "another study",
    }


def test_damaged_files_are_skipped_and_named_and_a_foreign_row_never_counts(capsys, tmp_path):
    store = _study(tmp_path / "s")
    damage = _damage(tmp_path / "s")
    assert store.done() == {"c0", "c2"}  # c1 holds another study's row now: not done
    reasons = {s.name: s.reason for s in store.skipped}
    assert set(reasons) == set(damage) and all(damage[n] in reasons[n] for n in damage), reasons
    assert main(["status", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "skipped 4 file(s)" in out and all(name in out for name in damage)
    assert main(["report", str(tmp_path / "s"), "--boot", "0"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in damage), out


def test_run_and_resume_skip_damaged_files_and_count_no_foreign_row(capsys, caplog, tmp_path):
    from pipeline.cell import cell_id
    from study.grid import expand
    from study.launch import write_meta
    from study.spec import load_spec

    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["glyph-kinds", "sizes"]\nstages = ["zeroshot"]\n'
                    "[methods.coop]\n")  # fmt: skip
    out = tmp_path / "results"
    store = Store(out / "s")
    store.create()
    write_meta(load_spec(spec), store, {}, None)
    _damage(out / "s")
    ids = [cell_id(c) for c in expand(load_spec(spec)).cells]
    store.write_cell(_row(ids[0], study="other"))  # another study's row of this study's cell
    store.write_cell(_row(ids[1]))
    capsys.readouterr()
    for argv in (["run", str(spec), "--out", str(out)], ["resume", str(out / "s")]):
        caplog.clear()
        with caplog.at_level("WARNING"):
            assert main([*argv, "--dry-run"]) == 0
        counts = [
            line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("zeroshot")
        ]
        assert counts == [["zeroshot", "zeroshot", "2", "1", "1"]]  # only this study's own row is done
        named = caplog.text
        assert all(name in named for name in [*_damage_names(), f"{ids[0]}.parquet"]), named


def _damage_names() -> list[str]:
    return ["c9.parquet", "foreign.parquet", "c7.parquet", "c1.parquet"]


@pytest.mark.parametrize(
    "content, message",
    [('{"name": "s", "spec": {', "unreadable"), ("[1, 2]", "is not a study's metadata"), ("", "unreadable")],
)
def test_a_damaged_study_json_is_one_line_for_every_command(capsys, tmp_path, content, message):
    store = _study(tmp_path / "s")
    (tmp_path / "s" / "_study.json").write_text(content)
    folder = str(tmp_path / "s")
    _fails(capsys, ["status", folder], message)
    _fails(capsys, ["resume", folder], message)
    _fails(capsys, ["report", folder], "_study.json")
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n')
    _fails(capsys, ["run", str(spec), "--out", str(tmp_path), "--dry-run"], message)
    assert len(store.cell_files()) == 3  # nothing was lost


def test_cell_file_and_its_folder_entry_reach_the_disk_before_the_cell_counts(tmp_path, monkeypatch):
    store = _study(tmp_path / "s", n=0)
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.write_cell(_row("c0"))
    folder = str(tmp_path / "s")
    assert [p for p in synced if os.path.basename(p).endswith(".tmp")], synced  # the data
    assert synced[-1] == folder  # then the rename, in the folder's own entry
    assert store.done() == {"c0"}


def test_an_out_inside_a_study_is_refused_before_anything_is_written(capsys, tmp_path):
    _study(tmp_path / "outer")
    before = sorted(p.name for p in (tmp_path / "outer").iterdir())
    spec = tmp_path / "s.toml"
    spec.write_text('name = "inner"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n')
    for out in (tmp_path / "outer", tmp_path / "outer" / "deeper"):
        _fails(capsys, ["run", str(spec), "--out", str(out)], "is inside the study folder")
    assert sorted(p.name for p in (tmp_path / "outer").iterdir()) == before


def test_a_second_launch_is_refused_and_a_dead_holders_lock_is_taken_over(caplog, tmp_path):
    from study.guard import LOCK, lock_folder

    store = _study(tmp_path / "s")
    lock = tmp_path / "s" / LOCK
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid, "since": "then"}))
        with pytest.raises(MvlptError, match=f"in use by pid {live.pid} on this host"):
            lock_folder(store)
    finally:
        live.kill()
        live.wait()
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(MvlptError, match="in use by elsewhere pid 1"):
        lock_folder(store)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid, "since": "then"}))  # dead now
    with caplog.at_level("WARNING"):
        lock_folder(store)
    assert f"from pid {live.pid}" in caplog.text
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    lock_folder(store)  # the holder may launch again
    # while this process holds it, another process is refused with the holder named
    code = "import sys; from study.guard import lock_folder; from study.store import Store; "
    code += "lock_folder(Store(sys.argv[1]))"
    other = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s")], capture_output=True, text=True, timeout=60
    )
    assert other.returncode != 0 and f"in use by pid {os.getpid()}" in other.stderr


def test_resume_of_a_renamed_copy_works_on_the_copy(capsys, tmp_path):
    import shutil

    from study.launch import write_meta
    from study.spec import load_spec

    spec = tmp_path / "s.toml"
    spec.write_text(
        'name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\nstages = ["zeroshot"]\n[methods.coop]\n'
    )
    store = Store(tmp_path / "results" / "s")
    store.create()
    write_meta(load_spec(spec), store, {}, None)
    shutil.copytree(tmp_path / "results" / "s", tmp_path / "copy")
    shutil.rmtree(tmp_path / "results")
    assert main(["resume", str(tmp_path / "copy"), "--dry-run"]) == 0
    assert f"-> {tmp_path / 'copy'}:" in capsys.readouterr().out


def test_a_trial_larger_than_the_machine_fails_before_ray_starts(capsys, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n[resources]\ncpu = 4\n'
    )
    _fails(capsys, ["run", str(spec), "--out", str(tmp_path), "--cpus", "2", "--dry-run"], "asks for 4 CPUs")


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--out", "", "'out' must name a folder"),
        ("--name", "", "'name' must be"),
        ("--name", "a\0b", "'name' must be"),
        ("--name", "a\nb", "'name' must be"),
        ("--name", "a/b", "'name' must be"),
        ("--name", "a\\b", "'name' must be"),
        ("--name", "x" * 101, "at most 100 characters"),
    ],
)
def test_bad_names_are_one_line(capsys, tmp_path, monkeypatch, flag, value, message):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n')
    monkeypatch.chdir(tmp_path)
    _fails(capsys, ["run", str(spec), flag, value, "--dry-run"], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_a_folder_task_with_a_trailing_slash_is_the_same_task(capsys, tmp_path, monkeypatch):
    from tests.toy_data import write_folder

    write_folder(tmp_path / "p")
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["p", "p/"]\n[methods.coop]\n')
    _fails(capsys, ["run", str(spec), "--dry-run"], "'p' and 'p/' name the same task")
