"""Task embeddings for the analysis: the same images and texts the cells use, prompts as vectors."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from pipeline.data import few_shot, resolve_task
from pipeline.embed import SCHEMA, image_rows, label_rows, prompt_row, prompt_vector, table
from pipeline.features import FeatureCache
from pipeline.methods import build_method, method_config
from pipeline.methods.text import template_features


def test_image_rows_are_the_cells_k_shot_sample_features(tiny, toy_tasks):
    task = resolve_task("toy-five")
    cache = FeatureCache()
    rows = image_rows(tiny, task, shots=3, seed=1, cache=cache, name="five")
    sample = few_shot(task.data.labels("train"), task.classnames, 3, 1, task.name)
    drawn = np.concatenate([sample.val, sample.train])  # the K shots: validation and training
    expected = cache.features(tiny, task, "train", drawn).numpy()
    assert len(rows) == 15 and {r["task"] for r in rows} == {"five"}
    assert np.array_equal(np.stack([r["vector"] for r in rows]), expected.astype(np.float32))
    per_class = {c: sum(r["item"] == c for r in rows) for c in task.classnames}
    assert set(per_class.values()) == {3}
    assert {(r["shots"], r["seed"], r["kind"]) for r in rows} == {(3, 1, "image")}


def test_label_rows_are_the_template_text_features(tiny, toy_tasks):
    task = resolve_task("toy-three")
    rows = label_rows(tiny, task)
    assert [r["item"] for r in rows] == list(task.classnames)
    vectors = torch.tensor(np.stack([r["vector"] for r in rows]), dtype=torch.float32)
    normalised = vectors / vectors.norm(dim=-1, keepdim=True)
    expected = template_features(tiny, task.classnames, "a photo of a {}.")
    assert torch.allclose(normalised, expected, atol=1e-6)


def test_prompt_vectors_have_one_length_per_method_across_label_spaces(tiny, toy_tasks):
    five, three = resolve_task("toy-five"), resolve_task("toy-three")
    for name, config in (("coop", {"n_ctx": 4}), ("coop", {"n_ctx": 4, "csc": True}), ("vpt", {})):
        cfg = method_config(name, config)
        vectors = [
            prompt_vector(build_method(name, tiny, t.classnames, cfg, seed=0).prompt_state())
            for t in (five, three)
        ]
        assert vectors[0].shape == vectors[1].shape, (name, config)


def test_class_specific_contexts_average_into_one_context(tiny, toy_tasks):
    cfg = method_config("coop", {"n_ctx": 4, "csc": True})
    method = build_method("coop", tiny, resolve_task("toy-three").classnames, cfg, seed=0)
    state = method.prompt_state()
    mean = torch.stack(list(state["tensors"].values())).mean(0)
    assert np.allclose(prompt_vector(state), mean.numpy().ravel())


def test_rows_make_one_table_with_the_fixed_schema(tiny, toy_tasks):
    cfg = method_config("coop", {"n_ctx": 2})
    state = build_method("coop", tiny, ["a", "b"], cfg, seed=0).prompt_state()
    rows = label_rows(tiny, resolve_task("toy-three")) + [prompt_row("coop", "toy-three", 4, 0, state)]
    t = table(rows)
    assert t.schema == SCHEMA and t.num_rows == 4
    assert t.column("method").to_pylist() == [None, None, None, "coop"]
    assert pa.compute.list_value_length(t.column("vector")).to_pylist()[-1] == 2 * tiny.text_width
