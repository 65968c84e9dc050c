"""Dataset adapters: an image folder, torchvision datasets (no download), and in-memory tensors.

Every adapter answers the same three questions per split: how many images, what are their labels
(a (N,) int array, or (N, C) multi-hot for multi-label tasks), and what is image i (a PIL image or
a (3, h, w) float tensor in [0, 1]). Labels are read without decoding images.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.errors import MvlptError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "test")


class Source(Protocol):
    classnames: tuple[str, ...]
    multilabel: bool

    def labels(self, split: str) -> np.ndarray: ...

    def image(self, split: str, index: int): ...

    def fingerprint(self) -> str: ...


def _open_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I"):  # 16- or 32-bit grey: convert() would clip it to white
                return _scaled_grey(im).convert("RGB")
            return im.convert("RGB")
    except Image.DecompressionBombError as err:
        raise MvlptError(
            f"image too large: {path} (over Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels; shrink it or raise PIL.Image.MAX_IMAGE_PIXELS)"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MvlptError(f"corrupt image file: {path} ({type(err).__name__})") from err


def _scaled_grey(im):
    """An 8-bit grey image from a 16-bit one ('I;16*') or a 32-bit integer one ('I'), whose values
    are 16-bit samples as PNG decodes them: 0..65535 scaled to 0..255, not clipped at 255."""
    from PIL import Image

    arr = np.asarray(im.convert("I") if im.mode != "I" else im, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(arr * (255.0 / 65535.0)), 0, 255).astype(np.uint8), mode="L")


def _visible(path: Path) -> bool:
    """Not a hidden entry (`.ipynb_checkpoints`, macOS `._x.png` resource forks)."""
    return not path.name.startswith(".")


class ImageFolderSource:
    """`root/<split>/<class>/*.png|jpg`; multi-label via `root/<split>/labels.csv` (file,a;b;c)."""

    def __init__(self, root: str | os.PathLike, name: str):
        self.root = Path(root)
        self.name = name
        if not self.root.is_dir():
            raise MvlptError(f"task '{name}': dataset root not found: {self.root}")
        self._files: dict[str, list[str]] = {}
        self._labels: dict[str, np.ndarray] = {}
        train = self.root / "train"
        if not train.is_dir():
            raise MvlptError(
                f"task '{name}': no train/ folder in {self.root} (expected {self.root}/train/<class>/*)"
            )
        self.multilabel = (train / "labels.csv").is_file()
        if self.multilabel:
            self.classnames = self._csv_classes()
        else:
            classes = sorted(d.name for d in train.iterdir() if d.is_dir() and _visible(d))
            if not classes:
                raise MvlptError(f"task '{name}': {train} holds no class folders")
            self.classnames = tuple(classes)
            test = self.root / "test"
            extra = sorted(
                d.name for d in (test.iterdir() if test.is_dir() else ()) if d.is_dir() and _visible(d)
            )
            extra = [c for c in extra if c not in self.classnames]
            if extra:
                raise MvlptError(
                    f"task '{name}': class '{extra[0]}' is in {test} but not in {train}: "
                    f"a class needs training images"
                )
        if len(self.classnames) < 2:
            raise MvlptError(
                f"task '{name}': {train} has one class ({self.classnames[0]!r}); a task needs at least 2"
            )
        for split in SPLITS:
            self._scan(split)

    def _csv_rows(self, split: str) -> list[tuple[str, list[str]]]:
        path = self.root / split / "labels.csv"
        if not path.is_file():
            raise MvlptError(f"task '{self.name}': multi-label split '{split}' has no {path}")
        rows = []
        with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not a file name
            for row in csv.reader(f):
                if not row or row[0] == "file":
                    continue
                if len(row) < 2:
                    raise MvlptError(f"task '{self.name}': {path}: row '{','.join(row)}' has no labels")
                rows.append((row[0], [c for c in row[1].split(";") if c]))
        return rows

    def _csv_classes(self) -> tuple[str, ...]:
        names = sorted({c for _, cs in self._csv_rows("train") for c in cs})
        if not names:
            raise MvlptError(f"task '{self.name}': {self.root / 'train' / 'labels.csv'} names no classes")
        return tuple(names)

    def _scan(self, split: str) -> None:
        folder = self.root / split
        if not folder.is_dir():
            raise MvlptError(f"task '{self.name}': dataset split folder not found: {folder}")
        if self.multilabel:
            index = {c: i for i, c in enumerate(self.classnames)}
            rows = self._csv_rows(split)
            files, labels = [], np.zeros((len(rows), len(self.classnames)), dtype=np.float32)
            for r, (file, names) in enumerate(rows):
                unknown = [c for c in names if c not in index]
                if unknown:
                    raise MvlptError(
                        f"task '{self.name}': {split}/labels.csv names unknown class '{unknown[0]}'"
                    )
                if not (folder / file).is_file():
                    raise MvlptError(f"task '{self.name}': {split}/labels.csv names a missing file '{file}'")
                files.append(str(folder / file))
                labels[r, [index[c] for c in names]] = 1.0
            self._files[split], self._labels[split] = files, labels
            return
        files, labels = [], []
        for c, cls in enumerate(self.classnames):
            d = folder / cls
            found = (
                sorted(str(p) for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p))
                if d.is_dir()
                else []
            )
            if not found:
                raise MvlptError(f"task '{self.name}': class '{cls}' has no images in {d}")
            files += found
            labels += [c] * len(found)
        self._files[split], self._labels[split] = files, np.asarray(labels, dtype=np.int64)

    def labels(self, split: str) -> np.ndarray:
        return self._labels[split]

    def image(self, split: str, index: int):
        return _open_image(self._files[split][index])

    def fingerprint(self) -> str:
        if getattr(self, "_fp", None) is not None:
            return self._fp
        h = hashlib.sha256("|".join(self.classnames).encode())
        for split in SPLITS:
            if self.multilabel:  # the labels live in the CSV, not in the folder names
                h.update((self.root / split / "labels.csv").read_bytes())
            for f in self._files[split]:
                st = os.stat(f)
                h.update(f"{os.path.relpath(f, self.root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        self._fp = h.hexdigest()[:16]
        return self._fp


class TensorSource:
    """Images held in memory: {split: (N, 3, h, w) float in [0, 1] or uint8} and labels per split."""

    def __init__(self, images: dict, labels: dict, classnames, multilabel: bool = False):
        self.classnames = tuple(classnames)
        self.multilabel = multilabel
        self._images = images
        self._labels = {s: np.asarray(v) for s, v in labels.items()}
        self._fp: str | None = None

    def labels(self, split: str) -> np.ndarray:
        return self._labels[split]

    def image(self, split: str, index: int):
        return self._images[split][index]

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256("|".join(self.classnames).encode())
            for split in sorted(self._images):
                h.update(np.ascontiguousarray(self._images[split].numpy()).tobytes())
                h.update(np.ascontiguousarray(self._labels[split]).tobytes())
            self._fp = h.hexdigest()[:16]
        return self._fp


def _clean(name: str) -> str:
    return name.replace("_", " ").strip()


# torchvision datasets that ship ELEVATER tasks, read with download=False.
# task -> (class name, {split: constructor kwargs}, attribute holding labels, classnames override)
TORCHVISION = {
    "cifar-10": ("CIFAR10", {"train": {"train": True}, "test": {"train": False}}, "targets"),
    "cifar-100": ("CIFAR100", {"train": {"train": True}, "test": {"train": False}}, "targets"),
    "mnist": ("MNIST", {"train": {"train": True}, "test": {"train": False}}, "targets"),
    "dtd": ("DTD", {"train": {"split": "train"}, "test": {"split": "test"}}, "_labels"),
    "fgvc-aircraft": (
        "FGVCAircraft",
        {"train": {"split": "trainval"}, "test": {"split": "test"}},
        "_labels",
    ),
    "food-101": ("Food101", {"train": {"split": "train"}, "test": {"split": "test"}}, "_labels"),
    "oxford-iiit-pets": (
        "OxfordIIITPet",
        {"train": {"split": "trainval"}, "test": {"split": "test"}},
        "_labels",
    ),
    "stanford-cars": (
        "StanfordCars",
        {"train": {"split": "train"}, "test": {"split": "test"}},
        None,
    ),
    "country211": (
        "Country211",
        {"train": {"split": "train"}, "test": {"split": "test"}},
        "targets",
    ),
    "rendered-sst2": (
        "RenderedSST2",
        {"train": {"split": "train"}, "test": {"split": "test"}},
        None,
    ),
}


class TorchvisionSource:
    """A torchvision dataset already on disk under `root`; never downloads."""

    def __init__(self, task: str, root: str | os.PathLike):
        import torchvision.datasets as tvd

        cls_name, splits, self._label_attr = TORCHVISION[task]
        self.name, self.root, self.multilabel = task, Path(root), False
        if not self.root.is_dir():
            raise MvlptError(f"task '{task}': dataset root not found: {self.root}")
        self._ds = {}
        for split, kwargs in splits.items():
            try:
                self._ds[split] = getattr(tvd, cls_name)(str(self.root), download=False, **kwargs)
            except (RuntimeError, FileNotFoundError, OSError) as err:
                raise MvlptError(
                    f"task '{task}': torchvision {cls_name} not found under {self.root} ({first_line(err)})"
                ) from err
        classes = getattr(self._ds["train"], "classes", None)
        self.classnames = tuple(_clean(c.split(" - ")[-1]) for c in classes)

    def labels(self, split: str) -> np.ndarray:
        ds = self._ds[split]
        if self._label_attr is not None:
            return np.asarray(getattr(ds, self._label_attr), dtype=np.int64)
        return np.asarray([t for _, t in ds._samples], dtype=np.int64)

    def image(self, split: str, index: int):
        img, _ = self._ds[split][index]
        if hasattr(img, "convert"):
            return img.convert("RGB")
        return img

    def fingerprint(self) -> str:
        """The dataset's files under its root (names, sizes, modification times) and split sizes."""
        if getattr(self, "_fp", None) is None:
            n = {s: len(d) for s, d in self._ds.items()}
            h = hashlib.sha256(f"{self.name}|{n}".encode())
            for folder, dirs, files in os.walk(self.root):
                dirs.sort()
                for name in sorted(files):
                    st = os.stat(os.path.join(folder, name))
                    rel = os.path.relpath(os.path.join(folder, name), self.root)
                    h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            self._fp = h.hexdigest()[:16]
        return self._fp
