"""Run a study's missing cells as Ray Tune trials in plan order; the only module that imports ray.

Each trial runs a few cells (each with the kernel's run(cell)) and writes each one's row and prompt
to the store as soon as it is done, so the store, not Ray's experiment folder, is the record of what
is done: a new launch builds its trials from the cells missing in the store instead of restoring
Tune's state. A trial of several cells pays Tune's per-trial cost once for all of them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import tempfile
import time
import traceback
from collections import Counter

from pipeline.cell import Cell
from pipeline.errors import MvlptError, first_line
from study.guard import check_weights
from study.plan import Plan
from study.store import Store

log = logging.getLogger(__name__)

# Tune's defaults rewrite its experiment state every few seconds (~10 KB a trial) and attach
# file loggers per trial; at a thousand one-second trials that costs more than the trials.
_TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "600",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_MAX_PENDING_TRIALS_PG": "16",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # relative task paths in a spec mean the launch folder
}


@dataclasses.dataclass(frozen=True)
class Job:
    """What every trial of a launch needs, shipped once through the object store."""

    study: str
    location: str
    cells: tuple[Cell, ...]
    ids: tuple[str, ...]
    deps: tuple[tuple[str, ...], ...]  # per cell: the ids whose prompts it starts from
    threads: int
    device: str
    cache_dir: str | None


_CONTEXT = None  # one per worker process: reused actors keep the backbone and feature cache


def run_one(job: Job, i: int, node: str) -> str:
    """Run cell i of the job and store its row under the id the plan gave it; a cell that raises,
    or that this worker would identify otherwise, is stored as failed."""
    global _CONTEXT
    import torch

    from pipeline.cell import cell_id
    from pipeline.run import CellResult, Context, run

    torch.set_num_threads(job.threads)
    if _CONTEXT is None or _CONTEXT.device != job.device or _CONTEXT.cache_dir != job.cache_dir:
        _CONTEXT = Context(device=job.device, cache_dir=job.cache_dir)
    store = Store(job.location)
    cell, cid = job.cells[i], job.ids[i]
    try:
        here = cell_id(cell)
        if here != cid:
            raise MvlptError(
                f"identity mismatch: this worker identifies the cell as {here}, the plan as {cid} "
                f"(its data, backbone or code differ from the launcher's)"
            )
        # run() averages a list of source states (the source's seeds) itself
        source_state = [store.load_prompt(d) for d in job.deps[i]] or None
        result = run(cell, source_state=source_state, context=_CONTEXT)
        row = {**result.row(), "study": job.study, "node": node}
        check_weights(store, cell.backbone)  # a 'weights mismatch' is stored as a failed row instead
        store.write_cell(row, result.prompt_state)
        return "ok"
    except Exception as err:  # recorded, the study goes on, the next launch retries it
        log.debug("cell %s failed:\n%s", cid, traceback.format_exc())
        failed = CellResult.failed(cell, cid, f"{type(err).__name__}: {first_line(err)}")
        store.write_cell({**failed.row(), "study": job.study, "node": node})
        return "failed"


_JOBS: dict[str, Job] = {}  # per worker: the launch's job is fetched and unpickled once


# Cells per trial: Tune spends a fraction of a second on every trial, as much as a small cell takes.
# Near the end of a launch a trial takes fewer, so that no slot is left with a long tail alone.
CELLS_PER_TRIAL = 4


def _trial(config: dict, job_ref: list) -> dict:
    import ray

    key = job_ref[0].hex()
    if key not in _JOBS:
        _JOBS.clear()
        _JOBS[key] = ray.get(job_ref[0])
    node = ray.get_runtime_context().get_node_id()[:12]
    return {"statuses": [run_one(_JOBS[key], i, node) for i in config["cells"]]}


class _Progress:
    """done / total, cells per minute and time left, on stderr."""

    def __init__(self, total: int, done: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="cell", dynamic_ncols=True, smoothing=0.05)
        self.start, self.first, self.failed = time.monotonic(), done, 0

    def step(self, failed: bool) -> None:
        self.failed += failed
        self.bar.update(1)
        minutes = (time.monotonic() - self.start) / 60
        rate = (self.bar.n - self.first) / minutes if minutes > 0 else 0.0
        self.bar.set_postfix_str(f"{rate:.1f} cells/min, {self.failed} failed")

    def close(self) -> None:
        self.bar.close()


def _callback(progress: _Progress):
    from ray.tune import Callback

    class ProgressCallback(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            for status in result.get("statuses", ()):
                progress.step(status != "ok")

    return ProgressCallback()


def _in_plan_order(job: Job, done: frozenset[str], slots: int):
    """A Tune searcher that hands out the job's cells in plan order, a few to a trial, each as soon
    as the cells it starts from have finished: one Tune run for the whole plan, so its trial actors
    (and the backbone and features they hold) live from the first cell to the last, and no slot waits
    for a whole stage to end before the next stage's cells may start."""
    from ray.tune.search import Searcher

    class InPlanOrder(Searcher):
        def __init__(self):
            super().__init__()
            self.waiting = list(range(len(job.cells)))  # in plan order
            self.finished = set(done)  # ids: done before this launch, or finished in it
            self.running: dict[str, int] = {}

        def suggest(self, trial_id: str):
            if not self.waiting:
                return Searcher.FINISHED
            size = max(1, min(CELLS_PER_TRIAL, len(self.waiting) // (2 * slots)))
            # the first `size` waiting cells whose sources are done (the scan stops there)
            ready = set(
                itertools.islice(
                    (k for k, i in enumerate(self.waiting) if self.finished.issuperset(job.deps[i])), size
                )
            )
            if not ready:
                return None  # every waiting cell needs one that is still running
            cells = [self.waiting[k] for k in sorted(ready)]
            self.waiting = [i for k, i in enumerate(self.waiting) if k not in ready]
            self.running[trial_id] = cells
            return {"cells": cells}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            # failed or not: a cell whose source failed runs, and fails with the missing prompt
            self.finished.update(job.ids[i] for i in self.running.pop(trial_id))

    return InPlanOrder()


def _check_reachable(address: str) -> None:
    """Fail fast: ray.init retries an unreachable address for minutes before it gives up."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as err:
        raise MvlptError(f"cannot reach Ray cluster at '{address}': {err}") from err


def start_ray(address: str | None, num_cpus: int | None):
    """Join the cluster at `address`, or start a local one that listens on 127.0.0.1 only (its
    servers take no authentication); one clear error if unreachable. Only `address` joins a cluster:
    RAY_ADDRESS in the environment is named and ignored."""
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    if not address:
        # Ray binds its servers to the node's address; with clusters off it takes the loopback one
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ignored = os.environ.pop("RAY_ADDRESS", None)
        if ignored:
            log.warning(
                "RAY_ADDRESS=%s ignored: running on a local Ray instance (--address joins a cluster)", ignored
            )
    import ray
    from ray import tune  # noqa: F401 - imported here so that its cost counts as start-up

    if address and "://" not in address and address != "auto":
        _check_reachable(address)  # also when this process already runs Ray: never ignore an address
    if ray.is_initialized():
        return ray
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if address:
            log.warning("joining the Ray cluster at %s", address)
            ray.init(address=address, **kwargs)
        else:
            import ray._private.ray_constants as constants  # read when ray was imported

            constants.ENABLE_RAY_CLUSTER = False
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise MvlptError(f"cannot reach Ray cluster at '{address}': {first_line(err)}") from err
    return ray


def run_plan(
    plan: Plan,
    study: str,
    location: str,
    resources: dict,
    *,
    skip: frozenset[str] = frozenset(),
    address: str | None = None,
    num_cpus: int | None = None,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> Counter:
    """Run every cell of the plan that is not done (nor in `skip`), each once the cells it starts
    from are done. -> status counts."""
    ray = start_ray(address, num_cpus)
    from ray import tune

    cpu, gpu, slots = _trial_resources(ray.cluster_resources(), resources, address)
    cells = tuple(plan.todo(skip))
    progress = _Progress(len(plan.cells), len(plan.cells) - len(cells)) if show_progress else None
    trainable = tune.with_resources(_trial, {"cpu": cpu, "gpu": gpu})
    if cells:
        job = Job(
            study=study,
            location=location,
            cells=cells,
            ids=tuple(plan.ids[c] for c in cells),
            deps=tuple(plan.deps(c) for c in cells),
            threads=max(1, int(cpu)),
            device="cuda" if gpu > 0 else "cpu",
            cache_dir=cache_dir,
        )
        with tempfile.TemporaryDirectory(prefix="mvlpt-ray-") as ray_dir:
            tuner = tune.Tuner(
                # the job (every cell to run) goes to the object store once; a trial gets a
                # reference to it, so a worker unpickles it once rather than once per trial
                tune.with_parameters(trainable, job_ref=[ray.put(job)]),
                tune_config=tune.TuneConfig(
                    search_alg=_in_plan_order(job, plan.done | skip, slots),
                    num_samples=len(cells),
                    reuse_actors=True,
                    max_concurrent_trials=slots,
                ),
                run_config=tune.RunConfig(
                    name=f"{study}-{int(time.time())}",
                    storage_path=ray_dir,
                    verbose=0,
                    callbacks=[_callback(progress)] if progress else [],
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
            tuner.fit()
    if progress:
        progress.close()
    return plan.counts(Store(location).status_of())


def _trial_resources(cluster: dict, resources: dict, address: str | None) -> tuple[float, float, int]:
    """(cpu, gpu) per trial and how many trials run at once; no GPU in the cluster means CPU trials."""
    cpu, gpu = float(resources.get("cpu", 1.0)), float(resources.get("gpu", 0.0))
    if gpu > 0 and cluster.get("GPU", 0) == 0:
        # expected on a laptop (the default spec asks for a GPU where there is one); worth a
        # warning only on a cluster the user pointed us to
        (log.warning if address else log.info)(
            "no GPU in the Ray cluster: running trials on CPU instead of %.2f GPU each", gpu
        )
        gpu = 0.0
    slots = max(1, int(cluster.get("CPU", 1) // cpu))
    if gpu > 0:
        slots = min(slots, max(1, int(cluster.get("GPU", 0) // gpu)))
    return cpu, gpu, slots
