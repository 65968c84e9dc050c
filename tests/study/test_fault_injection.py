"""A study that meets a broken file, then is killed ten times, ends as the uninterrupted run does.

The study has single cells and init cells that start from the stored source prompts, averaged over
two seeds. Its first launch meets an unreadable test image: every cell that needs it is stored as
failed, with its error, and the launch exits 1 saying how many. The image is repaired (same size
and time: the same task, so the same cell ids), then the study is killed with SIGKILL ten times,
once as soon as an init cell is stored again and nine times at random moments, and resumed after
each. It ends with exactly the cells and values of an uninterrupted run on a copy of the tasks,
which runs beside the first launch. Slow (a dozen launches of Ray): `pytest -m "not slow"` leaves
it out.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.toy_data import write_folder

SPEC = """
name = "faults"
backbone = "tiny"
tasks = [{tasks}]
shots = [1]
seeds = [0, 1]
stages = ["single", "transfer"]
modes = ["init"]
source_seeds = [0, 1]
[methods.coop]
n_ctx = 2
[recipe]
epochs = 1
lr = 0.05
"""
KILLS = 10
N_CELLS = 2 * 2 + 2 * 2 * 2  # single: 2 tasks x 2 seeds; init: 4 pairs x 2 seeds
# the unreadable image is in q's test split: q's single cells fail, and so does every init cell
# that scores on q or starts from q's prompts; p's single cells and p -> p run
N_FAILED = 2 + 3 * 2


def _launch(spec: Path, out: str, cache: Path, *, cwd: Path | None = None, resume: bool = False):
    args = ["resume", out] if resume else ["run", str(spec), "--out", out]
    # one trial slot: the cells are tiny, and one worker process starts faster than two
    cmd = [sys.executable, "-m", "study.cli", *args, "--quiet", "--cpus", "1"]
    # Ray starts its workers at nice 15: beside the other test process they would wait for it
    env = {**os.environ, "MVLPT_CACHE": str(cache), "RAY_worker_niceness": "0"}
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _cells(folder: Path) -> pd.DataFrame:
    import duckdb

    frame = pd.read_parquet(folder)
    assert frame.cell_id.is_unique
    # what DuckDB's users type counts the same rows: no stray temporary file is taken for a cell
    assert duckdb.sql(f"select count(*) from '{folder}/*.parquet'").fetchall()[0][0] == len(frame)
    return frame.set_index("cell_id").sort_index()


def _swap_bytes_keep_stat(path: Path, data: bytes) -> None:
    """Replace a file's bytes by others of the same length, keeping its mtime: the task's
    fingerprint (and so every cell id) stays the same, as for a transient read failure."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _spec(root: Path, data: Path) -> Path:
    spec = root / f"{data.name}.toml"
    spec.write_text(SPEC.format(tasks=", ".join(f'"{data / n}"' for n in "pq")))
    return spec


def _status_answers_without_torch_or_ray(folder: Path) -> None:
    probe = (
        "import sys; from study.cli import main; main(['status', sys.argv[1]]); "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'"
    )
    status = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert f"{N_CELLS:>7}" in status.stdout.splitlines()[-1]  # the grid's total


def _first_launch_records_the_failures(proc: subprocess.Popen, folder: Path) -> pd.DataFrame:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    assert f"{N_FAILED} cells failed or did not run" in err
    table = _cells(folder)
    assert len(table) == N_CELLS
    needs_q = (table.target.map(_name) == "q") | (table.source.map(_name) == "q")
    failed = table[table.status == "failed"]
    assert set(failed.index) == set(table[needs_q].index)  # each one row, with its error
    assert "corrupt image file" in failed[failed.stage == "single"].error.iloc[0]
    return failed


def _name(task) -> str | None:
    return Path(task).name if isinstance(task, str) else None


def _kill_once_an_init_cell_is_stored_again(spec, killed: Path, cache: Path, folder: Path) -> None:
    started = time.time()
    proc = _launch(spec, ".", cache, cwd=killed)
    deadline = time.monotonic() + 300

    def rewritten() -> int:
        return sum(p.stat().st_mtime > started for p in folder.glob("*.parquet"))

    # two single cells are retried (q's); of any three cells stored again, one is an init cell
    while time.monotonic() < deadline and rewritten() < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _cells(folder)
    assert (partial.status == "failed").any(), "the kill came after the last cell"


@pytest.mark.slow
def test_a_broken_file_then_sigkill_at_random_moments_ends_as_an_uninterrupted_run(tmp_path):
    clean = tmp_path / "clean"
    for i, name in enumerate("pq"):
        write_folder(clean / name, ("a", "b"), n_train=2, n_test=2, seed=i)
    data = tmp_path / "data"
    shutil.copytree(clean, data)  # names, sizes and times kept: the same tasks, the same ids
    # the last image of its class: `mvlpt run`'s data check opens a class's first image only, so the
    # launch starts and the cells that read this one fail, as a read failure during a run does
    image = sorted((data / "q" / "test" / "a").glob("*.png"))[-1]
    original = image.read_bytes()
    _swap_bytes_keep_stat(image, b"\0" * len(original))
    # a feature cache per copy: features cached from the clean copy would hide the broken file
    cache, ref_cache = tmp_path / "cache", tmp_path / "reference-cache"
    killed = tmp_path / "killed"
    killed.mkdir()
    folder = killed / "faults"

    start = time.monotonic()
    ref = _launch(_spec(tmp_path, clean), str(tmp_path / "reference"), ref_cache)
    first = _launch(_spec(tmp_path, data), ".", cache, cwd=killed)  # a relative --out
    while ref.poll() is None and not list((tmp_path / "reference" / "faults").glob("*.parquet")):
        time.sleep(0.1)
    _status_answers_without_torch_or_ray(tmp_path / "reference" / "faults")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    # a launch's duration, from which the kill moments are drawn: the reference ran beside the
    # first launch, and a launch alone takes about two thirds of that
    duration = (time.monotonic() - start) * 2 / 3
    reference = _cells(tmp_path / "reference" / "faults")
    failed = _first_launch_records_the_failures(first, folder)

    _swap_bytes_keep_stat(image, original)  # the cause goes away: the next launches retry the cells
    spec = tmp_path / "data.toml"
    _kill_once_an_init_cell_is_stored_again(spec, killed, cache, folder)
    rng, kills = random.Random(15), 1
    while kills < KILLS:
        proc = _launch(spec, ".", cache, cwd=killed)
        began = time.monotonic()
        try:
            proc.wait(timeout=rng.uniform(0.05, 0.75) * duration)
            # it ended first: the launch is shorter now (less left to run); so are the next moments
            duration = time.monotonic() - began
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, Ray and its workers, wherever they are
            proc.wait()
            kills += 1
        _cells(folder)  # readable as one table after every kill
    done = _launch(spec, str(folder), cache, resume=True)
    assert done.wait(timeout=300) == 0, done.stderr.read()[-2000:]

    resumed = _cells(folder)
    assert list(resumed.index) == list(reference.index)
    assert (resumed.status == "ok").all()
    assert (resumed.loc[failed.index, "created_at"] > failed.created_at).all()  # retried, one row each
    columns = ["stage", "mode", "method", "seed", "value", "val_value", "n_train", "n_test", "best_epoch"]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns])
    for side in ("source", "target"):  # the same tasks, in the other copy
        assert resumed[side].map(_name).equals(reference[side].map(_name))
    _an_init_cell_is_run_from_its_sources_stored_prompts_averaged(resumed, folder, data)


def _an_init_cell_is_run_from_its_sources_stored_prompts_averaged(table, folder: Path, data: Path) -> None:
    from pipeline.cell import Cell
    from pipeline.recipe import Recipe
    from pipeline.run import run
    from study.store import Store

    source, target = str(data / "p"), str(data / "q")
    row = table[(table.stage == "transfer") & (table.source == source) & (table.target == target)].iloc[0]
    singles = table[(table.stage == "single") & (table.target == source)].sort_values("seed")
    cell = Cell(
        method="coop",
        target=target,
        stage="transfer",
        mode="init",
        source=source,
        shots=1,
        seed=int(row.seed),
        recipe=Recipe(epochs=1, lr=0.05),
        method_config=(("n_ctx", 2),),
        source_seeds=(0, 1),
    )
    store = Store(folder)
    again = run(cell, source_state=[store.load_prompt(i) for i in singles.index])
    assert again.cell_id == row.name and again.value == row.value
