"""How long a launch will take: seconds per cell (the folder's own, or a calibration) over its slots."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from study.schedule import CELLS_PER_TRIAL

log = logging.getLogger(__name__)

# What a trial costs beyond its cell's own seconds on Ray (scheduling, the result row, the prompt
# file), what a launch costs before its first cell and after its last (Ray's start, the frozen and
# the learned embeddings) and per round (a Tune run): fitted to a two-task CoOp run of the default
# spec on 2 shared cores (26 cells in 51 s: 25 s before the first cell, 4 s after the last).
TRIAL_OVERHEAD_S = 0.25  # per Tune trial, which runs up to CELLS_PER_TRIAL cells
LAUNCH_S = 20.0
ROUND_S = 6.0
# A calibration cell stops after this many optimizer steps; its seconds per step then scale to the
# cell's full steps (a real CLIP's 200 epochs are never run to calibrate).
CALIBRATION_STEPS = 30
# Backbones made to run on CPU: a GPU spec with another one is not calibrated on a CPU machine
CPU_BACKBONES = ("builtin", "tiny")
# Two small built-in tasks (8 classes each) that calibrate a spec whose tasks are not built-in
CALIBRATION_TASKS = ("shapes", "colors")
# Cells a calibration does not run, in units of a cell it runs: a multitask cell takes a single
# cell's steps for each task of its set under the `per_task` budget, one single cell's under `equal`
# (multitask_scale), a multisource cell and an init-mode transfer cell tune the target as a
# single cell does, a groups cell only scores the group's prompt on the target (about a zero-shot
# cell, at least a third of a single one: prompted image towers run on the test split).
LIKE = {"multitask": "single", "multisource": "single", "transfer": "single"}
GROUPS_FRACTION = 1 / 3


@dataclass(frozen=True)
class Estimate:
    """Seconds per cell per (stage, method), where they came from, and the slots that share them."""

    seconds: dict  # (stage, method) -> seconds per cell
    source: str
    slots: int
    notes: tuple[str, ...] = ()

    def lines(self, to_run: Counter, rounds: int) -> list[str]:
        at_once = f"{self.slots} cell{'s' if self.slots > 1 else ''} at a time"
        out = [f"time estimate: {self.source}; {at_once}", *self.notes]
        out.append(f"  {'stage':<11} {'method':<9} {'to run':>7} {'s/cell':>7} {'wall':>9}")
        total = LAUNCH_S + ROUND_S * rounds
        for (stage, method), n in to_run.items():
            if n == 0:
                continue
            per = self.seconds.get((stage, method), 0.0) + TRIAL_OVERHEAD_S / CELLS_PER_TRIAL
            wall = n * per / self.slots
            total += wall
            out.append(f"  {stage:<11} {method:<9} {n:>7} {per:>7.2f} {_clock(wall):>9}")
        start = f"{_clock(LAUNCH_S + ROUND_S * rounds)} to start Ray and write embeddings"
        start += f", {rounds} round{'s' if rounds > 1 else ''}"
        out.append(f"total: about {_clock(total)} ({start})")
        return out


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def slots_of(resources: dict, address: str | None, num_cpus: int | None) -> tuple[int, list[str]]:
    """How many trials run at once here (as study.schedule grants them), and what to say about it."""
    from study.guard import local_gpus

    notes = []
    cpu, gpu = float(resources.get("cpu", 1.0)), float(resources.get("gpu", 0.0))
    if address:
        notes.append("on a cluster the slots are known once joined: the estimate is for one slot")
        return 1, notes
    cpus = num_cpus if num_cpus is not None else os.cpu_count() or 1
    slots = max(1, int(cpus // cpu))
    have = local_gpus() if gpu > 0 else 0
    if gpu > 0 and have == 0:
        notes.append(
            f"the spec asks for {gpu:g} GPU per trial and this machine has none: its cells run on CPU, "
            "and the estimate is for CPU"
        )
    elif gpu > 0:
        slots = min(slots, max(1, int(have // gpu)))
    return slots, notes


def from_folder(rows) -> dict:
    """Median seconds per cell per (stage, method) of a folder's finished cells (wall_s of ok rows)."""
    per: dict = {}
    for stage, method, wall in rows:
        per.setdefault((stage, method), []).append(wall)
    return {key: statistics.median(v) for key, v in per.items()}


def _timed(cell, context) -> tuple[float, object]:
    from pipeline.run import run

    start = time.perf_counter()
    result = run(cell, context=context)
    return time.perf_counter() - start, result


def _steps(cell, n_train: int) -> int:
    from pipeline.loop import epochs_for

    return epochs_for(cell.recipe, n_train) * max(1, math.ceil(n_train / cell.recipe.batch_size))


def _calibration_cell(cell, n_train: int):
    """(the cell, or the cell stopped after about CALIBRATION_STEPS steps; its steps; the full cell's)."""
    full = _steps(cell, n_train)
    if full <= CALIBRATION_STEPS:
        return cell, full, full
    per_epoch = max(1, math.ceil(n_train / cell.recipe.batch_size))
    epochs = max(1, CALIBRATION_STEPS // per_epoch)
    recipe = dataclasses.replace(cell.recipe, epochs=epochs, min_steps=0, warmup_epochs=min(1, epochs - 1))
    return dataclasses.replace(cell, recipe=recipe), epochs * per_epoch, full


@dataclass(frozen=True)
class Scale:
    """What the calibration's cells run on, and how their seconds scale to the spec's first task."""

    tasks: tuple[str, ...]
    n_classes: int | None  # the spec's first task's classes (training steps); None: the calibration's
    test_ratio: float  # its test images over the calibration task's
    note: str = ""


def _scale(spec) -> Scale:
    """A spec of built-in (or in-memory) tasks calibrates on its own first two; any other on two small
    built-in tasks, scaled to the first task's classes and test images where its data are at hand."""
    from pipeline.data import resolve_task
    from pipeline.data.suite import SUITE
    from pipeline.data.tasks import _IN_MEMORY, ELEVATER
    from pipeline.errors import MvlptError

    first = spec.tasks[0]
    if first in SUITE or first in _IN_MEMORY:
        return Scale(spec.tasks[:2], None, 1.0)
    n_classes, n_test = ELEVATER.get(first, (None, None))[1], None
    try:
        task = resolve_task(first)
        n_classes, n_test = task.num_classes, len(task.data.labels("test"))
    except MvlptError:
        pass
    small = len(resolve_task(CALIBRATION_TASKS[0]).data.labels("test"))
    ratio = n_test / small if n_test is not None else 1.0
    what = f"{n_classes} classes" if n_classes is not None else "the calibration task's classes"
    tests = f"{n_test} test images" if n_test is not None else "test images unknown without its data"
    note = (
        f"calibrated on built-in tasks ({', '.join(CALIBRATION_TASKS)}), scaled to {first}'s {what}, {tests}"
    )
    return Scale(CALIBRATION_TASKS, n_classes, ratio, note)


def calibrate(spec, cache_dir: str | None) -> tuple[dict, str]:
    """Seconds per cell per (stage, method) from one cell of each kind run here: a zero-shot cell (its
    test split's features computed first, as a study's feature cache holds them), then per method a
    single cell and a joint transfer cell, with the spec's backbone and recipe (a long one stopped
    after CALIBRATION_STEPS steps, its training time scaled to the full steps). -> (seconds, note)."""
    from pipeline.run import Context
    from study.grid import expand

    scale = _scale(spec)
    small = dataclasses.replace(
        spec,
        tasks=scale.tasks,
        stages=tuple(s for s in ("zeroshot", "single", "transfer") if s in spec.stages),
        modes=("joint",),
        noise=dataclasses.replace(spec.noise, seeds=(), pairs=0),
    )
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # as a trial runs (study.schedule)
    try:
        return _calibrated(spec, expand(small).cells, Context(cache_dir=cache_dir), scale), scale.note
    finally:
        torch.set_num_threads(threads)


def _calibrated(spec, cells, context, scale: Scale) -> dict:
    from pipeline.data import resolve_task
    from pipeline.data.sampler import val_shots

    seconds, evaluate = {}, 0.0  # a zero-shot cell's seconds: about what scoring a test split takes
    zs = next((c for c in cells if c.stage == "zeroshot"), None)
    if zs is not None:
        _timed(zs, context)  # the backbone and the test split's features, once
        evaluate = _timed(zs, context)[0]
        seconds[("zeroshot", "zeroshot")] = evaluate * scale.test_ratio
    target = scale.tasks[0]
    n_classes = resolve_task(target).num_classes
    for method, _ in spec.methods:
        for stage in ("single", "transfer"):
            found = [c for c in cells if (c.stage, c.method, c.target) == (stage, method, target)]
            found = [c for c in found if stage == "single" or c.source != c.target]
            if not found or (stage == "transfer" and "joint" not in spec.modes):
                continue
            per_class = found[0].shots - val_shots(found[0].shots)
            cell, steps, full = _calibration_cell(found[0], n_classes * per_class)
            full = _steps(found[0], (scale.n_classes or n_classes) * per_class)
            if stage == "transfer":  # a study holds the source's frozen features by then: so do we
                source = next(
                    c for c in cells if (c.stage, c.method, c.target) == ("single", method, cell.source)
                )
                _timed(_calibration_cell(source, n_classes * per_class)[0], context)
            took = _timed(cell, context)[0]
            train = max(took - evaluate, 0) * full / steps
            seconds[(stage, method)] = evaluate * scale.test_ratio + train
            log.info("calibration: %s %s %.2f s (%d of %d steps)", stage, method, took, steps, full)
    return seconds


def multitask_scale(spec) -> float:
    """A multitask cell's cost in single cells: 1 under the `equal` budget; under `per_task` the mean
    size of the sets the spec's policies and groupings choose (each task gets its single cell's
    steps), weighted by how many prompts each asks for."""
    n, sizes = len(spec.tasks), []
    if "multisource" in spec.stages:
        ms = spec.multisource
        for policy in ms.policies:
            if policy == "all":
                size, count = n - 1, n
            elif policy == "all_but_fold":
                size, count = n - n / ms.folds, ms.folds
            else:
                size, count = min(ms.k, n - 1), n
            sizes.append((size if ms.budget == "per_task" else 1.0, count))
    if "groups" in spec.stages:
        per_group = n / max(1, min(spec.groups.n_groups, n))
        size = per_group if spec.groups.budget == "per_task" else 1.0
        sizes.append((size, 2 * spec.groups.n_groups * len(spec.groups.by)))
    total = sum(c for _, c in sizes)
    return sum(s * c for s, c in sizes) / total if total else 1.0


def fill(seconds: dict, keys, multitask: float = 1.0) -> dict:
    """Seconds for every (stage, method) of `keys`, the cells calibration does not run from LIKE (a
    multitask cell `multitask` single cells)."""
    out = dict(seconds)
    for stage, method in keys:
        if (stage, method) in out:
            continue
        single = out.get(("single", method), 0.0)
        if stage == "groups":
            out[(stage, method)] = max(out.get(("zeroshot", "zeroshot"), 0.0), single * GROUPS_FRACTION)
        elif stage == "multitask":
            out[(stage, method)] = single * multitask
        else:
            out[(stage, method)] = out.get((LIKE.get(stage, "single"), method), single)
    return out


def _rounds(spec) -> int:
    """A launch's rounds: one, then one per kind of evidence its choices wait for (the single cells'
    prompts, the transfer cells' validation gains)."""
    used = set()
    if "multisource" in spec.stages:
        used |= {p.removeprefix("top_k:") for p in spec.multisource.policies}
    if "groups" in spec.stages:
        used |= set(spec.groups.by)
    return 1 + len(used & {"prompt", "gain"})


def _expected_multitask(spec, pending: Counter, counts: Counter) -> Counter:
    """The multitask cells the pending choices will add: a set per multisource cell (no more than
    there are k-sets of other tasks, less the sets already planned), a prompt per group."""
    out = Counter()
    n = len(spec.tasks)
    per_group = spec.groups.n_groups / max(1, n)
    sets = n * math.comb(n - 1, spec.multisource.k) if n > spec.multisource.k else 0
    for (stage, method), count in pending.items():
        if stage == "multisource":
            out[("multitask", method)] += max(0, min(count, sets - counts[("multitask", method)]))
        else:
            out[("multitask", method)] += math.ceil(count * per_group)
    return out


def _calibrates_here(spec, address) -> bool:
    """A spec that asks for GPUs calibrates where it has one; on a CPU machine only if its backbone is
    one made to run on CPU (the built-in one, the test model)."""
    from study.guard import local_gpus

    if spec.resources.gpu == 0 or address or spec.backbone in CPU_BACKBONES:
        return True
    return local_gpus() > 0


def estimate_lines(
    spec, store, counts: Counter, done: Counter, pending: Counter, address, num_cpus, cache_dir
) -> list[str]:
    """The dry run's time estimate: per stage and in total, for the slots this launch will use."""
    from pipeline.errors import MvlptError, first_line

    slots, notes = slots_of(dataclasses.asdict(spec.resources), address, num_cpus)
    to_run = Counter({k: n - done[k] for k, n in counts.items() if n > done[k]})
    expected = _expected_multitask(spec, pending, counts)
    to_run += expected
    if not to_run:  # nothing left: what the whole grid takes at these slots, from its own cells
        notes.insert(0, "nothing left to run; the figures are the whole grid's, run again from scratch")
        to_run = Counter({k: n for k, n in counts.items() if n})
    seconds, source = {}, []
    if store.cell_files():
        table = store.read(["stage", "method", "status", "wall_s"]).to_pandas()
        ok = table[table["status"] == "ok"]
        seconds = from_folder(zip(ok["stage"], ok["method"], ok["wall_s"], strict=True))
        if seconds:
            source.append(f"the folder's {len(ok)} finished cells")
    # a stage the folder has not run yet is scaled from its single cells (LIKE), else calibrated
    missing = [
        k for k in to_run if k not in seconds and (k[0] == "zeroshot" or ("single", k[1]) not in seconds)
    ]
    if missing and not _calibrates_here(spec, address):
        return [
            f"time estimate: none from this machine: the spec asks for {spec.resources.gpu:g} GPU per trial "
            f"and it has none, and {spec.backbone} cells timed on its CPU say nothing of their time on a "
            "GPU; run the dry run where the study will run"
        ]
    if missing:
        start = time.perf_counter()
        try:
            calibrated, note = calibrate(spec, cache_dir)
        except (MvlptError, OSError) as err:
            return [f"time estimate: none (a calibration cell could not run: {first_line(err)})"]
        notes += [note] if note else []
        seconds = {**calibrated, **seconds}
        source.append(
            f"a calibration on this machine ({len(calibrated)} cells, {time.perf_counter() - start:.0f} s)"
        )
    if expected:
        notes.append(f"{sum(expected.values())} multitask cells expected once their sets are chosen")
    estimate = Estimate(
        fill(seconds, to_run, multitask_scale(spec)),
        "seconds per cell from " + " and ".join(source),
        slots,
        tuple(notes),
    )
    return estimate.lines(to_run, _rounds(spec))
