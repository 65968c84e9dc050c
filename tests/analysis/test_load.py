"""Reading a study folder: cells file by file, unreadable files skipped and named, embeddings as arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from study_folders import (
    LABEL,
    TASKS,
    VISUAL,
    designed_rows,
    full_study,
    toy_rows,
    write_study,
)

from analysis.load import (
    ReportError,
    image_arrays,
    label_arrays,
    load_study,
    prompt_arrays,
    prompt_methods,
)


def test_reads_every_cell_the_meta_and_nothing_hidden(tmp_path):
    folder = full_study(tmp_path / "toy")
    (folder / ".tmp-123-abc.parquet").write_bytes(b"half a file")  # a writer's temporary: not a cell
    tables = load_study(folder)
    rows = toy_rows()
    assert len(tables.cells) == len(rows) and tables.skipped == ()
    assert tables.meta["name"] == "toy" and tables.name == "toy" and tables.backbone == "builtin"
    assert set(tables.cells["stage"]) == {"zeroshot", "single", "transfer"}
    single = tables.cells[(tables.cells["stage"] == "single") & (tables.cells["target"] == "a")]
    assert list(single["value"]) == [0.5, 0.5]


def test_a_corrupt_or_foreign_file_is_skipped_and_named(tmp_path):
    folder = full_study(tmp_path / "toy")
    (folder / "0badc0ffee.parquet").write_bytes(b"PAR1 not really")
    pq.write_table(pa.table({"x": [1, 2]}), folder / "foreign.parquet")
    tables = load_study(folder)
    assert len(tables.cells) == len(toy_rows())
    skipped = {s.name: s.reason for s in tables.skipped}
    assert set(skipped) == {"0badc0ffee.parquet", "foreign.parquet"}
    assert skipped["0badc0ffee.parquet"].startswith("unreadable")
    assert "no column" in skipped["foreign.parquet"] and "stage" in skipped["foreign.parquet"]


def test_missing_folder_and_a_folder_that_is_not_a_study_are_clear_errors(tmp_path):
    with pytest.raises(ReportError, match="no such folder"):
        load_study(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ReportError, match=r"not a study folder \(no _study.json\)"):
        load_study(tmp_path / "plain")
    broken = write_study(tmp_path / "broken", toy_rows(transfers=False))
    (broken / "_study.json").write_text("{ not json")
    with pytest.raises(ReportError, match="unreadable _study.json"):
        load_study(broken)


def test_an_empty_study_loads_with_no_cells(tmp_path):
    folder = write_study(tmp_path / "empty", [], grid={"single/coop": 4})
    tables = load_study(folder)
    assert tables.cells.empty and {"stage", "value", "status", "source"} <= set(tables.cells.columns)


def test_embeddings_become_arrays_by_task_and_designed_square_frames(tmp_path):
    tables = load_study(full_study(tmp_path / "toy"))
    assert tables.embeddings is not None
    images = image_arrays(tables.embeddings, shots=4)
    assert list(images) == TASKS and images["a"].shape == (3, 8)
    labels = label_arrays(tables.embeddings)
    assert labels["c"].shape == (2, 8)
    assert prompt_methods(tables.embeddings) == ["coop", "vpt"]
    assert prompt_arrays(tables.embeddings, "vpt")["d"].shape == (10,)
    assert set(tables.designed) == {"visual", "label"}
    visual = tables.designed["visual"]
    assert list(visual.index) == TASKS and list(visual.columns) == TASKS
    np.testing.assert_allclose(visual.to_numpy(), VISUAL)
    np.testing.assert_allclose(tables.designed["label"].to_numpy(), LABEL)


def test_prompts_of_several_seeds_are_averaged(tmp_path):
    rows = [
        dict(kind="prompt", method="coop", task="a", shots=4, seed=s, item="", vector=[float(s), 1.0])
        for s in (0, 1, 2)
    ]
    tables = load_study(write_study(tmp_path / "toy", toy_rows(transfers=False), embeddings=rows))
    np.testing.assert_allclose(prompt_arrays(tables.embeddings, "coop")["a"], [1.0, 1.0])


def test_absent_or_unreadable_extras_leave_the_cells_readable(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(), designed=designed_rows())
    tables = load_study(folder)
    assert tables.embeddings is None and set(tables.designed) == {"visual", "label"}
    (folder / "_embeddings.parquet").write_bytes(b"garbage")
    tables = load_study(folder)
    assert tables.embeddings is None and [s.name for s in tables.skipped] == ["_embeddings.parquet"]
    assert len(tables.cells) == len(toy_rows())
