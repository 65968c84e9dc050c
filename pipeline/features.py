"""Content-keyed cache of frozen image features and of preprocessed pixels.

A table of features is keyed by (backbone identity, task identity, split, preprocessing); inside it
each image index is encoded at most once per process. With a cache folder the tables also persist
across processes: each table is one file, merged and replaced atomically on every write.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.clip import Backbone, library_versions
from pipeline.data.tasks import Task

log = logging.getLogger(__name__)


class _ImageSet(torch.utils.data.Dataset):
    """Images `indices` of one split, preprocessed for the backbone (picklable for workers)."""

    def __init__(self, task: Task, split: str, indices, preprocess):
        self.data, self.split, self.indices, self.preprocess = (
            task.data,
            split,
            list(indices),
            preprocess,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocess(self.data.image(self.split, self.indices[i]))


def pixel_batches(
    backbone: Backbone, task: Task, split: str, indices, batch_size: int = 128, workers: int = 0
) -> Iterator[torch.Tensor]:
    """Preprocessed (B, 3, H, W) batches of the given images, in order."""
    data = _ImageSet(task, split, indices, backbone.preprocess)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=backbone.device.type == "cuda",
    )
    for batch in loader:
        yield batch.to(backbone.device, non_blocking=True)


def load_pixels(backbone: Backbone, task: Task, split: str, indices, workers: int = 0) -> torch.Tensor:
    """(N, 3, H, W) preprocessed images, all at once (for K-shot sets)."""
    parts = list(pixel_batches(backbone, task, split, indices, 256, workers))
    if not parts:
        return torch.empty(0, 3, *backbone.image_size, device=backbone.device)
    return torch.cat(parts)


# Images are encoded in batches of exactly this many (zero-padded): a fixed shape makes an image's
# features bit-identical whatever it was batched with, so a cached feature never depends on which
# cell asked first (on CPU, a batch of 20 and a batch of 1 differ in the last bits otherwise).
ENCODE_BATCH = 64


def _encode_padded(backbone: Backbone, batch: torch.Tensor) -> torch.Tensor:
    n = batch.shape[0]
    if n < ENCODE_BATCH:
        pad = batch.new_zeros((ENCODE_BATCH - n, *batch.shape[1:]))
        batch = torch.cat([batch, pad])  # (ENCODE_BATCH, 3, H, W)
    return backbone.encode_image(batch)[:n].float().cpu()


class FeatureCache:
    """Frozen image features per (backbone, task, split, preprocessing), filled image by image."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._tables: dict[str, tuple[dict[int, int], torch.Tensor]] = {}
        self.images_encoded = 0  # how many images went through the image tower, for tests and benches

    @staticmethod
    def key(backbone: Backbone, task: Task, split: str) -> str:
        """Everything the features depend on: weights, data, preprocessing, and the device, dtype and
        library versions that change their last bits."""
        parts = [
            backbone.identity,
            task.identity,
            task.data.fingerprint(),
            split,
            backbone.preprocess_cfg_key(),
            backbone.device.type,
            str(next(backbone.model.parameters()).dtype),
            library_versions(),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]

    def _file(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / f"{key}.pt"

    def _read_disk(self, key: str) -> tuple[dict[int, int], torch.Tensor] | None:
        path = self._file(key)
        if path is None or not path.is_file():
            return None
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            index = [int(i) for i in blob["index"]]
            features = blob["features"]
            valid = (
                blob.get("key") == key
                and isinstance(features, torch.Tensor)
                and features.dim() == 2
                and features.shape[0] == len(index) == len(set(index))
            )
        except Exception:  # a cache file that cannot be read is rebuilt, never trusted
            valid = False
        if not valid:
            log.warning("ignoring feature cache file %s: unreadable or not the table its name says", path)
            return None
        return {i: r for r, i in enumerate(index)}, features

    def _table(self, key: str) -> tuple[dict[int, int], torch.Tensor | None]:
        if key not in self._tables:
            loaded = self._read_disk(key)
            if loaded is not None:
                self._tables[key] = loaded
        return self._tables.get(key, ({}, None))

    def _write_disk(self, key: str, pos: dict[int, int], feats: torch.Tensor) -> None:
        path = self._file(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        other = self._read_disk(key)  # another process may have added rows meanwhile
        if other is not None:
            extra = [i for i in other[0] if i not in pos]
            if extra:
                rows = torch.stack([other[1][other[0][i]] for i in extra])
                pos = {**pos, **{i: len(pos) + k for k, i in enumerate(extra)}}
                feats = torch.cat([feats, rows])
        index = sorted(pos, key=pos.get)
        # processes on several hosts may share the folder: a temporary name of this writer's own
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        torch.save({"key": key, "index": torch.tensor(index, dtype=torch.long), "features": feats}, tmp)
        os.replace(tmp, path)

    def features(self, backbone: Backbone, task: Task, split: str, indices, workers: int = 0) -> torch.Tensor:
        """(N, E) float32 raw image features of `indices`, encoding only images not seen before."""
        key = self.key(backbone, task, split)
        pos, feats = self._table(key)
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        missing = list(dict.fromkeys(i for i in indices if i not in pos))
        if missing:
            new = []
            with torch.no_grad():
                for batch in pixel_batches(backbone, task, split, missing, ENCODE_BATCH, workers):
                    new.append(_encode_padded(backbone, batch))
            new = torch.cat(new)
            self.images_encoded += len(missing)
            pos = {**pos, **{i: len(pos) + k for k, i in enumerate(missing)}}
            feats = new if feats is None else torch.cat([feats, new])
            self._tables[key] = (pos, feats)
            self._write_disk(key, pos, feats)
        rows = torch.tensor([pos[i] for i in indices], dtype=torch.long)
        return feats[rows].to(backbone.device)
