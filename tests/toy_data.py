"""Small tasks the tests build: in-memory colour tasks and image folders written to disk."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.data import register_tensor_task


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
