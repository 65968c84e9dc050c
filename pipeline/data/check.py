"""What a task's data hold, and every problem with them, found without stopping at the first one."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.sources import IMAGE_SUFFIXES, SPLITS, _open_image, _visible
from pipeline.errors import MvlptError


@dataclass(frozen=True)
class TaskData:
    """One task's data as found: where, its classes, images per class per split, and its problems."""

    task: str
    where: str
    classes: tuple[str, ...]
    per_class: dict  # split -> (C,) images per class; a missing split is absent
    problems: tuple[str, ...]
    n_images: dict | None = None  # split -> images, where an image may show several classes

    def images(self, split: str) -> int | None:
        if self.n_images is not None and split in self.n_images:
            return self.n_images[split]
        return int(self.per_class[split].sum()) if split in self.per_class else None


def _counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if labels.ndim == 2:  # multi-hot: the images that show each class
        return (labels > 0).sum(axis=0).astype(np.int64)
    return np.bincount(labels.astype(np.int64), minlength=n_classes)


def from_task(name: str, task, where: str) -> TaskData:
    """A task that loaded: its label counts, and the classes a split has no image of."""
    per_class = {split: _counts(task.data.labels(split), task.num_classes) for split in SPLITS}
    problems = [
        f"class '{c}' has no images in {split}"
        for split in SPLITS
        for c, n in zip(task.classnames, per_class[split], strict=True)
        if n == 0
    ]
    n_images = {split: len(task.data.labels(split)) for split in SPLITS}
    return TaskData(name, where, tuple(task.classnames), per_class, tuple(problems), n_images)


def _class_images(folder: Path, cls: str, split: str, problems: list[str]) -> int:
    """How many images a class folder holds; its problems (absent, unreadable, empty) appended."""
    d = folder / cls
    if not d.is_dir():
        problems.append(f"class '{cls}' has no folder in {split} ({d})")
        return 0
    try:
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p))
    except OSError as err:
        problems.append(f"class '{cls}' cannot be read in {split} ({d}: {err.strerror or err})")
        return 0
    if not files:
        problems.append(f"class '{cls}' is empty in {split} (no images in {d})")
        return 0
    try:  # one image per class: a folder of unreadable files is found without decoding them all
        _open_image(str(files[0]))
    except MvlptError as err:
        problems.append(f"class '{cls}' in {split}: {err}")
    return len(files)


def scan_folder(name: str, root: Path) -> TaskData:
    """An image folder `root/{train,test}/<class>/*`, every problem named."""
    where = f"folder {root}"
    if not root.is_dir():
        return TaskData(name, where, (), {}, (f"dataset folder not found: {root}",))
    if (root / "train" / "labels.csv").is_file():  # multi-label: the source reads (and checks) its CSVs
        from pipeline.data.sources import ImageFolderSource
        from pipeline.data.tasks import Task

        try:
            source = ImageFolderSource(root, name)
        except MvlptError as err:
            return TaskData(name, where, (), {}, (str(err),))
        return from_task(name, Task(name, "map11", source), where)
    problems: list[str] = []
    present = [s for s in SPLITS if (root / s).is_dir()]
    problems += [f"missing split '{s}' (no folder {root / s})" for s in SPLITS if s not in present]
    listed = {s: sorted(d.name for d in (root / s).iterdir() if d.is_dir() and _visible(d)) for s in present}
    classes = tuple(listed.get("train") or listed.get("test") or ())
    if not classes:
        problems.append(f"no class folders in {root / (present[0] if present else 'train')}")
    for split in present:
        extra = [c for c in listed[split] if c not in classes]
        problems += [f"class '{c}' is in {split} but not in train" for c in extra]
    per_class = {
        split: np.asarray([_class_images(root / split, c, split, problems) for c in classes], dtype=np.int64)
        for split in present
    }
    if len(classes) == 1:
        problems.append(f"one class ({classes[0]!r}); a task needs at least 2")
    return TaskData(name, where, classes, per_class, tuple(problems))


def inspect_task(name: str) -> TaskData:
    """Where a task's data are and what they hold; a task that cannot load is one problem."""
    from pipeline.data.suite import SUITE
    from pipeline.data.tasks import _IN_MEMORY, ELEVATER, data_root, resolve_task

    if name in _IN_MEMORY or name in SUITE:
        where = "built-in (generated)" if name in SUITE else "in-memory"
        return from_task(name, resolve_task(name), where)
    folder = data_root() / name if name in ELEVATER else Path(name).expanduser()
    is_folder = "#" not in name and (name not in ELEVATER or (folder / "train").is_dir())
    if is_folder and (name in ELEVATER or os.path.sep in name or folder.is_dir()):
        return scan_folder(name, folder.resolve())
    try:
        task = resolve_task(name)
    except MvlptError as err:
        return TaskData(name, "missing", (), {}, (str(err).removeprefix(f"task '{name}': "),))
    kind = type(task.data).__name__.removesuffix("Source").lower()
    found = from_task(name, task, f"{kind} {getattr(task.data, 'root', '')}".strip())
    return dataclasses.replace(found, problems=found.problems + _unreadable(task))


def _unreadable(task) -> tuple[str, ...]:
    """A split whose first image cannot be read (an archive missing or torn under its index)."""
    problems = []
    for split in SPLITS:
        if len(task.data.labels(split)):
            try:
                task.data.image(split, 0)
            except MvlptError as err:
                problems.append(f"the first {split} image cannot be read: {err}")
    return tuple(problems)
