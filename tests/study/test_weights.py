"""A study is computed with one set of built-in weights: recorded at launch, checked on every node."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import MvlptError
from study.store import Store

OTHER = "0" * 64  # the hash of weights some other node pre-trained


def _spec():
    from study.spec import spec_from_dict

    data = {"name": "w", "backbone": "builtin", "tasks": ["sizes"], "methods": {"coop": {"n_ctx": 2}}}
    return spec_from_dict(data, where="test")


def test_launch_records_the_weights_and_refuses_other_ones(tmp_path):
    from pipeline.backbones import file_sha256
    from pipeline.pretrain import pretrained_checkpoint
    from study.guard import WEIGHTS_KEY, record_weights

    store = Store(tmp_path / "w")
    store.create()
    store.write_text("_study.json", json.dumps({"name": "w"}))
    record_weights(_spec(), store)
    assert store.meta()[WEIGHTS_KEY] == file_sha256(pretrained_checkpoint())
    store.write_text("_study.json", json.dumps({"name": "w", WEIGHTS_KEY: OTHER}))
    with pytest.raises(MvlptError, match="weights mismatch: the built-in backbone here .* is not the one"):
        record_weights(_spec(), store)


def test_a_worker_with_other_weights_stores_a_failed_weights_mismatch_row(tmp_path):
    import dataclasses

    from pipeline.cell import cell_id, make_cell
    from study.guard import WEIGHTS_KEY
    from study.schedule import Job, run_one

    store = Store(tmp_path / "w")
    store.create()
    store.write_text("_study.json", json.dumps({"name": "w", WEIGHTS_KEY: OTHER}))
    cell = make_cell("coop", "sizes", method_config={"n_ctx": 2}, backbone="builtin", shots=1)
    cell = dataclasses.replace(cell, recipe=dataclasses.replace(cell.recipe, epochs=1, min_steps=0))
    cid = cell_id(cell)
    job = Job("w", str(tmp_path / "w"), (cell,), (cid,), ((),), 1, "cpu", None)
    assert run_one(job, 0, "node-b") == "failed"
    row = store.read().to_pylist()[0]
    assert row["cell_id"] == cid and row["status"] == "failed" and "weights mismatch" in row["error"]
    assert store.done() == set()
