"""A study folder received from someone else is data, never a lever: what its links, URIs, rows,
prompts, tables and metadata cannot make `mvlpt` do, one numbered case of the review each, through
the command line."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.cli import main
from tests.study.finished import cell_ids, copy_of, resume_here


def _one_line(capsys, argv, message, code=2) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == code, err
    assert err.count("\n") == 0 and err.startswith("mvlpt: error:") and message in err, err
    assert "unexpected" not in err, err
    return err


def _out(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def _counts(text: str, stage: str) -> list[str]:
    """The numbers of a stage's line of a status or dry-run table."""
    line = next(line for line in text.splitlines() if line.startswith(f"{stage} "))
    return [w for w in line.split() if w.isdigit()][:3]


def _parquet(rows: list[dict], schema: pa.Schema | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue()


def _row(folder, cid: str) -> dict:
    return pq.read_table(folder / f"{cid}.parquet").to_pylist()[0]


def _files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_1_linked_prompts_and_tables_are_refused_by_every_command_that_writes(
    capsys, finished_study, tmp_path
):
    folder = copy_of(finished_study, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("_prompts", "_tables"):
        shutil.move(folder / name, elsewhere / name)
        (folder / name).symlink_to(elsewhere / name, target_is_directory=True)
    (folder / f"{cell_ids(finished_study)['single'][0]}.parquet").unlink()  # a cell for resume to write
    before = _files(elsewhere)
    spec = tmp_path / "given.toml"
    for argv in (
        ["resume", folder],
        ["resume", folder, "--dry-run"],
        ["run", spec, "--out", folder.parent],
        ["run", spec, "--out", folder.parent, "--dry-run"],
    ):
        _one_line(capsys, argv, "'_prompts' is a link")
    assert _files(elsewhere) == before


def test_1_a_prompt_is_written_by_replacing_a_link_never_through_it(finished_study, tmp_path):
    from study.store import Store

    folder = copy_of(finished_study, tmp_path)
    cid = cell_ids(finished_study)["single"][0]
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"keep me")
    (folder / "_prompts" / f"{cid}.pt").unlink()
    (folder / "_prompts" / f"{cid}.pt").symlink_to(victim)
    Store(folder).write_cell(_row(folder, cid), {"ctx": 1})
    assert victim.read_bytes() == b"keep me" and not (folder / "_prompts" / f"{cid}.pt").is_symlink()


def test_2_a_file_uri_gets_exactly_the_checks_of_a_path(capsys, finished_study, tmp_path):
    folder = copy_of(finished_study, tmp_path)
    spec = tmp_path / "given.toml"
    for dry in ([], ["--dry-run"]):
        argv = ["run", spec, "--out", f"file://{folder}", "--name", "inner", *dry]
        _one_line(capsys, argv, "is inside the study folder")
    assert not (folder / "inner").exists()
    (folder / "_study.lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    _one_line(capsys, ["resume", f"file://{folder}"], "in use by elsewhere pid 1")
    assert f"-> {folder}:" in _out(capsys, ["resume", f"file://{folder}", "--dry-run"])


BUILTIN = 'name = "s"\nbackbone = "builtin"\ntasks = ["sizes"]\nstages = ["zeroshot"]\n[methods.coop]\n'


def test_3_a_junk_checkpoint_stops_the_launch_before_the_folder_exists(capsys, tmp_path, monkeypatch):
    from pipeline import backbones
    from pipeline.pretrain import checkpoint_path

    monkeypatch.setenv("MVLPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(backbones, "_LOADED", {})  # this process may have loaded the good one
    checkpoint_path().parent.mkdir(parents=True)
    checkpoint_path().write_bytes(b"junk" * 64)
    spec = tmp_path / "s.toml"
    spec.write_text(BUILTIN)
    _one_line(capsys, ["run", spec, "--out", tmp_path / "out"], "is damaged")
    assert not (tmp_path / "out").exists()


def test_3_a_refused_launch_leaves_the_metadata_as_it_was(capsys, tmp_path):
    from pipeline.pretrain import pretrained_checkpoint
    from study.guard import WEIGHTS_KEY
    from study.launch import write_meta
    from study.spec import load_spec
    from study.store import Store

    pretrained_checkpoint()  # the test cache's short pre-training, shown on stderr when it runs
    capsys.readouterr()
    spec = tmp_path / "s.toml"
    spec.write_text(BUILTIN)
    store = Store(tmp_path / "out" / "s")
    store.create()
    write_meta(load_spec(spec), store, {}, None)
    meta = {**store.meta(), WEIGHTS_KEY: "0" * 64}  # weights that are not this cache's
    store.write_text("_study.json", json.dumps(meta))
    before = (tmp_path / "out" / "s" / "_study.json").read_bytes()
    _one_line(capsys, ["run", spec, "--out", tmp_path / "out"], "weights mismatch")
    assert (tmp_path / "out" / "s" / "_study.json").read_bytes() == before
    assert not (tmp_path / "out" / "s" / "_study.lock").exists()


def test_4_a_cell_file_with_wrong_types_or_columns_never_counts(capsys, finished_study, tmp_path):
    from study.store import SCHEMA

    folder = copy_of(finished_study, tmp_path)
    typed, bare = cell_ids(finished_study)["single"]
    row = {**_row(folder, typed), "value": "0.5"}  # a number as a string
    schema = pa.schema([pa.field("value", pa.string()) if f.name == "value" else f for f in SCHEMA])
    (folder / f"{typed}.parquet").write_bytes(_parquet([row], schema))
    (folder / f"{bare}.parquet").write_bytes(_parquet([{"cell_id": bare, "status": "ok"}]))
    out = _out(capsys, ["status", folder])
    assert _counts(out, "single") == ["0", "0", "2"]
    assert f"{typed}.parquet (column 'value' is string" in out and f"{bare}.parquet (not a cell file" in out
    assert _counts(_out(capsys, ["resume", folder, "--dry-run"]), "single") == ["2", "0", "2"]


def test_5_a_stray_row_under_its_own_id_never_counts_and_is_named(capsys, finished_study, tmp_path):
    from analysis.load import load_study

    folder = copy_of(finished_study, tmp_path)
    single = cell_ids(finished_study)["single"]
    (folder / "zzz.parquet").write_bytes(_parquet([{**_row(folder, single[0]), "cell_id": "zzz"}]))
    out = _out(capsys, ["status", folder])
    assert _counts(out, "single") == ["2", "0", "2"] and _counts(out, "all") == ["12", "0", "12"]
    assert "zzz.parquet (not a cell of this study's grid)" in out
    assert _counts(_out(capsys, ["resume", folder, "--dry-run"]), "single") == ["2", "2", "0"]
    # the report's reader: a row under another file name is named too
    shutil.copy(folder / f"{single[0]}.parquet", folder / f"{single[1]}.parquet")
    skipped = dict(load_study(folder).skipped)
    assert skipped["zzz.parquet"] == "not a cell of this study's grid"
    assert skipped[f"{single[1]}.parquet"] == "its row is not the cell its file name says"


def test_6_a_folder_named_like_a_cell_is_named_and_stops_a_launch(capsys, finished_study, tmp_path):
    folder = copy_of(finished_study, tmp_path)
    cid = cell_ids(finished_study)["transfer"][0]
    (folder / f"{cid}.parquet").unlink()  # a missing cell, whose row could not be stored
    (folder / f"{cid}.parquet").mkdir()
    shutil.copy(folder / f"{cell_ids(finished_study)['transfer'][1]}.parquet", folder / f"{cid}.parquet")
    out = _out(capsys, ["status", folder])
    assert f"{cid}.parquet (a folder, not a cell file)" in out and _counts(out, "transfer") == ["3", "0", "4"]
    for argv in (["resume", folder], ["resume", folder, "--dry-run"]):
        _one_line(capsys, argv, f"'{cid}.parquet' is a folder, not a cell file")


def test_7_a_damaged_prompt_is_named_and_its_cell_recomputed(
    capsys, caplog, finished_study, tmp_path, monkeypatch
):
    from study.store import Store

    folder = copy_of(finished_study, tmp_path)
    cid = cell_ids(finished_study)["single"][0]
    (folder / "_prompts" / f"{cid}.pt").write_text("junk")
    out = _out(capsys, ["status", folder])
    assert _counts(out, "single") == ["1", "0", "2"] and f"_prompts/{cid}.pt (damaged prompt" in out
    with caplog.at_level("WARNING"):
        dry = _out(capsys, ["resume", folder, "--dry-run"])
    assert _counts(dry, "single") == ["2", "1", "1"] and f"_prompts/{cid}.pt" in caplog.text
    assert resume_here(folder, monkeypatch) == 0
    assert Store(folder).load_prompt(cid) and _counts(_out(capsys, ["status", folder]), "single")[0] == "2"


def test_7_a_damaged_embeddings_table_is_rebuilt(capsys, finished_study, tmp_path, monkeypatch):
    from study.embed import EMBEDDINGS, read_embeddings
    from study.store import Store

    folder = copy_of(finished_study, tmp_path)
    table = folder / EMBEDDINGS
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])  # torn; top_k:visual reads it
    dry = _out(capsys, ["resume", folder, "--dry-run"])
    assert "chosen from results not stored yet" in dry  # the visual sets wait for the table
    assert resume_here(folder, monkeypatch) == 0
    assert read_embeddings(Store(folder)) is not None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("grid", {"single/coop": "x"}, "'grid' must map"),
        ("grid", [1], "'grid' must map"),
        ("identity", "x", "'identity' must be a table"),
        ("spec", "x", "'spec' must be a table"),
        ("spec.multisource", 5, "'spec.multisource' must be a table"),
        ("protocol", "2", "'protocol' must be an integer"),
        ("cell_ids", "x", "'cell_ids' must be a list"),
        ("weights_sha256", 7, "'weights_sha256' must be a string"),
    ],
)
def test_8_wrong_types_in_the_metadata_are_one_line_naming_the_field(
    capsys, finished_study, tmp_path, field, value, message
):
    folder = copy_of(finished_study, tmp_path)
    meta = json.loads((folder / "_study.json").read_text())
    head, _, tail = field.partition(".")
    if tail:
        meta[head][tail] = value
    else:
        meta[head] = value
    (folder / "_study.json").write_text(json.dumps(meta))
    for argv in (
        ["status", folder],
        ["resume", folder, "--dry-run"],
        ["resume", folder],
        ["report", folder, "--boot", "0"],
        ["run", tmp_path / "given.toml", "--out", folder.parent, "--dry-run"],
    ):
        _one_line(capsys, argv, message)
    assert not (folder / "_report").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--sources", ""], "--sources: empty task name"),
        (["--group", ","], "--group: empty task name"),
        (["--sources", "sizes,glyph-kinds,"], "--sources: empty task name"),
        (["--sources", "{d},{d}/"], "names the task"),
        (["--group", "sizes,sizes"], "--group names the task 'sizes' twice"),
        (["--sources", "sizes", "--group", "glyph-kinds"], "exclude each other"),
        (["--policy", "top_k:visual"], "--policy labels the task set"),
    ],
)
def test_9_cell_task_sets_and_policy_are_checked(capsys, tmp_path, flags, message):
    from tests.toy_data import write_folder

    target = write_folder(tmp_path / "pets")
    other = write_folder(tmp_path / "cars", classes=("van", "bus"), seed=3)
    flags = [f.format(d=other) for f in flags]
    argv = ["cell", "--method", "coop", "--target", target, "--backbone", "tiny", "--epochs", "1", *flags]
    _one_line(capsys, argv, message)


def test_10_a_name_too_long_in_bytes_is_one_line(capsys, tmp_path, monkeypatch):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n')
    monkeypatch.chdir(tmp_path)
    for dry in (["--dry-run"], []):
        _one_line(capsys, ["run", spec, "--name", "研" * 90, *dry], "bytes in UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


def test_11_the_dry_run_refuses_what_run_refuses(capsys, finished_study, tmp_path):
    folder = copy_of(finished_study, tmp_path)
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\nbackbone = "tiny"\ntasks = ["sizes"]\n[methods.coop]\n')
    for dry in (["--dry-run"], []):
        _one_line(capsys, ["run", spec, "--out", folder / "deeper", *dry], "is inside the study folder")
    spec.write_text('name = "s"\nbackbone = "RN9000"\ntasks = ["sizes"]\n[methods.coop]\n')
    for dry in (["--dry-run"], []):
        _one_line(capsys, ["run", spec, "--out", tmp_path / "out", *dry], "unknown backbone 'RN9000'")
    assert not (tmp_path / "out").exists() and not (folder / "deeper").exists()


def test_11_a_report_file_name_taken_by_a_folder_stops_the_report_before_it_writes(
    capsys, finished_study, tmp_path
):
    folder = copy_of(finished_study, tmp_path)
    (folder / "_report" / "summary.md").mkdir(parents=True)
    _one_line(capsys, ["report", folder, "--boot", "0"], "summary.md is not a file")
    assert [p.name for p in (folder / "_report").iterdir()] == ["summary.md"]
