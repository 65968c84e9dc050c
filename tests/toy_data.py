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


def _png(rng, colour: int) -> bytes:
    import io

    from PIL import Image

    arr = rng.integers(0, 60, size=(24, 24, 3), dtype=np.uint8)
    arr[6:18, 6:18, colour % 3] = 240
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def write_manifest_datasets(root, n_train=5, n_test=3, seed=0):
    """Two vision-datasets datasets under `root` with their registry `root/datasets.json`, as the
    ELEVATER toolkit keeps them (images in zip archives): 'toy-colours', multi-class, in the IRIS
    format (an index file per split, a label map), and 'toy-tags', multi-label, in COCO written by
    the library from its own manifest classes."""
    import json
    import zipfile

    from vision_datasets.common import (
        CategoryManifest,
        CocoDictGeneratorFactory,
        DatasetManifest,
        DatasetTypes,
        ImageDataManifest,
    )
    from vision_datasets.image_classification import ImageClassificationLabelManifest

    rng = np.random.Generator(np.random.PCG64(seed))
    colours, tags = ["red", "green", "blue"], ["sun", "moon", "star"]
    multilabel = DatasetTypes.IMAGE_CLASSIFICATION_MULTILABEL
    for name in ("colours", "tags"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "colours" / "labels.txt").write_text("\n".join(colours) + "\n")
    registry = []
    for split, n in (("train", n_train), ("test", n_test)):
        index, images = [], []
        with (
            zipfile.ZipFile(root / "colours" / f"{split}.zip", "w") as cz,
            zipfile.ZipFile(root / "tags" / f"{split}.zip", "w") as tz,
        ):
            for i in range(n * 3):
                cz.writestr(f"{i}.png", _png(rng, i % 3))
                index.append(f"{split}.zip@{i}.png {i % 3}")
                tz.writestr(f"{i}.png", _png(rng, i % 3))
                labels = [ImageClassificationLabelManifest(c) for c in sorted({i % 3, (i + 1) % 3})]
                images.append(ImageDataManifest(i + 1, f"{split}.zip@{i}.png", 24, 24, labels))
        (root / "colours" / f"{split}.txt").write_text("\n".join(index) + "\n")
        manifest = DatasetManifest(images, [CategoryManifest(i, t) for i, t in enumerate(tags)], multilabel)
        coco = CocoDictGeneratorFactory.create(multilabel).run(manifest)
        (root / "tags" / f"{split}.json").write_text(json.dumps(coco))
    for name, kind, fmt, index_file, extra in (
        ("toy-colours", "classification_multiclass", "iris", "{}.txt", {"labelmap": "labels.txt"}),
        ("toy-tags", "classification_multilabel", "coco", "{}.json", {}),
    ):
        folder = name.removeprefix("toy-")
        entry = {"name": name, "version": 1, "type": kind, "format": fmt, "root_folder": folder, **extra}
        for split in ("train", "test"):
            entry[split] = {"index_path": index_file.format(split), "files_for_local_usage": [f"{split}.zip"]}
        registry.append(entry)
    (root / "datasets.json").write_text(json.dumps(registry, indent=1))
    return root
