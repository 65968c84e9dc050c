"""`mvlpt data check` on image folders and on vision-datasets manifests (ELEVATER's format), a cell
and a study on a test-made manifest dataset, and output that ends quietly in a closed pipe."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from study.cli import main
from tests.toy_data import write_folder

SPEC = """name = "{name}"
backbone = "tiny"
tasks = [{tasks}]
shots = [{shots}]
stages = {stages}
[methods.coop]
n_ctx = 2
[recipe]
epochs = 1
lr = 0.05
[resources]
cpu = 1
"""


def _spec(path, tasks, shots=4, stages='["zeroshot", "single"]', name="s"):
    path.write_text(
        SPEC.format(name=name, tasks=", ".join(f'"{t}"' for t in tasks), shots=shots, stages=stages)
    )
    return str(path)


def test_a_bad_folder_names_each_problem_and_exits_non_zero(tmp_path, capsys):
    bad = write_folder(tmp_path / "bad", classes=("a", "b", "c"), n_train=5, n_test=2)
    shutil.rmtree(bad / "test")  # a missing split
    for f in (bad / "train" / "b").iterdir():  # an empty class
        f.unlink()
    for f in sorted((bad / "train" / "c").iterdir())[1:]:  # a class with fewer images than K
        f.unlink()
    (bad / "train" / "a" / "0.png").write_bytes(b"not an image")  # unreadable
    good = write_folder(tmp_path / "good")
    spec = _spec(tmp_path / "s.toml", [bad, good, "no-such-task"])
    assert main(["data", "check", spec]) == 1
    out = capsys.readouterr().out
    problems = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert problems[:4] == [
        f"{bad}: missing split 'test' (no folder {bad / 'test'})",
        f"{bad}: class 'a' in train: corrupt image file: {bad / 'train' / 'a' / '0.png'} "
        "(UnidentifiedImageError)",
        f"{bad}: class 'b' is empty in train (no images in {bad / 'train' / 'b'})",
        f"{bad}: class 'c' has 1 training image, fewer than 4 shots",
    ], out
    assert len(problems) == 5 and problems[4].startswith("no-such-task: unknown task 'no-such-task'")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:4]}
    assert rows["good"] == ["folder", "3", "12", "9", "4", "ok", str(good)]  # classes, train, test, fewest
    assert rows["bad"] == ["folder", "3", "6", "-", "0", "NO", str(bad)]
    assert rows["no-such-task"] == ["missing", "0", "-", "-", "-", "NO"]
    # `mvlpt run` names them all before Ray starts
    assert main(["run", spec, "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "the data cannot serve study 's' (5 problems" in err and "class 'b' is empty in train" in err
    assert not (tmp_path / "results").exists()


@pytest.fixture
def manifests(tmp_path):
    pytest.importorskip("vision_datasets")
    from tests.toy_data import write_manifest_datasets

    return write_manifest_datasets(tmp_path / "elevater")


def test_manifest_datasets_check_and_run_a_cell(manifests, tmp_path, capsys):
    colours, tags = f"{manifests}#toy-colours", f"{manifests / 'datasets.json'}#toy-tags"
    assert main(["data", "check", _spec(tmp_path / "m.toml", [colours, tags], shots=4)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:3]]
    assert rows[0] == ["toy-colours", "manifest", "3", "15", "9", "5", "ok", str(manifests)]
    assert rows[1] == ["toy-tags", "manifest", "3", "15", "9", "10", "ok", str(manifests)]
    for target, metric in ((colours, "accuracy"), (tags, "map11")):
        argv = ["cell", "--method", "coop", "--target", target, "--backbone", "tiny", "--shots", "2"]
        assert main([*argv, "--epochs", "1", "--config", "n_ctx=2", "--json"]) == 0
        row = json.loads(capsys.readouterr().out)
        assert row["metric"] == metric and row["n_test"] == 9
        assert row["status"] == "ok" and 0 <= row["value"] <= 1
    assert main(["data", "check", _spec(tmp_path / "n.toml", [f"{manifests}#nope", colours])]) == 1
    assert "dataset 'nope' is not in" in capsys.readouterr().out


def test_a_manifest_tasks_identity_follows_its_data(manifests):
    from pipeline.data.manifest import ManifestSource

    files = [manifests / "datasets.json"]
    before = ManifestSource(files, manifests, "toy-colours").fingerprint()
    assert ManifestSource(files, manifests, "toy-colours").fingerprint() == before
    index = manifests / "colours" / "train.txt"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:-1] + [lines[-1][:-1] + "0"]) + "\n")  # one label changed
    relabelled = ManifestSource(files, manifests, "toy-colours").fingerprint()
    renamed = ManifestSource(files, manifests, "toy-colours", ("rot", "grun", "blau")).fingerprint()
    assert len({before, relabelled, renamed}) == 3


def test_a_torn_or_missing_archive_is_named(manifests, tmp_path, capsys):
    archive = manifests / "tags" / "test.zip"
    archive.write_bytes(archive.read_bytes()[:100])
    (manifests / "colours" / "test.zip").unlink()
    spec = _spec(tmp_path / "m.toml", [f"{manifests}#toy-colours", f"{manifests}#toy-tags"], shots=2)
    assert main(["data", "check", spec]) == 1
    problems = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert problems == [
        f"{manifests}#toy-colours: dataset 'toy-colours': its test images are missing: no "
        f"{manifests / 'colours' / 'test.zip'}",
        f"{manifests}#toy-tags: the first test image cannot be read: dataset 'toy-tags': image "
        f"{archive}@0.png cannot be read (BadZipFile)",
    ]


def test_a_roster_task_is_found_in_a_registry_at_the_data_root(manifests, monkeypatch):
    from pipeline.data import elevater
    from pipeline.data.tasks import _roster_task

    registry = json.loads((manifests / "datasets.json").read_text())
    registry[0]["name"] = elevater.toolkit_name("eurosat")  # the toolkit's name of a roster task
    registry[0]["labelmap"] = None
    (manifests / "datasets.json").write_text(json.dumps(registry))
    monkeypatch.setenv("MVLPT_DATA", str(manifests))
    monkeypatch.setattr(
        elevater, "classnames", lambda task: ("red", "green", "blue") if task == "eurosat" else None
    )
    task = _roster_task("eurosat")
    assert (
        task.name == "eurosat" and task.metric == "accuracy" and task.classnames == ("red", "green", "blue")
    )
    assert task.identity.startswith("eurosat@") and task.templates == elevater.templates("eurosat")


@pytest.mark.slow
def test_a_study_on_two_manifest_tasks(manifests, tmp_path, capsys):
    tasks = [f"{manifests}#toy-colours", f"{manifests}#toy-tags"]
    spec = _spec(tmp_path / "m.toml", tasks, shots=2, stages='["zeroshot", "single", "transfer"]', name="m")
    assert main(["run", spec, "--out", str(tmp_path), "--cpus", "2", "--quiet"]) == 0
    cells = pd.read_parquet(tmp_path / "m")
    assert len(cells) == 2 + 2 + 4 and (cells["status"] == "ok").all()
    assert set(cells["metric"]) == {"accuracy", "map11"}


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    from study.launch import write_meta
    from study.spec import load_spec
    from study.store import Store

    spec = load_spec(_spec(tmp_path / "s.toml", ["glyph-kinds", "sizes"]))
    store = Store(tmp_path / "s")
    store.create()
    write_meta(spec, store, {("zeroshot", "zeroshot"): 2}, None)
    cli = f"{sys.executable} -m study.cli"
    for command, lines in ((f"{cli} tasks | head -3", 3), (f"{cli} status {tmp_path / 's'} | head -1", 1)):
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.stderr == "" and len(done.stdout.splitlines()) == lines, done.stderr
