"""Task embeddings for the analysis: K-shot image features, class-name text features, learned prompts.

The analysis computes visual, label and prompt similarities from these without a model, so
they are computed once per study by the kernel and kept as one long table:
    kind    "image" (one row per K-shot training image), "label" (one row per class name) or
            "prompt" (one row per single cell's learned prompt)
    method  the prompt's method (null for image and label rows)
    task, shots, seed (null for label rows), item (the image's or the label's class name; "" else)
    vector  the raw embedding as float32 (image: the frozen image tower's output; label: the text
            tower's output for "a photo of a {class}."; prompt: the state flattened)
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from pipeline.clip import Backbone
from pipeline.data import few_shot
from pipeline.data.tasks import Task

LABEL_TEMPLATE = "a photo of a {}."
SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("method", pa.string()),
        ("task", pa.string()),
        ("shots", pa.int64()),
        ("seed", pa.int64()),
        ("item", pa.string()),
        ("vector", pa.list_(pa.float32())),
    ]
)


def _row(kind: str, task: str, vector, *, method=None, shots=None, seed=None, item: str = "") -> dict:
    return dict(
        kind=kind,
        method=method,
        task=task,
        shots=shots,
        seed=seed,
        item=item,
        vector=np.asarray(vector, dtype=np.float32).ravel().tolist(),
    )


def image_rows(
    backbone: Backbone, task: Task, shots: int, seed: int, cache, name: str | None = None
) -> list[dict]:
    """The frozen features of the task's K-shot sample (the images its cells train and validate on:
    a property of the task's data, not of tuning). `name`: what the study calls the task (its cells'
    target), by default the task's own name."""
    labels = task.data.labels("train")
    sample = few_shot(labels, task.classnames, shots, seed, task.name)
    drawn = np.asarray(list(dict.fromkeys([*sample.val.tolist(), *sample.train.tolist()])), dtype=np.int64)
    feats = cache.features(backbone, task, "train", drawn).cpu().numpy()  # (N, E)
    items = ["" if labels.ndim == 2 else task.classnames[int(labels[i])] for i in drawn]
    return [
        _row("image", name or task.name, f, shots=shots, seed=seed, item=c)
        for f, c in zip(feats, items, strict=True)
    ]


def label_rows(backbone: Backbone, task: Task, name: str | None = None) -> list[dict]:
    """The text tower's features of "a photo of a {class}." for each class of the task."""
    with torch.no_grad():
        tokens = backbone.tokenize([LABEL_TEMPLATE.format(c) for c in task.classnames])
        feats = backbone.encode_text(tokens).float().cpu().numpy()  # (C, E)
    return [_row("label", name or task.name, f, item=c) for f, c in zip(feats, task.classnames, strict=True)]


def prompt_vector(state: dict) -> np.ndarray:
    """A learned prompt as one vector of the same length for every task of a method: the tensors
    flattened in key order; class-specific contexts (one per class name) are averaged first."""
    from pipeline.methods.coop import CSC_PREFIX

    tensors = state["tensors"]
    if tensors and all(k.startswith(CSC_PREFIX) for k in tensors):
        return torch.stack(list(tensors.values())).float().mean(0).numpy().ravel()
    return np.concatenate([tensors[k].float().numpy().ravel() for k in sorted(tensors)])


def prompt_row(method: str, task: str, shots: int, seed: int, state: dict) -> dict:
    return _row("prompt", task, prompt_vector(state), method=method, shots=shots, seed=seed)


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)
