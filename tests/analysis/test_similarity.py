"""Similarities on embeddings whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.similarity import (
    arrays_by_task,
    cosine_matrix,
    label_best_match,
    label_similarity,
    prompt_similarity,
    visual_similarity,
)


def test_visual_similarity_normalises_each_image_before_the_mean():
    images = {
        "A": np.array([[2.0, 0.0], [0.0, 3.0]]),
        "B": np.array([[1.0, 1.0]]),
        "C": np.array([[0.0, -5.0]]),
    }
    sim = visual_similarity(images)
    assert sim.loc["A", "B"] == pytest.approx(1.0)  # mean of unit rows is (0.5, 0.5), parallel to B
    assert sim.loc["B", "C"] == pytest.approx(-np.sqrt(0.5))
    assert np.allclose(np.diag(sim), 1.0) and np.allclose(sim, sim.T)


def test_label_similarity_is_the_cosine_of_mean_class_embeddings():
    texts = {"A": np.array([[1.0, 0.0], [0.0, 1.0]]), "B": np.array([[1.0, 0.0]])}
    assert label_similarity(texts).loc["A", "B"] == pytest.approx(np.sqrt(0.5))


def test_best_match_label_similarity_is_asymmetric_sources_in_rows():
    e1, e2 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    texts = {"big": np.array([e1, e2]), "small": np.array([e1])}
    sim = label_best_match(texts)
    assert sim.loc["big", "small"] == pytest.approx(1.0)  # the target's one class is among the source's
    assert sim.loc["small", "big"] == pytest.approx(0.5)  # e1 matched, e2 orthogonal to every source class
    assert sim.loc["big", "big"] == pytest.approx(1.0)


def test_prompt_similarity_flattens_and_refuses_mixed_shapes():
    p = {"A": np.ones((2, 3)), "B": -np.ones((2, 3)), "C": np.arange(6.0).reshape(2, 3)}
    sim = prompt_similarity(p)
    assert sim.loc["A", "B"] == pytest.approx(-1.0)
    assert sim.loc["A", "C"] == pytest.approx(15 / (np.sqrt(6) * np.sqrt(55)))
    with pytest.raises(ValueError, match="shape"):
        prompt_similarity({"A": np.ones((2, 3)), "B": np.ones((3, 2))})
    with pytest.raises(ValueError, match="size"):
        cosine_matrix({"A": np.ones(3), "B": np.ones(4)})


def test_arrays_by_task_reads_wide_and_list_tables():
    wide = pd.DataFrame({"task": ["A", "A", "B"], "e0": [1.0, 2.0, 3.0], "e1": [0.0, 1.0, 0.0]})
    arrays = arrays_by_task(wide)
    assert list(arrays) == ["A", "B"] and arrays["A"].shape == (2, 2)
    listed = pd.DataFrame({"task": ["A", "B"], "embedding": [[1.0, 0.0], [0.0, 1.0]]})
    arrays = arrays_by_task(listed, column="embedding")
    assert visual_similarity(arrays).loc["A", "B"] == pytest.approx(0.0)
