"""Kernel speed and memory on the tiny backbone, CPU: seconds per epoch for each method, and the
matrix-multiply GFLOP/s each achieves (FLOPs counted by torch's profiler) beside a plain GEMM's.

CoOp is timed three ways: with the feature cache (the kernel's default), with pixels preloaded but
the image tower run every step (the kernel with --no-feature-cache), and decoding + preprocessing +
encoding every step (how a plain data-loader pipeline, like the reference code, runs). Each
measurement runs in its own process so its peak memory is its own.

    python bench/kernel.py [--epochs 20] [--classes 10] [--shots 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = ("coop-cached", "coop-tower-every-step", "coop-load-every-step", "vpt", "upt")


def make_folder(root: Path, classes: int, per_class: int) -> Path:
    """An image folder of 64 px PNGs (resized to the backbone's 32 px on load)."""
    import numpy as np
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(0))
    for split, n in (("train", per_class), ("test", 20)):
        for c in range(classes):
            d = root / split / f"class {c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
                arr[16:48, 16:48, c % 3] = 40 + 20 * c
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


def measure(case: str, folder: str, epochs: int, shots: int) -> dict:
    import torch

    from pipeline.backbones import load_backbone
    from pipeline.data import few_shot, resolve_task
    from pipeline.features import FeatureCache, load_pixels
    from pipeline.loop import TrainSet, Validation, train
    from pipeline.methods import build_method
    from pipeline.recipe import Recipe

    torch.set_num_threads(1)  # one core per measurement: oversubscribed threads distort small models
    backbone = load_backbone("tiny")
    task = resolve_task(folder)
    labels = task.data.labels("train")
    sample = few_shot(labels, task.classnames, shots, seed=0, task=task.name)
    y = torch.as_tensor(labels[sample.train])
    method = build_method(case.split("-")[0], backbone, task.classnames, seed=0)
    recipe = Recipe(epochs=epochs, lr=0.01, warmup_epochs=0)
    encode = None
    prep_s = time.perf_counter()
    if case == "coop-cached":
        cache = FeatureCache()
        x = cache.features(backbone, task, "train", sample.train)
        val_x = cache.features(backbone, task, "train", sample.val)
    elif case == "coop-load-every-step":
        # inputs are image indices; every step decodes, preprocesses and encodes its batch
        def encode(idx):
            images = [backbone.preprocess(task.data.image("train", int(i))) for i in idx]
            return backbone.encode_image(torch.stack(images))

        x = torch.as_tensor(sample.train)
        val_x = torch.as_tensor(sample.val)
    else:
        x = load_pixels(backbone, task, "train", sample.train)
        val_x = load_pixels(backbone, task, "train", sample.val)
        if case == "coop-tower-every-step":
            encode = backbone.encode_image
    prep_s = time.perf_counter() - prep_s
    val_y = labels[sample.val]
    start = time.perf_counter()
    data = TrainSet.single(x, y, task.num_classes)
    train(method, data, Validation(val_x, val_y, data.slots[0], task.metric), recipe, seed=0, encode=encode)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the same run again under the profiler, which counts the matrix multiplies' FLOPs (its own
    # overhead would distort the time, so the rate divides by the unprofiled run's seconds)
    from torch.profiler import ProfilerActivity, profile

    method = build_method(case.split("-")[0], backbone, task.classnames, seed=0)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        train(
            method, data, Validation(val_x, val_y, data.slots[0], task.metric), recipe, seed=0, encode=encode
        )
    flops = sum(e.flops for e in prof.key_averages() if e.flops)
    return {
        "case": case,
        "s_per_epoch": seconds / epochs,
        "prep_s": prep_s,
        "peak_rss_mb": peak,
        "n_train": len(x),
        "gflops": flops / seconds / 1e9,
    }


def gemm_gflops(n: int = 1024, repeats: int = 20) -> float:
    """A plain (n x n) @ (n x n) float32 matrix multiply on one thread: the machine's reference rate."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.folder, args.epochs, args.shots)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "bench-task", args.classes, args.shots)
        rows = []
        for case in CASES:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                case,
                "--folder",
                str(folder),
                "--epochs",
                str(args.epochs),
                "--shots",
                str(args.shots),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"tiny backbone, CPU, {args.classes} classes x {args.shots} shots, batch 32, {args.epochs} epochs")
    print(f"{'case':<24} {'s/epoch':>9} {'setup s':>8} {'peak RSS MB':>12} {'matmul GFLOP/s':>15}")
    for r in rows:
        print(
            f"{r['case']:<24} {r['s_per_epoch']:>9.4f} {r['prep_s']:>8.3f} {r['peak_rss_mb']:>12.0f} "
            f"{r['gflops']:>15.1f}"
        )
    print(f"plain 1024 x 1024 float32 GEMM, same thread count (1): {gemm_gflops():.1f} GFLOP/s")
    by = {r["case"]: r["s_per_epoch"] for r in rows}
    for slow, label in (
        ("coop-tower-every-step", "tower every step"),
        ("coop-load-every-step", "load+encode every step"),
    ):
        print(f"CoOp cached vs {label:<24} {by[slow] / by['coop-cached']:.1f}x faster")


if __name__ == "__main__":
    main()
