"""Study throughput, the same cells four ways: in-process loop, Ray Tune, a Pool, a process per cell.

    python bench/study.py [--spec default] [--methods coop] [--cells 200] [--workers 2]

- in-process: one Python process, a plain loop over run(cell) (one core);
- ray: `study.schedule.run_plan` on a local Ray instance with --workers CPUs (start-up timed apart);
- pool: multiprocessing.Pool(--workers) mapping run(cell), each worker keeping its caches;
- process per cell: `mvlpt cell` in a fresh Python process per cell, --workers at a time (how the
  paper's shell loops ran).
Every way writes its rows to a fresh store; the figures are wall seconds for the same cells.
The backbone and its pre-training are built before timing (a cached checkpoint is reused).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pick_cells(spec_name: str, methods: list[str], n: int):
    """n single and joint-transfer cells of the spec's methods (no init dependencies), spread evenly
    over the grid so that every method and many task pairs are in the sample."""
    from study.grid import expand
    from study.launch import apply_overrides, resolve_spec_path
    from study.spec import load_spec

    spec = apply_overrides(load_spec(resolve_spec_path(spec_name)), methods=methods, mode=["joint"])
    cells = [c for c in expand(spec).cells if c.stage in ("single", "transfer")]
    step = max(1, len(cells) // n)
    return spec, cells[::step][:n]


_POOL_CONTEXT = None


def _pool_init() -> None:
    global _POOL_CONTEXT
    import torch

    from pipeline.run import Context

    torch.set_num_threads(1)
    _POOL_CONTEXT = Context(device="cpu")


def _pool_run(args) -> str:
    cell, location = args
    from pipeline.run import run
    from study.store import Store

    result = run(cell, context=_POOL_CONTEXT)
    Store(location).write_cell(result.row(), result.prompt_state)
    return result.cell_id


def way_in_process(cells, location: str) -> float:
    import torch

    from pipeline.run import Context, run
    from study.store import Store

    torch.set_num_threads(1)
    store, context = Store(location), Context(device="cpu")
    store.create()
    start = time.perf_counter()
    for cell in cells:
        result = run(cell, context=context)
        store.write_cell(result.row(), result.prompt_state)
    return time.perf_counter() - start


def way_pool(cells, location: str, workers: int) -> float:
    from study.store import Store

    Store(location).create()
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_pool_init) as pool:
        pool.map(_pool_run, [(c, location) for c in cells], chunksize=1)
    return time.perf_counter() - start


def way_ray(cells, location: str, workers: int, study: str) -> tuple[float, float]:
    start = time.perf_counter()
    from study.grid import Grid
    from study.plan import build_plan
    from study.schedule import run_plan, start_ray
    from study.store import Store

    ray = start_ray(None, workers)
    startup = time.perf_counter() - start
    # as `mvlpt run` does, the cell ids come from planning the grid (what is done, what to run),
    # which the other ways skip: they run the list without looking at a store
    plan = build_plan(Grid(tuple(cells)), set())
    Store(location).create()
    start = time.perf_counter()
    run_plan(plan, study, location, {"cpu": 1}, show_progress=False)
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return elapsed, startup


def way_process_per_cell(cells, workers: int) -> float:
    def argv(cell) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "study.cli",
            "cell",
            "--method",
            cell.method,
            "--target",
            cell.target,
            "--backbone",
            cell.backbone,
            "--shots",
            str(cell.shots),
            "--seed",
            str(cell.seed),
        ]
        for key, value in cell.method_config:
            cmd += ["--config", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
        r = cell.recipe
        cmd += ["--epochs", str(r.epochs), "--lr", str(r.lr), "--batch-size", str(r.batch_size)]
        if cell.source:
            cmd += ["--source", cell.source, "--mode", cell.mode]
        return cmd

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    running: list[subprocess.Popen] = []
    for cell in cells:
        while len(running) >= workers:
            running = [p for p in running if p.poll() is None]
            time.sleep(0.01)
        running.append(subprocess.Popen(argv(cell), env=env, stdout=subprocess.DEVNULL))
    for p in running:
        p.wait()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="default")
    parser.add_argument("--methods", default="coop")
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--skip-per-cell", action="store_true", help="leave out the slow process-per-cell way"
    )
    args = parser.parse_args()
    spec, cells = pick_cells(args.spec, args.methods.split(","), args.cells)
    from pipeline.backbones import load_backbone

    load_backbone(spec.backbone)  # pre-train / load once, outside every timing
    with tempfile.TemporaryDirectory() as tmp:
        in_process = way_in_process(cells, f"{tmp}/in-process")
        pool = way_pool(cells, f"{tmp}/pool", args.workers)
        ray_s, ray_startup = way_ray(cells, f"{tmp}/ray", args.workers, spec.name)
        per_cell = float("nan") if args.skip_per_cell else way_process_per_cell(cells, args.workers)
    n = len(cells)
    print(f"{n} cells of spec '{spec.name}' ({args.methods}), {args.workers} workers, {os.cpu_count()} cores")
    print(f"{'way':<28} {'wall s':>8} {'cells/min':>10}")
    for name, s in (
        ("in-process loop (1 core)", in_process),
        (f"multiprocessing.Pool({args.workers})", pool),
        ("Ray Tune", ray_s),
        (f"process per cell (x{args.workers})", per_cell),
    ):
        print(f"{name:<28} {s:>8.1f} {60 * n / s:>10.1f}")
    print(f"Ray start-up (import + local cluster): {ray_startup:.1f} s")
    print(f"Ray vs Pool: {ray_s / pool:.2f}x the Pool's time (target <= 1.10)")
    print(f"Ray vs process per cell: {per_cell / ray_s:.1f}x faster (target >= 3)")


if __name__ == "__main__":
    main()
