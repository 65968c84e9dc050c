"""Study spec loading, grid expansion, and the Parquet store."""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipeline.cell import cell_id
from pipeline.errors import MvlptError
from study.grid import expand
from study.spec import load_spec, spec_from_dict
from study.store import Store

SMALL = {
    "name": "small",
    "backbone": "tiny",
    "tasks": ["toy-five", "toy-three", "toy-multi"],
    "methods": {"coop": {"n_ctx": 4}, "vpt": {}},
    "shots": [2],
    "seeds": [0, 1],
    "modes": ["joint", "init"],
    "recipe": {"epochs": 2, "lr": 0.05},
}


def test_grid_counts_for_two_methods_three_tasks_two_seeds(toy_tasks):
    grid = expand(spec_from_dict(SMALL))
    counts = grid.counts()
    assert counts[("zeroshot", "zeroshot")] == 3
    assert counts[("single", "coop")] == counts[("single", "vpt")] == 3 * 2
    # 9 ordered pairs (diagonal included) x 2 modes x 2 seeds
    assert counts[("transfer", "coop")] == counts[("transfer", "vpt")] == 9 * 2 * 2
    assert len(grid.cells) == 3 + 12 + 72
    # one wave for what needs nothing (zero-shot, single, joint), one for the init cells
    assert [len(s) for s in grid.stages()] == [3 + 12 + 36, 36]
    assert {c.mode for c in grid.stages()[1]} == {"init"}
    assert len({cell_id(c) for c in grid.cells}) == len(grid.cells)


def test_noise_seeds_rerun_every_single_cell_and_the_drawn_pairs(toy_tasks):
    spec = spec_from_dict({**SMALL, "seeds": [0], "noise": {"seeds": [1, 2], "pairs": 2}})
    counts = expand(spec).counts()
    assert counts[("single", "coop")] == 3 * 3  # every task at seed 0 and at both noise seeds
    # seed 0: 9 pairs x 2 modes; each noise seed: the 2 drawn pairs x 2 modes
    assert counts[("transfer", "coop")] == 9 * 2 + 2 * 2 * 2
    extra = [c for c in expand(spec).cells if c.stage == "transfer" and c.seed > 0]
    pairs = {(c.source, c.target) for c in extra}
    assert len(pairs) == 2 and all(s != t for s, t in pairs)  # off-diagonal, the same for both methods
    assert {(c.method, c.seed) for c in extra} == {(m, s) for m in ("coop", "vpt") for s in (1, 2)}
    assert expand(spec).cells == expand(spec).cells  # drawn the same way every time
    with pytest.raises(MvlptError, match="'noise.seeds' repeats a seed of 'seeds': \\[0\\]"):
        spec_from_dict({**SMALL, "seeds": [0], "noise": {"seeds": [0, 1]}})
    with pytest.raises(MvlptError, match="'noise.pairs' must be between 0 and 6"):
        spec_from_dict({**SMALL, "noise": {"seeds": [3], "pairs": 7}})


def test_init_transfer_pulls_in_its_source_singles(toy_tasks):
    spec = spec_from_dict({**SMALL, "stages": ["transfer"], "modes": ["init"], "source_seeds": [0, 1]})
    grid = expand(spec)
    assert grid.counts()[("single", "coop")] == 3 * 2  # the sources' singles for both seeds
    assert ("zeroshot", "zeroshot") not in grid.counts()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"recipe": {"epochz": 3}}, "unknown key 'epochz' in [recipe]"),
        ({"methods": {"lora": {}}}, "unknown method 'lora'"),
        ({"methods": {"coop": {"nctx": 3}}}, "coop config: unknown key 'nctx'"),
        ({"seeds": [-1]}, "'seeds' values must be at least 0"),
        ({"shots": "many"}, "'shots' must be int"),
        ({"modes": ["both"]}, "'modes' has unknown value 'both'"),
        ({"resources": {"gpu": -1}}, "resources must be positive"),
        ({"recipe": {"precision": "fp8"}}, "unknown precision 'fp8'"),
        ({"name": "../up"}, "'name' must be a plain folder name"),
    ],
)
def test_spec_rejects_bad_keys_and_values_in_one_line(change, message):
    with pytest.raises(MvlptError) as err:
        spec_from_dict({**SMALL, **change}, where="spec x.toml")
    assert message in str(err.value) and str(err.value).startswith("spec x.toml: ")
    assert "\n" not in str(err.value)


def test_a_spec_as_a_document_loads_back_to_itself(toy_tasks):
    spec = spec_from_dict({**SMALL, "source_seeds": [0, 1], "noise": {"seeds": [7], "pairs": 2, "draw": 1}})
    assert spec_from_dict(spec.to_dict()) == spec
    assert spec_from_dict(load_spec("study/specs/default.toml").to_dict()) == load_spec(
        "study/specs/default.toml"
    )


def test_spec_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x\n")
    with pytest.raises(MvlptError, match="malformed TOML"):
        load_spec(bad)
    with pytest.raises(MvlptError, match="spec file not found"):
        load_spec(tmp_path / "none.toml")
    good = tmp_path / "good.toml"
    good.write_text('name = "g"\nbackbone = "tiny"\ntasks = ["a", "b"]\n[methods.coop]\nn_ctx = 4\n')
    spec = load_spec(good)
    assert spec.methods == (("coop", (("n_ctx", 4),)),) and spec.seeds == (0,)
    assert spec.digest() == load_spec(good).digest()


def _row(cid, status="ok", value=0.5, stage="single", study="study"):
    return {
        "study": study,
        "cell_id": cid,
        "stage": stage,
        "method": "coop",
        "status": status,
        "value": value,
        "mode": None,
    }


def test_store_reads_as_one_dataset_with_one_row_per_cell(tmp_path):
    store = Store(tmp_path / "study")
    store.create()
    store.write_cell(_row("a"), {"method": "coop", "version": 1, "tensors": {}})
    store.write_cell(_row("b", status="failed", value=float("nan")))
    store.write_text("_study.json", '{"name": "study"}')
    store.write_cell(_row("b", value=0.75))  # a retry replaces the failed row
    store.write_cell({**_row("c", stage="transfer"), "mode": "joint", "source": "x"})
    frame = pd.read_parquet(tmp_path / "study")
    assert sorted(frame.cell_id) == ["a", "b", "c"] and frame.set_index("cell_id").value["b"] == 0.75
    assert frame.set_index("cell_id").loc["c", "mode"] == "joint"
    with pytest.raises(MvlptError, match="outside the store schema"):
        store.write_cell({**_row("d"), "colour": "red"})
    assert ds.dataset(str(tmp_path / "study")).count_rows() == 3
    assert store.done() == {"a", "b", "c"}
    assert store.load_prompt("a")["method"] == "coop"
    assert store.meta() == {"name": "study"}


def test_a_torn_temporary_file_is_invisible(tmp_path):
    store = Store(tmp_path / "s")
    store.create()
    store.write_cell(_row("a"))
    (tmp_path / "s" / ".tmp-123-b.parquet").write_bytes(b"PAR1 half a file")
    assert len(pd.read_parquet(tmp_path / "s")) == 1 and store.done() == {"a"}


def test_a_damaged_cell_file_is_named_when_the_store_is_read(tmp_path):
    store = Store(tmp_path / "s")
    store.create()
    for cid in ("a", "b"):
        store.write_cell(_row(cid))
    assert store.status_of() == {"a": "ok", "b": "ok"}
    (tmp_path / "s" / "0badc0ffee.parquet").write_bytes(b"PAR1 not a parquet file")
    assert store.status_of() == {"a": "ok", "b": "ok"}
    assert [(s.name, s.reason.split(":")[0]) for s in store.skipped] == [("0badc0ffee.parquet", "unreadable")]


def test_unwritable_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MvlptError, match="results folder is not writable"):
        Store(blocker / "study").create()


def test_shipped_elevater_spec_is_the_papers_grid():
    from study.launch import resolve_spec_path

    spec = load_spec(resolve_spec_path("elevater"))
    assert spec.backbone == "ViT-B-16:openai" and spec.shots == (20,) and spec.seeds == (0, 1, 2)
    assert dict(spec.recipe)["epochs"] == 200 and set(spec.modes) == {"init", "joint"}
    counts = expand(spec).counts()
    assert counts[("zeroshot", "zeroshot")] == 20
    assert all(counts[("transfer", m)] == 400 * 2 * 3 for m in ("coop", "vpt", "upt"))
    assert all(counts[("single", m)] == 20 * 3 for m in ("coop", "vpt", "upt"))


def test_shipped_default_spec_is_the_full_builtin_grid():
    from study.launch import resolve_spec_path

    spec = load_spec(resolve_spec_path(None))
    assert spec.name == "default" and spec.backbone == "builtin" and spec.suite == "builtin"
    assert len(spec.tasks) == 20 and spec.modes == ("joint",) and spec.seeds == (0,)
    grid = expand(spec)
    counts = grid.counts()
    assert {m for _, m in counts} == {"zeroshot", "coop", "vpt", "upt"}
    # 400 pairs at seed 0, and every target's whole column again at seed 1
    assert spec.noise.seeds == (1,) and spec.noise.targets == 20 and spec.noise.pairs == 0
    assert all(counts[("transfer", m)] == 400 + 400 for m in ("coop", "vpt", "upt"))
    assert all(counts[("single", m)] == 20 * 2 for m in ("coop", "vpt", "upt"))
    # MVLPT's method on top: 3 source policies per target (k = 3), groups by validation gain, every
    # set's prompt on the per-task budget
    assert spec.multisource.policies == ("all_but_fold", "top_k:gain", "random_k")
    assert spec.multisource.k == 3 and spec.groups.by == ("gain",) and spec.groups.n_groups == 5
    assert spec.multisource.budget == spec.groups.budget == "per_task"
    assert all(counts[("multisource", m)] + grid.pending[("multisource", m)] == 60 for m in ("coop", "vpt"))
    # the recipe for the small backbone reaches every cell, its step floor included; CoOp's (twice
    # the steps) and UPT's (clipped) fields are their own
    recipes = {c.method: c.recipe for c in grid.cells if c.stage != "zeroshot"}
    assert recipes["vpt"].min_steps == recipes["upt"].min_steps == 20 and recipes["coop"].min_steps == 40
    assert recipes["upt"].grad_clip > 0 and recipes["coop"].grad_clip == recipes["vpt"].grad_clip == 0
    assert dataclasses.replace(recipes["coop"], min_steps=20) == recipes["vpt"]


def test_a_full_disk_loses_nothing_already_stored(tmp_path, monkeypatch):
    import errno

    store = Store(tmp_path / "s")
    store.create()
    store.write_cell(_row("a", value=0.25))
    before = (tmp_path / "s" / "a.parquet").read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(MvlptError, match=r"could not write .*a\.parquet: .*No space left on device"):
        store.write_cell(_row("a", value=0.99))
    assert (tmp_path / "s" / "a.parquet").read_bytes() == before
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]


def test_store_at_a_filesystem_uri(tmp_path):
    store = Store(f"file://{tmp_path}/uri-study")
    store.create()
    store.write_cell(_row("u", value=0.5), {"method": "coop", "version": 1, "tensors": {}})
    assert store.done() == {"u"} and store.load_prompt("u")["method"] == "coop"
    assert len(pd.read_parquet(tmp_path / "uri-study")) == 1


def test_init_transfer_starts_from_the_stored_source_prompts_averaged(toy_tasks, tmp_path):
    from pipeline.cell import dependencies
    from pipeline.methods import average_states
    from pipeline.run import run
    from study.schedule import Job, run_one

    spec = spec_from_dict({**SMALL, "stages": ["transfer"], "modes": ["init"], "source_seeds": [0, 1]})
    grid = expand(spec)
    cell = next(c for c in grid.cells if c.stage == "transfer" and c.method == "coop" and c.seed == 0)
    store = Store(tmp_path / "s")
    store.create()
    deps = dependencies(cell)
    assert [d.seed for d in deps] == [0, 1]  # the source's singles for both source seeds
    states = []
    for dep in deps:
        result = run(dep)
        store.write_cell(result.row(), result.prompt_state)
        states.append(result.prompt_state)
    job = Job(
        "s",
        str(tmp_path / "s"),
        (cell,),
        (cell_id(cell),),
        (tuple(cell_id(d) for d in deps),),
        1,
        "cpu",
        None,
    )
    assert run_one(job, 0, "node-a") == "ok"
    stored = _table_of(store).loc[cell_id(cell)]
    expected = run(cell, source_state=average_states(states))
    assert stored.value == expected.value and stored.status == "ok" and stored.node == "node-a"


def _table_of(store):
    return store.read().to_pandas().set_index("cell_id")


def test_study_embeddings_and_designed_similarities_are_written_beside_the_cells(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.cell import make_cell
    from pipeline.data.suite import SUITE, similarity_matrix
    from pipeline.embed import prompt_vector
    from pipeline.run import run
    from study.embed import DESIGNED, EMBEDDINGS, write_embeddings

    tasks = ["glyph-kinds", "sizes", "shapes"]
    spec = spec_from_dict(
        {"name": "e", "backbone": "tiny", "tasks": tasks, "methods": {"coop": {"n_ctx": 2}}, "shots": [2]},
        where="test",
    )
    store = Store(tmp_path / "e")
    store.create()
    # one finished single cell: its prompt becomes a prompt row
    cell = make_cell("coop", "shapes", method_config={"n_ctx": 2}, backbone="tiny", shots=2)
    result = run(dataclasses.replace(cell, recipe=dataclasses.replace(cell.recipe, epochs=1)))
    store.write_cell({**result.row(), "study": "e"}, result.prompt_state)
    store.write_bytes("_embeddings.parquet", b"an earlier version's table beside the cells")
    n = write_embeddings(spec, store, cache_dir=None)
    assert not store.has("_embeddings.parquet")  # moved out of the cells' glob

    emb = pq.read_table(store._path(EMBEDDINGS)).to_pandas()
    assert len(emb) == n
    labels = emb[emb.kind == "label"]
    assert labels.groupby("task").size().to_dict() == {t: len(SUITE[t].classnames) for t in tasks}
    images = emb[emb.kind == "image"]
    assert images.groupby("task").size().to_dict() == {t: 2 * len(SUITE[t].classnames) for t in tasks}
    prompts = emb[emb.kind == "prompt"]
    assert prompts[["method", "task", "shots", "seed"]].values.tolist() == [["coop", "shapes", 2, 0]]
    assert np.array_equal(prompts.vector.iloc[0], prompt_vector(result.prompt_state).astype(np.float32))

    designed = pq.read_table(store._path(DESIGNED)).to_pandas()
    names, visual = similarity_matrix("visual")
    at = {t: i for i, t in enumerate(names)}
    vis = designed[designed.kind == "visual"].pivot(index="source", columns="target", values="value")
    assert vis.shape == (3, 3)
    for s in tasks:
        for t in tasks:
            assert vis.loc[s, t] == pytest.approx(visual[at[s], at[t]])
    assert (vis.values == vis.values.T).all() and (vis.values.diagonal() == 1).all()


def test_designed_similarities_only_for_builtin_tasks(toy_tasks):
    from study.embed import designed_table

    assert designed_table(["toy-five", "shapes"]) is None
    from pipeline.data.suite import DESIGNED_KINDS

    table = designed_table(["shapes", "colors"])
    assert table.num_rows == len(DESIGNED_KINDS) * 4
    assert set(table.column("kind").to_pylist()) == {"visual", "label", *DESIGNED_KINDS}


def test_a_result_row_has_exactly_the_store_columns():
    from pipeline.cell import make_cell
    from pipeline.run import CellResult
    from study.store import SCHEMA

    cell = make_cell("coop", "t", source="s", mode="joint")
    row = CellResult.failed(cell, "abc", "ValueError: boom").row()
    assert set(row) | {"study", "prompt_path"} == set(SCHEMA.names)
    # and each field's type is its column's
    arrow = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    hints = typing.get_type_hints(CellResult)
    for f in dataclasses.fields(CellResult):
        if f.name != "prompt_state":
            kind = next(t for t in (*typing.get_args(hints[f.name]), hints[f.name]) if t in arrow)
            assert SCHEMA.field(f.name).type == arrow[kind], f.name
    assert (
        row["status"] == "failed" and row["error"] == "ValueError: boom" and row["label_space"] == "per_task"
    )


def test_a_worker_that_identifies_a_cell_otherwise_fails_it_under_the_planned_id(toy_tasks, tmp_path):
    from pipeline.cell import make_cell
    from study.schedule import Job, run_one

    store = Store(tmp_path / "s")
    store.create()
    cell = make_cell("coop", "toy-three", shots=2, backbone="tiny")
    job = Job("s", str(tmp_path / "s"), (cell,), ("planned0000000000000",), ((),), 1, "cpu", None)
    assert run_one(job, 0, "node") == "failed"
    rows = store.read().to_pylist()
    assert [r["cell_id"] for r in rows] == ["planned0000000000000"]  # never a second id
    assert rows[0]["status"] == "failed" and "identity mismatch" in rows[0]["error"]
    assert cell_id(cell) in rows[0]["error"]
