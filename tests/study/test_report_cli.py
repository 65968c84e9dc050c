"""`mvlpt report DIR`: prints the summary and where the page went; bad folders are one-line errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from study.cli import main
from study.store import Store

TASKS = ["a", "b", "c"]


def _study(folder, name="cli"):
    """Three tasks, one method: singles at 0.5, transfer s -> t gains (s + 2 t) points, designed visual
    similarity rising with the gain, so their Spearman correlation is exactly one."""
    store = Store(folder)
    store.create()
    gains = {(s, t): i + 2 * j for i, s in enumerate(TASKS) for j, t in enumerate(TASKS) if s != t}
    rows = [("single", None, t, 0.5) for t in TASKS]
    rows += [("transfer", s, t, 0.5 + (gains.get((s, t), 0.0)) / 100) for s in TASKS for t in TASKS]
    for k, (stage, source, target, value) in enumerate(rows):
        store.write_cell(
            dict(
                study=name,
                cell_id=f"cell{k:04d}",
                stage=stage,
                mode="joint" if stage == "transfer" else None,
                method="coop",
                backbone="builtin",
                source=source,
                target=target,
                shots=2,
                seed=0,
                metric="accuracy",
                value=value,
                status="ok",
            )
        )
    meta = {"name": name, "grid": {"single/coop": 3, "transfer/coop": 9}, "spec": {"backbone": "builtin"}}
    (folder / "_study.json").write_text(json.dumps(meta))
    designed = [
        {"kind": kind, "source": s, "target": t, "value": 1.0 if s == t else gains[(s, t)] / 10}
        for kind in ("visual", "label")
        for s in TASKS
        for t in TASKS
    ]
    pq.write_table(pa.Table.from_pylist(designed), folder / "_designed.parquet")
    return folder


def test_report_prints_the_summary_and_where_it_wrote(capsys, tmp_path):
    folder = _study(tmp_path / "cli")
    assert main(["report", str(folder), "--boot", "50"]) == 0
    out = capsys.readouterr().out
    assert (
        "study cli (backbone builtin): 12 of 12 expected cells stored; 12 ok, 0 failed, 0 NaN, 0 missing"
        in out
    )
    assert out.startswith("Claims below hold at a 5% false discovery rate")  # the findings first
    assert "coop joint 2-shot: mean gain" in out and "over 6 pairs" in out
    assert f"report written to {folder / '_report' / 'report.html'}" in out
    assert (folder / "_report" / "report.html").is_file()


def test_report_to_another_folder(capsys, tmp_path):
    folder = _study(tmp_path / "cli")
    assert main(["report", str(folder), "--out", str(tmp_path / "elsewhere"), "--boot", "0"]) == 0
    assert (tmp_path / "elsewhere" / "report.html").is_file() and not (folder / "_report").exists()
    out = capsys.readouterr().out
    assert "no claim" in out  # no resamples: no p-value or interval, so nothing is claimed
    assert "[interval n/a]" in (tmp_path / "elsewhere" / "summary.md").read_text()


def test_the_terminal_gets_no_control_character_and_summary_md_no_html_entity(capsys, tmp_path):
    folder = _study(tmp_path / "cli", name="evil\x1b[31m<b>red</b>\x07\x9b2J & co")
    assert main(["report", str(folder), "--boot", "20"]) == 0
    out = capsys.readouterr().out
    assert not [c for c in out if not c.isprintable() and c != "\n"], repr(out[:200])
    assert "evil[31m<b>red</b>2J & co" in out  # the name itself, its control characters removed
    md = (folder / "_report" / "summary.md").read_text()
    assert "&lt;" not in md and "&gt;" not in md and "&amp;" not in md and "\\<b\\>red" in md


def test_a_folder_that_is_not_a_study_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "plain").mkdir()
    for folder, message in (
        (tmp_path / "plain", "not a study folder (no _study.json)"),
        (tmp_path / "nowhere", "no such folder"),
    ):
        assert main(["report", str(folder)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mvlpt: error:") and message in err and "\n" not in err, err


def test_an_empty_study_is_one_line_and_exit_2(capsys, tmp_path):
    folder = tmp_path / "empty"
    Store(folder).create()
    (folder / "_study.json").write_text(json.dumps({"name": "empty", "grid": {"single/coop": 3}}))
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mvlpt: error: empty study: no cells") and "\n" not in err
