"""Prints the built-in suite's figures: pre-training, zero-shot, headroom, transfer structure.

Usage: PYTHONPATH=. python bench/builtin.py [--threads 2]
         [--sections pretrain,zeroshot,probe,headroom,transfer] [--against REV]

probe: a linear classifier on the frozen image features of the headroom cells' shots, the ceiling
that a text-side prompt (CoOp) cannot pass. --against REV first measures the same sections with the
kernel of git revision REV (checked out into a temporary worktree), then prints both side by side:
how a change of the kernel moved the suite's figures, measured in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

# The built-in backbone's prompt-tuning setup, as the default spec configures it.
_DEFAULT_SPEC = tomllib.loads((Path(__file__).parents[1] / "study" / "specs" / "default.toml").read_text())
METHOD_CONFIGS = _DEFAULT_SPEC["methods"]
RECIPE = _DEFAULT_SPEC["recipe"]


def _kernel():
    """make_cell, run and Recipe of the kernel on the path (an older revision kept the first and the
    last in other modules)."""
    try:
        from pipeline.cell import make_cell
        from pipeline.recipe import Recipe
    except ImportError:
        from pipeline.loop import Recipe
        from pipeline.run import make_cell
    from pipeline.run import run

    return make_cell, run, Recipe


def recipe(args):
    Recipe = _kernel()[2]

    kw = dict(RECIPE)
    kw.update(
        {
            k: v
            for k, v in (("epochs", args.epochs), ("lr", args.lr), ("batch_size", args.batch))
            if v is not None
        }
    )
    for item in args.recipe:
        key, _, value = item.partition("=")
        kw[key] = _value(value)
    return Recipe(**kw)


def _value(text: str):
    """A command-line value: JSON where it parses (numbers, true/false, lists), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _backbones():
    """The module that resolves and loads backbone names (an older revision kept it in clip.py)."""
    try:
        from pipeline import backbones
    except ImportError:
        from pipeline import clip as backbones
    return backbones


def _labels(task, split: str):
    """A task's labels through its data adapter (an older revision named it `source`)."""
    data = task.data if hasattr(task, "data") else task.source
    return data.labels(split)


def section_pretrain(args) -> str:
    from pipeline.pretrain import pretrained_checkpoint

    backbones = _backbones()

    if args.fresh:
        folder = tempfile.mkdtemp(prefix="mvlpt-bench-")
        start = time.perf_counter()
        path = pretrained_checkpoint(folder)
        print(
            f"pre-training (fresh, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.2f} after): "
            f"{time.perf_counter() - start:.1f} s"
        )
    else:
        path = pretrained_checkpoint(args.cache)
    start = time.perf_counter()
    import open_clip  # noqa: F401 - every process that uses a model pays this once; timed apart

    imported = time.perf_counter() - start
    start = time.perf_counter()
    path = pretrained_checkpoint(path.parent)
    backbones._LOADED.clear()
    backbones.load_backbone(f"mvlpt-small:{path}")
    print(
        f"second call (cache hit + load_backbone): {time.perf_counter() - start:.2f} s "
        f"(+ {imported:.2f} s importing open_clip, once per process)  [{path}]"
    )
    return f"mvlpt-small:{path}"


def section_zeroshot(backbone: str) -> dict[str, float]:
    from pipeline.data.suite import SUITE, chance
    from pipeline.data.tasks import resolve_task

    make_cell, run, _ = _kernel()

    print(
        f"\n## zero-shot ('a photo of a {{}}.')\n{'task':20s} {'classes':>7s} {'metric':>14s} {'value':>6s} "
        f"{'chance':>6s} {'x chance':>8s}"
    )
    values = {}
    for name in SUITE:
        task = resolve_task(name)
        values[name] = run(make_cell("zeroshot", name, backbone=backbone)).value
        ch = chance(name)
        print(
            f"{name:20s} {len(task.classnames):7d} {task.metric:>14s} {values[name]:6.3f} {ch:6.3f} "
            f"{values[name] / ch:8.2f}"
        )
    v = np.array(list(values.values()))
    c = np.array([chance(n) for n in values])
    print(
        f"mean {v.mean():.3f} vs chance {c.mean():.3f}: {v.mean() / c.mean():.2f}x (target >= 2.5x); "
        f"tasks above 1.5x chance: {(v > 1.5 * c).sum()}/20 (target >= 15)"
    )
    return values


def section_probe(backbone: str, zs: dict[str, float], args) -> None:
    """The ceiling the frozen features set: a linear classifier on the same K shots as the cells."""
    import torch
    import torch.nn.functional as F

    from pipeline.data import few_shot
    from pipeline.data.suite import SUITE
    from pipeline.data.tasks import resolve_task
    from pipeline.features import FeatureCache
    from pipeline.loop import loss_fn, score

    bb, cache = _backbones().load_backbone(backbone), FeatureCache()
    print(
        f"\n## linear probe on the frozen image features, {args.shots} shots, seed 0 "
        "(the features' ceiling)\n"
        f"{'task':20s} {'zero-shot':>9s} {'probe':>6s} {'gain':>6s}"
    )
    gains = []
    for name in SUITE:
        task = resolve_task(name)
        labels = _labels(task, "train")
        sample = few_shot(labels, task.classnames, args.shots, 0, name)
        x = F.normalize(cache.features(bb, task, "train", sample.train), dim=-1)
        test = _labels(task, "test")
        x_test = F.normalize(cache.features(bb, task, "test", np.arange(len(test))), dim=-1)
        y = torch.as_tensor(labels[sample.train])
        torch.manual_seed(0)
        head = torch.nn.Linear(x.shape[1], task.num_classes)
        optim = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
        for _ in range(300):  # full batch: the sample is at most a few hundred images
            loss = loss_fn(head(10 * x), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
        with torch.no_grad():
            value = score(task.metric, head(10 * x_test), test)
        gains.append(value - zs[name])
        print(f"{name:20s} {zs[name]:9.3f} {value:6.3f} {100 * gains[-1]:+6.1f}")
    g = np.array(gains)
    print(f"probe beats zero-shot on {(g > 0).sum()}/20 tasks, by {100 * g.mean():+.2f} points on average")


def section_headroom(backbone: str, zs: dict[str, float], args) -> dict:
    from pipeline.data.suite import SUITE

    make_cell, run, _ = _kernel()

    rec = recipe(args)
    print(f"\n## headroom at {args.shots} shots, seed 0, recipe {rec}")
    rows = {}
    for method in args.methods:
        rows[method] = [
            run(
                make_cell(
                    method,
                    n,
                    method_config=METHOD_CONFIGS[method],
                    recipe=rec,
                    backbone=backbone,
                    shots=args.shots,
                    seed=0,
                )
            )
            for n in SUITE
        ]
    print(f"{'task':20s} {'zero-shot':>9s} " + " ".join(f"{m:>13s}" for m in rows))
    for i, name in enumerate(SUITE):
        cells = " ".join(f"{rows[m][i].value:6.3f} ({rows[m][i].wall_s:4.1f}s)" for m in rows)
        print(f"{name:20s} {zs[name]:9.3f} {cells}")
    figures = {}
    for m, rs in rows.items():
        delta = np.array([r.value - zs[r.target] for r in rs])
        figures[m] = {"wins": int((delta > 0).sum()), "gain": 100 * float(delta.mean())}
        print(
            f"{m}: wins {(delta > 0).sum()}/20 (target >= 12), mean gain {100 * delta.mean():+.2f} points "
            f"(target >= +3), slowest cell {max(r.wall_s for r in rs):.1f} s (target <= 10)"
        )
    return figures


def section_transfer(backbone: str, zs: dict[str, float], args) -> dict:
    from pipeline.data.suite import DISSIMILAR_PAIRS, SIMILAR_PAIRS
    from pipeline.data.tasks import resolve_task

    make_cell, run, _ = _kernel()

    rec = recipe(args)
    similar, dissimilar = args.similar or SIMILAR_PAIRS, args.dissimilar or DISSIMILAR_PAIRS
    print(
        f"\n## joint transfer at {args.target_shots} shots (source and target), recipe {rec}\n"
        f"similar pairs {similar}\ndissimilar pairs {dissimilar}"
    )
    for name in {t for pair in (*similar, *dissimilar) for t in pair} - set(zs):
        resolve_task(name)
        zs[name] = run(make_cell("zeroshot", name, backbone=backbone)).value
    figures = {}
    for method in args.methods:
        cfg = METHOD_CONFIGS[method]
        for seed in args.seeds:
            base, gains = {}, {"similar": [], "dissimilar": []}
            for kind, pairs in (("similar", similar), ("dissimilar", dissimilar)):
                for source, target in pairs:
                    resolve_task(source), resolve_task(target)
                    cell = dict(
                        method_config=cfg, recipe=rec, backbone=backbone, shots=args.target_shots, seed=seed
                    )
                    if target not in base:
                        base[target] = run(make_cell(method, target, **cell)).value
                    joint = run(make_cell(method, target, source=source, mode="joint", **cell)).value
                    gains[kind].append(joint - base[target])
            sim, dis = 100 * np.mean(gains["similar"]), 100 * np.mean(gains["dissimilar"])
            floor = min(base[t] - zs[t] for t in base)
            figures[f"{method} seed {seed}"] = {
                "similar": sim,
                "dissimilar": dis,
                "diff": sim - dis,
                "floor": 100 * floor,
            }
            print(
                f"{method} seed {seed}: similar {sim:+6.2f} dissimilar {dis:+6.2f} diff {sim - dis:+6.2f} "
                f"(target >= 2)  | per pair sim {np.round(100 * np.array(gains['similar']), 1)} "
                f"dis {np.round(100 * np.array(gains['dissimilar']), 1)} | worst baseline - zero-shot "
                f"{100 * floor:+.2f} | baselines - zero-shot "
                + " ".join(f"{t} {100 * (base[t] - zs[t]):+.1f}" for t in base)
            )
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sections", default="pretrain,zeroshot,probe,headroom,transfer")
    p.add_argument("--methods", default="coop,vpt,upt")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="time a pre-training into a new temporary cache")
    p.add_argument("--cache", default=None, help="cache dir (default $MVLPT_CACHE or ~/.cache/mvlpt)")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--target-shots", type=int, default=4)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--similar", help="transfer pairs SOURCE:TARGET,... (default: the suite's SIMILAR_PAIRS)")
    p.add_argument("--dissimilar", help="transfer pairs SOURCE:TARGET,... (default: DISSIMILAR_PAIRS)")
    p.add_argument("--against", metavar="REV", help="also measure git revision REV's kernel; print both")
    p.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE", help="e.g. warmup_epochs=0")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method's config, e.g. vpt.n_tokens=8 (repeatable)",
    )
    args = p.parse_args()
    for item in args.set:
        key, _, value = item.partition("=")
        method, _, field = key.partition(".")
        METHOD_CONFIGS.setdefault(method, {})[field] = _value(value)
    for kind in ("similar", "dissimilar"):
        text = getattr(args, kind)
        setattr(args, kind, tuple(tuple(p.split(":")) for p in text.split(",")) if text else None)
    args.methods = args.methods.split(",")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    sections = set(args.sections.split(","))

    before = _measure_revision(args.against) if args.against else None
    import torch

    torch.set_num_threads(args.threads)
    backbone = section_pretrain(args)
    figures = {}
    zs = section_zeroshot(backbone) if sections & {"zeroshot", "probe", "headroom", "transfer"} else {}
    if zs:
        figures["zero-shot mean"] = float(np.mean(list(zs.values())))
    if "probe" in sections:
        section_probe(backbone, zs, args)
    if "headroom" in sections:
        figures["headroom"] = section_headroom(backbone, zs, args)
    if "transfer" in sections:
        figures["transfer"] = section_transfer(backbone, zs, args)
    print(f"{_FIGURES}{json.dumps(figures)}", flush=True)
    if before is not None:
        _compare(args.against, before, figures)


_FIGURES = "figures: "


def _measure_revision(rev: str) -> dict:
    """Run this script's sections with the kernel of `rev`, in a temporary worktree; its figures."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    folder = tempfile.mkdtemp(prefix="mvlpt-rev-")
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", folder, rev], check=True)
    try:
        argv = [a for i, a in enumerate(sys.argv[1:]) if a != "--against" and sys.argv[i] != "--against"]
        env = {**os.environ, "PYTHONPATH": folder}
        print(f"# with the kernel of {rev}", flush=True)
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *argv],
            cwd=folder,
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
        print(out, flush=True)
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", folder], check=False)
    line = next(line for line in out.splitlines() if line.startswith(_FIGURES))
    print("# with the kernel of this tree", flush=True)
    return json.loads(line[len(_FIGURES) :])


def _compare(rev: str, before: dict, after: dict) -> None:
    print(f"\n## {rev} -> this tree")
    if "zero-shot mean" in after:
        print(f"zero-shot mean {before['zero-shot mean']:.3f} -> {after['zero-shot mean']:.3f}")
    for m, now in after.get("headroom", {}).items():
        old = before["headroom"][m]
        print(
            f"headroom {m}: wins {old['wins']}/20 -> {now['wins']}/20, "
            f"mean gain {old['gain']:+.2f} -> {now['gain']:+.2f}"
        )
    for key, now in after.get("transfer", {}).items():
        old = before["transfer"][key]
        print(
            f"transfer {key}: diff {old['diff']:+.2f} -> {now['diff']:+.2f} "
            f"(similar {old['similar']:+.2f} -> {now['similar']:+.2f}, "
            f"dissimilar {old['dissimilar']:+.2f} -> {now['dissimilar']:+.2f}), "
            f"worst baseline - zero-shot {old['floor']:+.2f} -> {now['floor']:+.2f}"
        )


if __name__ == "__main__":
    main()
