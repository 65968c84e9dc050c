"""Which protocol gives the most reliable gains per core-minute: candidates on one fixed sub-grid.

    python bench/protocol.py [--tasks 6] [--seeds 0,1,2] [--methods coop,vpt,upt] [--workers 2]
                             [--candidates NAME,...] [--out rows.parquet]

Every candidate (shots, selection rule, steps, lr and clipping, the built-in suite's test images per
task; the default spec's methods, their own recipe fields and its backbone) runs
the single cells and the whole joint grid (every source of every target, the diagonal being the
self control) of the first --tasks built-in tasks, at each seed, in --workers processes of one
thread each. It prints per candidate and method:
- kept start: share of single and transfer cells whose kept prompt is the untuned one;
- zero gains: share of off-diagonal gains exactly 0;
- seed sd: the seed-to-seed sd of one off-diagonal gain (points), pooled over pairs;
- eval: the share of a transfer cell's seed variance that is evaluation noise, the test split being
  finite: two prompts of equal worth disagree on some test images, so their scores differ by chance
  (from the per-image correctness of one pair's cells at two or more seeds);
- rel: the reliability of a one-seed gain matrix, the correlation of two seeds' matrices over the
  off-diagonal pairs (mean over pairs of seeds) with a 95% interval from resampling targets;
  rel|t: the same within targets (each seed's matrix less its target columns' means), the
  reliability the per-target statistics see;
- self: the self control, the diagonal joint cell less the single cell, mean over targets (points);
- s/cell: core-seconds per cell (one thread).
The default spec is chosen from this table (README, "Choosing the protocol").
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# test images per task of the built-in suite before its floor (pipeline.data.suite.MIN_TEST): 50 per class
TEST50 = 0
# name -> (shots, recipe fields over the default spec's recipe and its own fields per method, a method's
# name keying fields of its own [, the suite's MIN_TEST]); a candidate runs every --methods method.
# "4-shot last" is the default spec (its own fields: CoOp 40 steps, UPT clipped at 2).
_FORMER = dict(selection="last", coop=dict(min_steps=20), upt=dict(grad_clip=1.0))
CANDIDATES = {
    "4-shot last": (4, dict(selection="last")),
    "former default": (4, _FORMER, TEST50),
    "former default test800": (4, _FORMER),
    "4-shot last 20st": (4, dict(selection="last", min_steps=20)),
    "4-shot last 40st": (4, dict(selection="last", min_steps=40)),
    "4-shot last clip1": (4, dict(selection="last", grad_clip=1.0)),
    "4-shot last clip2": (4, dict(selection="last", grad_clip=2.0)),
    "4-shot start-or-best": (4, dict(selection="val_metric_with_start")),
    "4-shot best-acc": (4, dict(selection="val_metric")),
    "4-shot best-loss": (4, dict(selection="val_loss")),
    "8-shot best-acc": (8, dict(selection="val_metric")),
    "8-shot last": (8, dict(selection="last")),
    "16-shot last": (16, dict(selection="last")),
    "8-shot last lr0.1 40st": (8, dict(selection="last", lr=0.1, min_steps=40)),
    "4-shot last lr0.05": (4, dict(selection="last", lr=0.05)),
    "8-shot last lr0.05": (8, dict(selection="last", lr=0.05)),
    "4-shot last lr0.1": (4, dict(selection="last", lr=0.1)),
    "8-shot loss lr0.05": (8, dict(selection="val_loss", lr=0.05)),
}
# tasks spread over the suite's domains and designed relations (shared words, same factor)
SPREAD = (
    "shapes",
    "colors",
    "digits",
    "textures",
    "backgrounds",
    "counts",
    "glyph-colors",
    "pattern-backgrounds",
)


def method_recipe(method: str, fields: dict, spec):
    """A candidate's recipe for one method: the default spec's recipe for it (its shared fields, then
    the method's own), then the candidate's shared fields, then the candidate's fields for that
    method. A field the candidate leaves alone is the default spec's, not the kernel's."""
    shared = {k: v for k, v in fields.items() if not isinstance(v, dict)}
    return dataclasses.replace(spec.recipe_for(method), **(shared | fields.get(method, {})))


def grid_cells(tasks: list[str], methods, seeds: list[int], shots: int, fields: dict, spec) -> list:
    """The single cells and the joint grid (diagonal included) of `tasks`, per method and seed, on
    each method's recipe (method_recipe)."""
    from pipeline.cell import Cell

    cells = []
    for method, config in methods:
        mine = method_recipe(method, fields, spec)
        for seed in seeds:
            common = dict(method=method, backbone="builtin", shots=shots, seed=seed, recipe=mine)
            common["method_config"] = config
            cells += [Cell(target=t, **common) for t in tasks]
            cells += [
                Cell(target=t, stage="transfer", mode="joint", source=s, **common)
                for t in tasks
                for s in tasks
            ]
    return cells


_CONTEXT = None
_SCORED: list = []  # the last scored (logits, labels) of this worker


def _init(min_test: int) -> None:
    """A worker: one thread, the suite's test size, and every test score's inputs kept for `_run`."""
    global _CONTEXT
    import torch

    import pipeline.loop
    from pipeline.data import suite
    from pipeline.run import Context

    torch.set_num_threads(1)
    suite.MIN_TEST = min_test
    _CONTEXT = Context(device="cpu")
    score = pipeline.loop.score

    def kept_score(metric, logits, targets):
        _SCORED[:] = [np.asarray(logits), np.asarray(targets)]
        return score(metric, logits, targets)

    pipeline.loop.score = kept_score


def _correct(logits: np.ndarray, labels: np.ndarray) -> bytes | None:
    """Per test image, whether the top class is right (single-label tasks, whose classes are balanced
    so that accuracy and mean per-class accuracy agree); None for multi-label tasks."""
    if labels.ndim != 1:
        return None
    return (logits.argmax(1) == labels).astype(np.int8).tobytes()


def _run(job) -> dict:
    name, cell = job
    from pipeline.run import run

    start = time.process_time()
    row = run(cell, context=_CONTEXT).row()
    correct = _correct(*_SCORED)
    return row | {"candidate": name, "cpu_s": time.process_time() - start, "correct": correct}


def gain_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (candidate, method, seed, source, target): the gain in points and both cells' moves."""
    single = rows[rows["stage"] == "single"].set_index(["candidate", "method", "seed", "target"])
    joint = rows[rows["stage"] == "transfer"].copy()
    key = pd.MultiIndex.from_frame(joint[["candidate", "method", "seed", "target"]])
    joint["gain"] = 100 * (joint["value"].to_numpy() - single["value"].reindex(key).to_numpy())
    joint["single_moved"] = single["moved"].reindex(key).to_numpy()
    return joint[["candidate", "method", "seed", "source", "target", "gain", "moved", "single_moved"]]


def _matrices(gains: pd.DataFrame) -> dict[int, pd.DataFrame]:
    off = gains[gains["source"] != gains["target"]]
    return {s: part.pivot(index="source", columns="target", values="gain") for s, part in off.groupby("seed")}


def _correlation(mats: dict[int, pd.DataFrame], targets, within: bool) -> float:
    """Mean over pairs of seeds of the correlation of their off-diagonal gains on `targets` (resampled
    targets repeat their columns); `within`: each column less its mean first."""
    rs = []
    seeds = sorted(mats)
    for i, a in enumerate(seeds):
        for b in seeds[i + 1 :]:
            x, y = mats[a][targets], mats[b][targets]
            if within:
                x, y = x - x.mean(), y - y.mean()
            keep = np.isfinite(x.to_numpy()) & np.isfinite(y.to_numpy())
            rs.append(np.corrcoef(x.to_numpy()[keep], y.to_numpy()[keep])[0, 1])
    return float(np.mean(rs)) if rs else float("nan")


def reliability(gains: pd.DataFrame, within: bool, n_boot: int = 500) -> tuple[float, float, float]:
    """The seed-to-seed correlation of one-seed gain matrices and its 95% target-bootstrap interval."""
    mats = _matrices(gains)
    if len(mats) < 2:
        return (float("nan"),) * 3
    targets = list(next(iter(mats.values())).columns)
    rng = np.random.default_rng(0)
    boot = [_correlation(mats, list(rng.choice(targets, len(targets))), within) for _ in range(n_boot)]
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return _correlation(mats, targets, within), float(lo), float(hi)


def seed_sd(gains: pd.DataFrame) -> float:
    """Pooled within-pair sd of off-diagonal gains over seeds (points)."""
    off = gains[gains["source"] != gains["target"]]
    g = off.groupby(["source", "target"])["gain"]
    dof = (g.count() - 1).clip(lower=0).sum()
    return float(np.sqrt((g.var(ddof=1) * (g.count() - 1)).sum() / dof)) if dof else float("nan")


def eval_share(cells: pd.DataFrame) -> float:
    """The share of an off-diagonal transfer cell's seed variance that the finite test split makes:
    per pair, the images' correctness variance over seeds / the number of images, against the
    variance of the cells' scores over seeds; both pooled over pairs."""
    off = cells[(cells["stage"] == "transfer") & (cells["source"] != cells["target"])]
    evaluation, total = [], []
    for _, pair in off[off["correct"].notna()].groupby(["source", "target"]):
        if len(pair) < 2:
            continue
        c = np.stack([np.frombuffer(b, dtype=np.int8) for b in pair["correct"]]).astype(float)
        evaluation.append(c.var(axis=0, ddof=1).mean() / c.shape[1])
        total.append(pair["value"].var(ddof=1))
    return float(np.mean(evaluation) / np.mean(total)) if total else float("nan")


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    gains = gain_table(rows)
    out = []
    for (name, method), part in gains.groupby(["candidate", "method"], sort=False):
        cells = rows[(rows["candidate"] == name) & (rows["method"] == method)]
        off = part[part["source"] != part["target"]]
        diag = part[part["source"] == part["target"]]
        rel, lo, hi = reliability(part, within=False)
        rel_t, lo_t, hi_t = reliability(part, within=True)
        out.append(
            {
                "candidate": name,
                "method": method,
                "kept start": float((cells["moved"] == False).mean()),  # noqa: E712 (a column)
                "zero gains": float((off["gain"] == 0).mean()),
                "seed sd": seed_sd(part),
                "eval": eval_share(cells),
                "rel": f"{rel:.2f} [{lo:.2f}, {hi:.2f}]",
                "rel|t": f"{rel_t:.2f} [{lo_t:.2f}, {hi_t:.2f}]",
                "self": float(diag["gain"].mean()),
                "s/cell": float(cells["cpu_s"].mean()),
            }
        )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="the first N of a spread of built-in tasks")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="coop,vpt,upt")
    parser.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help="NAME or NAME@METHOD (that method alone), comma-separated",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="also write every cell's row to this Parquet file")
    args = parser.parse_args(argv)

    from pipeline.data import suite
    from pipeline.data.tasks import suite_tasks
    from study.launch import resolve_spec_path
    from study.spec import load_spec

    spec = load_spec(resolve_spec_path("default"))
    methods = [(m, c) for m, c in spec.methods if m in args.methods.split(",")]
    tasks = [t for t in SPREAD if t in suite_tasks("builtin")][: args.tasks]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs: dict[int, list] = {}  # by the suite's test size: one pool of workers each
    for item in args.candidates.split(","):
        name, _, only = item.partition("@")
        shots, fields, *test = CANDIDATES[name]
        chosen = [(m, c) for m, c in methods if not only or m == only]
        cells = grid_cells(tasks, chosen, seeds, shots, fields, spec)
        jobs.setdefault(test[0] if test else suite.MIN_TEST, []).extend((name, c) for c in cells)
    print(f"{sum(map(len, jobs.values()))} cells: {len(tasks)} tasks x {len(seeds)} seeds", flush=True)
    start, rows = time.perf_counter(), []
    for min_test, part in jobs.items():
        with mp.get_context("spawn").Pool(args.workers, initializer=_init, initargs=(min_test,)) as pool:
            rows += pool.map(_run, part, chunksize=4)
    rows = pd.DataFrame(rows)
    print(f"wall {time.perf_counter() - start:.0f} s on {args.workers} workers", flush=True)
    if args.out:
        rows.to_parquet(args.out)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summarise(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
