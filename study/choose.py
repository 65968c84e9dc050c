"""Which task sets the multisource and groups stages run, chosen from what the study knows so far.

A policy's sets are chosen from evidence the study writes before them: the frozen model's image and
label embeddings (in the folder's embeddings table, written before any cell), the learned prompts of
the single cells, and the held-out validation scores of the transfer and single cells (never their
test scores). Until its evidence is stored a choice is pending: the launch plans it in a later
round, once the cells it reads are done.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.spec import StudySpec
from study.store import Store

Key = tuple[str, int, int]  # (method, shots, seed)


def _rng(*parts) -> random.Random:
    """A generator keyed by the parts' text: the same draw on every machine and in every launch."""
    return random.Random(zlib.crc32("|".join(map(str, parts)).encode()))


def tie_order(tasks, seed: int, target: str) -> list[str]:
    """The order that breaks ties in a ranking of `target`'s sources: a draw with the seed, so that a
    tie never favours a task for its place in the task list."""
    order = list(tasks)
    _rng("ties", seed, target).shuffle(order)
    return order


def top_k(scores: pd.Series, k: int, seed: int, target: str) -> tuple[str, ...]:
    """The k sources with the highest scores (the target itself left out), ties broken by tie_order."""
    others = [s for s in scores.index if s != target]
    rank = {s: i for i, s in enumerate(tie_order(others, seed, target))}
    return tuple(sorted(others, key=lambda s: (-float(scores[s]), rank[s]))[:k])


def random_k(tasks, k: int, seed: int, target: str) -> tuple[str, ...]:
    """k of the other tasks drawn with the seed (the same draw for every method)."""
    return tuple(_rng("random_k", seed, target).sample([t for t in tasks if t != target], k))


def fold_of(tasks, folds: int, seed: int, target: str) -> tuple[str, ...]:
    """The fold holding `target` when the tasks are dealt into `folds` folds with the seed (the same
    deal for every method): the `all_but_fold` policy tunes one prompt per fold on the other folds."""
    order = list(tasks)
    _rng("folds", seed).shuffle(order)
    for i in range(folds):
        fold = tuple(order[i::folds])
        if target in fold:
            return fold
    raise ValueError(f"{target} is not one of the tasks")


def double_centred(gain: pd.DataFrame) -> pd.DataFrame:
    """The pairwise part of a gain matrix: its off-diagonal cells less the mean, each source's and
    each target's effect (a least-squares additive fit), so that good donors and receptive targets
    no longer look like affinities. The diagonal is 0."""
    from analysis.decompose import additive_fit

    *_, resid = additive_fit(gain.to_numpy(float))
    return pd.DataFrame(np.nan_to_num(resid), index=gain.index, columns=gain.columns)


def cluster(affinity: pd.DataFrame, n_groups: int, max_size: int | None = None) -> list[tuple[str, ...]]:
    """The tasks cut into groups by average-linkage clustering of a symmetrised affinity (higher:
    closer): the cut into n_groups groups, or the coarsest cut with more where one would exceed
    `max_size`; groups listed by their first task's place in the task list."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    names = list(affinity.index)
    max_size = len(names) if max_size is None else max_size
    if len(names) == 1 or n_groups >= len(names) or max_size <= 1:
        return [(n,) for n in names]
    a = affinity.loc[names, names].to_numpy(float)
    sym = (a + a.T) / 2
    dist = sym.max() - sym
    np.fill_diagonal(dist, 0.0)
    tree = linkage(squareform(dist, checks=False), "average")
    for n in range(n_groups, len(names) + 1):
        labels = fcluster(tree, n, criterion="maxclust")
        if np.bincount(labels).max() <= max_size:
            break
    groups: dict[int, list[str]] = {}
    for name, label in zip(names, labels, strict=True):
        groups.setdefault(int(label), []).append(name)
    return [tuple(g) for g in groups.values()]


def random_groups(tasks, sizes, seed: int, by: str) -> list[tuple[str, ...]]:
    """The tasks dealt at random into groups of `sizes` (the sizes of the groups found by `by`)."""
    order = list(tasks)
    _rng("groups", seed, by).shuffle(order)
    out, start = [], 0
    for size in sizes:
        out.append(tuple(order[start : start + size]))
        start += size
    return out


@dataclass
class Evidence:
    """What the study knows when it plans: similarities (task x task, rows sources, columns targets)
    and validation gains of finished cells. A matrix is absent until every cell it reads is done."""

    visual: dict[tuple[int, int], pd.DataFrame] = field(default_factory=dict)  # (shots, seed) ->
    label: pd.DataFrame | None = None
    prompt: dict[Key, pd.DataFrame] = field(default_factory=dict)
    gain: dict[Key, pd.DataFrame] = field(default_factory=dict)  # NaN where a cell is not done yet

    def ranking(self, name: str, key: Key) -> pd.DataFrame | None:
        method, shots, seed = key
        if name == "visual":
            return self.visual.get((shots, seed))
        if name == "label":
            return self.label
        return (self.prompt if name == "prompt" else self.gain).get(key)

    def top_k(self, name: str, key: Key, target: str, k: int) -> tuple[str, ...] | None:
        """target's k best sources by the ranking, None until its column is known."""
        matrix = self.ranking(name, key)
        if matrix is None or target not in matrix.columns:
            return None
        column = matrix[target].drop(target, errors="ignore")
        if column.isna().any():
            return None
        return top_k(column, k, key[2], target)

    def groups(self, name: str, key: Key, n_groups: int, max_size: int) -> list[tuple[str, ...]] | None:
        """The tasks clustered by a ranking (validation gains double-centred first), None until every
        off-diagonal cell of it is known."""
        matrix = self.ranking(name, key)
        if matrix is None:
            return None
        off = matrix.to_numpy(float)[~np.eye(len(matrix), dtype=bool)]
        if np.isnan(off).any():
            return None
        affinity = double_centred(matrix) if name == "gain" else matrix.fillna(0.0)
        return cluster(affinity, n_groups, max_size)


def _cells_frame(store: Store) -> pd.DataFrame:
    columns = [
        "stage",
        "mode",
        "method",
        "source",
        "target",
        "shots",
        "seed",
        "status",
        "val_value",
        "cell_id",
    ]
    return store.read(columns).to_pandas()


def validation_gains(cells: pd.DataFrame, spec: StudySpec) -> dict[Key, pd.DataFrame]:
    """Per (method, shots, seed): the matrix of validation gains, transfer s->t minus single t on
    t's held-out validation shots (test scores are never read). NaN where a cell is missing."""
    ok = cells[(cells["status"] == "ok") & cells["seed"].isin(spec.seeds)]
    single = ok[ok["stage"] == "single"].groupby(["method", "shots", "seed", "target"])["val_value"].mean()
    mode = spec.modes[0]
    transfer = ok[(ok["stage"] == "transfer") & (ok["mode"] == mode)]
    out = {}
    for (method, shots, seed), part in transfer.groupby(["method", "shots", "seed"]):
        val = part.pivot_table(index="source", columns="target", values="val_value", aggfunc="mean")
        val = val.reindex(index=list(spec.tasks), columns=list(spec.tasks))
        base = pd.Series({t: single.get((method, shots, seed, t), np.nan) for t in spec.tasks})
        out[(method, int(shots), int(seed))] = val - base  # column t minus single t
    return out


def prompt_similarities(cells: pd.DataFrame, store: Store, spec: StudySpec) -> dict[Key, pd.DataFrame]:
    """Per (method, shots, seed) whose single cells are all done: the cosine of their learned prompts."""
    from analysis.similarity import prompt_similarity
    from pipeline.embed import prompt_vector

    ok = cells[(cells["status"] == "ok") & (cells["stage"] == "single")]
    out = {}
    for (method, shots, seed), part in ok.groupby(["method", "shots", "seed"]):
        ids = part.drop_duplicates("target").set_index("target")["cell_id"]
        if seed in spec.seeds and set(spec.tasks) <= set(ids.index):
            vectors = {t: prompt_vector(store.load_prompt(ids[t])) for t in spec.tasks}
            out[(method, int(shots), int(seed))] = prompt_similarity(vectors)
    return out


def embedding_similarities(store: Store, spec: StudySpec, evidence: Evidence) -> None:
    """Visual (per shots and seed) and label similarities from the folder's embeddings table."""
    from analysis.load import image_arrays, label_arrays
    from analysis.similarity import label_similarity, visual_similarity
    from study.embed import read_embeddings

    stored = read_embeddings(store)
    if stored is None:
        return
    table = stored.to_pandas()
    labels = label_arrays(table)
    if set(spec.tasks) <= set(labels):
        evidence.label = label_similarity({t: labels[t] for t in spec.tasks})
    for (shots, seed), part in table[table["kind"] == "image"].groupby(["shots", "seed"]):
        images = image_arrays(part)
        if set(spec.tasks) <= set(images):
            evidence.visual[(int(shots), int(seed))] = visual_similarity({t: images[t] for t in spec.tasks})


def gather(spec: StudySpec, store: Store) -> Evidence:
    """Everything the spec's policies may read, as far as the store holds it."""
    evidence = Evidence()
    used = set()
    if "multisource" in spec.stages:
        used |= {p.removeprefix("top_k:") for p in spec.multisource.policies}
    if "groups" in spec.stages:
        used |= set(spec.groups.by)
    if used & {"visual", "label"}:
        embedding_similarities(store, spec, evidence)
    cells = _cells_frame(store) if used & {"gain", "prompt"} else pd.DataFrame()
    if cells.empty:
        return evidence
    if "gain" in used:
        evidence.gain = validation_gains(cells, spec)
    if "prompt" in used:
        evidence.prompt = prompt_similarities(cells, store, spec)
    return evidence
