"""A study's task embeddings and designed similarities, written into its folder for the report.

EMBEDDINGS holds the kernel's image, label and prompt embeddings of the study's tasks (see
pipeline/embed.py); DESIGNED the built-in suite's designed visual and label similarities and
designed relations (same_factor, aligned_words, crossed_words, same_domain) as rows (kind,
source, target, value) when every task of the study comes from that suite. Both sit in the
folder's `_tables/`, out of reach of a `*.parquet` glob over the cells, and are rewritten whole and
atomically, so a report never reads half of one.
"""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq

from analysis.load import DESIGNED, EMBEDDINGS, LEGACY  # the names the report reads them under
from study.spec import StudySpec
from study.store import Store

log = logging.getLogger(__name__)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def designed_table(tasks) -> pa.Table | None:
    """The designed similarities and relations among `tasks`, or None when some task is not a built-in one."""
    from pipeline.data.suite import DESIGNED_KINDS, SUITE, similarity_matrix

    if not tasks or not all(t in SUITE for t in tasks):
        return None
    rows = []
    for kind in DESIGNED_KINDS:
        names, matrix = similarity_matrix(kind)
        at = {n: i for i, n in enumerate(names)}
        rows += [
            {"kind": kind, "source": s, "target": t, "value": float(matrix[at[s], at[t]])}
            for s in tasks
            for t in tasks
        ]
    return pa.Table.from_pylist(rows)


def read_embeddings(store: Store) -> pa.Table | None:
    """The folder's embeddings table in the kernel's format, or None when it has none or a damaged
    one (torn, foreign columns or types): a launch rebuilds it, a plan reads no similarity from it."""
    from pipeline.embed import SCHEMA

    data = store.read_bytes(EMBEDDINGS)
    if data is None:
        return None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as err:  # torn or foreign bytes: pyarrow raises ArrowInvalid, OSError and others
        log.warning("%s/%s is damaged (%s); the next launch rebuilds it", store.location, EMBEDDINGS, err)
        return None
    wrong = [
        f.name
        for f in SCHEMA
        if f.name not in table.column_names or table.schema.field(f.name).type != f.type
    ]
    if wrong:
        log.warning("%s/%s has no column '%s' of the kernel's type; the next launch rebuilds it",
                    store.location, EMBEDDINGS, wrong[0])  # fmt: skip
        return None
    return table.select(SCHEMA.names)


def embeddings_sound(store: Store) -> bool:
    return read_embeddings(store) is not None


def stored_prompt_rows(store: Store) -> list[dict]:
    """One prompt row per single cell finished in the store."""
    from pipeline.embed import prompt_row

    table = store.read(["cell_id", "stage", "method", "target", "shots", "seed", "status", "prompt_path"])
    rows = []
    for r in table.to_pylist():
        if r["stage"] == "single" and r["status"] == "ok" and r["prompt_path"]:
            state = store.load_prompt(r["cell_id"])
            rows.append(prompt_row(r["method"], r["target"], r["shots"], r["seed"], state))
    return rows


def write_embeddings(spec: StudySpec, store: Store, cache_dir: str | None, prompts: bool = True) -> int:
    """Compute and store the study's embeddings (prompts of the single cells stored so far when
    `prompts`) and, for the built-in suite, its designed similarities. -> rows written."""
    from pipeline.backbones import load_backbone
    from pipeline.data import resolve_task
    from pipeline.embed import image_rows, label_rows, table
    from pipeline.features import FeatureCache

    backbone = load_backbone(spec.backbone, "cpu")
    cache = FeatureCache(cache_dir)
    rows = []
    for name in spec.tasks:
        task = resolve_task(name)
        rows += label_rows(backbone, task, name)
        for shots in spec.shots:
            for seed in spec.seeds:
                rows += image_rows(backbone, task, shots, seed, cache, name)
    if prompts:
        rows += stored_prompt_rows(store)
    store.write_bytes(EMBEDDINGS, _parquet_bytes(table(rows)))
    designed = designed_table(list(spec.tasks))
    if designed is not None:
        store.write_bytes(DESIGNED, _parquet_bytes(designed))
    for old in LEGACY.values():  # an earlier version's copies beside the cells would read as cells
        store.delete(old)
    log.info("wrote %d embedding rows to %s", len(rows), store.location)
    return len(rows)
