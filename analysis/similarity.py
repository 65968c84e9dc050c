"""Task similarities from precomputed embeddings and learned prompts: visual, label, prompt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero)."""
    x = np.asarray(x, dtype=float)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _frame(values: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(values, index=list(names), columns=list(names))
    frame.index.name, frame.columns.name = "source", "target"
    return frame


def cosine_matrix(vectors: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cosine between every two tasks' vectors (each flattened to 1-D); symmetric, 1 on the diagonal."""
    names = list(vectors)
    flat = [np.ravel(np.asarray(vectors[n], dtype=float)) for n in names]
    if len({v.size for v in flat}) > 1:
        raise ValueError(f"vectors differ in size: { {n: v.size for n, v in zip(names, flat, strict=True)} }")
    u = _unit(np.stack(flat))  # (T, d)
    return _frame(u @ u.T, names)


def visual_similarity(images: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cosine between tasks' mean L2-normalised image embeddings; `images`: task -> (n, d) array."""
    return cosine_matrix({t: _unit(x).mean(axis=0) for t, x in images.items()})


def label_similarity(texts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cosine between tasks' mean class-name text embeddings (each L2-normalised first, as CLIP's
    classifier uses them); `texts`: task -> (classes, d) array."""
    return cosine_matrix({t: _unit(x).mean(axis=0) for t, x in texts.items()})


def label_best_match(texts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Asymmetric label similarity: entry (source, target) is the mean over the target's classes of the
    cosine to the best-matching source class. Rows are sources, columns targets, as in gain matrices."""
    names = list(texts)
    unit = {t: _unit(texts[t]) for t in names}
    out = np.empty((len(names), len(names)))
    for i, s in enumerate(names):
        for j, t in enumerate(names):
            cos = unit[t] @ unit[s].T  # (target classes, source classes)
            out[i, j] = cos.max(axis=1).mean()
    return _frame(out, names)


def prompt_similarity(prompts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cosine between tasks' flattened learned prompts (SPoT-style); shapes must agree within a method."""
    shapes = {t: np.shape(p) for t, p in prompts.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"prompts differ in shape: {shapes}")
    return cosine_matrix(prompts)


def arrays_by_task(
    table: pd.DataFrame, task_col: str = "task", column: str | None = None
) -> dict[str, np.ndarray]:
    """Embeddings stored as a table -> task -> (n, d) array, in order of first appearance. Either one
    list-valued `column` per row, or (default) every numeric column but `task_col` is a dimension."""
    out = {}
    for task, part in table.groupby(task_col, sort=False):
        if column is not None:
            out[task] = np.stack([np.asarray(v, dtype=float) for v in part[column]])
        else:
            out[task] = part.drop(columns=task_col).select_dtypes("number").to_numpy(float)
    return out
