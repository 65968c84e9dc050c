"""The task registry: a name (or an image-folder path) -> a Task with its classes, metric and data."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.sources import SPLITS, TORCHVISION, ImageFolderSource, Source, TensorSource
from pipeline.data.suite import SUITE, task_images
from pipeline.errors import MvlptError

log = logging.getLogger(__name__)

METRICS = ("accuracy", "mean_per_class", "map11", "roc_auc")


@dataclass(frozen=True)
class Task:
    name: str
    metric: str
    data: Source = field(compare=False, repr=False)  # the adapter that reads its labels and images
    domain: str = ""
    identity_key: str = ""  # what names this task's data in cell identities; defaults to the name
    templates: tuple[str, ...] = ()  # zero-shot templates ('{}' takes a class name); () for the method's own

    def __post_init__(self):
        if self.metric not in METRICS:
            raise MvlptError(
                f"task '{self.name}': unknown metric '{self.metric}' (known: {', '.join(METRICS)})"
            )
        if self.metric == "roc_auc" and len(self.classnames) != 2:
            raise MvlptError(f"task '{self.name}': roc_auc needs 2 classes, it has {len(self.classnames)}")
        if self.metric == "map11" and not self.multilabel:
            raise MvlptError(f"task '{self.name}': map11 is a multi-label metric; the task is single-label")

    @property
    def classnames(self) -> tuple[str, ...]:
        return self.data.classnames

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def multilabel(self) -> bool:
        return self.data.multilabel

    @property
    def identity(self) -> str:
        return self.identity_key or self.name


# The ELEVATER roster (the paper's 20 tasks): name -> (metric, number of classes). Data come from a folder
# under the data root, or from torchvision (no download) where torchvision ships the dataset.
ELEVATER = {
    "caltech-101": ("mean_per_class", 102),
    "cifar-10": ("accuracy", 10),
    "cifar-100": ("accuracy", 100),
    "country211": ("accuracy", 211),
    "dtd": ("accuracy", 47),
    "eurosat": ("accuracy", 10),
    "fer-2013": ("accuracy", 7),
    "fgvc-aircraft": ("mean_per_class", 100),
    "food-101": ("accuracy", 101),
    "gtsrb": ("accuracy", 43),
    "hateful-memes": ("roc_auc", 2),
    "kitti-distance": ("accuracy", 4),
    "mnist": ("accuracy", 10),
    "oxford-flower-102": ("mean_per_class", 102),
    "oxford-iiit-pets": ("mean_per_class", 37),
    "patch-camelyon": ("accuracy", 2),
    "rendered-sst2": ("accuracy", 2),
    "resisc45": ("accuracy", 45),
    "stanford-cars": ("accuracy", 196),
    "voc-2007": ("map11", 20),
}

# Tasks defined in memory by the process (tests, generated suites): name -> Task.
_IN_MEMORY: dict[str, Task] = {}


def data_root() -> Path:
    """Where registry tasks look for their data: $MVLPT_DATA, else ~/data/elevater."""
    return Path(os.environ.get("MVLPT_DATA", Path.home() / "data" / "elevater"))


def register_tensor_task(
    name: str,
    images: dict,
    labels: dict,
    classnames,
    metric: str = "accuracy",
    multilabel: bool = False,
    domain: str = "",
) -> Task:
    """Define a task from in-memory tensors ({split: (N, 3, h, w) in [0, 1]}) under `name`."""
    data = TensorSource(images, labels, classnames, multilabel)
    task = Task(name, metric, data, domain, identity_key=f"{name}@{data.fingerprint()}")
    _IN_MEMORY[name] = task
    return task


def suite_tasks(suite: str) -> list[str]:
    """The task names of a built-in suite ("builtin": the 20 generated tasks)."""
    if suite != "builtin":
        raise MvlptError(f"unknown task suite '{suite}' (known: builtin)")
    return list(SUITE)


def known_tasks() -> list[str]:
    return sorted(set(ELEVATER) | set(_IN_MEMORY) | set(suite_tasks("builtin")))


def _builtin_task(name: str) -> Task:
    """Generate the built-in task `name` and keep it as an in-memory task (built once per process)."""
    import torch

    spec = SUITE[name]
    splits = {split: task_images(name, split) for split in SPLITS}
    task = register_tensor_task(
        name,
        images={split: torch.from_numpy(x) for split, (x, _) in splits.items()},
        labels={split: y for split, (_, y) in splits.items()},
        classnames=list(spec.classnames),
        metric=spec.metric,
        multilabel=spec.multilabel,
        domain=spec.domain,
    )
    log.info("built suite task %s (%d classes)", name, len(spec.classnames))
    return task


_RESOLVED: dict[tuple[str, str], Task] = {}


def _with_prompts(name: str, data: Source, roster: str | None) -> Task:
    """A task of the ELEVATER roster (with the toolkit's templates) or of its own (`roster` None),
    identified by its data."""
    from pipeline.data import elevater

    templates = elevater.templates(roster) if roster is not None else ()
    metric = ELEVATER[roster][0] if roster is not None else "map11" if data.multilabel else "accuracy"
    # the templates enter zero-shot cells' identities only (pipeline.cell): no other cell reads them
    key = f"{name}@{data.fingerprint()}"
    return Task(
        name, metric, data, domain="elevater" if roster else "", identity_key=key, templates=templates
    )


def _manifest_task(reference: str) -> Task:
    """`PATH#NAME`: dataset NAME of the vision-datasets registry at PATH (a JSON file, its images
    under the file's folder; or a folder holding the registry JSON and the images)."""
    from pipeline.data import elevater
    from pipeline.data.manifest import ManifestSource, registry_files

    where, _, dataset = reference.rpartition("#")
    path = Path(where).expanduser().resolve()
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files, root = registry_files(path), path
        if not files:
            raise MvlptError(f"task '{reference}': {path} holds no vision-datasets registry (*.json)")
    else:
        raise MvlptError(f"task '{reference}': no dataset registry at {path}")
    roster = elevater.roster_name(dataset)
    roster = roster if roster in ELEVATER else None
    names = elevater.classnames(roster) if roster is not None else None
    return _with_prompts(dataset, ManifestSource(files, root, dataset, names), roster)


def _roster_task(name: str) -> Task:
    """A roster task's data: `<data root>/<task>/{train,test}/<class>/*`, else the dataset in a
    vision-datasets registry at the data root, else torchvision's copy under the task's folder."""
    from pipeline.data import elevater
    from pipeline.data.manifest import ManifestSource, registry_entry, registry_files

    folder = data_root() / name
    files = registry_files(data_root())
    if (folder / "train").is_dir():
        # folder tasks keep the folders' class names
        return _with_prompts(name, ImageFolderSource(folder, name), name)
    if files and registry_entry(files, elevater.toolkit_name(name)) is not None:
        data = ManifestSource(files, data_root(), elevater.toolkit_name(name), elevater.classnames(name))
        return _with_prompts(name, data, name)
    if name in TORCHVISION:
        from pipeline.data.sources import TorchvisionSource

        return _with_prompts(name, TorchvisionSource(name, folder), name)
    raise MvlptError(
        f"task '{name}': dataset root not found: {folder} (expected {folder}/train/<class>/* and "
        f"{folder}/test/<class>/*, or a vision-datasets registry naming '{elevater.toolkit_name(name)}' "
        f"in {data_root()}; set MVLPT_DATA)"
    )


def resolve_task(name: str) -> Task:
    """A registry name, an in-memory task, or the path of an image folder -> Task (memoised)."""
    if name in _IN_MEMORY:
        return _IN_MEMORY[name]
    if name in SUITE:
        return _builtin_task(name)
    key = (name, str(data_root()))
    if key in _RESOLVED:
        return _RESOLVED[key]
    if "#" in name and not os.path.isdir(name):
        task = _manifest_task(name)
    elif name in ELEVATER:
        task = _roster_task(name)
    elif os.path.sep in name or os.path.isdir(name):
        path = Path(name).expanduser().resolve()
        label = path.name
        data = ImageFolderSource(path, label)
        metric = "map11" if data.multilabel else "accuracy"
        task = Task(label, metric, data, identity_key=f"folder:{label}@{data.fingerprint()}")
    else:
        raise MvlptError(
            f"unknown task '{name}': not a registry task ({', '.join(known_tasks())}) nor an image folder"
        )
    _RESOLVED[key] = task
    return task
