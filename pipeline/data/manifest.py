"""`vision-datasets` manifest datasets (ELEVATER's own format), read through that library (optional)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from pipeline.data.sources import SPLITS
from pipeline.errors import MvlptError, first_line

EXTRA = "pip install 'mvlpt[elevater]'"
# the library's types of image classification, under their names before and after its 1.0 release
_TYPES = {
    "classification_multiclass": False,
    "image_classification_multiclass": False,
    "classification_multilabel": True,
    "image_classification_multilabel": True,
}


def registry_files(folder: Path) -> list[Path]:
    """The dataset registry JSON files (lists of dataset infos) at the top of `folder`."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, list) and all(isinstance(d, dict) and "name" in d and "type" in d for d in data):
            found.append(path)
    return found


def registry_entry(files: list[Path], name: str) -> dict | None:
    """The dataset info named `name` (its latest version) in the registry files, or None."""
    entries = [d for f in files for d in json.loads(f.read_text(encoding="utf-8")) if d.get("name") == name]
    return max(entries, key=lambda d: d.get("version", 1)) if entries else None


def registry_names(files: list[Path]) -> list[str]:
    return sorted({d["name"] for f in files for d in json.loads(f.read_text(encoding="utf-8"))})


def roster_in_registry(root: Path) -> set[str]:
    """The roster tasks that a vision-datasets registry at `root` names (under the toolkit's names)."""
    from pipeline.data import elevater

    files = registry_files(root)
    named = set(registry_names(files)) if files else set()
    return {elevater.roster_name(d) for d in named}


class ManifestSource:
    """A multi-class or multi-label image classification dataset of a `vision-datasets` registry
    (IRIS or COCO manifests, images in zip archives or folders) under `root`."""

    def __init__(self, files: list[Path], root: Path, name: str, classnames: tuple[str, ...] | None = None):
        try:
            import vision_datasets  # noqa: F401
        except ImportError as err:
            raise MvlptError(f"dataset '{name}' is a vision-datasets manifest: {EXTRA}") from err
        # the library logs a traceback for each image it cannot read; ours is one line (image())
        logging.getLogger("vision_datasets").setLevel(logging.CRITICAL)
        self.name, self.root, self.files = name, Path(root), list(files)
        self.entry = registry_entry(self.files, name)
        if self.entry is None:
            known = ", ".join(registry_names(self.files)) or "none"
            raise MvlptError(f"dataset '{name}' is not in {', '.join(map(str, self.files))} (known: {known})")
        kind = str(self.entry.get("type", "")).lower()
        if kind not in _TYPES:
            raise MvlptError(f"dataset '{name}' is of type '{kind}', not image classification")
        self.multilabel = _TYPES[kind]
        self._manifests, self._info, self._datasets = {}, None, {}
        for split in SPLITS:
            self._manifests[split] = self._load(split)
        categories = self._manifests["train"].categories
        names = tuple(c.name for c in categories)
        if classnames is not None and len(classnames) != len(names):
            raise MvlptError(
                f"dataset '{name}': the toolkit names {len(classnames)} classes, its label map {len(names)}"
            )
        self.classnames = tuple(classnames) if classnames is not None else names
        self._labels = {split: self._read_labels(split) for split in SPLITS}
        self._fp: str | None = None

    def _load(self, split: str):
        from vision_datasets.common import DatasetHub, Usages

        if split not in self.entry:
            raise MvlptError(f"dataset '{self.name}': no '{split}' split in its registry entry")
        base = self.root / self.entry.get("root_folder", "")
        for rel in self.entry[split].get("files_for_local_usage", []):
            if not (base / rel).is_file():
                raise MvlptError(f"dataset '{self.name}': its {split} images are missing: no {base / rel}")
        hub = DatasetHub([f.read_text(encoding="utf-8") for f in self.files], None, str(self.root))
        try:
            manifest, info, _ = hub.create_dataset_manifest(
                self.name, self.entry.get("version"), Usages[split.upper()]
            )
        except (OSError, KeyError, ValueError, IndexError) as err:
            raise MvlptError(
                f"dataset '{self.name}': its {split} manifest cannot be read ({first_line(err)})"
            ) from err
        if manifest is None:
            raise MvlptError(f"dataset '{self.name}': no {split} manifest under {self.root}")
        self._info = info
        return manifest

    def _read_labels(self, split: str) -> np.ndarray:
        images, n = self._manifests[split].images, len(self.classnames)
        if self.multilabel:
            out = np.zeros((len(images), n), dtype=np.float32)
            for i, im in enumerate(images):
                out[i, [lab.category_id for lab in im.labels]] = 1.0
            return out
        unlabelled = [im.img_path for im in images if len(im.labels) != 1]
        if unlabelled:
            raise MvlptError(
                f"dataset '{self.name}': {split} image {unlabelled[0]} has no single label "
                f"({len(unlabelled)} such images; a multi-class image has exactly one)"
            )
        return np.asarray([im.labels[0].category_id for im in images], dtype=np.int64)

    def labels(self, split: str) -> np.ndarray:
        return self._labels[split]

    def image(self, split: str, index: int):
        from vision_datasets.common import VisionDataset

        if split not in self._datasets:  # opened on first use: it holds the archives' file handles
            self._datasets[split] = VisionDataset(self._info, self._manifests[split])
        try:
            img = self._datasets[split][index][0]
            return img.convert("RGB") if hasattr(img, "convert") else img
        except Exception as err:  # zipfile, PIL and the library raise their own kinds
            path = self._manifests[split].images[index].img_path
            raise MvlptError(
                f"dataset '{self.name}': image {path} cannot be read ({type(err).__name__})"
            ) from err

    def paths(self, split: str) -> list[str]:
        return [im.img_path for im in self._manifests[split].images]

    def fingerprint(self) -> str:
        """What decides the data: the registry entry, the index and label-map files' bytes, and the
        image archives' names, sizes and modification times."""
        if self._fp is None:
            h = hashlib.sha256(json.dumps(self.entry, sort_keys=True).encode())
            h.update("|".join(self.classnames).encode())
            base = self.root / self.entry.get("root_folder", "")
            small = [self.entry.get("labelmap"), *(self.entry.get(s, {}).get("index_path") for s in SPLITS)]
            for rel in filter(None, small):
                h.update(rel.encode() + (base / rel).read_bytes())
            for split in SPLITS:
                for rel in self.entry.get(split, {}).get("files_for_local_usage", []):
                    st = os.stat(base / rel)
                    h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            self._fp = h.hexdigest()[:16]
        return self._fp
