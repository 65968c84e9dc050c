"""Shared fixtures: small in-memory tasks, image folders written to disk, the tiny backbone."""

from __future__ import annotations

import os
import tempfile

# Tests never read or write the user's cache, and pre-train the built-in backbone for a few steps
# only (the step count is part of its checkpoint key). Set before anything imports the kernel.
os.environ["MVLPT_CACHE"] = tempfile.mkdtemp(prefix="mvlpt-test-cache-")
os.environ["MVLPT_PRETRAIN_STEPS"] = "20"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pipeline.data import register_tensor_task  # noqa: E402


def colour_task(name: str, classnames, n_train: int = 8, n_test: int = 6, seed: int = 0, multilabel=False):
    """A task whose classes differ by a colour patch: learnable by prompts on the tiny model."""
    rng = np.random.Generator(np.random.PCG64(seed))
    n_cls = len(classnames)
    images, labels = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 60, size=(n * n_cls, 3, 32, 32), dtype=np.uint8)
        y = np.repeat(np.arange(n_cls), n)
        for i, c in enumerate(y):
            x[i, c % 3, 8:24, 8:24] = 120 + 120 * c // max(n_cls - 1, 1)
        images[split] = torch.from_numpy(x)
        if multilabel:
            multi = np.zeros((len(y), n_cls), dtype=np.float32)
            multi[np.arange(len(y)), y] = 1
            multi[np.arange(len(y)), (y + 1) % n_cls] = 1
            labels[split] = multi
        else:
            labels[split] = y
    metric = "map11" if multilabel else "accuracy"
    return register_tensor_task(name, images, labels, classnames, metric=metric, multilabel=multilabel)


@pytest.fixture(scope="session")
def toy_tasks():
    """Two tasks with different label spaces: 5 classes and 3 classes."""
    five = colour_task("toy-five", ["red square", "green disc", "blue bar", "grey ring", "pink star"], seed=1)
    three = colour_task("toy-three", ["apple", "boat", "cloud"], seed=2)
    colour_task("toy-multi", ["sun", "moon", "star"], multilabel=True, seed=4)
    return five, three


@pytest.fixture(scope="session")
def tiny():
    from pipeline.backbones import load_backbone

    return load_backbone("tiny")


def write_folder(root, classes=("cat", "dog", "owl"), n_train=4, n_test=3, seed=0):
    """An image folder `root/{train,test}/<class>/*.png` of small random PNGs."""
    from PIL import Image

    rng = np.random.Generator(np.random.PCG64(seed))
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
                arr[:, :, c % 3] = 250
                Image.fromarray(arr).save(d / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_folder(tmp_path / "pets")
