"""The command line: `mvlpt cell` end to end, and one clear line and a non-zero exit per bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.data import suite
from study.cli import main
from tests.toy_data import write_folder

FAST = ["--shots", "2", "--epochs", "2", "--lr", "0.05", "--backbone", "tiny"]


def _fails(capsys, argv, message, code=2):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == code
    assert err.count("\n") == 0, err  # one line, no traceback
    assert err.startswith("mvlpt: error:") and message in err, err
    return err


def test_cell_on_an_image_folder_prints_one_json_object(capsys, image_folder):
    assert main(["cell", "--method", "coop", "--target", str(image_folder), *FAST, "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["metric"] == "accuracy" and 0 <= row["value"] <= 1
    assert (
        row["n_train"] == 3 and row["n_test"] == 9
    )  # 2 shots a class: 1 trains, 1 validates and row["wall_s"] > 0 and len(row["cell_id"]) == 20


def test_transfer_cell_from_the_command_line(capsys, tmp_path, image_folder):
    other = write_folder(tmp_path / "zoo", classes=("lion", "seal"), seed=5)
    state = tmp_path / "src.pt"
    argv = ["cell", "--method", "vpt", "--target", str(other), *FAST, "--save-state", str(state)]
    assert main(argv) == 0 and state.is_file()
    argv = [
        "cell",
        "--method",
        "vpt",
        "--target",
        str(image_folder),
        "--source",
        str(other),
        "--mode",
        "init",
    ]
    assert main([*argv, *FAST, "--source-state", str(state), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    row = json.loads(lines[-1])
    assert row["stage"] == "transfer" and row["mode"] == "init" and row["source"] == str(other)


def test_unknown_method_task_backbone_metric(capsys, image_folder):
    t = str(image_folder)
    _fails(capsys, ["cell", "--method", "lora", "--target", t], "unknown method 'lora'")
    _fails(capsys, ["cell", "--method", "coop", "--target", "no-such-task"], "unknown task 'no-such-task'")
    _fails(
        capsys,
        ["cell", "--method", "coop", "--target", t, "--backbone", "RN9000"],
        "unknown backbone 'RN9000'",
    )
    _fails(capsys, ["cell", "--method", "coop", "--target", t, "--metric", "f1"], "unknown metric 'f1'")


def test_transfer_without_a_source(capsys, image_folder):
    argv = ["cell", "--method", "coop", "--target", str(image_folder), "--mode", "init"]
    _fails(capsys, argv, "a transfer cell needs a source task (--source)")


def test_prompt_state_of_another_method_or_shape(capsys, tmp_path, image_folder):
    t = str(image_folder)
    vpt_state, coop4 = tmp_path / "vpt.pt", tmp_path / "coop4.pt"
    assert main(["cell", "--method", "vpt", "--target", t, *FAST, "--save-state", str(vpt_state)]) == 0
    assert (
        main(
            [
                "cell",
                "--method",
                "coop",
                "--target",
                t,
                *FAST,
                "--config",
                "n_ctx=4",
                "--save-state",
                str(coop4),
            ]
        )
        == 0
    )
    capsys.readouterr()
    init = ["cell", "--method", "coop", "--target", t, "--source", t, "--mode", "init", *FAST]
    _fails(
        capsys,
        [*init, "--source-state", str(vpt_state)],
        "prompt state from method 'vpt' cannot load into 'coop'",
    )
    _fails(
        capsys,
        [*init, "--source-state", str(coop4)],
        "coop prompt state 'ctx' has shape (4, 64), expected (16, 64)",
    )
    _fails(capsys, [*init, "--source-state", str(tmp_path / "none.pt")], "prompt state file not found")


def test_too_many_shots_empty_class_corrupt_image(capsys, tmp_path, image_folder):
    t = str(image_folder)
    _fails(
        capsys,
        ["cell", "--method", "coop", "--target", t, "--shots", "9", "--backbone", "tiny"],
        "9 shots asked but class 'cat' has only 4",
    )
    empty = write_folder(tmp_path / "empty", classes=("a", "b"))
    for p in (empty / "train" / "b").iterdir():
        p.unlink()
    _fails(capsys, ["cell", "--method", "coop", "--target", str(empty), *FAST], "class 'b' has no images in")
    bad = write_folder(tmp_path / "bad", classes=("a", "b"))
    for p in (bad / "train" / "a").iterdir():
        p.write_bytes(b"\x89PNG broken")
    _fails(capsys, ["cell", "--method", "coop", "--target", str(bad), *FAST], "corrupt image file:")


def test_missing_dataset_root(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MVLPT_DATA", str(tmp_path))
    _fails(
        capsys,
        ["cell", "--method", "coop", "--target", "eurosat"],
        f"dataset root not found: {tmp_path}/eurosat",
    )
    _fails(
        capsys, ["cell", "--method", "coop", "--target", str(tmp_path / "nowhere")], "dataset root not found"
    )


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cell", "--method", "coop"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--target" in err


def test_a_real_process_exits_non_zero_with_one_line(tmp_path):
    bad = write_folder(tmp_path / "bad", classes=("a", "b"))
    (bad / "test" / "a" / "0.png").write_text("nope")
    cmd = [
        sys.executable,
        "-m",
        "study.cli",
        "cell",
        "--method",
        "zeroshot",
        "--target",
        str(bad),
        "--backbone",
        "tiny",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"mvlpt: error: corrupt image file: {bad}/test/a/0.png (UnidentifiedImageError)"
    ]


HEAVY = ("torch", "ray", "open_clip", "seaborn", "scipy", "statsmodels", "sklearn")
LOADED_AFTER = """
import json, sys
from study.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print(json.dumps([code, [m for m in {heavy} if m in sys.modules]]))
"""


def _heavy_modules_after(argv: list[str]) -> tuple[int, list[str]]:
    """Run `mvlpt ARGV` in a fresh interpreter: its exit code and the heavy libraries it imported."""
    script = LOADED_AFTER.format(heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    code, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    return code, loaded


def test_help_and_status_import_no_heavy_library(tmp_path):
    from pipeline.cell import make_cell
    from pipeline.run import CellResult
    from study.store import SPEC_JSON, Store

    assert _heavy_modules_after(["--help"]) == (0, [])
    store = Store(tmp_path / "s")
    store.create()
    store.write_text(SPEC_JSON, json.dumps({"name": "s", "grid": {"single/coop": 2}}))
    store.write_cell(CellResult.failed(make_cell("coop", "toy-three"), "abc", "ValueError: x").row())
    assert _heavy_modules_after(["status", str(tmp_path / "s")]) == (0, [])


def test_tasks_json_lists_the_roster(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"cifar-10", "voc-2007", "hateful-memes"} <= names
    assert all({"name", "num_classes", "metric"} <= set(r) for r in rows)


def test_tasks_lists_the_builtin_suite(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["suite"] == "builtin"]
    assert len(rows) == 20 and all(2 <= r["num_classes"] <= 40 for r in rows)
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("built-in suite") and "shape-scenes" in out and "map11" in out


def test_cell_defaults_to_the_builtin_backbone(capsys):
    assert (
        main(
            [
                "cell",
                "--method",
                "coop",
                "--target",
                "glyph-kinds",
                "--shots",
                "2",
                "--epochs",
                "1",
                "--config",
                "n_ctx=4",
                "--json",
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["backbone"] == "builtin" and row["n_test"] == suite.MIN_TEST and 0 <= row["value"] <= 1
    assert main(["pretrain"]) == 0
    assert "found in the cache" in capsys.readouterr().out


def _spec(path, name="s", tasks='["glyph-kinds", "sizes"]'):
    path.write_text(
        f'name = "{name}"\nbackbone = "tiny"\ntasks = {tasks}\nstages = ["zeroshot"]\n[methods.coop]\n'
    )
    return path


def test_study_bad_inputs_are_one_line(capsys, tmp_path):
    out = str(tmp_path / "results")
    assert main(["run", str(_spec(tmp_path / "a.toml")), "--out", out, "--dry-run"]) == 0
    capsys.readouterr()
    bad_task = _spec(tmp_path / "b.toml", tasks='["glyph-kinds", "no-such-task"]')
    _fails(capsys, ["run", str(bad_task), "--out", out, "--dry-run"], "unknown task 'no-such-task'")
    _fails(capsys, ["run", str(tmp_path / "none.toml")], "spec file not found")
    _fails(capsys, ["status", str(tmp_path)], "not a study folder")
    _fails(capsys, ["resume", str(tmp_path)], "not a study folder")
    # a folder that already holds another study is refused, and left as it was
    from study.store import Store

    other = Store(tmp_path / "results" / "s")
    other.create()
    other.write_text("_study.json", '{"name": "someone-else"}')
    _fails(
        capsys, ["run", str(_spec(tmp_path / "c.toml")), "--out", out], "holds another study ('someone-else')"
    )
    assert other.meta() == {"name": "someone-else"}
    # the same study whose backbone now resolves to other weights is refused, not mixed
    other.write_text("_study.json", '{"name": "s", "backbone_identity": "weights-of-last-year"}')
    _fails(capsys, ["run", str(_spec(tmp_path / "c.toml")), "--out", out], "now resolves to another model")


def test_the_elevater_grid_counts_print_without_its_data(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MVLPT_DATA", str(tmp_path / "no-data-here"))
    assert main(["run", "elevater", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 20 zero-shot; 3 methods x 3 seeds x (20 single + 400 pairs x 2 modes); then per method and
    # seed, 20 targets started from a prompt tuned on the 19 other tasks (20 such prompts)
    assert "7760 cells" in out and "transfer    coop         2400       0    2400" in out
    assert "multitask   coop           60" in out and "multisource coop           60" in out
    assert not (tmp_path / "elevater").exists()  # a dry run writes nothing
    if "GPU per trial and it has none" in out:  # a GPU spec of a real CLIP is not timed on a CPU
        assert out.strip().endswith("run the dry run where the study will run")
