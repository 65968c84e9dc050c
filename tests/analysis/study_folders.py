"""Tiny study folders on disk, in the store's own format, with known gains and designed similarities."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.embed import SCHEMA as EMBEDDING_SCHEMA  # the format the kernel writes
from study.store import Store

TASKS = ["a", "b", "c", "d"]
# designed similarities (symmetric, 1 on the diagonal), distinct off-diagonal values
VISUAL = np.array(
    [
        [1.0, 0.9, 0.2, 0.5],
        [0.9, 1.0, 0.4, 0.1],
        [0.2, 0.4, 1.0, 0.7],
        [0.5, 0.1, 0.7, 1.0],
    ]
)
LABEL = np.array(
    [
        [1.0, 0.3, 0.8, 0.05],
        [0.3, 1.0, 0.6, 0.2],
        [0.8, 0.6, 1.0, 0.4],
        [0.05, 0.2, 0.4, 1.0],
    ]
)
SINGLE = 0.5  # every single run; one value keeps the designed ties exact in the gains
ZEROSHOT = {"a": 0.30, "b": 0.25, "c": 0.40, "d": 0.10}


def gain_pts(method: str, s: int, t: int) -> float:
    """Designed gains in points: coop rises with visual similarity, vpt falls with label similarity."""
    if method == "coop":
        return 10.0 * VISUAL[s, t] - 4.0
    return 2.0 - 10.0 * LABEL[s, t]


def cell(stage, method, target, value, *, source=None, mode=None, shots=4, seed=0, status="ok"):
    key = f"{stage}/{method}/{source}/{target}/{mode}/{shots}/{seed}"
    single_like = stage != "zeroshot"
    return dict(
        study="toy",
        cell_id=hashlib.sha1(key.encode()).hexdigest()[:20],
        stage=stage,
        mode=mode,
        method=method,
        backbone="builtin",
        source=source,
        target=target,
        shots=shots if single_like else None,
        seed=seed if single_like else None,
        metric="accuracy",
        value=value,
        status=status,
        error=None if status == "ok" else "RuntimeError: boom",
    )


def toy_rows(methods=("coop", "vpt"), transfers: bool = True) -> list[dict]:
    rows = [cell("zeroshot", "zeroshot", t, ZEROSHOT[t]) for t in TASKS]
    for method in methods:
        rows += [cell("single", method, t, SINGLE) for t in TASKS]
        if not transfers:
            continue
        for i, s in enumerate(TASKS):
            for j, t in enumerate(TASKS):
                g = 0.0 if i == j else gain_pts(method, i, j)
                rows.append(cell("transfer", method, t, SINGLE + g / 100, source=s, mode="joint"))
    return rows


def embedding_rows(methods=("coop", "vpt"), dim: int = 8) -> list[dict]:
    """Three images and two labels per task around a task-specific direction; one prompt per single."""
    rng = np.random.default_rng(0)
    rows = []
    for t in TASKS:
        centre = rng.normal(size=dim)
        for k in range(3):
            vector = (centre + 0.3 * rng.normal(size=dim)).tolist()
            rows.append(
                dict(kind="image", method=None, task=t, shots=4, seed=0, item=f"{t}{k % 2}", vector=vector)
            )
        for k in range(2):
            vector = (centre + 0.5 * rng.normal(size=dim)).tolist()
            rows.append(
                dict(kind="label", method=None, task=t, shots=None, seed=None, item=f"{t}{k}", vector=vector)
            )
        for m, size in zip(methods, (6, 10), strict=False):
            vector = rng.normal(size=size).tolist()
            rows.append(dict(kind="prompt", method=m, task=t, shots=4, seed=0, item="", vector=vector))
    return rows


def designed_rows() -> list[dict]:
    return [
        {"kind": kind, "source": s, "target": t, "value": float(m[i, j])}
        for kind, m in (("visual", VISUAL), ("label", LABEL))
        for i, s in enumerate(TASKS)
        for j, t in enumerate(TASKS)
    ]


def write_study(
    folder: Path,
    rows: list[dict],
    *,
    grid: dict | None = None,
    embeddings: list[dict] | None = None,
    designed: list[dict] | None = None,
) -> Path:
    """A study folder: one parquet per cell (written by the store), _study.json, optional extras."""
    store = Store(folder)
    store.create()
    for row in rows:
        store.write_cell(row)
    if grid is None:
        grid = Counter(f"{r['stage']}/{r['method']}" for r in rows)
    meta = {"name": "toy", "spec": {"backbone": "builtin", "seeds": [0], "modes": ["joint"]}, "grid": grid}
    (folder / "_study.json").write_text(json.dumps(meta))
    if embeddings is not None:
        pq.write_table(
            pa.Table.from_pylist(embeddings, schema=EMBEDDING_SCHEMA), folder / "_embeddings.parquet"
        )
    if designed is not None:
        pq.write_table(pa.Table.from_pylist(designed), folder / "_designed.parquet")
    return folder


def full_study(folder: Path) -> Path:
    return write_study(folder, toy_rows(), embeddings=embedding_rows(), designed=designed_rows())
