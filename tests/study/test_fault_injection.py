"""SIGKILL a study at random moments, resume it each time: it ends as the uninterrupted run does.

The study has single cells and init cells that start from the stored source prompts, averaged over
two seeds; one kill lands on purpose once the first init cell is stored. Slow (a dozen launches of
Ray): `pytest -m "not slow"` leaves it out.
"""

from __future__ import annotations

import os
import random
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
N_SINGLE = 2 * 2  # the single cells: 2 tasks x 2 seeds; then 4 pairs x 2 seeds of init cells


def _launch(spec: Path, out: Path, cache: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "study.cli", "run", str(spec), "--out", str(out), "--quiet", "--cpus", "2"]
    env = {**os.environ, "MVLPT_CACHE": str(cache)}
    return subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _cells(folder: Path) -> pd.DataFrame:
    import duckdb

    frame = pd.read_parquet(folder)
    assert frame.cell_id.is_unique
    # what DuckDB's users type counts the same rows: no stray temporary file is taken for a cell
    assert duckdb.sql(f"select count(*) from '{folder}/*.parquet'").fetchall()[0][0] == len(frame)
    return frame.set_index("cell_id").sort_index()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_as_an_uninterrupted_run(tmp_path):
    tasks = [write_folder(tmp_path / n, ("a", "b"), n_train=2, n_test=2, seed=i) for i, n in enumerate("pq")]
    spec = tmp_path / "faults.toml"
    spec.write_text(SPEC.format(tasks=", ".join(f'"{t}"' for t in tasks)))
    cache = tmp_path / "cache"  # one feature cache for both runs, as on one machine

    start = time.monotonic()
    ref = _launch(spec, tmp_path / "reference", cache)
    first = tmp_path / "reference" / "faults"
    while ref.poll() is None and not list(first.glob("*.parquet")):
        time.sleep(0.1)
    # status while the study is writing: it answers, without torch or ray
    probe = (
        "import sys; from study.cli import main; main(['status', sys.argv[1]]); "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'heavy import'"
    )
    status = subprocess.run([sys.executable, "-c", probe, str(first)], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert f"{N_SINGLE + 8:>7}" in status.stdout.splitlines()[-1]  # the grid's total
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    duration = time.monotonic() - start
    reference = _cells(tmp_path / "reference" / "faults")

    folder = tmp_path / "killed" / "faults"
    # first a kill inside the init stage: once a transfer cell is stored beside all single cells
    proc = _launch(spec, tmp_path / "killed", cache)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < N_SINGLE + 1:
        time.sleep(0.005)  # a transfer cell starts as soon as its source's cells are stored
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _cells(folder)
    assert (partial.stage == "transfer").any() and len(partial) < len(reference)
    rng = random.Random(15)
    for _ in range(KILLS):
        proc = _launch(spec, tmp_path / "killed", cache)
        moment = rng.uniform(0.1, 1.0) * duration
        try:
            proc.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver, Ray and its workers, wherever they are
            proc.wait()
        _cells(folder)  # readable as one table after every kill
    done = _launch(spec, tmp_path / "killed", cache)
    assert done.wait(timeout=300) == 0, done.stderr.read()[-2000:]

    resumed = _cells(folder)
    assert list(resumed.index) == list(reference.index)
    assert (resumed.status == "ok").all()
    columns = [
        "stage",
        "mode",
        "method",
        "source",
        "target",
        "seed",
        "value",
        "val_value",
        "n_train",
        "n_test",
        "best_epoch",
    ]
    pd.testing.assert_frame_equal(resumed[columns], reference[columns])
