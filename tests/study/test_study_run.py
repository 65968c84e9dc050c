"""A small study end to end on Ray: one local run (loopback only, RAY_ADDRESS ignored, embeddings
written), the same study on a two-node cluster killed with SIGKILL in its multisource stage and
resumed, an unreachable cluster. Failures and kills at random moments are tested in
test_fault_injection.py.

The spec is 2 methods x 2 tasks x 2 seeds, init and joint transfer (diagonal included, init cells
starting from the source prompt averaged over both seeds): 42 cells on the tiny backbone, tasks as
image folders so that every Ray worker can read them. Then the multisource stage (every policy; with
two tasks each one chooses the other task) and the groups stage (two groups of one by validation
gain, and random groups of one): 56 more cells. Every test here is slow (whole studies).
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
stages = ["zeroshot", "single", "transfer", "multisource", "groups"]
[multisource]
policies = ["all", "top_k:prompt", "top_k:gain", "random_k"]
k = 1
[groups]
by = ["gain"]
n_groups = 2
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
N_GRID = 2 + 2 * 2 * 2 + 2 * 4 * 2 * 2
# per method and seed: 4 policies x 2 targets; one multitask cell per task (the other target's
# source set, and its group of one); 2 groupings x 2 members
N_CELLS = N_GRID + 2 * 2 * (4 * 2 + 2 + 2 * 2)
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


def test_dry_run_counts(study_spec, tmp_path, capsys):
    from study.cli import main

    assert main(["run", str(study_spec), "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # a new folder: the sets chosen by prompts and gains wait for the cells that choose them, and
    # are counted as pending (with two tasks the multitask cells are those of all and random_k)
    assert f"{N_CELLS} cells" in out and "32 multisource and groups cells are chosen" in out
    assert "transfer    coop           16" in out and "zeroshot    zeroshot        2" in out
    assert "multisource coop           16" in out and "groups      coop            8" in out


def test_uninterrupted_run_is_complete(reference):
    assert len(reference) == N_CELLS and set(reference.status) == {"ok"}
    assert set(reference.stage) == {"zeroshot", "single", "transfer", "multitask", "multisource", "groups"}
    assert set(reference["mode"].dropna()) == {"init", "joint"}


def test_a_source_prompt_is_trained_once_for_every_cell_that_starts_from_it(reference):
    multitask = reference[reference.stage == "multitask"]
    assert len(multitask) == 2 * 2 * 2 and multitask.value.equals(multitask.val_value)
    chosen = reference[reference.stage == "multisource"]
    assert (chosen.source != chosen.target).all()  # with two tasks every policy chooses the other one
    assert chosen.groupby(["method", "seed", "target"]).policy.nunique().eq(4).all()
    # each (method, seed, source set) has one multitask row, whatever number of cells start from it
    assert not multitask.duplicated(["method", "seed", "target"]).any()
    assert set(zip(chosen.method, chosen.seed, chosen.source, strict=True)) <= set(
        zip(multitask.method, multitask.seed, multitask.target, strict=True)
    )


def test_a_group_of_one_task_scores_as_its_single_cell(reference):
    groups = reference[reference.stage == "groups"]
    assert set(groups.policy) == {"gain", "random:gain"} and (groups.source == groups.target).all()
    singles = reference[reference.stage == "single"].set_index(["method", "seed", "target"]).value
    assert (
        groups.value.to_numpy()
        == singles.loc[list(zip(groups.method, groups.seed, groups.target, strict=True))].to_numpy()
    ).all()


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


def _kill_in_the_multisource_stage(cmd: list[str], env: dict, folder: Path) -> None:
    """Start the launch and SIGKILL it, with Ray and its workers, once cells after the grid are stored."""
    import signal
    import time

    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < N_GRID + 6:
        if proc.poll() is not None:
            raise AssertionError(f"the launch ended before the kill: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_two_node_cluster_killed_in_the_multisource_stage_resumes_to_the_same_results(
    study_spec, reference, tmp_path
):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    env = {**os.environ, "MVLPT_CACHE": str(tmp_path / "cache")}
    run = [sys.executable, "-m", "study.cli", "run", str(study_spec), "--out", str(tmp_path), "--quiet"]
    try:
        _kill_in_the_multisource_stage([*run, "--address", cluster.address], env, tmp_path / "small")
        partial = _table(tmp_path / "small")
        assert N_GRID < len(partial) < N_CELLS, len(partial)
        out = _cli(
            "resume",
            str(tmp_path / "small"),
            "--quiet",
            "--address",
            cluster.address,
            cache=env["MVLPT_CACHE"],
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
