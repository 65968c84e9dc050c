"""A small study end to end on Ray: one local run (loopback only, RAY_ADDRESS ignored, embeddings
written), the same study on a two-node cluster, an unreachable cluster. Failures, kill -9 and
resume are tested in test_fault_injection.py.

The spec is 2 methods x 2 tasks x 2 seeds, init and joint transfer (diagonal included, init cells
starting from the source prompt averaged over both seeds): 42 cells on the tiny backbone, tasks as
image folders so that every Ray worker can read them. Every test here is slow (whole studies).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.toy_data import write_folder

SPEC = """
name = "small"
backbone = "tiny"
tasks = [{tasks}]
shots = [2]
seeds = [0, 1]
modes = ["init", "joint"]
source_seeds = [0, 1]
[methods.coop]
n_ctx = 4
[methods.vpt]
n_tokens = 2
[recipe]
epochs = 1
lr = 0.05
[resources]
cpu = 1
gpu = 0.25
"""
N_CELLS = 2 + 2 * 2 * 2 + 2 * 4 * 2 * 2
N_BEFORE_TRANSFER = 2 + 2 * 2 * 2
# one test process runs the module: its tests share the reference study
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("study_run")]


@pytest.fixture(scope="module")
def study_spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    folders = [
        write_folder(root / "pets", ("cat", "dog", "owl"), n_train=3, n_test=2, seed=1),
        write_folder(root / "cars", ("van", "bus"), n_train=3, n_test=2, seed=2),
    ]
    spec = root / "small.toml"
    spec.write_text(SPEC.format(tasks=", ".join(f'"{f}"' for f in folders)))
    return spec


def _cli(*args, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if "cache" in kw:
        env["MVLPT_CACHE"] = kw.pop("cache")
    cmd = [sys.executable, "-m", "study.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, **kw)


def _table(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder)
    assert frame.cell_id.is_unique
    return frame.set_index("cell_id").sort_index()


# the reference run's environment names a cluster that does not exist: a local run must not use it
RAY_ADDRESS = "127.0.0.1:9"


@pytest.fixture(scope="module")
def reference(study_spec, tmp_path_factory):
    from tests.study.test_security_cli import run_watching_sockets

    out = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "MVLPT_CACHE": str(out / "cache"), "RAY_ADDRESS": RAY_ADDRESS}
    cmd = [sys.executable, "-m", "study.cli", "run", str(study_spec), "--out", str(out), "--quiet"]
    done, listening = run_watching_sockets([*cmd, "--cpus", "1"], env)  # one trial worker: small cells
    assert done.returncode == 0, done.stderr[-2000:]
    table = _table(out / "small")
    table.attrs.update(folder=out / "small", run=done, listening=listening)
    return table


def test_a_local_run_listens_on_loopback_only_and_ignores_ray_address(reference):
    from tests.study.test_security_cli import check_local_ray

    check_local_ray(reference.attrs["run"], reference.attrs["listening"], RAY_ADDRESS)


def test_dry_run_counts(study_spec, tmp_path):
    out = _cli("run", str(study_spec), "--out", str(tmp_path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"{N_CELLS} cells" in out.stdout
    assert "transfer   coop           16" in out.stdout and "zeroshot   zeroshot        2" in out.stdout


def test_uninterrupted_run_is_complete(reference):
    assert len(reference) == N_CELLS and set(reference.status) == {"ok"}
    assert set(reference.stage) == {"zeroshot", "single", "transfer"}
    assert set(reference["mode"].dropna()) == {"init", "joint"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without a GPU")
def test_gpu_trials_fall_back_to_cpu_without_a_gpu(reference):
    # the spec asks for 0.25 GPU a trial: without one the study still runs, every cell on the CPU
    assert set(reference.device) == {"cpu"}


def test_finished_study_holds_the_embeddings_of_its_tasks_and_prompts(reference):
    from analysis.load import DESIGNED, EMBEDDINGS

    emb = pd.read_parquet(reference.attrs["folder"] / EMBEDDINGS)
    tasks = sorted(reference.target.unique())
    classes = {t: 3 if t.endswith("pets") else 2 for t in tasks}
    assert emb[emb.kind == "label"].groupby("task").size().to_dict() == classes
    images = emb[emb.kind == "image"].groupby(["task", "seed"]).size()
    assert images.to_dict() == {(t, s): 2 * classes[t] for t in tasks for s in (0, 1)}  # 2 shots a class
    prompts = emb[emb.kind == "prompt"]
    singles = reference[reference.stage == "single"]
    assert sorted(map(tuple, prompts[["method", "task", "seed"]].values.tolist())) == sorted(
        map(tuple, singles[["method", "target", "seed"]].values.tolist())
    )
    assert prompts.groupby("method").vector.apply(lambda v: v.map(len).nunique()).eq(1).all()
    assert not (reference.attrs["folder"] / DESIGNED).exists()  # not the built-in suite


def test_two_node_cluster_gives_the_same_results(study_spec, reference, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        out = _cli(
            "run",
            str(study_spec),
            "--out",
            str(tmp_path),
            "--quiet",
            "--address",
            cluster.address,
            cache=str(tmp_path / "cache"),
        )
        assert out.returncode == 0, out.stderr[-2000:]
    finally:
        cluster.shutdown()
    table = _table(tmp_path / "small")
    assert list(table.index) == list(reference.index) and (table.value == reference.value).all()
    assert table.node.nunique() == 2  # cells ran on both nodes


def test_unreachable_address_is_one_line(study_spec, tmp_path, capsys):
    from study.cli import main

    assert main(["run", str(study_spec), "--out", str(tmp_path), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "cannot reach Ray cluster at '127.0.0.1:1'" in err
