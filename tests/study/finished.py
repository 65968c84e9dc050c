"""One small finished study folder built in this process (the tiny backbone, two built-in tasks,
CoOp; zero-shot, single, joint transfer and a multisource stage chosen by visual similarity): the
launch's own code with its cells run one after another instead of on Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SPEC = """name = "given"
backbone = "tiny"
tasks = ["glyph-kinds", "sizes"]
shots = [2]
seeds = [0]
modes = ["joint"]
stages = ["zeroshot", "single", "transfer", "multisource"]
[multisource]
policies = ["top_k:visual"]
k = 1
[methods.coop]
n_ctx = 2
[recipe]
epochs = 1
lr = 0.05
[resources]
cpu = 1
"""


def run_in_process(plan, study, location, resources, *, skip=frozenset(), **_):
    """study.schedule.run_plan without Ray: every cell to do, in plan order, in this process."""
    from study.schedule import Job, run_one
    from study.store import Store

    cells = tuple(plan.todo(skip))
    job = Job(study, location, cells, tuple(plan.ids[c] for c in cells),
              tuple(plan.deps(c) for c in cells), 1, "cpu", None)  # fmt: skip
    for i in range(len(cells)):
        run_one(job, i, "local")
    return plan.counts(Store(location).status_of())


def build(root: Path) -> Path:
    """Write the spec to `root/given.toml` and run it into `root/results/given`."""
    from study.launch import apply_overrides, launch
    from study.spec import load_spec

    spec_path = root / "given.toml"
    spec_path.write_text(SPEC)
    spec = apply_overrides(load_spec(spec_path), out=str(root / "results"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("study.schedule.run_plan", run_in_process)
        done = launch(spec, source_text=SPEC, show_progress=False)
    assert done.unfinished == 0, done.counts
    return Path(done.location)


def copy_of(folder: Path, root: Path) -> Path:
    """A copy of the study folder to damage, at `root/results/given` beside its spec `root/given.toml`
    (without its lock, which names the process that built it)."""
    where = root / "results" / "given"
    shutil.copytree(folder, where, ignore=shutil.ignore_patterns("_study.lock", "_report"))
    (root / "given.toml").write_text(SPEC)
    return where


def resume_here(folder: Path, monkeypatch) -> int:
    """`mvlpt resume FOLDER` with the cells run in this process instead of on Ray."""
    from study.cli import main

    monkeypatch.setattr("study.schedule.run_plan", run_in_process)
    return main(["resume", str(folder), "--quiet"])


def cell_ids(folder: Path) -> dict[str, list[str]]:
    """stage -> the ids of the folder's cells of that stage, sorted."""
    import pyarrow.parquet as pq

    out: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.parquet")):
        row = pq.read_table(path).to_pylist()[0]
        out.setdefault(row["stage"], []).append(row["cell_id"])
    return out
